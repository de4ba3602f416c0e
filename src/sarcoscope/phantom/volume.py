"""Synthetic abdominal CT volumes with a labelled spine, for the L3 localizer, the demo and benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarcoscope.imaging.volume import CTMetadata, CTVolume
from sarcoscope.phantom.anatomy import VARIANTS, VERTEBRA_IDS, Anatomy, add_bowel, build_anatomy
from sarcoscope.phantom.habitus import Exam, Habitus
from sarcoscope.phantom.render import Grid, body_box, hu_table, make_labels, render_section, synthesize_fields
from sarcoscope.phantom.slice import LABEL_DEFINITION, _spacing, area_and_means, body_extent, landmarks_px

#: Slices at least this thick (mm) are rendered as the mean of several thin sections across the slab, as a
#: scanner reconstructs them: one thin section would show a vertebra's 1 mm endplate cortex at full density
#: whenever it fell on it, a bright band that no 5 mm reconstruction shows.
SLAB_MM = 4.0
#: Spacing (mm) of the sections averaged into a thick slice, at most.
SECTION_STEP_MM = 2.0

COVERAGES = ("abdomen", "chest-pelvis", "upper-abdomen", "lower", "l3-only", "no-sacrum", "no-ribs")


@dataclass
class PhantomVolume:
    """A synthetic CT (z, y, x), z inferior -> superior like CTVolume, with tissue and vertebra labels."""

    hu: np.ndarray  # int16 (z, y, x) HU
    labels: np.ndarray  # uint8 tissue labels (sarcoscope.conventions.Label), same rule as make_slice
    vertebra_labels: np.ndarray  # uint8 vertebra ids (VERTEBRA_IDS; 0 elsewhere, discs included)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin: tuple[float, float, float]  # LPS mm of voxel (0, 0, 0); axes x->L, y->P, z->S
    truth: dict[str, Any] = field(default_factory=dict)
    habitus: Habitus | None = None

    def metadata(self) -> CTMetadata:
        """Patient facts consistent with the habitus (written into DICOM by write_phantom)."""
        h, ex = self.habitus, self.truth.get("exam", {})
        contrast = ex.get("contrast")
        return CTMetadata(
            patient_id=f"PHANTOM-{self.truth.get('seed', 0)}",
            patient_sex=h.sex if h else None,
            patient_age_years=h.age_years if h else None,
            patient_height_m=h.height_m if h else None,
            patient_weight_kg=h.weight_kg if h else None,
            contrast_agent=None if contrast in (None, "none") else "Iodinated contrast (synthetic)",
            kvp=ex.get("kvp"),
            manufacturer="sarcoscope phantom",
            series_description=f"Synthetic CT ({self.truth.get('coverage')}, {self.truth.get('variant')})",
            slice_thickness_mm=self.spacing[0],
        )

    def to_ctvolume(self) -> CTVolume:
        """The volume as the pipeline's in-memory CT (identity direction: x->L, y->P, z->S)."""
        return CTVolume(
            hu=self.hu,
            spacing=self.spacing,
            origin=self.origin,
            direction=np.eye(3),
            metadata=self.metadata(),
            source_kind="array",
            slice_positions=self.origin[2] + np.arange(self.hu.shape[0]) * self.spacing[0],
        )


def coverage_range(anat: Anatomy, coverage: str) -> tuple[float, float]:
    """(bottom, top) z in mm of a named coverage."""
    v = anat.vertebra
    ranges = {
        "abdomen": (-130.0, v("T10").z_mid),
        "chest-pelvis": (-150.0, v("T1").z_hi + 15),
        "upper-abdomen": (v("L2").z_mid, v("T9").z_mid),
        "lower": (-150.0, v("L4").z_mid),
        "l3-only": (v("L3").z_lo - 15, v("L3").z_hi + 15),
        # liver dome to L4 (a liver protocol): the sacrum is cropped away
        "no-sacrum": (v("L4").z_mid, v("T9").z_mid),
        # pubis to the middle of L1: no rib head in view
        "no-ribs": (-150.0, v("L1").z_mid),
    }
    if coverage not in ranges:
        raise ValueError(f"unknown coverage {coverage!r}; choose one of {', '.join(COVERAGES)}")
    return ranges[coverage]


