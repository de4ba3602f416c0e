"""Alembic environment: runs on the connection handed over by `Store.migrate` (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from sarcoscope.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
