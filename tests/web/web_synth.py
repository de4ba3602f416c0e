"""A small synthetic CT series written as DICOM, with exactly known HU, for the web app tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from sarcoscope.imaging import CTMetadata, write_dicom_series

SHAPE = (12, 96, 96)
SPACING = (3.0, 4.0, 4.0)


def synthetic_hu(seed: int = 0) -> np.ndarray:
    """An elliptic 'abdomen': SAT ring, muscle ring, visceral fat and organs, a bright vertebra."""
    nz, ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    r = np.sqrt(((yy - ny / 2) / 34.0) ** 2 + ((xx - nx / 2) / 44.0) ** 2)
    hu = np.full((ny, nx), -1000, np.int16)
    hu[r < 1.0] = -100  # SAT
    hu[r < 0.85] = 50  # muscle wall
    hu[r < 0.72] = -90  # visceral fat
    organs = np.sqrt(((yy - ny / 2 + 6) / 14.0) ** 2 + ((xx - nx / 2) / 22.0) ** 2) < 1.0
    hu[organs] = 40
    spine = np.sqrt(((yy - ny / 2 - 14) / 6.0) ** 2 + ((xx - nx / 2) / 6.0) ** 2) < 1.0
    hu[spine] = 700
    noise = np.random.default_rng(seed).integers(-4, 5, size=(nz, ny, nx))
    return (hu[None] + noise).astype(np.int16)


def write_series(
    out: Path, seed: int = 0, patient_id: str = "PAT-001", hu: np.ndarray | None = None
) -> list[Path]:
    """The synthetic series (or `hu`, e.g. one of its slices) as DICOM files in `out`."""
    meta = CTMetadata(
        patient_id=patient_id, patient_sex="F", study_date="20240131", series_description="synthetic"
    )
    hu = synthetic_hu(seed) if hu is None else hu
    return write_dicom_series(hu, SPACING, out, metadata=meta, seed=seed)


def zip_bytes(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
    return buf.getvalue()


def multipart(files: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f.name, f.read_bytes(), "application/dicom")) for f in files]
