"""Whether an axial slice is the right way up, read from the anatomy: the vertebra lies at the back.

Why: the reader turns images to the standard layout (front at the top) by their orientation metadata, but a
file whose metadata is wrong (a NIfTI written with the wrong affine or its axes swapped, a DICOM without
ImageOrientationPatient) arrives turned, and the U-Net, which learnt the front at the top, then measured the
real L3 slices' muscle far off while every number looked plausible: upside down -23 to +16 % (Dice
0.63-0.71 instead of 0.98), turned by a quarter or transposed -32 to +16 % (Dice 0.74-0.77). Left-right
mirroring needs nothing: the U-Net averages both mirror images, and the threshold engine finds its frame from
the vertebra (`vertebra`, this module's evidence too). The vertebra is not always the largest bone-bright
thing (enhanced kidneys, oral contrast), so this is only a screen: slices that do not look the right way up
are read by the U-Net in all four quarter turns and taken as it is surest of them
(UNetEngine._quarter_turns)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

#: Bone (HU, on a slice smoothed by `SMOOTH_MM`) for finding the vertebra.
BONE_HU = 200.0
#: Gaussian smoothing (mm) before the bone threshold: noise and thin cortex do not split a vertebra.
SMOOTH_MM = 0.8
#: The vertebra's centroid lies at 0.62-0.69 of the body's depth from its front on the nine real L3 slices,
#: at 0.53-0.82 from L5 to T10 of the real volume: slices whose median is not beyond this are checked by the
#: U-Net (which costs three more readings of them, not their labels).
UPRIGHT_BEYOND = 0.55


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


def looks_upright(slices: np.ndarray, bodies: Sequence[np.ndarray], spacing: tuple[float, float]) -> bool:
    """Whether a stack of axial slices (n, y, x) of one series, with their body masks, looks the right way
    up: the body wider than deep (a trunk is: 1.24-1.58 on the nine real L3 slices, 1.26-1.30 at the real
    volume's L3, over 1.3 on the phantoms; turned by a quarter, under 0.81) and, on at least half of them, a
    vertebra found whose median depth is beyond UPRIGHT_BEYOND."""
    widths = [_width_by_depth(body, spacing) for body in bodies if body.any()]
    if not widths or float(np.median(widths)) <= 1.0:
        return False
    found = [vertebra_depth(hu, body, spacing) for hu, body in zip(slices, bodies, strict=True)]
    depths = [d for d in found if d is not None]
    return 2 * len(depths) >= len(slices) and float(np.median(depths)) > UPRIGHT_BEYOND


def _width_by_depth(body: np.ndarray, spacing: tuple[float, float]) -> float:
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    return (cols[-1] - cols[0] + 1) * spacing[1] / ((rows[-1] - rows[0] + 1) * spacing[0])


TURNED_WARNING = (
    "The image is turned: the U-Net read it the right way up only once turned, so the file's orientation "
    "(NIfTI affine or DICOM ImageOrientationPatient) is likely wrong. The labels are in the image's own "
    "layout; check the source data's orientation (views and the L3 level read from it may be affected too)."
)
