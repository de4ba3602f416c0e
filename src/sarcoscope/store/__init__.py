"""Persistence for the web app: SQLAlchemy database (SQLite default, PostgreSQL by URL), CT files by UID."""

from sarcoscope.store.models import AuditEvent, LabelVersion, Study
from sarcoscope.store.store import (
    ConflictError,
    LabelStack,
    NotFoundError,
    StaleVersionError,
    Store,
    StoreError,
    is_dicom_uid,
    new_study_id,
)

__all__ = [
    "AuditEvent",
    "ConflictError",
    "LabelStack",
    "LabelVersion",
    "NotFoundError",
    "StaleVersionError",
    "Store",
    "StoreError",
    "Study",
    "is_dicom_uid",
    "new_study_id",
]
