"""Persistence of the web app: database (SQLAlchemy, SQLite by default) plus CT files on disk by UID.

Label versions are append-only: a save names the version it was based on, and is refused with
`StaleVersionError` when someone else saved in between (optimistic concurrency, no silent overwrite).
Every change goes through a method here that also writes an audit event in the same transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, Text, cast, create_engine, delete, event, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import LockHeld, claim_lock
from sarcoscope.store import trash
from sarcoscope.store.files import make_private, open_private, private_dir
from sarcoscope.store.models import (
    DEFAULT_ROLE,
    ROLES,
    AuditEvent,
    LabelVersion,
    LoginFailure,
    LoginSession,
    Role,
    Study,
    User,
    utcnow,
)

log = logging.getLogger(__name__)

#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Only such strings become folder names.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_STUDY_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: What a deleted study's audit events keep: who did what and when, and these technical details. The rest
#: (series UID, the patient's height, weight and sex, notes naming imported files, pushed UIDs) is about the
#: patient, and leaves with the study.
_AUDIT_KEYS_AFTER_DELETE = frozenset(
    {
        "version",
        "parent_version",
        "engine",
        "format",
        "deidentified",
        "indices",
        "n_slices",
        "bytes",
        "status",
        "selection",
    }
)


class StoreError(SarcoscopeError):
    """A request the store cannot carry out; the web layer maps subclasses to HTTP status codes."""


class NotFoundError(StoreError):
    """No study / label version with that id."""


class ConflictError(StoreError):
    """The request conflicts with what is stored (duplicate series, stale label version)."""


class StorageError(StoreError):
    """The data folder could not take a file (a full disk, a quota, an I/O error). The message gives the
    system's reason only: the file's path may hold the client's names (a zip's folders, often the
    patient's), and it goes to the client and the server's log."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @classmethod
    def of(cls, what: str, exc: OSError) -> StorageError:
        return cls(f"The server could not store {what}: {exc.strerror or type(exc).__name__}.", exc.errno)


class StaleVersionError(ConflictError):
    """A save based on a label version that is no longer the latest."""

    def __init__(self, message: str, latest: int | None) -> None:
        super().__init__(message)
        self.latest = latest


class SelectionConflictError(ConflictError):
    """An L3 selection change based on a selection someone else changed since; `study` holds theirs."""

    def __init__(self, message: str, study: Study) -> None:
        super().__init__(message)
        self.study = study


def as_utc(when: dt.datetime) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite returns the stored UTC times without a zone)."""
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def like_pattern(text: str) -> str:
    """`%text%` for LIKE ... ESCAPE '\\', with the wildcards in `text` matched literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def is_dicom_uid(text: str) -> bool:
    return len(text) <= 64 and bool(_UID_RE.match(text))


def new_study_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class LabelStack:
    """A decoded label version: uint8 maps (n, y, x) for the axial slices `indices`."""

    version: int
    indices: list[int]
    labels: np.ndarray


def encode_labels(labels: np.ndarray) -> tuple[bytes, str]:
    raw = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    return zlib.compress(raw, 1), hashlib.sha256(raw).hexdigest()


