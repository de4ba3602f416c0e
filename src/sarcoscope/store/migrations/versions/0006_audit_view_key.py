"""Which sitting was shown what (a keyed digest) on the audit events that say so: whether a look is a new
view in the audit log is read from the log itself (Store.audit_view), the same after a restart and for every
server process on the database, not from one process's memory.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("view_key", sa.String(64), nullable=True))
    op.create_index("ix_audit_events_view_key", "audit_events", ["view_key"])


def downgrade() -> None:
    # Not batch mode (see 0005): SQLite 3.35+ drops a column in place, as PostgreSQL does.
    op.drop_index("ix_audit_events_view_key", table_name="audit_events")
    op.drop_column("audit_events", "view_key")
