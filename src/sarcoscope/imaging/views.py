"""Multiplanar reconstructions and display windowing, shared by QC images, the web viewer and reports.

Reconstructions are returned ready to show: superior at the top row, with the physical extent in mm so
that `imshow(image, extent=display_extent(volume, "coronal"))` draws true proportions even when slices
are 5 mm apart and pixels 0.7 mm wide.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sarcoscope.imaging.volume import CTVolume

#: Window presets as (level, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "spine": (150.0, 900.0),  # the vertebrae stand out from soft tissue in reconstructions (QC picture)
    "lung": (-600.0, 1500.0),
    "fat": (-110.0, 360.0),  # -290..70 HU: fat mid-grey, muscle near white, air black
    "muscle": (50.0, 250.0),
}

Plane = Literal["axial", "coronal", "sagittal"]
SlabMode = Literal["mip", "mean"]


def window(hu: np.ndarray, preset: str | tuple[float, float] = "soft_tissue") -> np.ndarray:
    """Map HU to uint8 grey levels with a named preset or a (level, width) pair."""
    if isinstance(preset, str):
        if preset not in WINDOW_PRESETS:
            raise ValueError(f"unknown window preset {preset!r}; choose one of {sorted(WINDOW_PRESETS)}")
        level, width = WINDOW_PRESETS[preset]
    else:
        level, width = (float(v) for v in preset)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    scaled = (np.asarray(hu, dtype=np.float32) - (level - width / 2.0)) * (255.0 / width)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _superior_first(image: np.ndarray, volume: CTVolume) -> np.ndarray:
    """Flip the z rows so that the most superior slice is the first (top) row."""
    return image[::-1] if float(np.asarray(volume.direction)[2, 2]) > 0 else image


def _slab(data: np.ndarray, axis: int, centre: int, half: int, mode: SlabMode) -> np.ndarray:
    lo, hi = max(0, centre - half), min(data.shape[axis], centre + half + 1)
    block = np.take(data, np.arange(lo, hi), axis=axis)
    if mode == "mip":
        return block.max(axis=axis)
    if mode == "mean":
        return block.mean(axis=axis, dtype=np.float32)
    raise ValueError(f"unknown slab mode {mode!r}; use 'mip' or 'mean'")


def body_centre(volume: CTVolume, bone_hu: float = 200.0) -> tuple[int, int]:
    """(y, x) index of the vertebral bodies, or of the body when no spine is visible, from a few slices.

    The vertebral column is the bone present in most slices near the body's left-right centre (the sternum
    and ribs are present in fewer slices or lie off-centre); its most anterior part at least 10 mm deep is
    the vertebral body, behind which lie the canal and the posterior elements.
    """
    hu = volume.hu
    step = max(1, hu.shape[0] // 48)
    sample = hu[::step]
    body = sample > -500
    if not body.any():
        return hu.shape[1] // 2, hu.shape[2] // 2
    ys, xs = np.nonzero(body.any(axis=0))
    cy, cx = int(np.median(ys)), int(np.median(xs))
    band = max(1, round(15.0 / volume.spacing[2]))  # +-15 mm around the midline
    x0, x1 = max(0, cx - band), min(hu.shape[2], cx + band + 1)
    bone_rows = (sample[:, :, x0:x1] > bone_hu).any(axis=2).sum(axis=0)  # slices with bone, per row y
    if bone_rows.max() < max(2, 0.3 * sample.shape[0]):
        return cy, cx
    frequent = bone_rows >= 0.6 * bone_rows.max()
    edges = np.diff(np.concatenate([[0], frequent.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))
    deep = [(a, b) for a, b in runs if (b - a) * volume.spacing[1] >= 10.0]
    start, stop = deep[0] if deep else max(runs, key=lambda r: r[1] - r[0])
    y_spine = int((start + stop - 1) // 2)
    bone_cols = np.nonzero((sample[:, y_spine, :] > bone_hu).any(axis=0))[0]
    x_spine = int(np.median(bone_cols)) if bone_cols.size else cx
    return y_spine, x_spine


def coronal(
    volume: CTVolume, y: int | None = None, *, slab_mm: float = 0.0, mode: SlabMode = "mip"
) -> np.ndarray:
    """Coronal plane (rows z superior->inferior, columns x) at row `y` (default: through the spine).

    `slab_mm` > 0 combines a slab that thick around `y` (maximum intensity by default, which shows the
    whole vertebral column even when the spine curves).
    """
    if y is None:
        y = body_centre(volume)[0]
    if not 0 <= y < volume.shape[1]:
        raise ValueError(f"y={y} is outside the volume (0..{volume.shape[1] - 1})")
    half = round(slab_mm / 2.0 / volume.spacing[1])
    image = volume.hu[:, y, :] if half == 0 else _slab(volume.hu, 1, y, half, mode)
    return _superior_first(image, volume)


def sagittal(
    volume: CTVolume, x: int | None = None, *, slab_mm: float = 0.0, mode: SlabMode = "mip"
) -> np.ndarray:
    """Sagittal plane (rows z superior->inferior, columns y anterior->posterior) at column `x`
    (default: through the spine); `slab_mm` as in `coronal`."""
    if x is None:
        x = body_centre(volume)[1]
    if not 0 <= x < volume.shape[2]:
        raise ValueError(f"x={x} is outside the volume (0..{volume.shape[2] - 1})")
    half = round(slab_mm / 2.0 / volume.spacing[2])
    image = volume.hu[:, :, x] if half == 0 else _slab(volume.hu, 2, x, half, mode)
    return _superior_first(image, volume)


def _pixel_mm(volume: CTVolume, plane: Plane) -> tuple[float, float]:
    """(height, width) in mm of one displayed pixel of `plane`."""
    dz, dy, dx = volume.spacing
    sizes = {"axial": (dy, dx), "coronal": (dz, dx), "sagittal": (dz, dy)}
    if plane not in sizes:
        raise ValueError(f"unknown plane {plane!r}; use 'axial', 'coronal' or 'sagittal'")
    return sizes[plane]


def display_extent(volume: CTVolume, plane: Plane) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) in mm for matplotlib's `imshow(image, extent=...)` (origin="upper")."""
    nz, ny, nx = volume.shape
    rows, cols = {"axial": (ny, nx), "coronal": (nz, nx), "sagittal": (nz, ny)}.get(plane, (0, 0))
    height, width = _pixel_mm(volume, plane)
    return (0.0, float(cols * width), 0.0, float(rows * height))


def display_aspect(volume: CTVolume, plane: Plane) -> float:
    """Pixel height / pixel width: the `aspect=` for imshow without an extent."""
    height, width = _pixel_mm(volume, plane)
    return height / width