def decode_labels(row: LabelVersion) -> np.ndarray:
    shape = tuple(int(s) for s in row.shape)
    raw = zlib.decompress(row.data)
    if hashlib.sha256(raw).hexdigest() != row.sha256:
        raise StoreError(
            f"Label version {row.version} of study {row.study_id} is corrupt (checksum mismatch)."
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # A deleted row's bytes are overwritten, not left in free pages for anyone with a copy of the file to
    # read (a study's patient ID, facts and labels): SQLite's default unless built with SECURE_DELETE.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


class Store:
    """The data folder and the database (default: `sarcoscope.db` in the folder).

    Layout: `ct/<StudyUID>/<SeriesUID>/` the original files, `cache/<study id>/` the decoded images,
    `uploads/<upload id>/` the other series of an upload that held several (until their last study is
    deleted), `tmp/` uploads and exports in progress. Everything in it is owner-only (0700 / 0600).
    """

    def __init__(self, data_dir: str | Path, database_url: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        if self.data_dir.is_dir() and stat.S_IMODE(self.data_dir.stat().st_mode) & 0o077:
            log.warning("Data folder %s was readable by other users; it is now owner-only.", self.data_dir)
            make_private(self.data_dir)
        private_dir(self.data_dir)
        for folder in ("tmp", "ct", "cache", "uploads"):
            private_dir(self.data_dir / folder)
            make_private(self.data_dir / folder)
        if database_url is None:
            # SQLite creates the -wal and -shm files with the database file's permissions.
            db = self.data_dir / "sarcoscope.db"
            if db.exists():
                make_private(db)
            else:
                open_private(db).close()
            database_url = f"sqlite:///{db}"
        # hide_parameters: a failed statement's log line must not carry the values (patient facts, UIDs)
        self.engine: Engine = create_engine(database_url, future=True, hide_parameters=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lock_fd: int | None = None
        self._ct_locks = [threading.Lock() for _ in range(32)]
        self._upload_locks = [threading.Lock() for _ in range(32)]
        self._in_use: Counter[str] = Counter()  # study id -> work on its files now (using_files)
        self._in_use_changed = threading.Condition()

    # -- schema -------------------------------------------------------------------------------------
    def migrate(self, revision: str = "head") -> None:
        """Bring the database schema to the newest version shipped with this release (Alembic); tests
        name an older `revision` to check an upgrade with data in place."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def lock(self) -> None:
        """Claim the data folder for this process (until `close` or the process ends, even by a kill).

        Only one server may use a data folder: at start it deletes files that no database row owns,
        which would be another server's upload in progress.
        """
        try:
            self._lock_fd = claim_lock(self.data_dir / "server.lock")
        except LockHeld as held:
            raise StoreError(
                f"Another sarcoscope server (process {held.holder}) is using the data folder "
                f"{self.data_dir}; stop it first, or give this one its own --data-dir."
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- files --------------------------------------------------------------------------------------
    def series_dir(self, study: Study) -> Path:
        """Where a study's CT files live: derived from validated UIDs only, never from user input."""
        if not (is_dicom_uid(study.study_uid) and is_dicom_uid(study.series_uid)):
            raise StoreError(f"Study {study.id} has invalid UIDs; refusing to build a path from them.")
        return self.data_dir / "ct" / study.study_uid / study.series_uid

    def cache_dir(self, study_id: str) -> Path:
        """The study's decoded images (HU array, geometry), so that opening it needs no DICOM decoding."""
        if not _STUDY_ID_RE.match(study_id):
            raise StoreError(f"Invalid study id {study_id!r}; refusing to build a path from it.")
        return self.data_dir / "cache" / study_id

    def ct_lock(self, study_uid: str) -> threading.Lock:
        """Held by whoever adds or removes files in `ct/<StudyUID>/`, deciding by the study rows read under
        it: a series' folder is filled only when no study has it, and removed only when none has it.
        One server per data folder (`lock`), so the locks of this process are enough."""
        return self._ct_locks[zlib.crc32(study_uid.encode()) % len(self._ct_locks)]

    def upload_lock(self, upload_id: str) -> threading.Lock:
        """Held while a study of a kept upload is added or the upload removed, so that its last study's
        deletion and the opening of another of its series agree; taken before a `ct_lock`, never after."""
        return self._upload_locks[zlib.crc32(upload_id.encode()) % len(self._upload_locks)]

    def upload_dir(self, upload_id: str) -> Path:
        """Where the other series of an upload wait to be opened (see Study.upload_id)."""
        if not _STUDY_ID_RE.match(upload_id):
            raise StoreError(f"Invalid upload id {upload_id!r}; refusing to build a path from it.")
        return self.data_dir / "uploads" / upload_id

    def studies_of_upload(self, upload_id: str) -> list[Study]:
        """The studies opened from one upload, oldest first."""
        with self.session() as s:
            q = select(Study).where(Study.upload_id == upload_id).order_by(Study.created_at)
            return list(s.scalars(q))

    @contextmanager
    def using_files(self, study_id: str) -> Iterator[Study]:
        """The study, for work on its files (reading its images, writing into its cache folder); its
        deletion removes them only once such work has ended, so that nothing written here outlives the
        study and nothing read is half removed. NotFoundError when the study is gone."""
        with self._in_use_changed:
            self._in_use[study_id] += 1
        try:
            yield self.get_study(study_id)
        finally:
            with self._in_use_changed:
                self._in_use[study_id] -= 1
                if not self._in_use[study_id]:
                    del self._in_use[study_id]
                    self._in_use_changed.notify_all()

    def new_tmp_dir(self) -> Path:
        path = self.data_dir / "tmp" / uuid.uuid4().hex
        private_dir(path)
        return path

    def remove_study_files(self, study: Study) -> None:
        """Delete every file of a study: its CT files, its decoded images, an emptied StudyUID folder, and
        its upload's other series when no study of that upload is left (they are the same patient's)."""
        series = self.series_dir(study)
        with self.ct_lock(study.study_uid):
            if self.find_series(study.series_uid) is None:  # not a study of the series uploaded again
                shutil.rmtree(series, ignore_errors=True)
            with contextlib.suppress(OSError):  # only when no other series of the study is left
                series.parent.rmdir()
        shutil.rmtree(self.cache_dir(study.id), ignore_errors=True)
        if study.upload_id:
            with self.upload_lock(study.upload_id):
                if not self.studies_of_upload(study.upload_id):
                    shutil.rmtree(self.upload_dir(study.upload_id), ignore_errors=True)

    def remove_orphan_files(self) -> list[Path]:
        """Delete what a killed process left behind: everything in `tmp/`, and CT series, image caches
        and kept uploads that no study row owns (an upload stopped before its row was committed, or a
        deletion stopped after it). Call with the data folder locked (`lock`). Returns what was deleted."""
        with self.session() as s:
            series = {(a, b) for a, b in s.execute(select(Study.study_uid, Study.series_uid))}
            ids = set(s.scalars(select(Study.id)))
            uploads = set(s.scalars(select(Study.upload_id).where(Study.upload_id.is_not(None))))
        removed = list((self.data_dir / "tmp").iterdir())
        for study_dir in (self.data_dir / "ct").iterdir():
            if study_dir.is_symlink() or not study_dir.is_dir():  # never followed out of the folder
                removed.append(study_dir)
                continue
            removed += [p for p in study_dir.iterdir() if (study_dir.name, p.name) not in series]
        removed += [p for p in (self.data_dir / "cache").iterdir() if p.name not in ids]
        removed += [p for p in (self.data_dir / "uploads").iterdir() if p.name not in uploads]
        for path in removed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for study_dir in (self.data_dir / "ct").iterdir():
            if not any(study_dir.iterdir()):
                study_dir.rmdir()
        if removed:
            log.warning(
                "Removed %d files or folders left by an interrupted upload or deletion.", len(removed)
            )
        return removed

    # -- audit --------------------------------------------------------------------------------------
    @staticmethod
    def _audit(
        session: Session,
        actor: str,
        action: str,
        study_id: str | None,
        details: dict[str, Any] | None = None,
        client: str | None = None,
    ) -> None:
        session.add(AuditEvent(actor=actor, action=action, study_id=study_id, details=details, client=client))

    def audit(
        self,
        actor: str,
        action: str,
        study_id: str | None = None,
        details: dict[str, Any] | None = None,
        client: str | None = None,
    ) -> None:
        """Record an event that changes nothing in the database (downloads, exports, logins).

        An event about a study deleted meanwhile (a PACS push that ended after the deletion) keeps only
        what the deletion leaves of its events: it is written first, then the study looked up (FOR SHARE:
        a deletion in progress is waited for), so a deletion committed later finds and scrubs it."""
        with self.session() as s:
            event_ = AuditEvent(actor=actor, action=action, study_id=study_id, details=details, client=client)
            s.add(event_)
            if study_id is not None and details:
                s.flush()
                found = s.scalar(select(Study.id).where(Study.id == study_id).with_for_update(read=True))
                if found is None:
                    event_.details = _left_after_delete(details)

    def audit_events(self, study_id: str | None = None, limit: int = 500) -> list[AuditEvent]:
        with self.session() as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if study_id is not None:
                q = q.where(AuditEvent.study_id == study_id)
            return list(s.scalars(q))

    # -- studies ------------------------------------------------------------------------------------
    def add_study(self, study: Study, actor: str, client: str | None = None) -> Study:
        """Insert a study row whose files are already in `series_dir`; refuses a series uploaded before."""
        with self.session() as s:
            existing = s.scalar(select(Study).where(Study.series_uid == study.series_uid))
            if existing is not None:
                raise series_stored_already(existing, study)
            s.add(study)
            self._audit(
                s,
                actor,
                "upload",
                study.id,
                {"series_uid": study.series_uid, "n_slices": study.n_slices, "bytes": study.upload_bytes},
                client,
            )
        return study

    def find_series(self, series_uid: str, study_uid: str | None = None) -> Study | None:
        """The study holding a series; with `study_uid`, only if it is that study's series: a Series
        Instance UID alone is reused (anonymisers, phantom sets), and would link another patient's."""
        with self.session() as s:
            q = select(Study).where(Study.series_uid == series_uid)
            if study_uid is not None:
                q = q.where(Study.study_uid == study_uid)
            return s.scalar(q)

    def get_study(self, study_id: str) -> Study:
        if not _STUDY_ID_RE.match(study_id):
            raise NotFoundError(f"No study with id '{study_id}' (ids are 32 hexadecimal characters).")
        with self.session() as s:
            study = s.get(Study, study_id)
        if study is None:
            raise NotFoundError(f"No study with id '{study_id}'.")
        return study

    def list_studies(self, query: str | None = None, limit: int | None = 500) -> list[Study]:
        """Newest first; `limit` None = every study."""
        with self.session() as s:
            q = select(Study).order_by(Study.created_at.desc()).limit(limit)
            if query and query.strip():
                like = like_pattern(query.strip())
                columns = (
                    Study.patient_id,
                    Study.series_description,
                    Study.study_date,
                    Study.id,
                    Study.series_uid,
                )
                q = q.where(or_(*(c.ilike(like, escape="\\") for c in columns)))
            return list(s.scalars(q))

    def update_study(
        self,
        study_id: str,
        actor: str,
        action: str,
        client: str | None = None,
        *,
        proposed_selection: dict[str, Any] | None = None,
        expected_patient: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Study:
        """Change study fields (selection, localization, patient, status) and audit the new values.

        `proposed_selection` (the localizer's) becomes the selection only if the study has none when this
        is written: a selection a person saved while the localizer ran is theirs and stays.
        `expected_patient`: the patient facts the change was based on; ConflictError when the stored ones
        differ (another tab or user saved meanwhile), as a stale label save is refused.
        """
        allowed = {"selection", "localization", "patient", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update study fields {sorted(unknown)}")
        with self.session() as s:
            study = s.scalars(select(Study).where(Study.id == study_id).with_for_update()).one_or_none()
            if study is None:
                raise NotFoundError(f"No study with id '{study_id}'.")
            if proposed_selection is not None and study.selection is None:
                fields = {**fields, "selection": proposed_selection}
            if "selection" in fields:  # the localizer's proposal is nobody's choice: any change replaces it
                chosen_by = None if fields["selection"] is proposed_selection else actor
                fields = {**fields, **_selection_stamp(study.selection_version, chosen_by, None)}
            if expected_patient is None:
                for key, value in fields.items():
                    setattr(study, key, value)
            else:
                _update_if_patient_is(s, study, expected_patient, fields)
            details = {k: v for k, v in fields.items() if k in allowed - {"localization"}}
            self._audit(s, actor, action, study_id, details or None, client)
        return study

    def has_study(self, study_id: str) -> bool:
        with self.session() as s:
            return s.get(Study, study_id) is not None

    def set_selection(
        self,
        study_id: str,
        selection: dict[str, Any],
        actor: str,
        client: str | None = None,
        *,
        base_version: int | None = None,
        editor: str | None = None,
    ) -> Study:
        """Store the L3 selection a person chose. `base_version`: the `selection_version` the change started
        from; SelectionConflictError when a person changed the selection since (a colleague, another tab),
        so that nobody silently moves the slices a colleague chose (and their labels are for). Not refused:
        a change of a selection nobody chose (the localizer's proposal), or of one this page sitting
        (`editor`, with the same user) wrote itself, whose answer had not come yet (successive saves; the
        one sent as the page closes). Checked and written in one conditional UPDATE, as patient facts are."""
        for _ in range(3):  # a change committed between the read and the write: decided again on it
            with self.session() as s:
                study = s.get(Study, study_id)
                if study is None:
                    raise NotFoundError(f"No study with id '{study_id}'.")
                version = study.selection_version
                own = editor is not None and (study.selection_editor, study.selection_by) == (editor, actor)
                if base_version not in (None, version) and study.selection_by is not None and not own:
                    s.expunge(study)  # as read: the rollback would expire it
                    raise SelectionConflictError(_selection_changed_message(study), study)
                written = s.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.selection_version == version)
                    .values(selection=selection, **_selection_stamp(version, actor, editor))
                    .execution_options(synchronize_session=False)
                )
                if written.rowcount == 1:
                    self._audit(s, actor, "select-l3", study_id, {"selection": selection}, client)
                    s.refresh(study)
                    return study
        raise ConflictError("The L3 selection is being changed by someone else right now; try again.")

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

        `keep`: the rows and files go to the trash (`store/trash.py`), from which the study can be restored
        until it is purged; without it they are erased at once.

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
                latest = _latest_row(s, study_id)
                latest_number = latest.version if latest is not None else None
                if (latest_number or 0) != seen_version:
                    raise StaleVersionError(_unseen_message(seen_version, latest), latest_number)
            pending = trash.begin(self, s, study, actor) if keep else None
            for row in s.scalars(select(LabelVersion).where(LabelVersion.study_id == study_id)):
                s.delete(row)
            s.delete(study)
            for event_ in s.scalars(select(AuditEvent).where(AuditEvent.study_id == study_id)):
                if event_.details:
                    event_.details = _left_after_delete(event_.details)
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

    # -- accounts -----------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.session() as s:
            return s.scalar(select(User.id).limit(1)) is not None

    def get_user(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name))

    def list_users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def add_user(self, name: str, password_hash: str, actor: str, role: Role = DEFAULT_ROLE) -> User:
        check_role(role)
        with self.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise ConflictError(f"User '{name}' already exists.")
            user = User(name=name, password_hash=password_hash, failed_logins=0, role=role)
            s.add(user)
            self._audit(s, actor, "user-add", None, {"user": name, "role": role})
        return user

    def user_role(self, name: str) -> str | None:
        """The account's role (None: no such account), read afresh at every request of its sessions."""
        with self.session() as s:
            return s.scalar(select(User.role).where(User.name == name))

    def set_role(self, name: str, role: Role, actor: str) -> str:
        """Give the account another role (its sessions keep going, with the new role from their next
        request); returns the role it had."""
        check_role(role)
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            before, user.role = user.role, role
            self._audit(s, actor, "user-role", None, {"user": name, "role": role, "was": before})
        return before

    def remove_user(self, name: str, actor: str) -> None:
        """Delete the account and end its sessions; its name stays in the audit log and label history."""
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            s.delete(user)
            s.execute(delete(LoginSession).where(LoginSession.user_name == name))
            self._audit(s, actor, "user-remove", None, {"user": name})

    def set_password(self, name: str, password_hash: str, actor: str) -> None:
        """Replace the password hash; the user's sessions end (whoever knew the old password is out)."""
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            user.password_hash = password_hash
            user.password_changed_at = dt.datetime.now(dt.UTC)
            user.failed_logins = 0
            s.execute(delete(LoginSession).where(LoginSession.user_name == name))
            self._audit(s, actor, "user-passwd", None, {"user": name})

    def record_login(self, name: str, ok: bool, client: str | None, new_hash: str | None = None) -> None:
        """Count a login on the account (a success is audited and resets the failure count; failures
        are only counted); `new_hash` replaces a hash made with older Argon2 parameters."""
        now = dt.datetime.now(dt.UTC)
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                return
            if ok:
                user.last_login_at, user.failed_logins = now, 0
                if new_hash is not None:
                    user.password_hash = new_hash
                self._audit(s, name, "login", None, None, client)
            else:
                user.failed_logins, user.last_failed_login_at = user.failed_logins + 1, now

    # -- login sessions -------------------------------------------------------------------------------
    def add_session(
        self,
        session_id: str,
        user_name: str,
        realm: str,
        expires_at: dt.datetime,
        client: str | None,
        account: User | None = None,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Store a new session (by the digest of its token); expired sessions are deleted on the way.

        `account`: the account row whose password was checked. ConflictError when it was removed or its
        password set since (`users remove` / `users passwd` ending the user's sessions, committed while the
        login was checked): the check runs after the insert, on the row locked (FOR SHARE; SQLite holds
        the write lock from the deletion on), so such a change either comes first and is seen here, or
        comes after and deletes this session with the others."""
        now = dt.datetime.now(dt.UTC)
        with self.session() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            s.add(
                LoginSession(
                    id=session_id,
                    user_name=user_name,
                    realm=realm,
                    created_at=created_at or now,
                    expires_at=expires_at,
                    client=client,
                )
            )
            if account is not None:
                s.flush()
                current = s.execute(
                    select(User.id, User.password_changed_at)
                    .where(User.name == user_name)
                    .with_for_update(read=True)
                ).first()
                if current is None or tuple(current) != (account.id, account.password_changed_at):
                    raise ConflictError(f"The password of '{user_name}' was changed or the account removed.")

    def set_session_end(self, session_id: str, expires_at: dt.datetime) -> None:
        """Move a session's end to `expires_at`."""
        with self.session() as s:
            s.execute(update(LoginSession).where(LoginSession.id == session_id).values(expires_at=expires_at))

    def get_session(self, session_id: str) -> LoginSession | None:
        with self.session() as s:
            return s.get(LoginSession, session_id)

    def delete_session(self, session_id: str) -> LoginSession | None:
        with self.session() as s:
            row = s.get(LoginSession, session_id)
            if row is not None:
                s.delete(row)
            return row

    # -- login throttling -----------------------------------------------------------------------------
    def login_failures(self, keys: list[str], since: dt.datetime) -> dict[str, tuple[int, dt.datetime]]:
        """Failures per key counted since `since` (older windows count as none): (count, window start)."""
        with self.session() as s:
            rows = s.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys)))
            return {r.key: (r.count, as_utc(r.window_start)) for r in rows if as_utc(r.window_start) >= since}

    def add_login_failure(self, keys: list[str], since: dt.datetime) -> dict[str, int]:
        """Count one failure for each key (a window older than `since` starts again); returns the
        new counts. Windows older than `since` are deleted, so the table holds at most one row per
        key that failed recently."""
        try:
            return self._count_failure(keys, since)
        except IntegrityError:  # a concurrent failure inserted the same key first: count on its row
            return self._count_failure(keys, since)

    def _count_failure(self, keys: list[str], since: dt.datetime) -> dict[str, int]:
        now = dt.datetime.now(dt.UTC)
        counts = {}
        with self.session() as s:
            self._forget_login_failures(s, since)
            for key in keys:
                row = s.get(LoginFailure, key)
                if row is None:
                    row = LoginFailure(key=key, count=0, window_start=now)
                    s.add(row)
                row.count += 1
                counts[key] = row.count
        return counts

    def clear_login_failures(self, key: str, since: dt.datetime | None = None) -> None:
        """Forget the failures of `key` (a successful login), and every window older than `since`."""
        with self.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == key))
            if since is not None:
                self._forget_login_failures(s, since)

    def forget_login_failures(self, since: dt.datetime) -> None:
        """Delete the failure counts of windows older than `since` (they count as none)."""
        with self.session() as s:
            self._forget_login_failures(s, since)

    @staticmethod
    def _forget_login_failures(s: Session, since: dt.datetime) -> None:
        s.execute(delete(LoginFailure).where(LoginFailure.window_start < since))

    # -- label versions -----------------------------------------------------------------------------
    def latest_version(self, study_id: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(func.max(LabelVersion.version)).where(LabelVersion.study_id == study_id))

    def list_versions(self, study_id: str) -> list[LabelVersion]:
        """Versions newest first, without decoding their label data."""
        self.get_study(study_id)
        with self.session() as s:
            q = (
                select(LabelVersion)
                .where(LabelVersion.study_id == study_id)
                .order_by(LabelVersion.version.desc())
            )
            return list(s.scalars(q))

    def get_version(self, study_id: str, version: int | None = None) -> LabelVersion:
        """One version (the latest when `version` is None)."""
        self.get_study(study_id)
        with self.session() as s:
            q = select(LabelVersion).where(LabelVersion.study_id == study_id)
            if version is None:
                q = q.order_by(LabelVersion.version.desc()).limit(1)
            else:
                q = q.where(LabelVersion.version == version)
            row = s.scalar(q)
        if row is None:
            what = "no label versions yet" if version is None else f"no label version {version}"
            raise NotFoundError(f"Study {study_id} has {what}.")
        return row

    def load_labels(self, study_id: str, version: int | None = None) -> LabelStack:
        row = self.get_version(study_id, version)
        return LabelStack(version=row.version, indices=list(row.indices), labels=decode_labels(row))

    def save_version(
        self,
        study_id: str,
        *,
        base_version: int | None,
        labels: np.ndarray,
        indices: list[int],
        author: str,
        source: str,
        engine: str | None = None,
        model_id: str | None = None,
        note: str | None = None,
        client: str | None = None,
    ) -> LabelVersion:
        """Append a label version on top of `base_version` (None = the study has none yet).

        Raises StaleVersionError when `base_version` is not the latest, including when another save
        committed between our check and our insert (the unique (study, version) constraint catches it).
        """
        if labels.ndim != 3 or labels.dtype != np.uint8 or labels.shape[0] != len(indices):
            raise ValueError(f"labels must be uint8 (n, y, x) with n = len(indices), got {labels.shape}")
        data, digest = encode_labels(labels)
        try:
            with self.session() as s:
                study = s.get(Study, study_id)
                if study is None:
                    raise NotFoundError(f"No study with id '{study_id}'.")
                latest_row = _latest_row(s, study_id)
                latest = latest_row.version if latest_row is not None else None
                if latest != base_version:
                    raise StaleVersionError(_stale_message(base_version, latest_row), latest)
                row = LabelVersion(
                    study_id=study_id,
                    version=(latest or 0) + 1,
                    parent_version=base_version,
                    author=author,
                    source=source,
                    engine=engine,
                    model_id=model_id,
                    indices=[int(i) for i in indices],
                    shape=[int(n) for n in labels.shape],
                    data=data,
                    sha256=digest,
                    note=note,
                )
                s.add(row)
                study.status = "segmented" if source == "segment" else "edited"
                self._audit(
                    s,
                    author,
                    f"labels-{source}",
                    study_id,
                    {"version": row.version, "parent_version": base_version, "engine": engine, "note": note},
                    client,
                )
        except (IntegrityError, StaleDataError) as exc:
            # the study deleted after it was found: the version's insert fails on its foreign key (or
            # the status update finds no row), which is no other save committing the same version
            with self.session() as s:
                if s.get(Study, study_id) is None:
                    raise NotFoundError(f"No study with id '{study_id}'.") from None
            if not isinstance(exc, IntegrityError):
                raise
            latest = self.latest_version(study_id)
            raise StaleVersionError(
                f"Another save of study {study_id} committed at the same moment (now at version {latest}); "
                "reload the labels and apply your edit again.",
                latest,
            ) from None
        return row


