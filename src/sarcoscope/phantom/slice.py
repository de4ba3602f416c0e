"""One synthetic L3 axial slice with exact labels: the unit of training data and of most tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarcoscope.conventions import DEFAULT_HU_RANGES, TISSUES, Label
from sarcoscope.phantom.anatomy import Anatomy, add_bowel, build_anatomy
from sarcoscope.phantom.habitus import Exam, Habitus
from sarcoscope.phantom.render import (
    IMAT,
    MUS,
    MUS_ES,
    MUS_PS,
    SAT,
    VAT,
    Grid,
    body_box,
    hu_table,
    render_outline,
    render_section,
    synthesize,
)

LABEL_DEFINITION = (
    "HU thresholds inside compartments on the final (blurred + noisy) image: muscle = muscle compartment "
    "(incl. its fat pockets, plus fat pixels touching muscle) with HU in the muscle range; SAT/VAT/IMAT = "
    "pixels with HU in the adipose range taking the compartment of the fat they belong to (edge pixels of "
    "soft tissue take the fat within 2 px, skin pixels reading as fat are SAT; muscle pixels with fat HU "
    "and no fat nearby are IMAT). Fat behind the vertebral body inside the thoracolumbar fascia (around the "
    "posterior arch, between psoas and the paraspinals) is IMAT, the midline notch fat behind the "
    "supraspinous ligament SAT. Bowel contents, organs, vessels, bone, the spinal canal (incl. epidural "
    "fat), skin (unless it reads as fat), fascia (linea alba/semilunaris) and the table are never labelled."
)

_GEOMETRIC = {"muscle": (MUS, MUS_PS, MUS_ES), "sat": (SAT,), "vat": (VAT,), "imat": (IMAT,)}


@dataclass
class PhantomSlice:
    """A synthetic axial CT slice (HU, y x) with its label map and the ground truth it was built from."""

    hu: np.ndarray  # float32 (y, x) HU
    labels: np.ndarray  # uint8 (y, x): sarcoscope.conventions.Label ids
    pixel_spacing: tuple[float, float]  # (y, x) mm
    truth: dict[str, Any] = field(default_factory=dict)
    habitus: Habitus | None = None


def _spacing(value: float | tuple[float, float] | None, default: float) -> tuple[float, float]:
    if value is None:
        return (default, default)
    if isinstance(value, int | float):
        v = float(value)
        out = (v, v)
    else:
        out = (float(value[0]), float(value[1]))
    if min(out) <= 0:
        raise ValueError(f"pixel_spacing must be positive, got {value!r}")
    return out


def body_extent(anat: Anatomy, z: float) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of the body outline at `z` (mm, body frame), from a coarse rendering."""
    x0, x1, y0, y1 = body_box(anat, np.array([z]))
    step = 3.0
    coarse = Grid(
        step, step, np.arange(x0, x1, step, dtype=np.float32), np.arange(y0, y1, step, dtype=np.float32)
    )
    body = render_outline(anat, z, coarse)
    rows, cols = np.nonzero(body)
    if rows.size == 0:
        return (x0, x1, y0, y1)
    return (
        float(coarse.x[cols.min()]) - step,
        float(coarse.x[cols.max()]) + step,
        float(coarse.y[rows.min()]) - step,
        float(coarse.y[rows.max()]) + step,
    )


def place_grid(
    anat: Anatomy, z: float, size: int, spacing: tuple[float, float] | None, rng: np.random.Generator
) -> Grid:
    """Pixel spacing (if not given) so the body fills the field like a clinical scan, body above the table."""
    x0, x1, y0, y1 = body_extent(anat, z)
    if spacing is None:
        fov = (x1 - x0) * rng.uniform(1.05, 1.3)
        ps = float(np.clip(fov / size, 0.55 * 512 / size, 0.98 * 512 / size))
        spacing = (ps, ps)
    psy, psx = spacing
    cx = (x0 + x1) / 2 + rng.uniform(-0.03, 0.03) * size * psx
    cy = (y0 + y1) / 2 - rng.uniform(-0.02, 0.08) * size * psy
    return Grid.make(size, psy, psx, cx, cy)


def area_and_means(
    hu: np.ndarray, labels: np.ndarray, spacing: tuple[float, float]
) -> tuple[dict[str, float], dict[str, float | None]]:
    px_cm2 = spacing[0] * spacing[1] / 100.0
    areas, means = {}, {}
    for name, lab in TISSUES.items():
        m = labels == lab
        areas[name] = round(float(m.sum()) * px_cm2, 3)
        means[name] = round(float(hu[m].mean()), 2) if m.any() else None
    return areas, means


