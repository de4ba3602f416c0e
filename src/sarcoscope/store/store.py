"""Persistence of the web app: database (SQLAlchemy, SQLite by default) plus CT files on disk by UID.

Label versions are append-only: a save names the version it was based on, and is refused with
`StaleVersionError` when someone else saved in between (optimistic concurrency, no silent overwrite).
Every change goes through a method here that also writes an audit event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from sarcoscope.errors import SarcoscopeError
from sarcoscope.store.models import AuditEvent, LabelVersion, Study

#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Only such strings become folder names.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_STUDY_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class StoreError(SarcoscopeError):
    """A request the store cannot carry out; the web layer maps subclasses to HTTP status codes."""


class NotFoundError(StoreError):
    """No study / label version with that id."""


class ConflictError(StoreError):
    """The request conflicts with what is stored (duplicate series, stale label version)."""


class StaleVersionError(ConflictError):
    """A save based on a label version that is no longer the latest."""

    def __init__(self, message: str, latest: int | None) -> None:
        super().__init__(message)
        self.latest = latest


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
    cursor.close()


class Store:
    """The data folder (`ct/<StudyUID>/<SeriesUID>/` files) and the database (default: `sarcoscope.db`)."""

    def __init__(self, data_dir: str | Path, database_url: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        url = database_url or f"sqlite:///{self.data_dir / 'sarcoscope.db'}"
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    # -- schema -------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the database schema to the newest version shipped with this release (Alembic)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    def schema_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()

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

    def new_tmp_dir(self) -> Path:
        path = self.data_dir / "tmp" / uuid.uuid4().hex
        path.mkdir()
        return path

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
        """Record an event that changes nothing in the database (downloads, exports, logins)."""
        with self.session() as s:
            self._audit(s, actor, action, study_id, details, client)

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
                raise ConflictError(
                    f"Series {study.series_uid} was already uploaded (study {existing.id}); open it instead."
                )
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

    def find_series(self, series_uid: str) -> Study | None:
        with self.session() as s:
            return s.scalar(select(Study).where(Study.series_uid == series_uid))

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
            if query:
                like = f"%{query.strip()}%"
                q = q.where(
                    or_(
                        Study.patient_id.ilike(like),
                        Study.series_description.ilike(like),
                        Study.study_date.ilike(like),
                        Study.id.ilike(like),
                        Study.series_uid.ilike(like),
                    )
                )
            return list(s.scalars(q))

    def update_study(
        self, study_id: str, actor: str, action: str, client: str | None = None, **fields: Any
    ) -> Study:
        """Change study fields (selection, localization, patient, status) and audit the new values."""
        allowed = {"selection", "localization", "patient", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update study fields {sorted(unknown)}")
        with self.session() as s:
            study = s.get(Study, study_id)
            if study is None:
                raise NotFoundError(f"No study with id '{study_id}'.")
            for key, value in fields.items():
                setattr(study, key, value)
            details = {k: v for k, v in fields.items() if k != "localization"}
            self._audit(s, actor, action, study_id, details or None, client)
        return study

    def delete_study(self, study_id: str, actor: str, client: str | None = None) -> Study:
        """Remove the study's rows (label versions cascade); the caller removes its files."""
        with self.session() as s:
            study = s.get(Study, study_id)
            if study is None:
                raise NotFoundError(f"No study with id '{study_id}'.")
            for row in s.scalars(select(LabelVersion).where(LabelVersion.study_id == study_id)):
                s.delete(row)
            s.delete(study)
            self._audit(s, actor, "delete-study", study_id, {"series_uid": study.series_uid}, client)
        return study

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
                latest_row = s.scalar(
                    select(LabelVersion)
                    .where(LabelVersion.study_id == study_id)
                    .order_by(LabelVersion.version.desc())
                    .limit(1)
                )
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
        except IntegrityError:
            latest = self.latest_version(study_id)
            raise StaleVersionError(
                f"Another save of study {study_id} committed at the same moment (now at version {latest}); "
                "reload the labels and apply your edit again.",
                latest,
            ) from None
        return row


def _stale_message(base: int | None, latest: LabelVersion | None) -> str:
    if latest is None:
        return f"Your edit is based on label version {base}, but this study has no label versions."
    when = latest.created_at
    when_text = when.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(when, dt.datetime) else str(when)
    base_text = "no labels" if base is None else f"version {base}"
    return (
        f"Not saved: your edit is based on {base_text}, but version {latest.version} was saved by "
        f"{latest.author} at {when_text}. Reload to see their changes, then edit again."
    )
