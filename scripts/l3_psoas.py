"""The psoas cross-section as a cue to the lumbar levels (issue 14), measured and not built: how its growth
from vertebra to vertebra fits the true labelling against the labellings one vertebra off.

    python scripts/l3_psoas.py [--shared ../shared/data] [--cache DIR]

The psoas major arises at T12-L1 and grows as it descends, to its largest section at the L4/L5 disc
(Reid, Livingston & Pearsall, Arch Phys Med Rehabil 1994;75:703: 15 men, maximum 16.3 cm² at L4/L5). The
simplest model of that: the section grows linearly from nothing at the T12/L1 disc to its maximum at the
L4/L5 disc, so mid-L1 to mid-L5 hold 0.125, 0.375, 0.625, 0.875 and 1 of it (`MODEL`).

Measured on the working grid of the localizer, on every slice and side: soft tissue (-29..150 HU) beside
the vertebral body (bone above the column's own threshold, its holes filled), from its front to its back
(15 mm in front of it, 10 mm behind), in the pieces that touch the body's side; a side over ORGAN_MM2 is an
organ lying against the column (liver, kidney, spleen), not measured. Per vertebra (its true extent: the
phantom's anatomy, TotalSegmentator's labels on the real volume): the median over the middle half of the
body of the smaller side. Per case: the log-likelihood of those sections, relative to the largest, under
the true labelling minus under the labelling with every name one vertebra lower ("11 pairs": T11 called
T12) and one higher ("13 pairs": L1 called T12), normal errors of SD relative sections; positive favours
the truth. The findings are in docs/validation/l3-notes.md (2026-12-06, psoas).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from l3_reliability import _CACHE, _phantom, _phantom_case
from scipy import ndimage as ndi

from sarcoscope.imaging.read import read_ct
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import anchors, spine
from sarcoscope.level.reading import TRACES
from sarcoscope.validation.benchmark import REAL_VOLUME

REPO = Path(__file__).resolve().parents[1]
MODEL = {"L1": 0.125, "L2": 0.375, "L3": 0.625, "L4": 0.875, "L5": 1.0}
ORDER = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
SD = 0.2
ORGAN_MM2 = 2500.0
#: TotalSegmentator's vertebra ids on the real volume
REAL_IDS = {26: "S1", 27: "L5", 28: "L4", 29: "L3", 30: "L2", 31: "L1", 32: "T12", 33: "T11"}
CASES = [
    *[(s, "11-ribs", "no-sacrum") for s in (36, 100, 101, 102, 103)],
    *[(s, "13-ribs", "no-sacrum") for s in (37, 110, 111, 112, 113)],
    *[(s, "normal", "no-sacrum") for s in (34, 50, 51, 52)],
    *[(s, "normal", "abdomen") for s in (1, 2, 3)],
]


def psoas_area(grid: spine.WorkGrid, trace: spine.SpineTrace) -> np.ndarray:
    """(slices, 2): soft tissue (mm²) against each side of the vertebral body, NaN where an organ."""
    nz, ny, nx = grid.hu.shape
    _, dy, dx = grid.spacing
    depth = trace.body_depth_mm
    bone_hu = anchors.sacrum_bone_hu(grid, trace)
    out = np.zeros((nz, 2))
    ry0, ry1, rx = round((depth / 2 + 25) / dy), round((depth / 2 + 15) / dy), round((0.7 * depth + 50) / dx)
    for z in range(nz):
        yc, xc = round(trace.body_y[z]), round(trace.cx[z])
        y0, y1, x0, x1 = max(0, yc - ry0), min(ny, yc + ry1 + 1), max(0, xc - rx), min(nx, xc + rx + 1)
        hu = grid.hu[z, y0:y1, x0:x1]
        pieces = ndi.label(ndi.binary_closing(hu > bone_hu))[0]
        centre = pieces[max(0, yc - y0 - 3) : yc - y0 + 4, max(0, xc - x0 - 3) : xc - x0 + 4]
        if not centre.any():
            continue
        body = ndi.binary_fill_holes(pieces == np.bincount(centre[centre > 0]).argmax())
        ys = ((np.arange(y0, y1) - trace.body_y[z]) * dy)[:, None]
        lateral = ((np.arange(x0, x1) - trace.cx[z]) * dx)[None, :]
        soft = (hu > -29) & (hu < 150) & ~ndi.binary_dilation(body)
        soft &= (ys > -depth / 2 - 15) & (ys < depth / 2 + 10)
        labels = ndi.label(soft)[0]
        touching = ndi.binary_dilation(body, iterations=2) & (np.abs(ys) < depth / 2)
        for k, sign in enumerate((-1, 1)):
            side = sign * lateral > 5
            ids = np.unique(labels[touching & side & (labels > 0)])
            area = float((np.isin(labels, ids[ids > 0]) & side).sum() * dy * dx)
            out[z, k] = area if area <= ORGAN_MM2 else np.nan
    return out


def per_vertebra(
    grid: spine.WorkGrid, area: np.ndarray, extents: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Per vertebra (extent in mm above slice 0): the median of the smaller side over its middle half."""
    smaller = np.fmin(area[:, 0], area[:, 1])
    mm = grid.z_mm - grid.z_mm[0]
    out = {}
    for name, (lo, hi) in extents.items():
        q = 0.25 * (hi - lo)
        inside = smaller[(mm >= lo + q) & (mm <= hi - q)]
        if np.isfinite(inside).any():
            out[name] = float(np.nanmedian(inside))
    return out


