"""Persistence for the web app: SQLAlchemy database (SQLite default, PostgreSQL by URL), CT files by UID."""

from sarcoscope.store.models import AuditEvent, LabelVersion, LoginSession, Study, User
from sarcoscope.store.store import (
    ConflictError,
    LabelStack,
    NotFoundError,
    SelectionConflictError,
    StaleVersionError,
    StorageError,
    Store,
    StoreError,
    as_utc,
    is_dicom_uid,
    new_study_id,
)

__all__ = [
    "AuditEvent",
    "ConflictError",
    "LabelStack",
    "LabelVersion",
    "LoginSession",
    "NotFoundError",
    "SelectionConflictError",
    "StaleVersionError",
    "StorageError",
    "Store",
    "StoreError",
    "Study",
    "User",
    "as_utc",
    "is_dicom_uid",
    "new_study_id",
]
