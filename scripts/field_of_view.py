"""How muscle measurement holds when the body is wider than the field of view (obese patients, small FOV).

Each real L3 slice with reference labels is cropped left and right, as a reconstruction with a smaller field
of view would cut it: through the subcutaneous fat only (the columns of the reference muscle plus a margin of
15, 7 or 3 mm each side) and through the abdominal wall (5 % or 8 % of the body's width off each side). Both
engines segment the crop; the muscle area is compared with the reference inside the crop (what a reader
would label on that image) and with the whole slice's (the patient's), and the analysis' field-of-view
warning (segmentation.quality.cut_off_warning, on the engine's own labels) is counted. The change from the
slice as scanned is what the cut itself costs (a slice the engine misreads whole carries its error into
every crop).

    python scripts/field_of_view.py [--shared ../shared/data] [--folds DIR [DIR ...]] [--cases C ...]
                                    [--out FILE]

`--folds DIR` segments each case with the U-Net of its leave-one-out fold (`DIR/cv-<CASE>`, a model that
never saw it); several folders compare recipes side by side (rows named by folder); without it, the
shipped model (which saw all nine).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from real_slices import CaseEngines, add_folds_option, error_summary, parse_args, read_case

from sarcoscope.conventions import Label
from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation.quality import cut_off_warning
from sarcoscope.validation.metrics import case_metrics

#: (row name, kind, amount): "fat" keeps the muscle's columns plus `amount` mm each side; "wall" removes
#: `amount` of the body's width from each side
CROPS = (
    ("as scanned", "none", 0.0),
    ("cut in the fat, 15 mm beside the muscle", "fat", 15.0),
    ("cut in the fat, 7 mm beside the muscle", "fat", 7.0),
    ("cut in the fat, 3 mm beside the muscle", "fat", 3.0),
    ("cut through the wall, 5 % of the width each side", "wall", 0.05),
    ("cut through the wall, 8 % of the width each side", "wall", 0.08),
)


def crop_columns(ref: np.ndarray, spacing: tuple[float, float], kind: str, amount: float) -> slice:
    """The columns a field of view of this kind keeps."""
    if kind == "none":
        return slice(None)
    if kind == "fat":
        cols = np.flatnonzero((ref == Label.MUSCLE).any(axis=0))
        margin = round(amount / spacing[1])
        return slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, ref.shape[1]))
    cols = np.flatnonzero((ref > 0).any(axis=0))
    cut = int((cols[-1] - cols[0]) * amount)
    return slice(cols[0] + cut, cols[-1] - cut + 1)


def main() -> None:
    args, folder, cases = parse_args(__doc__, add_folds_option)
    engines = CaseEngines(args.folds)

    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    per_slice: dict[tuple[str, str], list[str]] = {}  # (case, engine): as scanned, then the widest cut
    for case in cases:
        hu, spacing, ref = read_case(folder, case)
        whole = np.count_nonzero(ref == Label.MUSCLE)
        case_engines = engines(case)
        for name, kind, amount in CROPS:
            cols = crop_columns(ref, spacing, kind, amount)
            img, seen = hu[:, cols], ref[:, cols]
            visible = np.count_nonzero(seen == Label.MUSCLE)
            for engine_name, engine in case_engines.items():
                labels = engine.segment(img[None], spacing)[0]
                muscle = np.count_nonzero(labels == Label.MUSCLE)
                row = results.setdefault(
                    (name, engine_name), {"visible": [], "whole": [], "change": [], "warned": []}
                )
                row["visible"].append(100.0 * (muscle - visible) / visible)
                row["whole"].append(100.0 * (muscle - whole) / whole)
                as_scanned = results[(CROPS[0][0], engine_name)]["visible"][-1]
                row["change"].append(row["visible"][-1] - as_scanned)
                if kind == "none":
                    m = case_metrics(labels[None], ref[None], pixel_spacing=spacing)
                    per_slice[(case, engine_name)] = [
                        f"{m['muscle_dice']:.3f}",
                        f"{m['vat_dice']:.3f}",
                        f"{as_scanned:+.1f} %",
                    ]
                elif (kind, amount) == CROPS[-1][1:]:
                    per_slice[(case, engine_name)].append(f"{row['change'][-1]:+.1f}")
                warning = cut_off_warning([labels], spacing) or ""
                row["warned"].append(float(warning.startswith("Muscle")))
                print(case, name, engine_name, f"{row['visible'][-1]:+.1f} %", f"{row['whole'][-1]:+.1f} %")
    lines = [
        "| field of view | engine | muscle-area error against the crop's reference, mean (mean abs, worst) "
        "| against the whole slice's | change from as scanned (points) "
        "| 'muscle runs into the edge' warned |",
        "|---|---|---|---|---|---|",
    ]
    for (name, engine_name), row in results.items():
        lines.append(
            f"| {name} | {engine_name} | {error_summary(row['visible'])} | {error_summary(row['whole'])} "
            f"| {error_summary(row['change'])} | {int(sum(row['warned']))} of {len(row['warned'])} |"
        )
    lines += [
        "",
        f"Per slice, as scanned and what the widest cut ({CROPS[-1][0]}) changes:",
        "",
        "| slice | engine | muscle Dice | VAT Dice | muscle-area error | change with the cut (points) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {case} | {engine} | {' | '.join(values)} |" for (case, engine), values in per_slice.items()]
    table = "\n".join(lines)
    print(table)
    if args.out:
        head = (
            "# Muscle measurement when the body is wider than the field of view\n\n"
            f"Written by `python scripts/field_of_view.py` on {dt.date.today()} with {engines.described()}: "
            f"the {len(cases)} real L3 slices of ../shared/data/real/l3_slices "
            "cropped left and right as a smaller field of view would cut them (the script says how).\n\n"
        )
        atomic_write_text(args.out, head + table + "\n")


if __name__ == "__main__":
    main()
