"""A role per user account (admin, editor, viewer); the accounts made before it are editors.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The server default fills in the existing rows: every account keeps doing what it did (an editor's
    # work), except deleting studies and reading the audit log, which are for admins from now on.
    op.add_column("users", sa.Column("role", sa.String(16), nullable=False, server_default="editor"))


def downgrade() -> None:
    # Not batch mode (SQLite 3.35+ drops a column in place, as PostgreSQL does): see 0003.
    op.drop_column("users", "role")
