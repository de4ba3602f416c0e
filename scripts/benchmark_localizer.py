"""Accuracy of the automatic L3 localizer on phantom volumes with exact anatomy (and the real example volume).

    python scripts/benchmark_localizer.py [--shared ../shared/data] [--size 192]

Prints one markdown row per volume: reference and predicted mid-L3 slice, the error in mm, confidence, flags,
and the two candidate L3s with their probabilities when the count is uncertain. These rows are the README's
L3 table. Phantom volumes use 192-pixel slices (~2 mm pixels, as the tests do), which keeps ribs and discs
resolvable.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sarcoscope.errors import LevelError
from sarcoscope.imaging.read import read_ct
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import locate_l3
from sarcoscope.phantom import make_volume
from sarcoscope.validation.benchmark import REAL_VOLUME, real_l3_centroid

REPO = Path(__file__).resolve().parents[1]

#: (seed, slice thickness mm, coverage, variant[, slice size in pixels instead of --size])
PHANTOMS: list[tuple] = [
    *[(seed, 3.0, "abdomen", "normal") for seed in (1, 2, 3, 4, 5, 6)],
    (7, 5.0, "abdomen", "normal"),
    (8, 5.0, "abdomen", "normal"),
    (9, 1.5, "abdomen", "normal"),
    (10, 5.0, "chest-pelvis", "normal"),
    (10, 5.0, "chest-pelvis", "normal", 512),  # the same body at a scanner's resolution (0.8 mm pixels)
    (11, 3.0, "upper-abdomen", "normal"),
    (12, 3.0, "lower", "normal"),
    *[
        (seed, 3.0, "abdomen", variant)
        for variant in ("11-ribs", "13-ribs", "six-lumbar", "sacralised-L5")
        for seed in (21, 22)
    ],
    (31, 3.0, "abdomen", "long-steep-12th-ribs"),
    (32, 3.0, "no-sacrum", "long-steep-12th-ribs"),
    (33, 3.0, "no-sacrum", "one-sided-12th-rib"),
    (34, 3.0, "no-sacrum", "normal"),
    (36, 3.0, "no-sacrum", "11-ribs"),
    (37, 3.0, "no-sacrum", "13-ribs"),
    (35, 3.0, "no-ribs", "normal"),
]


def _row(name: str, volume: CTVolume, ref: float | None, ref_mm: float | None) -> str:
    """One table row; the error is that of the mid-L3 position (mm above slice 0), as the tests measure it."""
    t0 = time.perf_counter()
    try:
        loc = locate_l3(volume)
    except LevelError:
        seconds = time.perf_counter() - t0
        ref_s = "–" if ref is None else f"{ref:g}"
        return f"| {name} | {ref_s} | refused (cannot count) | – | – | – | {seconds:.1f} s |"
    seconds = time.perf_counter() - t0
    flags = ", ".join(f"`{f['flag']}`" for f in loc.flags) or "–"
    alt = ""
    if loc.candidates:
        alt = " (" + " or ".join(f"{c.l3_mid} p={c.probability:.2f}" for c in loc.candidates) + ")"
    if ref is None or ref_mm is None:
        ref_s, err = "–", "–"
    else:
        ref_s = f"{ref:g}"
        err = f"{abs(loc.l3_mid_mm - ref_mm):.1f} mm" if loc.l3_mid_mm is not None else "not found"
    pred = loc.l3_mid if loc.l3_mid is not None else "–"
    return f"| {name} | {ref_s} | {pred} | {err} | {loc.confidence:.2f} | {flags}{alt} | {seconds:.1f} s |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--size", type=int, default=192, help="phantom slice size in pixels")
    args = parser.parse_args()
    print("| volume | reference mid-L3 | predicted | error | confidence | flags | time |")
    print("|---|---|---|---|---|---|---|")
    real = args.shared / REAL_VOLUME
    if (real / "example_ct.nii.gz").is_file():
        volume, ref = read_ct(real / "example_ct.nii.gz"), real_l3_centroid(real)
        print(_row("real `ts_example`, 3 mm", volume, round(ref, 2), ref * volume.spacing[0]))
    for seed, thickness, coverage, variant, *size in PHANTOMS:
        shape = size[0] if size else args.size
        pv = make_volume(
            seed, shape_xy=shape, slice_thickness_mm=thickness, coverage=coverage, variant=variant
        )
        truth = pv.truth
        ref, ref_mm = None, None
        if truth["l3_in_volume"]:
            ref, ref_mm = truth["l3_mid_index"], truth["l3_z_mm"]["mid"] - truth["z_mm_of_index_0"]
        volume = pv.to_ctvolume()
        px = volume.pixel_spacing[0]
        name = f"phantom seed {seed}, {variant}, {coverage}, {thickness:g} mm, {shape} px of {px:.1f} mm"
        print(_row(name, volume, ref, ref_mm), flush=True)


if __name__ == "__main__":
    main()
