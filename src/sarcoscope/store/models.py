"""Database tables of the web app: studies, append-only label versions, the audit log, user accounts,
login sessions and failed-login counters.

The schema is created and upgraded only by the Alembic migrations in `store/migrations` (never by
`create_all`), so a PostgreSQL deployment and a SQLite data folder evolve the same way.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: The roles of the web app's accounts, from most to least allowed (sarcoscope.web.roles: what each may do).
Role = Literal["admin", "editor", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "editor", "viewer")
#: A new account's role, and that of every account made before roles existed (migration 0004).
DEFAULT_ROLE: Role = "editor"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(when: dt.datetime) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite returns the stored UTC times without a zone)."""
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class Study(Base):
    """One uploaded CT series, its files on disk (by UID), the L3 selection and the patient facts."""

    __tablename__ = "studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(128))
    study_date: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(256))
    source_kind: Mapped[str] = mapped_column(String(16))
    n_slices: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    cols: Mapped[int] = mapped_column(Integer)
    spacing: Mapped[list[float]] = mapped_column(JSON)  # (z, y, x) mm
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # uploaded | segmented | edited
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    #: {"mode": "range"|"slice", "first": int, "last": int} — "slice" has first == last.
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: Counts the changes of `selection`: a change names the one it started from (Store.set_selection).
    selection_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Who chose the selection, and when (None: nobody, or the localizer proposed it).
    selection_by: Mapped[str | None] = mapped_column(String(128))
    selection_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The page sitting that chose it (a random id the page makes when it loads): its next changes, sent
    #: before the answer to this one came, are not a conflict with it.
    selection_editor: Mapped[str | None] = mapped_column(String(64))
    #: The automatic localizer's result (L3Localization.as_dict()) or {"error": message}.
    localization: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: {"height_cm", "weight_kg", "sex", "cutoff_set"}; values may be None.
    patient: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The upload whose other series are kept (`uploads/<id>/`) to be opened as studies of their own; None
    #: when the upload held this series only.
    upload_id: Mapped[str | None] = mapped_column(String(32), index=True)


class LabelVersion(Base):
    """One saved label map stack; rows are only ever added (a restore adds a copy)."""

    __tablename__ = "label_versions"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_label_versions_study_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    author: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64))  # "segment", "edit", "restore", "import"
    engine: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(256))
    indices: Mapped[list[int]] = mapped_column(JSON)
    shape: Mapped[list[int]] = mapped_column(JSON)  # (n, y, x)
    data: Mapped[bytes] = mapped_column(LargeBinary)  # zlib-compressed uint8, C order
    sha256: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    #: The segmentation quality score of a version the server segmented (QualityAssessment.to_dict), stored
    #: once its background computation ends (Store.keep_quality), or why that failed ({"failed": reason}, no
    #: patient data); None: not scored, or not yet.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class AuditEvent(Base):
    """Who did what to which study, when; kept when a study is deleted (no foreign key)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    client: Mapped[str | None] = mapped_column(String(64))
    #: A view's sitting and what it was shown, as a digest keyed by the sitting's secret
    #: (web.auth.Authenticator.view_key): a look at the same within the half hour after it is not a new event
    #: (Store.audit_view).
    view_key: Mapped[str | None] = mapped_column(String(64), index=True)


class User(Base):
    """An account of the web app; the password is stored only as an Argon2 hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Failed logins since the last successful one (counted here, not one audit event each).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: One of ROLES; read at every request, so that a change applies to the user's open sessions at once.
    role: Mapped[str] = mapped_column(String(16), default=DEFAULT_ROLE, server_default=DEFAULT_ROLE)


class LoginSession(Base):
    """A login: the browser holds a random token, the database only its SHA-256 (`id`).

    Logging out deletes the row, so a copied cookie stops working at once. `realm` is the way the
    session was granted ("account", "open", or "token:" plus a digest of the access token): a session
    is only honoured by a server running in the same realm, so changing the token or adding accounts
    ends the sessions granted before.
    """

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    realm: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    client: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """Failed logins of one user name or one client address in the current throttling window."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)  # "user:<name>" or "client:<address>"
    count: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
