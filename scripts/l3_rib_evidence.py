"""What the rib evidence says about 11 and 13 rib pairs without the sacrum (issue 14), measured and not built.

    python scripts/l3_rib_evidence.py [--shared ../shared/data] [--cache DIR]

Without the sacrum the localizer counts from the last rib-bearing vertebra, taken for T12 unless the
evidence says otherwise; with 11 pairs that vertebra is T11, with 13 it is L1, and nothing it reads tells
them apart. This runs `locate_l3` on phantoms (their vertebrae named from the phantom's anatomy) and on the
real volume (named from TotalSegmentator's labels) and prints, per case, what anatomy could use:

- the last rib found (its true name, reach beyond the body's side, drop) and its reach over that of the rib
  above it: the 11th rib is longer than the 12th, a 13th is mostly a rudiment;
- the transverse process of the first rib-free vertebra below it (a rib-free T12 is thoracic, with short
  processes; L1's are short too; L2's longer);
- the transverse-process profile (`labelling.tp_profile`, untempered): the true naming's log-likelihood less
  the count's (for phantoms with 11 or 13 pairs) or less the naming one vertebra off either way.

Then the ranges per kind of last rib. The findings are in docs/validation/l3-notes.md (2026-12-06, 11 and 13
rib pairs without the sacrum).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from l3_psoas import measurement_args, real_vertebrae
from l3_reliability import _phantom, _phantom_case, crop

from sarcoscope.errors import LevelError
from sarcoscope.imaging.read import read_ct
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import labelling, locate_l3
from sarcoscope.level.naming import ORDER
from sarcoscope.validation.benchmark import REAL_VOLUME

#: variant, coverage, slice thickness (mm), seeds: the wide harness's phantoms with a rib count to check
SETS = [
    ("11-ribs", "no-sacrum", 3.0, (36, 100, 101, 102, 103)),
    ("13-ribs", "no-sacrum", 3.0, (37, 110, 111, 112, 113)),
    ("normal", "no-sacrum", 3.0, (34, *range(50, 58))),
    ("long-steep-12th-ribs", "no-sacrum", 3.0, (32, 80, 81, 82, 83)),
    ("one-sided-12th-rib", "no-sacrum", 3.0, (33,)),
    ("11-ribs", "abdomen", 3.0, (21,)),
    ("13-ribs", "abdomen", 3.0, (21,)),
    ("normal", "abdomen", 3.0, (1, 2, 3, *range(4, 20))),
    ("normal", "abdomen", 5.0, tuple(range(120, 126))),
    ("normal", "chest-pelvis", 5.0, tuple(range(70, 86))),
]
#: the true last rib-bearing vertebra per variant
LAST_RIB = {"11-ribs": "T11", "13-ribs": "L1"}


def evidence(label: str, volume: CTVolume, true_name: Callable[[int], str], last: str) -> dict | None:
    """Print one case's row; return its last rib, above-ratio and first rib-free process when the last rib
    found is the true `last`."""
    try:
        loc = locate_l3(volume)
    except LevelError as exc:
        print(f"{label}\trefused: {str(exc).split(':')[0]}")
        return None
    ribs = sorted(loc.ribs, key=lambda r: r.segment)
    reach = {r.segment: max(r.right_reach_mm, r.left_reach_mm) for r in ribs}
    truth = {
        r.segment: true_name(loc.vertebrae[r.vertebra].center) for r in ribs if r.vertebra in loc.vertebrae
    }
    bearing = [r for r in ribs if r.bears_ribs]
    if not bearing:
        print(f"{label}\tno rib-bearing vertebra")
        return None
    r = bearing[0]
    above = reach.get(r.segment + 1, 0.0)
    own = max(r.right_reach_mm, r.left_reach_mm)
    ratio = own / above if above > 30 else None  # the rib above measured (else not in view or missed)
    free = reach.get(r.segment - 1)
    # the true T12's segment: the localizer's names shifted by how far they are from the truth
    off = [
        ORDER.index(truth[x.segment]) - ORDER.index(x.vertebra)
        for x in ribs
        if truth.get(x.segment) in ORDER and x.vertebra in ORDER
    ]
    said = r.segment + ORDER.index(r.vertebra) - ORDER.index("T12")
    tp = {x.segment: reach[x.segment] for x in ribs if not x.any}

    def ll(t12: int) -> float:
        return labelling.tp_profile(tp, t12) / labelling.TP_WEIGHT

    text = ""
    if off:
        t12 = said + int(np.median(off))
        others = [said] if said != t12 else [t12 - 1, t12 + 1]
        text = " ".join(f"{ll(t12) - ll(o):+.2f}" for o in others)
    print(
        f"{label}\tcounted from {loc.counted_from}\tlast rib {truth.get(r.segment, '?')} {own:.0f} mm "
        f"drop {max(r.right_drop_mm, r.left_drop_mm):.0f}\tover the rib above "
        f"{'-' if ratio is None else f'{ratio:.2f}'}\tfirst rib-free {truth.get(r.segment - 1, '?')} "
        f"{'-' if free is None else f'{free:.0f}'} mm\tprocess profile, truth less {text or '-'}"
    )
    if truth.get(r.segment) != last:
        return None
    return {
        "reach": own,
        "drop": max(r.right_drop_mm, r.left_drop_mm),
        "ratio": ratio,
        "free": free,
    }


def real_case(folder: Path) -> None:
    """The real volume, whole and with the sacrum cropped, named from TotalSegmentator's labels."""
    volume = read_ct(folder / "example_ct.nii.gz")
    spans = real_vertebrae(folder)
    for label, lo in (("real ts_example", 0), ("real, sacrum cropped (slices 55-)", 55)):

        def name(k: int, lo: int = lo) -> str:
            return next((n for n, (a, b) in spans.items() if a <= k + lo <= b), "?")

        evidence(label, crop(volume, lo, volume.n_slices), name, "T12")


def main() -> None:
    args = measurement_args(__doc__ or "")
    if (args.shared / REAL_VOLUME / "example_ct.nii.gz").is_file():
        real_case(args.shared / REAL_VOLUME)
    kinds: dict[str, list[dict]] = {}
    for variant, coverage, thickness, seeds in SETS:
        for seed in seeds:
            pv = _phantom(seed, 192, variant, coverage, thickness)
            volume, _ = _phantom_case(pv, "")
            verts = {n: v for n, v in pv.truth["vertebrae"].items() if v["first_index"] is not None}

            def name(k: int, verts: dict = verts) -> str:
                return next((n for n, v in verts.items() if v["first_index"] <= k <= v["last_index"]), "?")

            last = LAST_RIB.get(variant, "T12")
            row = evidence(f"{variant}, {coverage}, {thickness} mm, seed {seed}", volume, name, last)
            if row is not None:
                kinds.setdefault(last, []).append(row)
    for last, rows in kinds.items():
        v = {k: [r[k] for r in rows if r[k] is not None] for k in ("reach", "drop", "ratio", "free")}

        def span(k: str, fmt: str = ".0f", v: dict = v) -> str:
            return f"{min(v[k]):{fmt}}-{max(v[k]):{fmt}}"

        print(
            f"last rib on {last} ({len(rows)} readings): reach {span('reach')} mm, drop {span('drop')} mm, "
            f"over the rib above {span('ratio', '.2f')}, first rib-free vertebra's process {span('free')} mm "
            f"(median {np.median(v['free']):.0f})"
        )


if __name__ == "__main__":
    main()
