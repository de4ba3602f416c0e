"""How right the L3 localizer is, and whether its confidence means what it says.

    python scripts/l3_reliability.py [--shared ../shared/data] [--size 192] [--more] \
        [--write docs/validation/l3-reliability.md]
    python scripts/l3_reliability.py --wide --json wide.json [--cache DIR]
    python scripts/l3_reliability.py --compare before.json after.json

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

`--more`: 40 phantoms in neither table, for a second reliability table (MORE).

`--wide`: every reading a change to the localizer is measured on (docs/validation/l3-notes.md), about 130:
the table's rows (real and phantom), the 40 of `--more`, and
- 32 phantoms outside both tables (OUTSIDE): chest to pelvis at 5 mm, seeds 74-85; chest to pelvis at 3 mm,
  seeds 90-95; 11 rib pairs without the sacrum, seeds 100-103; 13 rib pairs without the sacrum, seeds
  110-113; abdomens at 5 mm, seeds 120-125;
- 32 phantoms with pedicle screws (SCREWED): abdomen seeds 4-11 and no-ribs seeds 60-67 (3 mm), each with
  screws in L4-L5 and in L5-S1.
Each reading (set, name, truth and predicted mid-L3 slice, error in mm, confidence, flags, candidates, a
refusal's reason) goes to the `--json` file; `--compare A.json B.json` prints the readings that changed
between two such files, the count within 10 mm and every error over 10 mm that is not flagged. `--cache DIR`
keeps the rendered phantoms (deterministic per seed and parameters; clear it when the phantom code changes).
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import time
from dataclasses import asdict, dataclass, replace
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

#: a set of phantoms: variant, coverage, slice thickness, seeds, alteration (as in `_phantom_case`)
PhantomSet = tuple[str, str, float, range, str]
#: `--more`: none of them in PHANTOMS
MORE: list[PhantomSet] = [
    ("normal", "abdomen", 3.0, range(4, 20), ""),
    ("normal", "no-sacrum", 3.0, range(50, 58), ""),
    ("normal", "no-ribs", 3.0, range(60, 68), ""),
    ("normal", "chest-pelvis", 5.0, range(70, 74), ""),
    ("long-steep-12th-ribs", "no-sacrum", 3.0, range(80, 84), ""),
]
#: `--wide`: 32 phantoms in neither table
OUTSIDE: list[PhantomSet] = [
    ("normal", "chest-pelvis", 5.0, range(74, 86), ""),
    ("normal", "chest-pelvis", 3.0, range(90, 96), ""),
    ("11-ribs", "no-sacrum", 3.0, range(100, 104), ""),
    ("13-ribs", "no-sacrum", 3.0, range(110, 114), ""),
    ("normal", "abdomen", 5.0, range(120, 126), ""),
]
#: `--wide`: 32 phantoms with pedicle screws
SCREWED: list[PhantomSet] = [
    ("normal", coverage, 3.0, seeds, screws)
    for coverage, seeds in (("abdomen", range(4, 12)), ("no-ribs", range(60, 68)))
    for screws in ("metal:L4,L5", "metal:L5,S1")
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
    counted_from: str = ""
    seconds: float = 0.0
    refused: str = ""

    @property
    def warned(self) -> bool:
        return any(f in WARN_FLAGS for f in self.flags)


def crop(volume: CTVolume, lo: int, hi: int) -> CTVolume:
    pos = volume.slice_positions
    return replace(volume, hu=volume.hu[lo:hi], slice_positions=None if pos is None else pos[lo:hi])


_CACHE: list[Path] = []  # `--cache`: where rendered phantoms are kept


def _phantom(seed: int, size: int, variant: str, coverage: str, thk: float) -> PhantomVolume:
    path = _CACHE[0] / f"{seed}-{size}-{variant}-{coverage}-{thk}.pkl" if _CACHE else None
    if path is not None and path.is_file():
        with path.open("rb") as f:
            return pickle.load(f)
    pv = make_volume(seed, shape_xy=size, variant=variant, coverage=coverage, slice_thickness_mm=thk)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{time.time_ns()}.part")
        with part.open("wb") as f:
            pickle.dump(pv, f)
        part.replace(path)
    return pv


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
    if alteration.startswith("metal"):  # "metal" (L4 and L5) or "metal:L5,S1"
        screwed = tuple(alteration.partition(":")[2].split(",")) if ":" in alteration else ("L4", "L5")
        return replace(vol, hu=add_pedicle_screws(pv, screwed)), mid_mm
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
    row.counted_from = loc.counted_from
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
        pv = _phantom(seed, size, variant, coverage, thk)
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


def set_rows(size: int, sets: list[PhantomSet], verbose: bool = False) -> list[Row]:
    """One row per phantom of the sets (either end of the column in view on each)."""
    out = []
    for variant, coverage, thk, seeds, alteration in sets:
        for seed in seeds:
            pv = _phantom(seed, size, variant, coverage, thk)
            vol, mid_mm = _phantom_case(pv, alteration)
            truth = mid_mm if pv.truth["l3_in_volume"] else None
            name = f"{variant}, {coverage}, seed {seed}"
            if thk != 3.0:
                name += f", {thk:g} mm"
            if alteration:
                name += f", screws {alteration.partition(':')[2].replace(',', '-') or 'L4-L5'}"
            out.append(_locate(name, vol, truth, True))
            if verbose:
                print(_line(out[-1]), flush=True)
    return out


def more_rows(size: int) -> list[Row]:
    """Normal anatomy at many more seeds and fields of view, for the reliability table alone."""
    return set_rows(size, MORE)


def wide_readings(shared: Path, size: int) -> list[dict]:
    """Every reading of `--wide` (the docstring), as dicts with the set each belongs to."""
    sets = {
        "table": rows(shared, size),
        "more": set_rows(size, MORE, verbose=True),
        "outside": set_rows(size, OUTSIDE, verbose=True),
        "screwed": set_rows(size, SCREWED, verbose=True),
    }
    return [{"set": key, **asdict(r)} for key, group in sets.items() for r in group]


def _wrong(r: dict) -> bool:
    return r["error_mm"] is not None and r["error_mm"] > 10.0


def _unflagged(r: dict) -> bool:
    return _wrong(r) and not any(f in WARN_FLAGS for f in r["flags"])


def wide_summary(readings: list[dict]) -> str:
    """Within 10 mm of the readings with a known L3 where either end is visible; errors over 10 mm."""
    known = [r for r in readings if r["ends_visible"] and r["truth"] is not None]
    within = sum(r["error_mm"] is not None and r["error_mm"] <= 10.0 for r in known)
    refused = sum(bool(r["refused"]) for r in known)
    missed = sum(not r["refused"] and r["error_mm"] is None for r in known)  # "L3 not in view"
    wrong = [r for r in readings if _wrong(r)]
    lines = [
        f"within 10 mm: {within}/{len(known)} (refused {refused}, L3 said out of view {missed}); "
        f"errors over 10 mm: {len(wrong)}, unflagged {sum(map(_unflagged, wrong))}"
    ]
    for r in wrong:
        flag = "flagged" if not _unflagged(r) else "NOT FLAGGED"
        lines.append(f"  {r['set']}: {r['name']}: {r['error_mm']:.1f} mm at {r['confidence']:.2f}, {flag}")
    rows_back = [Row(**{k: v for k, v in r.items() if k != "set"}) for r in readings]
    return "\n".join([*lines, "", *reliability(rows_back)])


def _reading_text(r: dict) -> str:
    if r["refused"]:
        return f"refused ({r['refused']})"
    err = "–" if r["error_mm"] is None else f"{r['error_mm']:.1f} mm"
    return f"{r['predicted']} ({err}) at {r['confidence']:.3f} {','.join(r['flags']) or '-'}"


def compare(before: list[dict], after: list[dict]) -> str:
    """The readings that changed between two `--json` files, and each file's summary."""
    old = {(r["set"], r["name"]): r for r in before}
    lines = []
    for r in after:
        o = old.get((r["set"], r["name"]))
        if o is None:
            lines.append(f"new: {r['set']}: {r['name']}: {_reading_text(r)}")
            continue
        same = (
            o["predicted"] == r["predicted"]
            and o["refused"] == r["refused"]
            and abs(o["confidence"] - r["confidence"]) < 0.0005
            and list(o["flags"]) == list(r["flags"])
        )
        if not same:
            lines.append(f"{r['set']}: {r['name']}: {_reading_text(o)} -> {_reading_text(r)}")
    unflagged = [r for r in after if _unflagged(r) and not _unflagged(old.get((r["set"], r["name"]), r))]
    lines += [
        f"changed: {len(lines)} of {len(after)}",
        "before: " + wide_summary(before),
        "after: " + wide_summary(after),
        "new unflagged errors over 10 mm: " + (", ".join(r["name"] for r in unflagged) or "none"),
    ]
    return "\n".join(lines)


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
    parser.add_argument("--wide", action="store_true", help="every reading of the docstring's wide harness")
    parser.add_argument("--json", type=Path, help="with --wide: write the readings to this JSON file")
    parser.add_argument("--cache", type=Path, help="keep the rendered phantoms in this folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="two --json files")
    args = parser.parse_args()
    if args.cache:
        _CACHE.append(args.cache)
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare(before, after))
        return
    if args.wide:
        readings = wide_readings(args.shared, args.size)
        if args.json:
            args.json.write_text(json.dumps(readings, indent=1) + "\n")
        print(wide_summary(readings))
        return
    text = report(rows(args.shared, args.size))
    if args.more:
        text += "\n\n" + more_report(more_rows(args.size))
    print(text)
    if args.write:
        args.write.write_text(HEADER + text + "\n")


if __name__ == "__main__":
    main()
