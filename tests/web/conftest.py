"""Fixtures for the web app tests: a synthetic DICOM series and a TestClient on a fresh data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_synth import write_series

from sarcoscope.web import WebSettings, create_app


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_series(tmp_path / "series")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(WebSettings(data_dir=tmp_path / "data", max_upload_bytes=8 * 1024**2))
    with TestClient(app) as c:
        yield c
    app.state.ctx.store.close()
