"""Failures injected into phantom slices, to test that the segmentation quality score notices them.

Each returns a new HU slice; the trunk's reference labels still hold (what changed is outside the trunk or
is the acquisition), so a segmentation that changes is a failure of the segmenter.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.segmentation.refine import body_mask


def add_arms(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Both arms (muscle around a humerus, in a fat rim) pressed against the trunk at mid-height, as in a
    patient scanned with the arms down; the trunk's own pixels are unchanged."""
    out = hu.copy()
    yy, xx = np.indices(hu.shape)
    body = body_mask(hu, pixel_spacing)  # without the CT table
    cols = np.flatnonzero(body.any(axis=0))
    rows = np.flatnonzero(body.any(axis=1))
    cy, r = (rows[0] + rows[-1]) / 2 - 10 / pixel_spacing[0], 45 / pixel_spacing[0]
    for cx in (cols[-1] + 0.55 * r, cols[0] - 0.55 * r):
        d = ((yy - cy) / r) ** 2 + ((xx - cx) / (0.8 * r)) ** 2
        out[(d <= 1) & ~body] = -100.0
        out[(d <= 0.7) & ~body] = 55.0
        out[d <= 0.08] = 700.0
    return out


def injected_failures(hu: np.ndarray, pixel_spacing: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    """The clean slice and its injected failures by name: arms against the trunk, heavy noise (60 HU, a
    very low-dose scan), and the slice upside down (rows stored reversed or a prone patient)."""
    noise = np.random.default_rng(seed).normal(0, 60, hu.shape).astype(np.float32)
    return {
        "clean": hu,
        "arms": add_arms(hu, pixel_spacing),
        "noise": hu + noise,
        "flipped": hu[::-1].copy(),
    }
