"""What a rim rule of the HU refinement changes, per real slice: the muscle rim (segmentation.refine.
MUSCLE_RIM_MM) or the VAT rim (VAT_RIM_MM).

The reference protocol's tissue edges are its HU thresholds. The U-Net's compartments, resampled from its
0.75 mm grid, end a pixel or two inside those edges: muscle-HU pixels at the muscle's edge fell in a fat
compartment, fat-HU pixels at the visceral fat's edge against organs and bowel fell in the "other"
compartment, and both counted as nothing. Each real L3 slice is segmented once by the network and refined
twice, without the rule and with it (the other rule as shipped), and scored against its reference labels.

    python scripts/refinement_rims.py [--rule muscle|vat] [--shared ../shared/data] [--out FILE]
        [--model DIR | --loo WORK | --held-out DIR CASE [CASE ...] ...]

`--model` scores one model on every slice (default: the shipped one); `--loo WORK` scores each slice with
the model that never saw it, WORK/cv-<case> of scripts/train_default_model.py (the slices whose model has
finished training); `--held-out DIR CASE...` (repeatable) scores the model DIR on the slices it was trained
without.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
from real_slices import error_summary, parse_args, read_case

from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation.refine import (
    MUSCLE_RIM_MM,
    VAT_RIM_MM,
    compartment_scores,
    tissues_from_scores,
)
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.validation.metrics import case_metrics

RULES = {"muscle": ("muscle_rim_mm", MUSCLE_RIM_MM), "vat": ("vat_rim_mm", VAT_RIM_MM)}
TISSUES = ("muscle", "sat", "vat", "imat")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rule", choices=sorted(RULES), default="vat")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--loo", type=Path)
    parser.add_argument("--held-out", nargs="+", action="append", metavar=("DIR", "CASE"), default=[])


def _models(args: argparse.Namespace, cases: list[str]) -> list[tuple[str, UNetEngine, str]]:
    """(case, engine, what the model is) for every slice to score, each with the model meant for it."""
    if args.held_out:
        return [(c, UNetEngine(Path(d)), "held out") for d, *some in args.held_out for c in some]
    if args.loo:
        done = [c for c in cases if (args.loo / f"cv-{c}" / "model.onnx").is_file()]
        return [(c, UNetEngine(args.loo / f"cv-{c}"), "leave-one-out") for c in done]
    engine = UNetEngine(args.model)
    return [(c, engine, str(engine.card["model_id"])) for c in cases]


def main() -> None:
    args, folder, cases = parse_args(__doc__, _options)
    option, width = RULES[args.rule]
    rims = {"without the rim": 0.0, f"with it ({width} mm)": width}
    lines = [
        "| case | model | refinement | muscle Dice | muscle-area error | SAT Dice | VAT Dice "
        "| VAT-area error | IMAT Dice |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    scores: dict[str, dict[str, list[float]]] = {name: {} for name in rims}
    for case, engine, model in _models(args, cases):
        hu, spacing, ref = read_case(folder, case)
        compartments = compartment_scores(engine.predict_proba(hu[None], spacing))[0]
        for name, rim in rims.items():
            m = case_metrics(tissues_from_scores(compartments, hu, spacing, **{option: rim}), ref)
            row = {f"{t} Dice": m[f"{t}_dice"] for t in TISSUES}
            row |= {f"{t} error": m[f"{t}_area_err_pct"] for t in ("muscle", "vat")}
            for key, value in row.items():
                scores[name].setdefault(key, []).append(value)
            lines.append(
                f"| {case} | {model} | {name} | {row['muscle Dice']:.3f} | {row['muscle error']:+.1f} % "
                f"| {row['sat Dice']:.3f} | {row['vat Dice']:.3f} | {row['vat error']:+.1f} % "
                f"| {row['imat Dice']:.3f} |"
            )
    lines += ["", "| refinement | muscle Dice, mean (lowest) | muscle-area error, mean (mean abs, worst) "]
    lines[-1] += "| VAT Dice, mean (lowest) | VAT-area error, mean (mean abs, worst) |"
    lines += ["|---|---|---|---|---|"]
    for name, s in scores.items():
        muscle, vat = np.array(s["muscle Dice"]), np.array(s["vat Dice"])
        lines.append(
            f"| {name} | {muscle.mean():.4f} ({muscle.min():.3f}) | {error_summary(s['muscle error'])} "
            f"| {vat.mean():.4f} ({vat.min():.3f}) | {error_summary(s['vat error'])} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        stamp = dt.date.today().isoformat()
        atomic_write_text(
            args.out, f"<!-- scripts/refinement_rims.py --rule {args.rule}, {stamp} -->\n{table}\n"
        )


if __name__ == "__main__":
    main()
