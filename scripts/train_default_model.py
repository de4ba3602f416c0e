"""Train the shipped default U-Net, measure it honestly, choose the default engine, regenerate the docs.

    python scripts/train_default_model.py [--shared ../shared/data] [--work runs/default-unet] [--install]

1. **Pretrain** on synthetic phantoms only (`models/pretrain.yaml`).
2. **Leave one patient out**: for each real reference slice of `../shared/data/real/l3_slices`, fine-tune the
   pretrained model on the other real slices (plus fresh phantoms; `models/finetune.yaml`) and segment the
   held-out slice with it, raw, refined and refined without mirror averaging; the threshold engine segments it
   too. Each slice is thus predicted by a model that never saw it: these predictions are the accuracy reported
   for the recipe (README, model card, docs/validation/real-*-cv/) and the evidence that chooses the default
   engine (sarcoscope.validation.evidence).
3. **Final model**: the same fine-tuning on every real slice; this is the model that ships (not trained
   with `--keep-model`).
   Overlays of every case, worst first, go to WORK/real-unet-cv-gallery/ (real CT stays out of the repo).
4. `--install` copies the final model (ONNX, model card, history plot) into the package
   (src/sarcoscope/segmentation/models/; not with `--keep-model`, for when the shipped model measured
   better on the slices it never saw than this recipe's leave-one-out models), writes the default-engine
   decision there (`default_engine.json`), rewrites the README's leave-one-out table and regenerates
   docs/validation/ (scripts/make_validation_docs.py's reports) with the installed model.

Every step resumes: a finished step (its model.onnx exists) is skipped, an interrupted one continues from its
last checkpoint; rerunning after a code change to the engines only re-scores and rewrites. On 2 idle CPU
cores the whole run takes about 90 minutes (2.5 hours at nice 19 beside other work, 2026-12-07:
pretraining 73 minutes, each fold about 7).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
from real_slices import run_from_the_repository

from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.base import DEFAULT_ENGINE_FILE
from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, MODEL_FILE
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.training import train_or_resume
from sarcoscope.training.data import find_pairs, read_image, read_labels
from sarcoscope.training.evaluate import attach_evaluation
from sarcoscope.validation.benchmark import CV_SUFFIX, validate_engines
from sarcoscope.validation.evidence import RULE, choose_default, loo_markdown, summarise
from sarcoscope.validation.metrics import case_metrics
from sarcoscope.validation.runner import run_validation

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "sarcoscope" / "segmentation" / "models"
README_TABLE = re.compile(r"(<!-- loo-table:begin[^>]*-->\n).*?(\n<!-- loo-table:end -->)", re.S)
#: The engines that compete for the default; the other rows show what refinement and mirroring add.
CANDIDATES = ("threshold", "unet")


def _write_readme_table(table: str) -> None:
    """Replace the leave-one-out table between the README's loo-table markers."""
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    if not README_TABLE.search(text):
        raise SystemExit("README.md has no '<!-- loo-table:begin -->' ... '<!-- loo-table:end -->' markers")
    atomic_write_text(readme, README_TABLE.sub(lambda m: m.group(1) + table + m.group(2), text))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "default-unet")
    parser.add_argument(
        "--install",
        action="store_true",
        help="install the final model and the default-engine decision; rewrite README table and docs",
    )
    parser.add_argument(
        "--keep-model",
        action="store_true",
        help="keep the shipped model (when it measured better on the slices it never saw than this "
        "recipe's leave-one-out models): the final model is not trained; with --install, install the "
        "decision, README table and docs",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    real, work = run_from_the_repository(args.shared, args.work)
    pairs = find_pairs(real)
    cases = [case for case, _, _ in pairs]

    pretrained = train_or_resume(MODELS / "pretrain.yaml", work / "pretrain")
    finetune = {"data_dirs": [str(real)], "init_from": str(pretrained)}

    predictions = work / "cv-predictions"
    threshold = get_engine("threshold")
    rows = []
    for case, image_path, label_path in pairs:
        others = [c for c in cases if c != case]
        fold = train_or_resume(MODELS / "finetune.yaml", work / f"cv-{case}", cases=others, **finetune)
        hu, spacing, _ = read_image(image_path)
        ref = read_labels(label_path, None)
        engines = {
            "threshold": threshold,
            "unet": UNetEngine(fold),
            "unet-one-pass": UNetEngine(fold, mirror=False),
            "unet-raw": UNetEngine(fold, refine=False),
        }
        for name, engine in engines.items():
            pred = engine.segment(hu, spacing)
            (predictions / name).mkdir(parents=True, exist_ok=True)
            np.save(predictions / name / f"{case}.npy", pred[0])
            rows.append({"case": case, "engine": name, **case_metrics(pred, ref, pixel_spacing=spacing)})
    summaries = summarise(rows)
    choice = choose_default(summaries, CANDIDATES)
    table = loo_markdown(rows, summaries)
    print(table)
    print(f"default engine: {choice.engine} ({choice.reason})")

    final = None
    if not args.keep_model:  # kept: the final model would not be installed, so it is not trained
        final = train_or_resume(MODELS / "finetune.yaml", work / "final", cases=cases, **finetune)
        attach_evaluation(
            final,
            "Leave-one-patient-out on the real L3 slices with reference labels "
            "(../shared/data/real/l3_slices): each row is a slice segmented by a model fine-tuned exactly "
            "like this one but **without that slice** (the shipped model itself has seen all of them, so its "
            'own scores on them would not be a test). "unet" = HU refinement and mirror averaging on '
            '(default), "unet-one-pass" = the same without mirror averaging, "unet-raw" = the network\'s '
            'mirror-averaged arg-max, "threshold" = the classical baseline engine, all on the '
            "slices' own grids; muscle area error = 100·(predicted − reference)/reference.\n\n"
            + table
            + f"\n\nDefault engine by the rule ({RULE}): **{choice.engine}** — {choice.reason}.",
        )
    for name in ("unet", "unet-raw"):  # the threshold engine is not trained: docs/validation/real-threshold
        run_validation(
            predictions / name,
            real / "labels",
            REPO / "docs" / "validation" / f"real-{name}{CV_SUFFIX}",
            images_dir=real / "images",
            gallery_size=0,
            title=f"Engine '{name}' on the real L3 slices, leave-one-patient-out (train_default_model.py)",
        )
    # the worst cases as overlays, for people to look at: real CT stays out of the repository, so in --work
    run_validation(
        predictions / "unet",
        real / "labels",
        work / f"real-unet{CV_SUFFIX}-gallery",
        images_dir=real / "images",
        gallery_size=len(cases),
        title="Engine 'unet' on the real L3 slices, leave-one-patient-out, with overlays",
    )
    if args.install:
        if final is not None:
            for name in (MODEL_FILE, CARD_FILE, CARD_MD_FILE, "history.png"):
                shutil.copy2(final / name, MODELS / name)
        decision = {**choice.as_dict(), "decided_by": "scripts/train_default_model.py", "cases": cases}
        atomic_write_text(DEFAULT_ENGINE_FILE, json.dumps(decision, indent=2) + "\n")
        _write_readme_table(table)
        kept = "kept the shipped model" if args.keep_model else f"installed {final} into {MODELS}"
        print(f"{kept}; default engine {choice.engine}")
        shared = args.shared if (args.shared / "real").is_dir() else None
        for name, outcome in validate_engines(REPO / "docs" / "validation", shared_data=shared).items():
            print(f"{name}: {outcome if isinstance(outcome, str) else 'written'}")


if __name__ == "__main__":
    main()