def check_role(role: str) -> None:
    """StoreError (a user's error: the CLI says it) for a role that is none of ROLES."""
    if role not in ROLES:
        raise StoreError(f"Unknown role '{role}': choose one of {', '.join(ROLES)}.")


def series_stored_already(existing: Study, study: Study) -> ConflictError:
    """The refusal of `study`, whose series `existing` holds already. The same patient's is offered ("open
    it"); another patient's (a copied or badly de-identified export reusing the UID: another PatientID, or
    another study without one) is refused naming neither that study nor its patient, which would link
    this upload's patient to another's."""
    from sarcoscope.imaging.dicom_reader import patient_key

    if patient_key(existing.patient_id, existing.study_uid) != patient_key(study.patient_id, study.study_uid):
        return ConflictError(
            f"Series {study.series_uid} is already stored as another patient's series: one Series Instance "
            "UID cannot hold two patients' images, so these files are refused. Check where they come from "
            "(a copy of another patient's export, or de-identification that kept the UIDs)."
        )
    return ConflictError(
        f"Series {study.series_uid} was already uploaded (study {existing.id}); open it instead."
    )


_PATIENT_CHANGED = (
    "The patient facts were changed (in another tab or by another user) since this page loaded them; "
    "reload the study to see them, then save again."
)


