"""Shared test fixtures. Real CT data lives in ../shared/data beside the repository (absent for users)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def _write_tag(path: Path, tags: np.ndarray, header: str | None = None) -> Path:
    if header is None:
        header = f"x:{tags.shape[-1]} y:{tags.shape[-2]} z:1 type:BYTE\r\n"
    path.write_bytes(header.encode("ascii") + b"\x0c" + np.ascontiguousarray(tags, np.uint8).tobytes())
    return path


@pytest.fixture(scope="session")
def write_tag() -> Callable[..., Path]:
    """write_tag(path, tags, header=None): a Slice-O-Matic TAG file with a known layout, as Slice-O-Matic
    writes it: ASCII header lines (CR LF; default: the size), a form feed, then one byte per pixel."""
    return _write_tag


#: Project label id -> Slice-O-Matic Alberta tag (the inverse of the built-in `slice-o-matic-alberta`).
ALBERTA_TAG = np.array([0, 1, 7, 5, 2], dtype=np.uint8)


@pytest.fixture(scope="session")
def alberta_tags() -> Callable[[np.ndarray], np.ndarray]:
    """Project label ids -> the Alberta-protocol tags Slice-O-Matic would store for them."""
    return lambda labels: ALBERTA_TAG[labels]
