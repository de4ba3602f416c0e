"""How right the L3 localizer is, and whether its confidence means what it says.

    python scripts/l3_reliability.py [--shared ../shared/data] [--size 192] [--more] \
        [--write docs/validation/l3-reliability.md]

Rows: phantom volumes with exact anatomy for each anatomical and field-of-view variant (steep long 12th
ribs, 11 and 13 rib pairs, six lumbar, sacralised L5, no sacrum, no ribs, both ends cropped, scoliosis, a
compression fracture, metal) and the real volumes in ../shared, whole and with the sacrum or the lower ribs
cropped away.
Per row: predicted and true mid-L3 (slice), the error in mm and slices, the confidence, the flags and the
candidates when the count is uncertain. Then the reliability table (confidence bins against the share within
10 mm) and the goals: 100 % within 10 mm where either end of the column is visible, median error <= 1 slice,
every error > 10 mm flagged.

Scoliosis, fracture and metal are made from a rendered phantom: slices shifted sideways along a sine (25 mm),
the middle 40 % of L1's slices removed (its body 40 % lower, the column above it moved down), and two 3000 HU
pedicle screws in L4 and L5 with streaks through them. Phantom slices are 192 pixels (about 2 mm), as in the
tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.errors import LevelError
from sarcoscope.imaging.read import read_ct
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import locate_l3
from sarcoscope.level.localization import FLAG_COUNTING, FLAG_LOW_CONFIDENCE
from sarcoscope.phantom import PhantomVolume, make_volume
from sarcoscope.phantom.artefacts import add_pedicle_screws
from sarcoscope.validation.benchmark import REAL_VOLUME, real_l3_centroid

REPO = Path(__file__).resolve().parents[1]
HEADER = """# L3 localization: accuracy per anatomical variant and reliability of the confidence

