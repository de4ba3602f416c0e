"""Alembic migrations of the web app's database (run by `sarcoscope.store.Store.migrate`)."""
