"""How well does the segmentation quality score rank the worst slices first? (segmentation.quality)

Segments every real L3 slice with reference labels with the U-Net of its leave-one-out fold (`--folds DIR`
holding `cv-<CASE>/model.onnx + model_card.json`: a model that never saw that case) or, without fold models,
with one model for all (`--model`, default: the shipped one; the report says which cases it saw), and with
the threshold engine. Prints per case each engine's quality score, its limiting signal and its true muscle
Dice and area error against the reference labels; then, per engine, Spearman's rank correlation of score and
true Dice and where the worst slice ranks. With `--phantoms N`, also N phantom slices and their injected
failures (sarcoscope.phantom.artefacts: heavy noise and upside down, which should score below the clean
slice; and arms pressed against the trunk, which the segmentation cuts off since refinement v6, so their
score should be the clean slice's). `--out` writes the same as Markdown.

The threshold engine's score uses the engine-agreement signals only (it has no probabilities); they are
symmetric, so they are read off the U-Net's run instead of segmenting twice.

    python scripts/evaluate_quality.py --folds runs/default-unet --phantoms 4 --out docs/validation/quality.md
    python scripts/evaluate_quality.py --phantoms 4 --out docs/validation/quality.md    # the shipped model

`--wait S` waits up to S seconds for each fold model (to run beside the training that writes them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from sarcoscope.conventions import Label
from sarcoscope.fileio import atomic_write_text
from sarcoscope.phantom import make_slice
from sarcoscope.phantom.artefacts import injected_failures
from sarcoscope.segmentation.model_files import CARD_FILE, load_model_card
from sarcoscope.segmentation.quality import (
    ENGINE_SIGNALS,
    REVIEW_THRESHOLD,
    SliceQuality,
    segment_with_quality,
)
from sarcoscope.segmentation.threshold import ThresholdEngine
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.validation.metrics import dice

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "l3_slices"


class FixedLabels:
    """An engine that returns labels computed before (so the threshold engine runs once per case)."""

    name = "threshold"

    def __init__(self, labels: np.ndarray, model_id: str) -> None:
        self.labels, self.model_id = labels, model_id

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        return self.labels


@dataclass
class Row:
    case: str
    model: str
    seen: bool
    engine: str
    quality: SliceQuality
    true_dice: float
    area_error: float


def read_case(folder: Path, case: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    import pydicom
    from pydicom.pixels import apply_rescale

    ds = pydicom.dcmread(folder / "images" / f"L3_{case}.dcm")
    hu = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    return (
        hu,
        (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        np.load(folder / "labels" / f"{case}.npy"),
    )


def truth(labels: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """True muscle Dice and signed relative muscle-area error against the reference."""
    area, ref_area = int((labels == Label.MUSCLE).sum()), int((ref == Label.MUSCLE).sum())
    return dice(labels, ref, Label.MUSCLE), (area - ref_area) / max(ref_area, 1)


def cases_of(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "labels").glob("*.npy"))


def _fold_ready(model_dir: Path, wait_s: float) -> bool:
    """Whether the fold model is there, waiting up to `wait_s` for training to write it."""
    deadline = time.monotonic() + wait_s
    if (model_dir / CARD_FILE).is_file():
        return True
    while not (model_dir / CARD_FILE).is_file():
        if time.monotonic() >= deadline:
            return False
        time.sleep(15)
    time.sleep(10)  # the card is written last but one (MODEL_CARD.md follows)
    return True


def evaluate(
    folder: Path,
    folds: Path | None,
    model: str | None,
    wait_s: float = 0.0,
    on_rows: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Rows of every case (two per case: unet, threshold); `on_rows` sees them after each case."""
    rows: list[Row] = []
    threshold = ThresholdEngine()
    for case in cases_of(folder):
        model_dir = folds / f"cv-{case}" if folds is not None else model
        if folds is not None and not _fold_ready(model_dir, wait_s):
            print(f"{case}: no fold model in {model_dir}, skipped")
            continue
        unet = UNetEngine(model_path=model_dir)
        seen = case in load_model_card(unet.model_dir)["training_data"]["train"].get("data_cases", [])
        hu, spacing, ref = read_case(folder, case)
        thr_labels = threshold.segment(hu[None], spacing)
        labels, qa = segment_with_quality(
            unet, hu[None], spacing, second_opinion=FixedLabels(thr_labels, threshold.model_id)
        )
        q = qa.slices[0]
        rows.append(Row(case, unet.model_id, seen, "unet", q, *truth(labels[0], ref)))
        agreement = SliceQuality({k: q.signals[k] for k in ENGINE_SIGNALS})
        rows.append(Row(case, threshold.model_id, seen, "threshold", agreement, *truth(thr_labels[0], ref)))
        print(
            f"{case} unet {q.score:.3f} (true Dice {rows[-2].true_dice:.3f})"
            f"  threshold {agreement.score:.3f} (true Dice {rows[-1].true_dice:.3f})",
            flush=True,
        )
        if on_rows is not None:
            on_rows(rows)
    return rows


#: Arms pressed on the trunk are cut off by the segmentation (refinement v6): the score may move this much.
ARMS_AS_CLEAN = 0.05