Written by `python scripts/l3_reliability.py --write docs/validation/l3-reliability.md` (see its docstring for
how each variant is made). Error = distance of the predicted mid-L3 position from the truth (phantoms: the
exact anatomy; real `ts_example`: the centroid of TotalSegmentator's L3 label, a model output). "Either end
visible" rows are all but the two with both ends cropped, which the localizer refuses (it cannot count).

"""
WARN_FLAGS = (FLAG_COUNTING, FLAG_LOW_CONFIDENCE)

#: name, seed, variant, coverage, slice thickness (mm), alteration, whether either end of the column is seen
PHANTOMS: list[tuple[str, int, str, str, float, str, bool]] = [
    *[(f"normal, seed {s}", s, "normal", "abdomen", 3.0, "", True) for s in (1, 2, 3)],
    ("normal, 5 mm", 8, "normal", "abdomen", 5.0, "", True),
    ("normal, 1.5 mm", 9, "normal", "abdomen", 1.5, "", True),
    ("long steep 12th ribs", 31, "long-steep-12th-ribs", "abdomen", 3.0, "", True),
    ("long steep 12th ribs, no sacrum", 32, "long-steep-12th-ribs", "no-sacrum", 3.0, "", True),
    ("12th rib on one side, no sacrum", 33, "one-sided-12th-rib", "no-sacrum", 3.0, "", True),
    ("11 rib pairs", 21, "11-ribs", "abdomen", 3.0, "", True),
    ("11 rib pairs, no sacrum", 36, "11-ribs", "no-sacrum", 3.0, "", True),
    ("13 rib pairs", 21, "13-ribs", "abdomen", 3.0, "", True),
    ("13 rib pairs, no sacrum", 37, "13-ribs", "no-sacrum", 3.0, "", True),
    ("six lumbar", 22, "six-lumbar", "abdomen", 3.0, "", True),
    ("sacralised L5", 22, "sacralised-L5", "abdomen", 3.0, "", True),
    ("no sacrum (T9-L4)", 34, "normal", "no-sacrum", 3.0, "", True),
    ("no ribs (pubis-L1)", 35, "normal", "no-ribs", 3.0, "", True),
    ("both ends cropped (L1-L5)", 38, "normal", "abdomen", 3.0, "crop-both", False),
    ("scoliosis (25 mm sine)", 39, "normal", "abdomen", 3.0, "scoliosis", True),
    ("L1 compression fracture", 40, "normal", "abdomen", 3.0, "fracture", True),
    ("pedicle screws L4-L5", 41, "normal", "abdomen", 3.0, "metal", True),
    ("pedicle screws L4-L5, no ribs", 42, "normal", "no-ribs", 3.0, "metal", True),
    ("chest to pelvis, 5 mm", 10, "normal", "chest-pelvis", 5.0, "", True),
]

#: `--more`: variant, coverage, slice thickness, seeds (none of them in PHANTOMS)
MORE: list[tuple[str, str, float, range]] = [
    ("normal", "abdomen", 3.0, range(4, 20)),
    ("normal", "no-sacrum", 3.0, range(50, 58)),
    ("normal", "no-ribs", 3.0, range(60, 68)),
    ("normal", "chest-pelvis", 5.0, range(70, 74)),
    ("long-steep-12th-ribs", "no-sacrum", 3.0, range(80, 84)),
]
MORE_TEXT = (
    "16 normal abdomens, 8 without the sacrum, 8 without the ribs, 4 chest to pelvis at 5 mm and 4 with long "
    "steep 12th ribs and no sacrum"
)


@dataclass
class Row:
    name: str
    truth: float | None  # mid-L3 slice index (fractional for the real volume)
    truth_mm: float | None  # mid-L3 position (mm above slice 0)
    slice_mm: float
    ends_visible: bool
    predicted: int | None = None
    error_mm: float | None = None
    confidence: float = 0.0
    flags: tuple[str, ...] = ()
    candidates: str = ""
    seconds: float = 0.0
    refused: str = ""

    @property
    def warned(self) -> bool:
        return any(f in WARN_FLAGS for f in self.flags)


def crop(volume: CTVolume, lo: int, hi: int) -> CTVolume:
    pos = volume.slice_positions
    return replace(volume, hu=volume.hu[lo:hi], slice_positions=None if pos is None else pos[lo:hi])


def _phantom_case(pv: PhantomVolume, alteration: str) -> tuple[CTVolume, float]:
    """The volume (altered) and its true mid-L3 position in mm above slice 0."""
    t = pv.truth
    vol = pv.to_ctvolume()
    mid_mm = t["l3_z_mm"]["mid"] - t["z_mm_of_index_0"]
    dz = pv.spacing[0]
    verts = t["vertebrae"]
    if alteration == "crop-both":
        lo = verts["L5"]["first_index"] + 2  # above the sacrum, below the ribs
        hi = verts["L1"]["last_index"] - 2
        return crop(vol, lo, hi), mid_mm - lo * dz
    hu = vol.hu.astype(np.float32)
    if alteration == "scoliosis":
        n = len(hu)
        shift_px = 25.0 / pv.spacing[2]
        hu = np.stack(
            [
                ndi.shift(hu[k], (0, shift_px * np.sin(k / n * 2 * np.pi)), order=1, cval=-1024)
                for k in range(n)
            ]
        )
        return replace(vol, hu=hu), mid_mm
    if alteration == "fracture":
        a, b = verts["L1"]["first_index"], verts["L1"]["last_index"]
        cut = round(0.4 * (b - a + 1))
        start = a + (b - a + 1 - cut) // 2
        keep = np.r_[0:start, start + cut : len(hu)]
        return replace(vol, hu=hu[keep], slice_positions=None), mid_mm  # L3 lies below the cut
    if alteration == "metal":
        return replace(vol, hu=add_pedicle_screws(pv)), mid_mm
    return vol, mid_mm


def _locate(name: str, volume: CTVolume, truth_mm: float | None, ends: bool) -> Row:
    dz = (
        float(np.median(np.diff(np.sort(volume.slice_positions))))
        if volume.slice_positions is not None
        else (float(volume.spacing[0]))
    )
    row = Row(name, None if truth_mm is None else truth_mm / dz, truth_mm, dz, ends)
    t0 = time.perf_counter()
    try:
        loc = locate_l3(volume)
    except LevelError as exc:
        row.seconds = time.perf_counter() - t0
        row.refused = str(exc).split(":")[0]
        return row
    row.seconds = time.perf_counter() - t0
    row.confidence = loc.confidence
    row.flags = tuple(f["flag"] for f in loc.flags)
    row.candidates = " or ".join(f"{c.l3_mid} p={c.probability:.2f}" for c in loc.candidates)
    if loc.l3_mid is not None and loc.l3_mid_mm is not None:
        row.predicted = loc.l3_mid
        if truth_mm is not None:
            row.error_mm = abs(loc.l3_mid_mm - truth_mm)
    return row


def rows(shared: Path, size: int) -> list[Row]:
    out = []
    real = shared / REAL_VOLUME
    if (real / "example_ct.nii.gz").is_file():
        vol = read_ct(real / "example_ct.nii.gz")
        ref_mm = real_l3_centroid(real) * vol.spacing[0]
        dz = vol.spacing[0]
        out.append(_locate("real `ts_example` (3 mm)", vol, ref_mm, True))
        out.append(
            _locate(
                "real, sacrum cropped (slices 55-111)", crop(vol, 55, vol.n_slices), ref_mm - 55 * dz, True
            )
        )
        out.append(_locate("real, lower ribs cropped (slices 0-85)", crop(vol, 0, 86), ref_mm, True))
        out.append(_locate("real, both cropped (slices 55-85)", crop(vol, 55, 86), ref_mm - 55 * dz, False))
    for name, seed, variant, coverage, thk, alteration, ends in PHANTOMS:
        pv = make_volume(seed, shape_xy=size, variant=variant, coverage=coverage, slice_thickness_mm=thk)
        vol, mid_mm = _phantom_case(pv, alteration)
        out.append(_locate(f"phantom: {name}", vol, mid_mm if pv.truth["l3_in_volume"] else None, ends))
        print(_line(out[-1]), flush=True)
    return out


def _line(r: Row) -> str:
    truth = "–" if r.truth is None else f"{r.truth:.1f}"
    if r.refused:
        return f"| {r.name} | {truth} | refused: {r.refused} | – | – | – | – | {r.seconds:.1f} s |"
    pred = "–" if r.predicted is None else str(r.predicted)
    err = "–" if r.error_mm is None else f"{r.error_mm:.1f}"
    err_sl = "–" if r.error_mm is None else f"{r.error_mm / r.slice_mm:.1f}"
    flags = ", ".join(f"`{f}`" for f in r.flags) or "–"
    if r.candidates:
        flags += f" ({r.candidates})"
    conf = f"{r.confidence:.2f}"
    return f"| {r.name} | {truth} | {pred} | {err} | {err_sl} | {conf} | {flags} | {r.seconds:.1f} s |"


def report(all_rows: list[Row]) -> str:
    lines = [
        "| volume | true mid-L3 (slice) | predicted | error mm | error slices | confidence "
        "| flags (candidates) | time |",
        "|---|---|---|---|---|---|---|---|",
        *(_line(r) for r in all_rows),
        "",
        "Reliability (rows where L3 was predicted and the truth is known):",
        "",
        *reliability(all_rows),
    ]
    scored = [r for r in all_rows if r.error_mm is not None]
    visible = [r for r in all_rows if r.ends_visible and r.truth is not None]
    within = [r for r in visible if r.error_mm is not None and r.error_mm <= 10.0]
    errors = [r.error_mm / r.slice_mm for r in scored]  # type: ignore[operator]
    big = [r for r in scored if r.error_mm > 10.0]  # type: ignore[operator]
    unflagged = [r.name for r in big if not r.warned]
    lines += [
        "",
        f"- Within 10 mm where either end of the column is visible: {len(within)}/{len(visible)} "
        f"({len(within) / max(len(visible), 1):.0%}; goal 100 %).",
        f"- Median error: {statistics.median(errors):.2f} slices (goal ≤ 1).",
        f"- Errors over 10 mm: {len(big)}, flagged `counting_uncertain` or `low_confidence`: "
        f"{len(big) - len(unflagged)}"
        + (f"; unflagged: {', '.join(unflagged)}." if unflagged else " (all)."),
    ]
    return "\n".join(lines)


def reliability(all_rows: list[Row]) -> list[str]:
    """The reliability table: confidence bins against the share of rows within 10 mm."""
    lines = ["| confidence | rows | mean confidence | within 10 mm |", "|---|---|---|---|"]
    scored = [r for r in all_rows if r.error_mm is not None]
    for lo, hi in ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)):
        b = [r for r in scored if lo <= r.confidence < hi]
        if b:
            ok = sum(r.error_mm <= 10.0 for r in b)  # type: ignore[operator]
            mean = statistics.mean(r.confidence for r in b)
            lines.append(
                f"| {lo:.1f}–{min(hi, 1.0):.1f} | {len(b)} | {mean:.2f} | {ok}/{len(b)} ({ok / len(b):.0%}) |"
            )
        else:
            lines.append(f"| {lo:.1f}–{min(hi, 1.0):.1f} | 0 | – | – |")
    return lines


def more_rows(size: int) -> list[Row]:
    """Normal anatomy at many more seeds and fields of view, for the reliability table alone."""
    out = []
    for variant, coverage, thk, seeds in MORE:
        for seed in seeds:
            pv = make_volume(seed, shape_xy=size, variant=variant, coverage=coverage, slice_thickness_mm=thk)
            vol, mid_mm = _phantom_case(pv, "")
            truth = mid_mm if pv.truth["l3_in_volume"] else None
            out.append(_locate(f"{variant}, {coverage}, seed {seed}", vol, truth, True))
    return out


def more_report(extra: list[Row]) -> str:
    scored = [r for r in extra if r.error_mm is not None]
    big = [r for r in scored if r.error_mm > 10.0]  # type: ignore[operator]
    return "\n".join(
        [
            f"Reliability over {len(extra)} more phantoms (`--more`: {MORE_TEXT}):",
            "",
            *reliability(extra),
            "",
            f"- Within 10 mm: {len(scored) - len(big)}/{len(extra)}; refused: "
            f"{sum(bool(r.refused) for r in extra)}; errors over 10 mm: "
            + (
                ", ".join(
                    f"{r.name} ({r.error_mm:.0f} mm, {r.confidence:.2f}, "
                    f"{'flagged' if r.warned else 'NOT flagged'})"
                    for r in big
                )
                or "none"
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--size", type=int, default=192, help="phantom slice size in pixels")
    parser.add_argument("--write", type=Path, help="also write the tables into this markdown file")
    parser.add_argument("--more", action="store_true", help=f"also a reliability table over {MORE_TEXT}")
    args = parser.parse_args()
    text = report(rows(args.shared, args.size))
    if args.more:
        text += "\n\n" + more_report(more_rows(args.size))
    print(text)
    if args.write:
        args.write.write_text(HEADER + text + "\n")


if __name__ == "__main__":
    main()
