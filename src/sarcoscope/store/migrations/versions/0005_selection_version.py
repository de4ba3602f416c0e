"""Who changed a study's L3 selection, when, and how often: a change based on a selection changed since by
someone else is refused (Store.set_selection), as a stale label save is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = ("selection_version", "selection_by", "selection_at", "selection_editor")


def upgrade() -> None:
    op.add_column("studies", sa.Column("selection_version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("studies", sa.Column("selection_by", sa.String(128), nullable=True))
    op.add_column("studies", sa.Column("selection_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("studies", sa.Column("selection_editor", sa.String(64), nullable=True))


def downgrade() -> None:
    # Not batch mode: SQLite would copy the table and drop the old one, and the drop cascades to every label
    # version. SQLite 3.35+ drops a column in place, as PostgreSQL does.
    for column in reversed(_COLUMNS):
        op.drop_column("studies", column)
