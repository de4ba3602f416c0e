"""Score segmentation engines on a labelled dataset folder (same layout as training data), per case.

Used to report a trained model on held-out real slices next to other engines; metrics come from
sarcoscope.validation.metrics so the numbers match `sarcoscope validate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sarcoscope.conventions import TISSUES
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.training.data import find_pairs, image_grid, read_image, read_labels
from sarcoscope.validation.metrics import case_metrics
from sarcoscope.validation.stats import iou_bin


def evaluate(
    engines: dict[str, SegmentationEngine],
    data_dir: str | Path,
    cases: list[str] | None = None,
    label_mapping: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (case, engine) with Dice/IoU per tissue and M+S+V (2-D slices only)."""
    rows = []
    for case, image_path, label_path in find_pairs(data_dir):
        if cases is not None and case not in cases:
            continue
        hu, spacing, _ = read_image(image_path)
        ref = read_labels(label_path, label_mapping, image_grid(image_path, hu.shape))
        for name, engine in engines.items():
            pred = engine.segment(hu, spacing)
            metrics = case_metrics(pred, ref, pixel_spacing=spacing)
            rows.append({"case": case, "engine": name, **metrics})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Per case and engine: Dice / IoU per tissue and pooled M+S+V with its IoU bin; each engine's mean."""
    head = (
        "| case | engine | "
        + " | ".join(f"{t} Dice / IoU" for t in TISSUES)
        + " | M+S+V Dice / IoU | IoU bin |"
    )
    lines = [head, "|" + "---|" * (len(TISSUES) + 4)]

    def fmt(r: dict[str, Any]) -> str:
        cells = [f"{r[f'{t}_dice']:.3f} / {r[f'{t}_iou']:.3f}" for t in TISSUES]
        cells.append(f"{r['msv_dice']:.3f} / {r['msv_iou']:.3f}")
        return " | ".join(cells) + f" | {iou_bin(r['msv_iou']) or '-'} |"

    for r in rows:
        lines.append(f"| {r['case']} | {r['engine']} | " + fmt(r))
    for engine in dict.fromkeys(r["engine"] for r in rows):
        sel = [r for r in rows if r["engine"] == engine]
        keys = [k for k in sel[0] if k.endswith(("_dice", "_iou"))]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        lines.append(f"| **mean ({len(sel)})** | {engine} | " + fmt(mean))
    return "\n".join(lines)


def held_out_comparison(
    data_dir: str | Path,
    held_out: list[str],
    trained: list[str],
    group: int,
    candidate: str,
    candidate_for: Any,
    baseline_id: str,
    baseline_dir: Path,
    intro: str,
) -> tuple[dict[str, Any], str]:
    """Compare a recipe with the current default on the slices `held_out` from it, in groups of `group`:
    `candidate_for(group_cases)` gives the model made without those cases; it and the default (never
    trained on them either) segment them. Returns the registry's comparison and its card text."""
    from sarcoscope.segmentation.registry import build_comparison
    from sarcoscope.segmentation.unet import UNetEngine

    rows = []
    for start in range(0, len(held_out), group):
        cases = held_out[start : start + group]
        engines = {candidate: UNetEngine(candidate_for(cases)), baseline_id: UNetEngine(baseline_dir)}
        rows += [r | {"model": r["engine"]} for r in evaluate(engines, data_dir, cases=cases)]
    split = {"validation_cases": held_out, "train_cases": sorted(trained)}
    comparison = build_comparison(candidate, baseline_id, rows, split)
    return comparison, comparison_text(comparison, rows, intro)


def comparison_text(comparison: dict[str, Any], rows: list[dict[str, Any]], intro: str) -> str:
    """A model card's evaluation against the previous default (segmentation.registry.build_comparison of
    `rows`): `intro`, the per-case Dice table, both models' means and the registry's verdict."""
    from sarcoscope.segmentation.registry import comparison_means

    lines = [
        intro,
        "",
        markdown_table(rows),
        "",
        "| model | muscle Dice | SAT Dice | VAT Dice | mean abs muscle-area error (%) |",
        "|---|---|---|---|---|",
    ]
    for model in (comparison["candidate"], comparison["baseline"]):
        m = comparison_means(comparison, model)
        lines.append(
            f"| {model} | {m['muscle_dice']:.3f} | {m['sat_dice']:.3f} | {m['vat_dice']:.3f} | "
            f"{m['muscle_abs_area_err_pct']:.1f} |"
        )
    verdict = "better" if comparison["better"] else "not better"
    lines += ["", f"Verdict ({comparison['rule']}): **{verdict}** — {'; '.join(comparison['reasons'])}."]
    return "\n".join(lines)


def attach_evaluation(model_dir: str | Path, markdown: str) -> None:
    """Put an evaluation text (e.g. a `markdown_table` of held-out cases) into the model card."""
    update_card(model_dir, evaluation=markdown)


def update_card(model_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Add or replace top-level fields of a model card (JSON and MD); returns the new card.

    The model id is a hash of the ONNX file, so documenting a model's test results does not change its id.
    """
    from sarcoscope.fileio import atomic_write_text
    from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, load_model_card
    from sarcoscope.training.card import card_markdown

    folder = Path(model_dir)
    card = load_model_card(folder) | fields
    atomic_write_text(folder / CARD_FILE, json.dumps(card, indent=2) + "\n")
    atomic_write_text(folder / CARD_MD_FILE, card_markdown(card))
    return card