def _selection_stamp(version: int, chosen_by: str | None, editor: str | None) -> dict[str, Any]:
    """The columns a change of the L3 selection writes beside it: the count, who chose it, when, where."""
    return {
        "selection_version": version + 1,
        "selection_by": chosen_by,
        "selection_at": utcnow(),
        "selection_editor": editor,
    }


def _selection_changed_message(study: Study) -> str:
    sel = study.selection or {}
    first, last = sel.get("first"), sel.get("last")
    slices = f"slice {first}" if first == last else f"slices {first}–{last}"
    when = as_utc(study.selection_at).strftime("%Y-%m-%d %H:%M:%S UTC") if study.selection_at else "just now"
    return (
        f"Not saved: the L3 selection was changed to {slices} by {study.selection_by} at {when}, after this "
        "page showed it. Look at their selection, or save yours over it."
    )


def _update_if_patient_is(s: Session, study: Study, expected: dict[str, Any], fields: dict[str, Any]) -> None:
    """Write `fields` to `study` only if its stored patient facts are `expected` (ConflictError otherwise),
    checked and written in one statement: UPDATE ... WHERE the facts are still the ones read. SQLite
    ignores the row lock (FOR UPDATE) and its reads run before the write transaction begins, so two saves
    based on the same facts both passed a check made on the read, and the later silently replaced the
    earlier; the conditional UPDATE of the second finds no row once the first has committed."""
    stored_text = s.scalar(select(cast(Study.patient, Text)).where(Study.id == study.id))
    stored = json.loads(stored_text) if stored_text is not None else None
    if {key: (stored or {}).get(key) for key in expected} != expected:
        raise ConflictError(_PATIENT_CHANGED)
    written = s.execute(
        update(Study)
        .where(Study.id == study.id, cast(Study.patient, Text).is_not_distinct_from(stored_text))
        .values(**fields)
        .execution_options(synchronize_session=False)
    )
    if written.rowcount != 1:
        if s.scalar(select(Study.id).where(Study.id == study.id)) is None:  # deleted meanwhile
            raise NotFoundError(f"No study with id '{study.id}'.")
        raise ConflictError(_PATIENT_CHANGED)
    s.refresh(study)


