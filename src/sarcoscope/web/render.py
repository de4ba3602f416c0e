"""Windowed 8-bit PNG images of axial slices and coronal/sagittal reconstructions, for the browser viewer."""

from __future__ import annotations

import io

import numpy as np
from fastapi import HTTPException
from PIL import Image

from sarcoscope.imaging.volume import CTVolume

#: Window presets (level, width) in HU.
PRESETS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "fat": (-100.0, 300.0),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def _window(hu: np.ndarray, preset: str) -> np.ndarray:
    level, width = PRESETS[preset]
    lo = level - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - lo) * (255.0 / width)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def plane_image(volume: CTVolume, plane: str, index: int) -> np.ndarray:
    """The HU plane; reconstructions are flipped so the most superior slice is the top row."""
    nz, ny, nx = volume.shape
    size = {"axial": nz, "coronal": ny, "sagittal": nx}[plane]
    if not 0 <= index < size:
        raise HTTPException(404, f"No {plane} image {index}: valid indices are 0..{size - 1}.")
    if plane == "axial":
        return volume.hu[index]
    if plane == "coronal":
        return volume.hu[::-1, index, :]
    return volume.hu[::-1, :, index]


def plane_png(volume: CTVolume, plane: str, index: int, preset: str) -> bytes:
    if preset not in PRESETS:
        raise HTTPException(422, f"Unknown window preset '{preset}'. Available: {', '.join(PRESETS)}.")
    image = Image.fromarray(_window(plane_image(volume, plane, index), preset), mode="L")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
