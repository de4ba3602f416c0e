"""Small synthetic CT volumes with known content, written as DICOM by the project's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def make_volume(nz: int = 6, ny: int = 24, nx: int = 20, seed: int = 0) -> np.ndarray:
    """Air around a soft-tissue ellipse; every slice differs (value encodes z) and a bone marker sits in
    the corner of low y and low x, so order and orientation errors are visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    body = ((yy - ny / 2) / (ny * 0.4)) ** 2 + ((xx - nx / 2) / (nx * 0.4)) ** 2 <= 1
    hu = np.full((nz, ny, nx), -1000, dtype=np.int16)
    for z in range(nz):
        hu[z][body] = 10 * z + rng.integers(0, 5, size=int(body.sum()))
    hu[:, 1:3, 1:4] = 700  # bone marker: anterior (low y), patient right (low x)
    return hu


@pytest.fixture
def volume_hu() -> np.ndarray:
    return make_volume()


@pytest.fixture
def series_dir(tmp_path: Path, volume_hu: np.ndarray) -> Path:
    """A plain 6-slice series (2.5 mm slices, 0.8 mm pixels) in tmp_path/series."""
    from sarcoscope.imaging import write_dicom_series

    out = tmp_path / "series"
    write_dicom_series(volume_hu, (2.5, 0.8, 0.8), out, origin=(-8.0, -9.6, 100.0), seed=1)
    return out


@pytest.fixture
def volume_factory():
    """`make_volume` for tests that need other shapes."""
    return make_volume
