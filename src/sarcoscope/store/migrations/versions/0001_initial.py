"""Initial schema: studies, label versions, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(128)),
        sa.Column("study_date", sa.String(16)),
        sa.Column("series_description", sa.String(256)),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("n_slices", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("cols", sa.Integer, nullable=False),
        sa.Column("spacing", sa.JSON, nullable=False),
        sa.Column("upload_bytes", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("selection", sa.JSON),
        sa.Column("localization", sa.JSON),
        sa.Column("patient", sa.JSON),
    )
    op.create_table(
        "label_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.String(32), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("parent_version", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(64)),
        sa.Column("model_id", sa.String(256)),
        sa.Column("indices", sa.JSON, nullable=False),
        sa.Column("shape", sa.JSON, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("study_id", "version", name="uq_label_versions_study_version"),
    )
    op.create_index("ix_label_versions_study_id", "label_versions", ["study_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(32)),
        sa.Column("details", sa.JSON),
        sa.Column("client", sa.String(64)),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_study_id", "audit_events", ["study_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("label_versions")
    op.drop_table("studies")