def phantom_failures(n: int, model: str | None) -> list[str]:
    """Markdown rows: the U-Net's score on phantoms (384 px of 1.15 mm: room for arms) and their failures."""
    unet, threshold = UNetEngine(model_path=model), ThresholdEngine()
    lines = [
        "| seed | clean | arms | noise | flipped | noise and flipped below clean, arms as clean (±0.05) |",
        "|---|---|---|---|---|---|",
    ]
    for seed in range(1, n + 1):
        ph = make_slice(seed, size=384, pixel_spacing=1.15)
        variants = injected_failures(ph.hu, ph.pixel_spacing, seed)
        _, qa = segment_with_quality(
            unet, np.stack(list(variants.values())), ph.pixel_spacing, second_opinion=threshold
        )
        scores = dict(zip(variants, (q.score or 0.0 for q in qa.slices), strict=True))
        below = all(scores[k] < scores["clean"] for k in ("noise", "flipped"))
        below = below and abs(scores["arms"] - scores["clean"]) <= ARMS_AS_CLEAN
        cells = " | ".join(
            f"{scores[k]:.3f}{' **review**' if q.flagged else ''}"
            for k, q in zip(variants, qa.slices, strict=True)
        )
        lines.append(f"| {seed} | {cells} | {'yes' if below else 'no'} |")
        print(lines[-1], flush=True)
    return lines


def summary(rows: list[Row], engine: str) -> str:
    sel = [r for r in rows if r.engine == engine]
    scores = np.array([r.quality.score for r in sel])
    true = np.array([r.true_dice for r in sel])
    rho = spearmanr(scores, true).statistic if len(sel) > 2 else float("nan")
    worst = sel[int(np.argmin(true))]
    rank = 1 + int((scores < worst.quality.score).sum())
    flagged = [r for r in sel if r.quality.flagged]
    bad = [r for r in sel if r.true_dice < 0.947]
    caught = [r for r in bad if r.quality.flagged]
    return (
        f"- **{engine}**: Spearman ρ(score, true muscle Dice) = {rho:.2f} over {len(sel)} slices; the worst "
        f"slice ({worst.case}, Dice {worst.true_dice:.3f}) has score rank {rank} of {len(sel)} (1 = lowest); "
        f"flagged {len(flagged)} ({', '.join(r.case for r in flagged) or 'none'}); slices below the bar "
        f"Dice 0.947: {len(bad)}, of which flagged {len(caught)}."
    )


def markdown(rows: list[Row], source: str, phantoms: list[str]) -> str:
    lines = [
        "# Segmentation quality score: does it rank the worst slices first?",
        "",
        f"Written by `scripts/evaluate_quality.py` on {dt.date.today().isoformat()}. {source}",
        "",
        "The score (sarcoscope.segmentation.quality, README, Segmentation quality) is the minimum over "
        f"its signals' 0..1 scores; below {REVIEW_THRESHOLD} a slice is flagged review. Its anchors come "
        "from the published accuracy bar, not from these slices. The threshold engine's score uses only the "
        "engine-agreement signals (it has no probabilities). True values are against the reference labels.",
        "",
        "Regenerate with the leave-one-out fold models (each case scored by the model that never saw it): "
        "`python scripts/evaluate_quality.py --folds runs/default-unet --phantoms 5 --out "
        "docs/validation/quality.md`; without `--folds` it uses the shipped model.",
        "",
        "| case | engine | model saw it | score | limiting signal | expected Dice | mirror Dice "
        "| engine Dice | area diff | true muscle Dice | muscle area error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.engine, r.quality.score)):
        s = r.quality.signals

        def cell(name: str, s: dict[str, float] = s) -> str:
            return f"{s[name]:.3f}" if name in s else "—"

        flag = " **review**" if r.quality.flagged else ""
        lines.append(
            f"| {r.case} | {r.engine} | {'yes' if r.seen else 'no'} | {r.quality.score:.3f}{flag} "
            f"| {r.quality.limiting} | {cell('expected_muscle_dice')} | {cell('mirror_muscle_dice')} "
            f"| {cell('engine_muscle_dice')} | {cell('engine_muscle_area_diff')} | {r.true_dice:.3f} "
            f"| {100 * r.area_error:+.1f} % |"
        )
    lines += ["", "## Ranking", "", summary(rows, "unet"), summary(rows, "threshold"), ""]
    if phantoms:
        lines += [
            "## Phantoms with injected failures",
            "",
            "U-Net score (shipped or `--model`) on a clean phantom slice and on the same slice with each "
            "failure of `sarcoscope.phantom.artefacts` (the trunk's labels unchanged; arms pressed on the "
            "trunk are cut off by the segmentation since refinement v6, so they should change nothing). "
            "A clean phantom below 0.5 is a false alarm of the engine agreement (the engines disagree more "
            "on phantoms than "
            "on real slices); what should hold is the last column:",
            "",
            *phantoms,
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="folder with images/ and labels/")
    parser.add_argument("--folds", type=Path, help="folder of leave-one-out fold models cv-<CASE>/")
    parser.add_argument("--model", help="one U-Net model for every case (default: the site default)")
    parser.add_argument("--phantoms", type=int, default=0, help="phantom seeds with injected failures")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for each fold model")
    parser.add_argument("--out", type=Path, help="write the Markdown report here (again after each case)")
    args = parser.parse_args()

    def document(rows: list[Row], phantoms: list[str]) -> str:
        if args.folds is not None:
            missing = sorted(set(cases_of(args.data)) - {r.case for r in rows})
            source = f"Leave-one-out: each case segmented by its fold model in `{args.folds}` (never saw it)."
            if missing:
                source += f" No fold model (yet) for {', '.join(missing)}."
        else:
            seen = sorted({r.case for r in rows if r.seen})
            source = (
                f"One model for every case ({rows[0].model if rows else '?'}); it was trained on {len(seen)} "
                f"of them ({', '.join(seen)}), so its rows for those are not a test of the model, only of "
                "the score."
            )
        return markdown(rows, source, phantoms)

    def write(rows: list[Row]) -> None:
        if args.out is not None:
            atomic_write_text(args.out, document(rows, []))

    rows = evaluate(args.data, args.folds, args.model, args.wait, write)
    phantoms = phantom_failures(args.phantoms, args.model) if args.phantoms else []
    text = document(rows, phantoms)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
