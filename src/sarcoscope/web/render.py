"""Windowed 8-bit PNG images of axial slices and coronal/sagittal reconstructions, for the browser viewer's
fallback (browsers without WebGL2) and the label editor. The window presets are imaging.views' (one home
for the CLI's images and the web app's)."""

from __future__ import annotations

import io

import numpy as np
from fastapi import HTTPException
from PIL import Image

from sarcoscope.imaging.views import WINDOW_PRESETS, window
from sarcoscope.imaging.volume import CTVolume


def preset_name(preset: str) -> str:
    """The preset's name in imaging.views ("soft-tissue" is accepted for "soft_tissue")."""
    return preset.replace("-", "_")


def presets() -> dict[str, tuple[float, float]]:
    """Window presets (level, width) in HU, by name, for the UI."""
    return dict(WINDOW_PRESETS)


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
    name = preset_name(preset)
    if name not in WINDOW_PRESETS:
        raise HTTPException(422, f"Unknown window preset '{preset}'. Available: {', '.join(WINDOW_PRESETS)}.")
    image = Image.fromarray(window(plane_image(volume, plane, index), name), mode="L")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
