"""The segmentation quality score of a label version the server segmented, stored with the version
(Store.keep_quality): the same after a restart and for every server process on the database, not from one
process's memory.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("label_versions", sa.Column("quality", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    # Not batch mode (see 0005): SQLite 3.35+ drops a column in place, as PostgreSQL does.
    op.drop_column("label_versions", "quality")
