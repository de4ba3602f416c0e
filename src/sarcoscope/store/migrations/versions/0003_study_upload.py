"""The upload a study came from, so that another series of one upload can be opened without uploading again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("studies", sa.Column("upload_id", sa.String(32), nullable=True))
    op.create_index("ix_studies_upload_id", "studies", ["upload_id"])


def downgrade() -> None:
    op.drop_index("ix_studies_upload_id", table_name="studies")
    # Not batch mode: SQLite would copy the table and drop the old one, and the drop cascades to every label
    # version. SQLite 3.35+ drops a column in place, as PostgreSQL does.
    op.drop_column("studies", "upload_id")
