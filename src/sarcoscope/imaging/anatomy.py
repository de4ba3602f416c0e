"""The trunk's layout on an axial slice, read from the anatomy: the body wider than deep, the vertebra at the
back. One home for what both the U-Net engine (segmentation.orientation: slices turned in their files) and the
L3 localizer (level.turns: volumes turned in their files) read, and the threshold engine's vertebra finder."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Bone (HU, on a slice smoothed by `SMOOTH_MM`) for finding the vertebra.
BONE_HU = 200.0
#: Gaussian smoothing (mm) before the bone threshold: noise and thin cortex do not split a vertebra.
SMOOTH_MM = 0.8


def vertebra(smooth: np.ndarray, body: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The vertebra: the largest bone (> BONE_HU) component in the middle third of the body's width, on a
    slice smoothed by SMOOTH_MM; empty when there is none of at least 2 cm²."""
    bone = (smooth > BONE_HU) & body
    lab, n = ndi.label(bone, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(body)
    xs = np.flatnonzero(body.any(axis=0))
    x0, x1 = xs[0], xs[-1]
    width = x1 - x0
    # each component's size and centroid column (center_of_mass's sums, in its order, without the rows)
    rows, cols = np.nonzero(bone)
    pieces = lab[rows, cols]
    sizes = np.bincount(pieces, minlength=n + 1)
    centroid_x = np.bincount(pieces, weights=cols.astype(float), minlength=n + 1) / np.maximum(sizes, 1)
    best, best_size = 0, 0.0
    for i in range(1, n + 1):
        if abs(centroid_x[i] - (x0 + x1) / 2) < width / 6 and sizes[i] > best_size:
            best, best_size = i, sizes[i]
    if best_size * spacing[0] * spacing[1] < 200.0:  # < 2 cm²: not a vertebra
        return np.zeros_like(body)
    return lab == best


def smoothed(hu: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The slice as `vertebra` reads it."""
    return ndi.gaussian_filter(hu, sigma=(SMOOTH_MM / spacing[0], SMOOTH_MM / spacing[1]))


def vertebra_depth(hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float]) -> float | None:
    """Where the vertebra (in the middle third of the body's width) lies between the body's first row (0)
    and its last (1); None without one. The right way up it is in the back: over one half."""
    rows = np.flatnonzero(body.any(axis=1))
    if rows.size < 2:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(None))
    found = vertebra(smoothed(hu[box].astype(np.float32), spacing), body[box], spacing)
    if not found.any():
        return None
    return float(np.nonzero(found)[0].mean() / (rows[-1] - rows[0]))


def width_by_depth(body: np.ndarray, spacing: tuple[float, float]) -> float:
    """The body's width (along x) over its depth (along y), in mm: a trunk the right way up is wider."""
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    return (cols[-1] - cols[0] + 1) * spacing[1] / ((rows[-1] - rows[0] + 1) * spacing[0])
