"""Fixtures for the web app tests: a synthetic DICOM series and a TestClient on a fresh data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from web_synth import write_series

from sarcoscope.web import WebSettings, create_app


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_series(tmp_path / "series")


#: Run the API tests on this PostgreSQL database instead of SQLite (its public schema is wiped).
POSTGRES_URL = os.environ.get("SARCOSCOPE_TEST_DATABASE_URL")


def _fresh_database() -> str | None:
    if not POSTGRES_URL:
        return None
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="module")
def module_database_url() -> str | None:
    """A fresh database for the tests of one module that share a server (None: SQLite)."""
    return _fresh_database()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = WebSettings(
        data_dir=tmp_path / "data", database_url=_fresh_database(), max_upload_bytes=8 * 1024**2
    )
    app = create_app(settings)
    with TestClient(app) as c:
        yield c
    app.state.ctx.store.close()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inodes flushed to disk (os.fsync) from now on, in order: a file's inode is the same after a
    rename, so a test can tell whether what a commit relies on was on the disk before it."""
    fsync, synced = os.fsync, []

    def recorded_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    return synced
