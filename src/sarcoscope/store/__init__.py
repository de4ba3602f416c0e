"""Persistence for the web app: SQLAlchemy database (SQLite default, PostgreSQL by URL), CT files by UID."""

from sarcoscope.store.accounts import check_role
from sarcoscope.store.errors import (
    ConflictError,
    NotFoundError,
    SelectionConflictError,
    StaleVersionError,
    StorageError,
    StoreError,
)
from sarcoscope.store.labels import LabelStack
from sarcoscope.store.models import (
    DEFAULT_ROLE,
    ROLES,
    AuditEvent,
    LabelVersion,
    LoginSession,
    Role,
    Study,
    User,
    as_utc,
)
from sarcoscope.store.store import Store
from sarcoscope.store.studies import is_dicom_uid, new_study_id

__all__ = [
    "DEFAULT_ROLE",
    "ROLES",
    "AuditEvent",
    "ConflictError",
    "LabelStack",
    "LabelVersion",
    "LoginSession",
    "NotFoundError",
    "Role",
    "SelectionConflictError",
    "StaleVersionError",
    "StorageError",
    "Store",
    "StoreError",
    "Study",
    "User",
    "as_utc",
    "check_role",
    "is_dicom_uid",
    "new_study_id",
]
