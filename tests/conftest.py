"""Shared test fixtures. Real CT data lives in ../shared/data beside the repository (absent for users)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a reason when it is not there."""
    if not (SHARED_DATA / "real").is_dir():
        pytest.skip("needs ../shared/data (real CT data), absent on this machine")
    return SHARED_DATA
