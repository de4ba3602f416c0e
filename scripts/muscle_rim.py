"""What the muscle rim rule of the HU refinement (segmentation.refine.MUSCLE_RIM_MM) changes, per real slice.

The reference protocol's muscle edge is its HU threshold. The U-Net's compartments, resampled from its
0.75 mm grid, end a pixel or two inside that edge, so muscle-HU pixels at the edge fell in a fat compartment
and counted as nothing. Each real L3 slice is segmented once by the network and refined twice, without the
rule and with it, and scored against its reference labels.

    python scripts/muscle_rim.py [--shared ../shared/data] [--out docs/validation/muscle-rim.md]
        [--model DIR] [--loo WORK]

`--model` scores one model on every slice (default: the shipped one); `--loo WORK` scores each slice with
the model that never saw it, WORK/cv-<case> of scripts/train_default_model.py (the slices whose model has
finished training).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
from real_slices import error_summary, parse_args, read_case

from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation.refine import MUSCLE_RIM_MM, compartment_scores, tissues_from_scores
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.validation.metrics import case_metrics


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path)
    parser.add_argument("--loo", type=Path)


def main() -> None:
    args, folder, cases = parse_args(__doc__, _options)
    if args.loo:
        cases = [c for c in cases if (args.loo / f"cv-{c}" / "model.onnx").is_file()]
    shipped = UNetEngine(args.model)
    rims = {"without the rim": 0.0, f"with it ({MUSCLE_RIM_MM} mm)": MUSCLE_RIM_MM}
    lines = [
        "| case | model | refinement | muscle Dice | muscle-area error | SAT Dice | VAT Dice | IMAT Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scores: dict[str, dict[str, list[float]]] = {name: {"dice": [], "error": []} for name in rims}
    for case in cases:
        hu, spacing, ref = read_case(folder, case)
        engine = UNetEngine(args.loo / f"cv-{case}") if args.loo else shipped
        compartments = compartment_scores(engine.predict_proba(hu[None], spacing))[0]
        for name, rim in rims.items():
            pred = tissues_from_scores(compartments, hu, spacing, muscle_rim_mm=rim)
            m = case_metrics(pred, ref)
            dice = {t: m[f"{t}_dice"] for t in ("muscle", "sat", "vat", "imat")}
            error = m["muscle_area_err_pct"]
            scores[name]["dice"].append(dice["muscle"])
            scores[name]["error"].append(error)
            lines.append(
                f"| {case} | {'leave-one-out' if args.loo else engine.card['model_id']} | {name} "
                f"| {dice['muscle']:.3f} | {error:+.1f} % | {dice['sat']:.3f} | {dice['vat']:.3f} "
                f"| {dice['imat']:.3f} |"
            )
    lines += ["", "| refinement | muscle Dice, mean (lowest) | muscle-area error, mean (mean abs, worst) |"]
    lines += ["|---|---|---|"]
    for name, s in scores.items():
        d = np.array(s["dice"])
        lines.append(f"| {name} | {d.mean():.4f} ({d.min():.3f}) | {error_summary(s['error'])} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        stamp = dt.date.today().isoformat()
        atomic_write_text(args.out, f"<!-- scripts/muscle_rim.py, {stamp} -->\n{table}\n")


if __name__ == "__main__":
    main()
