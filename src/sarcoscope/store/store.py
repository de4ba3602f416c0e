"""Persistence of the web app: database (SQLAlchemy, SQLite by default) plus CT files on disk by UID.

`Store` joins one part per concern (studies, the data folder's files, accounts, label versions: each in its
module) and holds what spans them: deleting a study (rows, files, trash) and restoring it. Every change goes
through a method that also writes an audit event in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from sarcoscope.store import trash
from sarcoscope.store.accounts import AccountsMixin
from sarcoscope.store.core import forget_pacs_study, left_after_delete
from sarcoscope.store.errors import NotFoundError, StaleVersionError
from sarcoscope.store.folder import DataFolderMixin
from sarcoscope.store.labels import LabelVersionsMixin, latest_label_row, saved_by
from sarcoscope.store.models import AuditEvent, LabelVersion, Study
from sarcoscope.store.studies import series_stored_already


class Store(DataFolderMixin, AccountsMixin, LabelVersionsMixin):
    """The data folder and the database (default: `sarcoscope.db` in the folder).

    Layout: `ct/<StudyUID>/<SeriesUID>/` the original files, `cache/<study id>/` the decoded images,
    `uploads/<upload id>/` the other series of an upload that held several (until their last study is
    deleted), `tmp/` uploads and exports in progress. Everything in it is owner-only (0700 / 0600).
    """

    def delete_study(
        self,
        study_id: str,
        actor: str,
        client: str | None = None,
        *,
        seen_version: int | None = None,
        keep: bool = True,
    ) -> Study:
        """Remove the study's rows and what its audit events say about the patient, then, once the work on
        its files that found it before has ended (`using_files`; later work finds no study), all its files
        (a kill in between leaves files that `remove_orphan_files` deletes at the next start).

        `keep`: the rows and files go to the trash (`store/trash/`), from which the study can be restored
        until it is erased; without it they are erased at once.

        `seen_version`: the latest label version the person deleting was shown (0: none). A study whose
        labels went on since (someone saved a correction after their list was read) is not deleted:
        StaleVersionError, as a stale label save, so that nobody deletes work they have not seen."""
        with self.session() as s:
            # The study row is written first (a no-op): the write lock (SQLite) or row lock (PostgreSQL) is
            # held from here, so a label save committing meanwhile is either seen below or waits and then
            # finds no study; SQLite's reads would otherwise run before the write transaction begins.
            s.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(status=Study.status)
                .execution_options(synchronize_session=False)
            )
            study = s.get(Study, study_id)
            if study is None:
                raise NotFoundError(f"No study with id '{study_id}'.")
            if seen_version is not None:
                latest = latest_label_row(s, study_id)
                latest_number = latest.version if latest is not None else None
                if (latest_number or 0) != seen_version:
                    raise StaleVersionError(_unseen_message(seen_version, latest), latest_number)
            pending = trash.begin(self, s, study, actor) if keep else None
            for row in s.scalars(select(LabelVersion).where(LabelVersion.study_id == study_id)):
                s.delete(row)
            s.delete(study)
            for event_ in s.scalars(select(AuditEvent).where(AuditEvent.study_id == study_id)):
                if event_.details:
                    event_.details = left_after_delete(event_.details)
            forget_pacs_study(s, study.study_uid)
            self._audit(s, actor, "delete-study", study_id, None, client)
        if self.engine.dialect.name == "sqlite":  # the write-ahead log still holds the deleted rows' pages
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._in_use_changed:
            self._in_use_changed.wait_for(lambda: not self._in_use[study_id])
        if pending is None:
            self.remove_study_files(study)
        else:
            trash.finish(self, study, pending)
        return study

    def audit_erasure(
        self, actor: str, study_id: str, details: dict[str, Any] | None, study_uid: str, client: str | None
    ) -> None:
        """Audit the erasure of a kept deletion (`trash.erase`: the event that decides it) and, in its
        transaction, forget its PACS study (`forget_pacs_study`) in the events written since its deletion
        or kept by a version that did not at deletion."""
        with self.session() as s:
            self._audit(s, actor, "erase-study", study_id, details, client)
            forget_pacs_study(s, study_uid)

    def restore_rows(
        self, study: Study, versions: list[LabelVersion], actor: str, client: str | None = None
    ) -> None:
        """Insert a deleted study's rows again (`trash.restore`, which has put its files back)."""
        with self.session() as s:
            existing = s.scalar(select(Study).where(Study.series_uid == study.series_uid))
            if existing is not None:
                raise series_stored_already(existing, study)
            s.add(study)
            s.flush()
            s.add_all(versions)
            self._audit(s, actor, "restore-study", study.id, {"n_versions": len(versions)}, client)


def _unseen_message(seen: int, latest: LabelVersion | None) -> str:
    shown = "no labels" if seen == 0 else f"label version {seen}"
    if latest is None:
        return f"Not deleted: you were shown {shown}, but this study has no label versions now."
    return (
        f"Not deleted: you were shown {shown}, but {saved_by(latest)}. Look at the study again before "
        "deleting it with their work."
    )
