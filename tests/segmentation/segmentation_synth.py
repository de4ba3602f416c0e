"""A simple synthetic L3-like slice drawn in millimetres, with exact labels, for the segmentation tests.

Anatomy (mm, y grows posterior): skin, subcutaneous fat, a 10 mm muscle wall ring, visceral fat, a vertebra
with its arch and canal, psoas and paraspinal muscles (one with a fat pocket = IMAT), enhanced kidneys, two
gas-filled bowel loops, and a curved CT table under the body. Labels follow the reference protocol: the
drawn compartment decides where a tissue may be, the final HU decides whether the pixel is labelled.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.conventions import DEFAULT_HU_RANGES, Label


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def synthetic_abdomen(
    pixel_spacing: tuple[float, float] = (0.75, 0.75),
    size: tuple[int, int] = (512, 512),
    *,
    table_gap_mm: float = 8.0,
    noise_hu: float = 8.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(hu float32 (y, x), labels uint8 (y, x), masks) on the given grid; masks: 'body' and 'table'."""
    ny, nx = size
    yy, xx = np.indices(size, dtype=float)
    yy = (yy - ny / 2) * pixel_spacing[0]
    xx = (xx - nx / 2) * pixel_spacing[1]

    body = _ellipse(yy, xx, 0, 0, 115, 160)
    skin = body & ~_ellipse(yy, xx, 0, 0, 113, 158)
    wall_outer = _ellipse(yy, xx, 0, 0, 92, 135)
    wall_inner = _ellipse(yy, xx, 0, 0, 82, 125)
    cavity = wall_inner

    vertebral_body = _ellipse(yy, xx, 40, 0, 18, 22)
    arch = _ellipse(yy, xx, 68, 0, 12, 12) & ~_ellipse(yy, xx, 68, 0, 7, 7)
    spinous = (yy > 78) & (yy < 95) & (np.abs(xx) < 3)
    bone = vertebral_body | arch | spinous
    canal = _ellipse(yy, xx, 68, 0, 7, 7)
    psoas = (_ellipse(yy, xx, 32, -36, 15, 15) | _ellipse(yy, xx, 32, 36, 15, 15)) & ~bone
    paraspinal = (_ellipse(yy, xx, 76, -26, 18, 26) | _ellipse(yy, xx, 76, 26, 18, 26)) & ~bone & ~canal
    fat_pocket = _ellipse(yy, xx, 80, -32, 3, 3)  # IMAT inside the left paraspinal muscle
    kidneys = _ellipse(yy, xx, 30, -85, 28, 18) | _ellipse(yy, xx, 30, 85, 28, 18)
    bowel = _ellipse(yy, xx, -45, -40, 16, 16) | _ellipse(yy, xx, -45, 40, 16, 16)
    gas = _ellipse(yy, xx, -45, -40, 12, 12) | _ellipse(yy, xx, -45, 40, 12, 12)
    muscle_comp = (wall_outer & ~wall_inner) | psoas | paraspinal
    table_y = 115 + table_gap_mm + xx**2 / 900.0
    table = (yy >= table_y) & (yy <= table_y + 3) & ~body

    rng = np.random.default_rng(seed)
    hu = np.full(size, -1024.0)
    hu[body] = -100.0  # SAT and VAT
    hu[skin] = 30.0
    hu[muscle_comp] = 50.0
    hu[fat_pocket] = -90.0
    hu[kidneys] = 180.0
    hu[bowel] = 40.0
    hu[gas] = -1000.0
    hu[bone] = 400.0
    hu[canal] = 15.0
    hu[table] = 200.0
    hu += rng.normal(0.0, noise_hu, size)
    hu[~(body | table)] = -1024.0  # out-of-field and air without noise, like padded CT

    r = DEFAULT_HU_RANGES
    in_muscle_hu = (hu >= r.muscle[0]) & (hu <= r.muscle[1])
    in_fat_hu = (hu >= r.sat[0]) & (hu <= r.sat[1])
    organs = kidneys | bowel | bone | canal
    labels = np.zeros(size, dtype=np.uint8)
    labels[body & ~skin & ~wall_outer & in_fat_hu] = Label.SAT
    labels[cavity & ~organs & ~muscle_comp & in_fat_hu] = Label.VAT
    labels[muscle_comp & ~fat_pocket & in_muscle_hu] = Label.MUSCLE
    labels[(fat_pocket | muscle_comp) & in_fat_hu] = Label.IMAT
    return hu.astype(np.float32), labels, {"body": body, "table": table}
