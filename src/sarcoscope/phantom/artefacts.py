"""Failures and hardware injected into phantoms, to test that the quality score and the L3 localizer
notice them.

Each returns new HU values; the reference labels still hold (what changed is outside the trunk, the
acquisition or metal in the bone), so an output that changes is a failure of the method under test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sarcoscope.segmentation.body import body_mask

if TYPE_CHECKING:
    from sarcoscope.phantom.volume import PhantomVolume


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
    """The clean slice and its injected failures by name: arms against the trunk (which the segmentation
    cuts off since refinement v6: a check that they change nothing), heavy noise (60 HU, a very low-dose
    scan), and the slice upside down (rows stored reversed or a prone patient)."""
    noise = np.random.default_rng(seed).normal(0, 60, hu.shape).astype(np.float32)
    return {
        "clean": hu,
        "arms": add_arms(hu, pixel_spacing),
        "noise": hu + noise,
        "flipped": hu[::-1].copy(),
    }


def add_pedicle_screws(pv: PhantomVolume, vertebrae: tuple[str, ...] = ("L4", "L5")) -> np.ndarray:
    """The phantom's HU volume with two 3000 HU pedicle screws in each named vertebra, and the radial
    streaks (±150 HU, fading over 60 pixels) that metal casts through the slices it lies in: a spinal
    fusion, whose streaks join the vertebra to the iliac wings."""
    hu = pv.hu.astype(np.float32)
    yy, xx = np.indices(hu.shape[1:])
    for name in vertebrae:
        v = pv.truth["vertebrae"][name]
        for k in range(v["first_index"] + 1, v["last_index"]):
            body = pv.vertebra_labels[k] == pv.truth["vertebra_ids"][name]
            if not body.any():
                continue
            ys, xs = np.nonzero(body)
            cy, cx = ys.mean(), xs.mean()
            for side in (-1, 1):  # from the pedicles forward into the body
                for f in np.linspace(0, 1, 40):
                    y, x = round(cy + 12 - 18 * f), round(cx + side * (9 - 5 * f))
                    hu[k, y - 1 : y + 2, x - 1 : x + 2] = 3000.0
            angle = np.arctan2(yy - cy, xx - cx)
            hu[k] += 150.0 * np.cos(8 * angle) * np.exp(-np.hypot(yy - cy, xx - cx) / 60.0)
    return hu
