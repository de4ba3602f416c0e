"""Synthetic L3-like label maps with exact geometry (shared by the validation tests)."""

from __future__ import annotations

import numpy as np

#: HU given to each label in the synthetic images (distinct, so a fake engine can decode them exactly).
LABEL_HU = {0: -1000.0, 1: 45.0, 2: -100.0, 3: -85.0, 4: -60.0}


def make_slice(
    a: float = 28, b: float = 21, sat: float = 4, muscle: float = 4, vat: float = 9, shape: int = 64
) -> np.ndarray:
    """Concentric ellipses: SAT ring, muscle ring (with IMAT spots), an organ, VAT inside; label ids 0..4."""
    yy, xx = np.mgrid[:shape, :shape].astype(float)
    cy = cx = (shape - 1) / 2

    def inside(ra: float, rb: float) -> np.ndarray:
        return ((xx - cx) / ra) ** 2 + ((yy - cy) / rb) ** 2 <= 1

    out = np.zeros((shape, shape), np.uint8)
    out[inside(a, b)] = 2
    out[inside(a - sat, b - sat)] = 1
    out[inside(a - sat - muscle, b - sat - muscle)] = 0
    out[inside(vat, vat * 0.75)] = 3
    out[(xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = 0  # an organ inside the VAT
    ring_y = int(cy + b - sat - muscle / 2)
    out[ring_y : ring_y + 2, int(cx) - 1 : int(cx) + 1] = 4  # IMAT pocket in the posterior muscle
    return out


def image_of(labels: np.ndarray) -> np.ndarray:
    """A HU image whose value identifies the label of each pixel (LABEL_HU; background is air, as in a CT)."""
    img = np.zeros(labels.shape, np.float32)
    for lab, hu in LABEL_HU.items():
        img[labels == lab] = hu
    return img


def decode_labels(image: np.ndarray) -> np.ndarray:
    """Inverse of image_of: the exact labels back from the HU values."""
    out = np.zeros(image.shape, np.uint8)
    for lab, hu in LABEL_HU.items():
        out[np.isclose(image, hu)] = lab
    return out


def build_cohort(n: int = 6, seed: int = 0) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(case id, site, prediction, reference) for 3 sites x n cases; site "C" labels muscle differently:
    its reference calls the outer 2 px of the muscle ring SAT (a thicker SAT convention)."""
    rng = np.random.default_rng(seed)
    out = []
    for site in ("A", "B", "C"):
        for i in range(n):
            a, b = 26 + rng.integers(0, 4), 19 + rng.integers(0, 3)
            ref = make_slice(a, b, sat=4 + (2 if site == "C" else 0), muscle=5 - (2 if site == "C" else 0))
            pred = make_slice(
                a + rng.integers(-1, 2) * 0.5, b, sat=4 + rng.integers(-1, 2) * 0.5, muscle=5, vat=9
            )
            out.append((f"{site}{i:02d}", site, pred, ref))
    return out
