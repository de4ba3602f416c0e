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


@pytest.fixture(autouse=True, scope="session")
def _empty_model_registry(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test starts from an empty model registry, not the developer's (whose default may differ)."""
    import os

    from sarcoscope.segmentation.registry import MODELS_DIR_ENV

    os.environ[MODELS_DIR_ENV] = str(tmp_path_factory.mktemp("registry"))