def loglik(sections: dict[str, float], shift: int) -> float:
    """Log-likelihood of the sections under the labelling shifted by `shift` names (+1: every vertebra
    called the one below it)."""
    named = {}
    for name, v in sections.items():
        k = ORDER.index(name) + shift if name in ORDER else -1
        if 0 <= k < len(ORDER) and ORDER[k] in MODEL:
            named[ORDER[k]] = v
    if len(named) < 3:
        return 0.0
    top = max(named.values())
    return -0.5 * sum(((v / top - MODEL[n]) / SD) ** 2 for n, v in named.items())


def report(label: str, sections: dict[str, float]) -> None:
    """One row: the sections, and the truth's log-likelihood less each naming's one vertebra off."""
    truth = loglik(sections, 0)
    text = " ".join(f"{n} {sections[n]:.0f}" for n in ORDER if n in sections)
    print(f"{label}\t{text}\t{truth - loglik(sections, 1):+.1f}\t{truth - loglik(sections, -1):+.1f}")


def section_of(volume: CTVolume) -> tuple[spine.WorkGrid, np.ndarray]:
    """The working grid and the psoas section on every slice, beside the localizer's wide trace."""
    grid = spine.make_grid(volume)
    wide = spine.trace_spine(grid, spine.column_band(grid), *TRACES[1])
    return grid, psoas_area(grid, wide)


def measurement_args(doc: str) -> argparse.Namespace:
    """The options of the measurement scripts beside the harness: --shared (where the real volume is) and
    --cache (the rendered phantoms' folder, put to use)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    if args.cache is not None:
        _CACHE.append(args.cache)
    return args


def real_vertebrae(folder: Path) -> dict[str, tuple[int, int]]:
    """First and last slice of each vertebra of REAL_IDS that TotalSegmentator labelled on the real volume."""
    ids = np.asarray(nib.as_closest_canonical(nib.load(folder / "vertebrae_totalsegmentator.nii.gz")).dataobj)
    spans = {}
    for vid, name in REAL_IDS.items():
        z = np.nonzero((ids == vid).any(axis=(0, 1)))[0]
        if z.size:
            spans[name] = (int(z.min()), int(z.max()))
    return spans


def main() -> None:
    args = measurement_args(__doc__ or "")
    print("case\tsection per vertebra (mm²)\ttruth vs 11-pair naming\ttruth vs 13-pair naming")
    folder = args.shared / REAL_VOLUME
    if (folder / "example_ct.nii.gz").is_file():
        volume = read_ct(folder / "example_ct.nii.gz")
        dz = float(volume.spacing[0])
        extents = {name: (lo * dz, hi * dz) for name, (lo, hi) in real_vertebrae(folder).items()}
        grid, area = section_of(volume)
        report("real ts_example", per_vertebra(grid, area, extents))
    for seed, variant, coverage in CASES:
        pv = _phantom(seed, 192, variant, coverage, 3.0)
        volume, _ = _phantom_case(pv, "")
        dz = pv.spacing[0]
        extents = {
            n: (v["first_index"] * dz, v["last_index"] * dz)
            for n, v in pv.truth["vertebrae"].items()
            if v["first_index"] is not None
        }
        grid, area = section_of(volume)
        report(f"{variant}, {coverage}, seed {seed}", per_vertebra(grid, area, extents))


if __name__ == "__main__":
    main()