def _latest_row(s: Session, study_id: str) -> LabelVersion | None:
    """The study's newest label version, read in the session `s` (None: it has none)."""
    q = select(LabelVersion).where(LabelVersion.study_id == study_id).order_by(LabelVersion.version.desc())
    return s.scalar(q.limit(1))


def _left_after_delete(details: dict[str, Any]) -> dict[str, Any]:
    """What an audit event of a deleted study keeps of its details (_AUDIT_KEYS_AFTER_DELETE)."""
    return {k: v for k, v in details.items() if k in _AUDIT_KEYS_AFTER_DELETE}


def _saved_by(latest: LabelVersion) -> str:
    """The save someone did not see: 'version N was saved by <author> at <time>'."""
    when = latest.created_at
    when_text = when.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(when, dt.datetime) else str(when)
    return f"version {latest.version} was saved by {latest.author} at {when_text}"


def _unseen_message(seen: int, latest: LabelVersion | None) -> str:
    shown = "no labels" if seen == 0 else f"label version {seen}"
    if latest is None:
        return f"Not deleted: you were shown {shown}, but this study has no label versions now."
    return (
        f"Not deleted: you were shown {shown}, but {_saved_by(latest)}. Look at the study again before "
        "deleting it with their work."
    )


def _stale_message(base: int | None, latest: LabelVersion | None) -> str:
    if latest is None:
        return f"Your edit is based on label version {base}, but this study has no label versions."
    base_text = "no labels" if base is None else f"version {base}"
    return (
        f"Not saved: your edit is based on {base_text}, but {_saved_by(latest)}. Reload to see their "
        "changes, then edit again."
    )