def make_volume(
    seed: int,
    *,
    shape_xy: int = 512,
    n_slices: int | None = None,
    slice_thickness_mm: float = 3.0,
    pixel_spacing: float | tuple[float, float] | None = None,
    coverage: str = "abdomen",
    variant: str = "normal",
    habitus: Habitus | None = None,
    noise_hu: float | None = None,
    contrast: str | None = None,
) -> PhantomVolume:
    """A synthetic CT volume, deterministic for `seed`.

    `coverage`: "abdomen" (T10 to the pubis), "chest-pelvis" (T1 to the pubis), "upper-abdomen" (T9..L2,
    no L3), "lower" (L4 to the pubis, no L3), "l3-only", "no-sacrum" (T9..L4) or "no-ribs" (pubis..L1).
    `n_slices` overrides the length: the volume keeps the coverage's top and extends (or stops) downward,
    into the thighs if needed. `variant` is one of
    VARIANTS ("normal", "six-lumbar", "sacralised-L5", "11-ribs", "13-ribs", "long-steep-12th-ribs",
    "one-sided-12th-rib"). Slices are contiguous
    (spacing = thickness); slices of SLAB_MM or more average their slab (`slab_offsets`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if slice_thickness_mm <= 0:
        raise ValueError(f"slice_thickness_mm must be positive, got {slice_thickness_mm}")
    if shape_xy < 64:
        raise ValueError(f"shape_xy must be at least 64 pixels, got {shape_xy}")
    exam = Exam.sample(np.random.default_rng([seed, 3]), noise_hu=noise_hu).with_contrast(contrast)
    anat = build_anatomy(seed, habitus, exam, variant)
    bottom, top = coverage_range(anat, coverage)
    thk = float(slice_thickness_mm)
    if n_slices is None:
        n = max(1, round((top - bottom) / thk))
    else:
        if n_slices < 1:
            raise ValueError(f"n_slices must be at least 1, got {n_slices}")
        n = int(n_slices)
    z0 = top - (n - 1) * thk
    zs = z0 + thk * np.arange(n)
    rng = np.random.default_rng([seed, 6])
    add_bowel(anat, float(zs[0]) - 40, float(zs[-1]) + 40, np.random.default_rng([seed, 4]))

    # one grid for all slices, wide enough for the widest level
    ext = np.array([body_extent(anat, float(z)) for z in np.linspace(zs[0], zs[-1], 8)])
    half_w = float(max(-ext[:, 0].min(), ext[:, 1].max()))
    y_lo, y_hi = float(ext[:, 2].min()), anat.y_table
    if pixel_spacing is None:
        fov = 2 * half_w * rng.uniform(1.05, 1.2)
        ps = float(np.clip(fov / shape_xy, 0.55 * 512 / shape_xy, 0.98 * 512 / shape_xy))
        psy, psx = ps, ps
    else:
        psy, psx = _spacing(pixel_spacing, 0.0)
    grid = Grid.make(
        shape_xy, psy, psx, rng.uniform(-8, 8), (y_lo + y_hi) / 2 + rng.uniform(-0.05, 0.02) * shape_xy * psy
    )

    mean, tex = hu_table(anat, rng)
    bank = synthesize_fields((shape_xy, shape_xy), exam, rng, n_fields=4)
    hu = np.empty((n, shape_xy, shape_xy), np.int16)
    labels = np.empty((n, shape_xy, shape_xy), np.uint8)
    vlab = np.empty((n, shape_xy, shape_xy), np.uint8)
    crop = grid.crop(*body_box(anat, np.linspace(zs[0], zs[-1], 24)))
    mid = round((anat.l3.z_mid - float(zs[0])) / thk)
    l3_landmarks: dict[str, Any] = {}
    offsets = slab_offsets(thk)
    for k, z in enumerate(zs):
        srng = np.random.default_rng([seed, 7, k])
        sec = render_section(anat, float(z), grid, srng, with_vid=True, crop=crop)
        if k == mid:
            l3_landmarks = landmarks_px(sec.landmarks, grid)
        h = bank.hu(sec.cls, mean, tex, srng)
        if len(offsets) > 1:  # the slab's mean; labels and vertebra ids stay those of its centre
            for dz in offsets[offsets != 0]:
                h += bank.hu(render_section(anat, float(z + dz), grid, srng, crop=crop).cls, mean, tex, srng)
            h /= len(offsets)
        hu[k] = np.rint(h)
        labels[k] = make_labels(h, sec.cls)
        vlab[k] = sec.vid
    spacing = (thk, psy, psx)
    origin = (float(grid.x[0]), float(grid.y[0]), float(zs[0]))
    truth = _volume_truth(anat, zs, thk, vlab, hu, labels, (psy, psx))
    truth.update(seed=seed, coverage=coverage, exam=exam.as_dict(), habitus=anat.habitus.as_dict())
    if truth["l3_in_volume"]:
        truth["l3_mid_landmarks_px"] = l3_landmarks
    return PhantomVolume(hu, labels, vlab, spacing, origin, truth, anat.habitus)


def slab_offsets(thickness_mm: float) -> np.ndarray:
    """Positions (mm from the slice centre) of the sections averaged into one slice: the centre alone below
    SLAB_MM, else an odd number of sections at the centres of equal sub-slabs, at most SECTION_STEP_MM
    apart."""
    if thickness_mm < SLAB_MM:
        return np.zeros(1)
    n = 2 * math.ceil((thickness_mm / SECTION_STEP_MM - 1) / 2) + 1
    return (np.arange(n) - (n - 1) / 2) * thickness_mm / n


def _volume_truth(
    anat: Anatomy,
    zs: np.ndarray,
    thk: float,
    vlab: np.ndarray,
    hu: np.ndarray,
    labels: np.ndarray,
    ps: tuple[float, float],
) -> dict[str, Any]:
    z0 = float(zs[0])
    n = len(zs)

    def index_range(lo: float, hi: float) -> tuple[int, int] | None:
        first = math.ceil((lo - z0) / thk - 1e-9)
        last = math.floor((hi - z0) / thk + 1e-9)
        first, last = max(first, 0), min(last, n - 1)
        return (first, last) if first <= last else None

    vertebrae = {}
    present = np.unique(vlab)
    for v in anat.vertebrae:
        rng_ = index_range(v.z_lo, v.z_hi)
        in_labels = np.flatnonzero(np.any(vlab == v.vid, axis=(1, 2))) if v.vid in present else np.array([])
        vertebrae[v.name] = {
            "id": v.vid,
            "z_lo_mm": round(v.z_lo, 2),
            "z_hi_mm": round(v.z_hi, 2),
            "first_index": None if rng_ is None else rng_[0],
            "last_index": None if rng_ is None else rng_[1],
            "label_first_index": int(in_labels[0]) if in_labels.size else None,
            "label_last_index": int(in_labels[-1]) if in_labels.size else None,
            "rib": v.rib,
            "rib_sides": ["right" if sg < 0 else "left" for sg in v.rib_sides],
        }
    l3 = anat.l3
    l3_range = index_range(l3.z_lo, l3.z_hi)
    mid = round((l3.z_mid - z0) / thk)
    out: dict[str, Any] = {
        "variant": anat.variant,
        "n_lumbar": sum(1 for v in anat.vertebrae if v.kind == "L" and not v.fused_below),
        "lumbar_vertebrae": [v.name for v in anat.vertebrae if v.kind == "L"][::-1],
        "rib_pairs": sum(1 for v in anat.vertebrae if v.rib),
        "lowest_rib_vertebra": next(v.name for v in anat.vertebrae if v.rib),
        "vertebra_ids": dict(VERTEBRA_IDS),
        "vertebrae": vertebrae,
        "z_mm_of_index_0": round(z0, 3),
        "slice_thickness_mm": thk,
        "l3_in_volume": l3_range is not None and 0 <= mid < n,
        "l3_z_mm": {
            "lower_endplate": round(l3.z_lo, 2),
            "mid": round(l3.z_mid, 2),
            "upper_endplate": round(l3.z_hi, 2),
        },
        "label_definition": LABEL_DEFINITION,
        "l3_convention_note": (
            "L3 is the anatomical third lumbar vertebra counted from T1 down (T12 carries the 12th thoracic "
            "vertebra whether or not it has ribs); indices are slice indices, 0 = most inferior."
        ),
    }
    if out["l3_in_volume"]:
        lo, hi = l3_range  # type: ignore[misc]
        areas, means = area_and_means(hu[mid].astype(np.float32), labels[mid], ps)
        out.update(
            l3_mid_index=int(mid),
            l3_lower_endplate_index=int(lo),
            l3_upper_endplate_index=int(hi),
            l3_inferior_endplate_index=int(lo),
            l3_first_index=int(lo),
            l3_last_index=int(hi),
            l3_mid_area_cm2=areas,
            l3_mid_mean_hu=means,
        )
    else:
        out.update(
            l3_mid_index=None,
            l3_lower_endplate_index=None,
            l3_upper_endplate_index=None,
            l3_inferior_endplate_index=None,
            l3_first_index=None,
            l3_last_index=None,
        )
    return out