def make_slice(
    seed: int,
    *,
    size: int = 512,
    pixel_spacing: float | tuple[float, float] | None = None,
    habitus: Habitus | None = None,
    noise_hu: float | None = None,
    contrast: str | None = None,
    z_offset: float | None = None,
) -> PhantomSlice:
    """A synthetic L3 axial slice, deterministic for `seed`.

    `pixel_spacing` (mm, a number or (y, x)) defaults to a field of view that fits the body with a random
    margin; `habitus` and `noise_hu` default to random draws; `contrast` forces "none" | "arterial" |
    "portal"; `z_offset` (fraction of the L3 body height from its centre, -0.5..0.5) fixes the level, which
    is otherwise drawn within the middle 60 % of L3.
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    rng = np.random.default_rng([seed, 2])
    exam = Exam.sample(np.random.default_rng([seed, 3]), noise_hu=noise_hu).with_contrast(contrast)
    anat = build_anatomy(seed, habitus, exam, "normal")
    # variants of the L3 anatomy that real slices show; volumes keep the defaults, so the phantom volumes
    # the L3 localizer was validated on stay as they were
    shape_rng = np.random.default_rng([seed, 7])
    anat.psoas_shape = (float(shape_rng.uniform(-0.1, 0.6)), float(shape_rng.uniform(0.9, 1.35)))
    l3 = anat.l3
    frac = float(rng.uniform(-0.3, 0.3)) if z_offset is None else float(z_offset)
    z = l3.z_mid + frac * l3.height
    add_bowel(anat, z - 40, z + 40, np.random.default_rng([seed, 4]))
    spacing = _spacing(pixel_spacing, 0.0) if pixel_spacing is not None else None
    grid = place_grid(anat, z, size, spacing, rng)
    sec = render_section(anat, z, grid, rng)
    mean, tex = hu_table(anat, rng)
    cls_geo = sec.cls.copy()
    hu, labels = synthesize(sec.cls, mean, tex, anat, rng)
    ps = (grid.psy, grid.psx)
    truth = slice_truth(hu, labels, cls_geo, ps, mean, anat)
    truth.update(level="L3", z_mm=round(z, 2), l3_fraction=round(frac, 3), seed=seed)
    truth["landmarks_px"] = landmarks_px(sec.landmarks, grid)
    return PhantomSlice(hu=hu, labels=labels, pixel_spacing=ps, truth=truth, habitus=anat.habitus)


def landmarks_px(landmarks: dict[str, float] | None, grid: Grid) -> dict[str, Any]:
    """Spine and paraspinal landmarks in (fractional) pixel rows/columns of the image.

    The posterior compartment (behind the vertebral body, inside the thoracolumbar fascia) spans, from
    `vertebral_body_posterior_row`, the columns between the erector spinae centres down to
    `paraspinal_centre_row`, then between their lateral edges: no VAT lies there (reference convention).
    """
    if landmarks is None:
        return {}

    def col(x: float) -> float:
        return round((x - float(grid.x[0])) / grid.psx, 2)

    def row(y: float) -> float:
        return round((y - float(grid.y[0])) / grid.psy, 2)

    cx, lx = landmarks["paraspinal_centre_x"], landmarks["paraspinal_lateral_x"]
    return {
        "midline_col": col(0.0),
        "vertebral_body_posterior_row": row(landmarks["vertebral_body_posterior_y"]),
        "paraspinal_centre_row": row(landmarks["paraspinal_centre_y"]),
        "paraspinal_centre_cols": [col(-cx), col(cx)],
        "paraspinal_lateral_cols": [col(-lx), col(lx)],
    }


def slice_truth(
    hu: np.ndarray,
    labels: np.ndarray,
    cls_geo: np.ndarray,
    spacing: tuple[float, float],
    mean: np.ndarray,
    anat: Anatomy,
) -> dict[str, Any]:
    """Areas and HU of the labels, the exact (pre-blur) tissue areas and the configured mean HU."""
    areas, means = area_and_means(hu, labels, spacing)
    px_cm2 = spacing[0] * spacing[1] / 100.0
    geo, configured = {}, {}
    for name, classes in _GEOMETRIC.items():
        counts = np.array([(cls_geo == c).sum() for c in classes], float)
        geo[name] = round(float(counts.sum()) * px_cm2, 3)
        w = counts / counts.sum() if counts.sum() else np.ones(len(classes)) / len(classes)
        configured[name] = round(float(np.dot(w, mean[list(classes)])), 2)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return {
        "area_cm2": areas,
        "mean_hu": means,
        "geometric_area_cm2": geo,
        "configured_mean_hu": configured,
        "label_ids": {name: int(lab) for name, lab in TISSUES.items()} | {"other": int(Label.BACKGROUND)},
        "label_definition": LABEL_DEFINITION,
        "hu_ranges": DEFAULT_HU_RANGES.as_dict(),
        "truncated": bool(np.any(edge > 0)),
        "pixel_spacing": list(spacing),
        "habitus": anat.habitus.as_dict(),
        "exam": anat.exam.as_dict(),
        "anatomy": {
            "wall_half_width_mm": round(anat.fw, 1),
            "wall_anterior_depth_mm": round(anat.fda, 1),
            "sat_thickness_mm": {
                k: round(v, 1) for k, v in zip(("anterior", "lateral", "posterior"), anat.sat, strict=True)
            },
            "muscle_scale": round(anat.ms, 3),
            "rectus_thickness_mm": round(anat.rectus_t, 1),
            "oblique_thickness_mm": round(anat.oblique_t, 1),
            "visceral_fat_amount": round(anat.vat_amount, 3),
        },
    }
