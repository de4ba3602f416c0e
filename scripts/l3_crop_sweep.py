"""The L3 localizer on the real volume cropped at many fields of view: how often the count goes wrong when
the scan starts or ends at an awkward level, and whether each such error is flagged.

    python scripts/l3_crop_sweep.py [--shared ../shared/data]

The TotalSegmentator example (3 mm, ../shared/data/real/volumes/ts_example) is cut from below at every
third slice up to slice 60 (the sacrum goes at slice 42) and from above at five levels (whole, slice 111,
100, 95, 90: the lower ribs go between 100 and 111). Per crop: the error of mid-L3 against the centroid of
TotalSegmentator's L3 label, the confidence and the flags; then the summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l3_reliability import crop

from sarcoscope.errors import LevelError
from sarcoscope.imaging.read import read_ct
from sarcoscope.level import locate_l3
from sarcoscope.level.localization import FLAG_COUNTING, FLAG_LOW_CONFIDENCE
from sarcoscope.validation.benchmark import REAL_VOLUME, real_l3_centroid

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    folder = parser.parse_args().shared / REAL_VOLUME
    volume = read_ct(folder / "example_ct.nii.gz")
    truth, dz, n = real_l3_centroid(folder), float(volume.spacing[0]), volume.n_slices
    located, wrong, unflagged, refused = 0, [], [], 0
    print("slices\terror mm\tconfidence\tcounted from\tflags")
    for lo in range(0, 61, 3):
        for hi in (n, n - 1, 100, 95, 90):
            try:
                loc = locate_l3(crop(volume, lo, hi))
            except LevelError:
                refused += 1
                print(f"{lo}-{hi - 1}\trefused")
                continue
            if loc.l3_mid is None:
                continue
            located += 1
            error = (loc.l3_mid + lo - truth) * dz
            flags = [f["flag"] for f in loc.flags]
            if abs(error) > 10.0:
                wrong.append((lo, hi, round(error, 1), loc.confidence))
                if not {FLAG_COUNTING, FLAG_LOW_CONFIDENCE} & set(flags):
                    unflagged.append((lo, hi))
            row = [f"{lo}-{hi - 1}", f"{error:+.1f}", f"{loc.confidence:.2f}", loc.counted_from, *flags]
            print("\t".join(row))
    print(
        f"\nlocated {located}, refused {refused} (no anchor in view); over 10 mm off: {len(wrong)} {wrong}; "
        f"of those unflagged: {len(unflagged)}"
    )


if __name__ == "__main__":
    main()
