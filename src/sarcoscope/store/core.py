"""What every part of `Store` builds on: the database (engine, schema migrations, sessions), the data
folder's lock, and the audit log that each change writes in its own transaction."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from sarcoscope.fileio import LockHeld, claim_lock
from sarcoscope.store.errors import StoreError
from sarcoscope.store.files import make_private, open_private, private_dir
from sarcoscope.store.models import AuditEvent, Study, as_utc, utcnow

log = logging.getLogger(__name__)

#: What a deleted study's audit events keep: who did what and when, and these technical details. The rest
#: (series UID, the patient's height, weight and sex, notes naming imported files, pushed UIDs) is about the
#: patient, and leaves with the study; so does its PACS study's UID from the events that name it without a
#: study id (`forget_pacs_study`).
_AUDIT_KEYS_AFTER_DELETE = frozenset(
    {
        "version",
        "parent_version",
        "engine",
        "format",
        "deidentified",
        "kept",
        "indices",
        "n_slices",
        "bytes",
        "status",
        "selection",
        "deletion_id",
    }
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # A deleted row's bytes are overwritten, not left in free pages for anyone with a copy of the file to
    # read (a study's patient ID, facts and labels): SQLite's default unless built with SECURE_DELETE.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


class StoreCore:
    """The database and the data folder; `Store` (store.py) adds one part per concern on top."""

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

    # -- audit --------------------------------------------------------------------------------------
    @staticmethod
    def _audit(
        session: Session,
        actor: str,
        action: str,
        study_id: str | None,
        details: dict[str, Any] | None = None,
        client: str | None = None,
        view_key: str | None = None,
    ) -> AuditEvent:
        event_ = AuditEvent(
            at=utcnow(),
            actor=actor,
            action=action,
            study_id=study_id,
            details=details,
            client=client,
            view_key=view_key,
        )
        session.add(event_)
        return event_

    def audit(
        self,
        actor: str,
        action: str,
        study_id: str | None = None,
        details: dict[str, Any] | None = None,
        client: str | None = None,
        view_key: str | None = None,
    ) -> None:
        """Record an event that changes nothing in the database (downloads, exports, logins); `view_key`:
        it shows what a view of that key would (the viewer's volume download, its images: audit_view).

        An event about a study deleted meanwhile (a PACS push that ended after the deletion) keeps only
        what the deletion leaves of its events: it is written first, then the study looked up (FOR SHARE:
        a deletion in progress is waited for), so a deletion committed later finds and scrubs it."""
        self.audit_all(actor, [(action, study_id, details)], client, view_key)

    def audit_all(
        self,
        actor: str,
        events: list[tuple[str, str | None, dict[str, Any] | None]],
        client: str | None = None,
        view_key: str | None = None,
    ) -> None:
        """Record `events` (action, study id, details), as `audit` does each, in one transaction: all of them
        or, when one cannot be written, none (an export's own event and each of its studies')."""
        with self.session() as s:
            written = [(self._audit(s, actor, *event, client, view_key), *event) for event in events]
            s.flush()
            for event_, _, study_id, details in written:
                if study_id is None or not details:
                    continue
                found = s.scalar(select(Study.id).where(Study.id == study_id).with_for_update(read=True))
                if found is None:
                    event_.details = left_after_delete(details)

    def audit_view(
        self,
        actor: str,
        action: str,
        study_id: str | None,
        details: dict[str, Any] | None,
        client: str | None,
        view_key: str,
        again_after: float,
    ) -> dt.datetime:
        """Record a view (`view_key`: its sitting and what it was shown) unless an event of the same key is
        less than `again_after` seconds old; the time of the newest one, this or that.

        The audit log is the record, so a restart or another server process on the database finds it as
        this one does. Its event is written first: that holds SQLite's write lock, and on PostgreSQL a lock
        on the key is taken before, so that views at the same moment are one event, not one each."""
        with self.session() as s:
            if self.engine.dialect.name == "postgresql":
                s.execute(select(func.pg_advisory_xact_lock(int(view_key[:15], 16))))
            event_ = self._audit(s, actor, action, study_id, details, client, view_key)
            s.flush()
            since = event_.at - dt.timedelta(seconds=again_after)
            earlier = s.scalar(
                select(func.max(AuditEvent.at)).where(
                    AuditEvent.view_key == view_key, AuditEvent.id != event_.id, AuditEvent.at > since
                )
            )
            if earlier is None:
                return event_.at
            s.delete(event_)  # shown within the time: not a new view
            return as_utc(earlier)

    def audit_events(self, study_id: str | None = None, limit: int = 500) -> list[AuditEvent]:
        with self.session() as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if study_id is not None:
                q = q.where(AuditEvent.study_id == study_id)
            return list(s.scalars(q))


def left_after_delete(details: dict[str, Any]) -> dict[str, Any]:
    """What an audit event of a deleted study keeps of its details (_AUDIT_KEYS_AFTER_DELETE)."""
    return {k: v for k, v in details.items() if k in _AUDIT_KEYS_AFTER_DELETE}


def forget_pacs_study(s: Session, study_uid: str) -> None:
    """Leave of the events without a study id that name the PACS study `study_uid` (its series listed,
    `pacs-view-series`, before any was imported) what a deleted study's events keep, once no study of that
    StudyInstanceUID is left: the UID names the patient's exam at the hospital. In the transaction `s` of a
    deletion or an erasure; one still holding a series of it keeps them, for they are about that study."""
    if s.scalar(select(Study.id).where(Study.study_uid == study_uid).limit(1)) is not None:
        return
    named = AuditEvent.details["study_uid"].as_string() == study_uid
    for event_ in s.scalars(select(AuditEvent).where(AuditEvent.study_id.is_(None), named)):
        event_.details = left_after_delete(event_.details or {})
