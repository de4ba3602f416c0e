"""Muscle measurement when the organs lie at muscle density, as on CT without contrast.

The real L3 slices are all contrast-enhanced. Each is segmented as scanned and with its label-0 soft tissue
(organs, vessels, bowel wall; not bone, not oral contrast) brought down to 55 HU, unenhanced liver's level,
by the training augmentation's own function (sarcoscope.training.contrast_phase.unenhanced, nothing of the
enhancement kept); muscle, fat and their reference labels are untouched, so the reference still holds. The
change is what the organs' density itself costs an engine.

    python scripts/unenhanced_robustness.py [--shared ../shared/data] [--folds DIR [DIR ...]] [--cases C ...]
                                            [--out FILE]

`--folds DIR` segments each case with the U-Net of its leave-one-out fold (`DIR/cv-<CASE>`, a model that
never saw it); several folders compare recipes side by side; without it, the shipped model (which saw all
nine). Needs the training extra (the augmentation's module imports torch and MONAI).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from real_slices import CaseEngines, add_folds_option, error_summary, parse_args, read_case

from sarcoscope.fileio import atomic_write_text
from sarcoscope.training.contrast_phase import unenhanced
from sarcoscope.validation.metrics import case_metrics

#: The organs' level without contrast (HU): unenhanced liver; kidney, spleen and bowel wall lie lower.
ORGAN_HU = 55.0


def main() -> None:
    args, folder, cases = parse_args(__doc__, add_folds_option)
    engines = CaseEngines(args.folds)
    dice: dict[tuple[str, str], list[float]] = {}
    error: dict[tuple[str, str], list[float]] = {}
    per_slice: list[str] = []
    for case in cases:
        hu, spacing, ref = read_case(folder, case)
        images = {"as scanned": hu, "organs unenhanced": unenhanced(hu, ref, ORGAN_HU, kept=0.0)}
        for engine_name, engine in engines(case).items():
            cells = []
            for image_name, image in images.items():
                labels = engine.segment(image[None].astype(np.float32), spacing)
                m = case_metrics(labels, ref[None], pixel_spacing=spacing)
                dice.setdefault((image_name, engine_name), []).append(m["muscle_dice"])
                error.setdefault((image_name, engine_name), []).append(m["muscle_area_err_pct"])
                cells.append(f"{m['muscle_dice']:.3f} / {m['muscle_area_err_pct']:+.1f} %")
            per_slice.append(f"| {case} | {engine_name} | {' | '.join(cells)} |")
            print(case, engine_name, *cells, flush=True)
    lines = [
        "| CT | engine | muscle Dice, mean (lowest) | muscle-area error, mean (mean abs, worst) |",
        "|---|---|---|---|",
    ]
    for (image_name, engine_name), values in dice.items():
        lines.append(
            f"| {image_name} | {engine_name} | {np.mean(values):.3f} ({min(values):.3f}) "
            f"| {error_summary(error[(image_name, engine_name)])} |"
        )
    lines += [
        "",
        "Per slice, muscle Dice / muscle-area error:",
        "",
        "| slice | engine | as scanned | organs unenhanced |",
        "|---|---|---|---|",
        *per_slice,
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        head = (
            "# Muscle measurement with the organs at unenhanced density\n\n"
            f"Written by `python scripts/unenhanced_robustness.py` on {dt.date.today()} with "
            f"{engines.described()}: the {len(cases)} real L3 slices of ../shared/data/real/l3_slices, as "
            f"scanned and with their organs brought down to {ORGAN_HU:g} HU (the script says how).\n\n"
        )
        atomic_write_text(args.out, head + table + "\n")


if __name__ == "__main__":
    main()
