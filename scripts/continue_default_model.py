"""Grow the shipped U-Net with newly labelled real slices, and replace it only when that measures better.

    python scripts/continue_default_model.py [--shared ../shared/data] [--work runs/continue]
        [--holdout 2] [--max-epochs N] [--install]

train_default_model.py retrains from phantoms (about 4 hours on 2 CPU cores for its full schedule). When new
reference slices arrive, this script continues from the shipped model instead (the learning loop's way, as
`sarcoscope train --from-store` does for a hospital), and measures it honestly:

1. **Baseline**: a copy of the shipped model; the slices it was trained on are in its model card.
2. **Held-out folds**: the real slices the baseline has *not* seen, in groups of `--holdout` (2 by
   default: half the trainings of leave-one-out, for CPU time, and a stricter test); for each group,
   fine-tune the baseline on every other real slice (models/finetune.yaml, `--max-epochs` to shorten it)
   and segment the held-out slices with it; the baseline segments them too. Both are then tested on
   slices they never saw: the evidence (sarcoscope.segmentation.registry's COMPARISON_RULE: higher mean
   muscle Dice, mean absolute muscle-area error not higher, the Dice gain beyond chance over at least 5
   patients).
3. **Final**: the same fine-tuning on every real slice.
4. `--install` copies the final model into the package only when the evidence says it is better; its
   model card carries the comparison (per case) either way, in WORK/final.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from real_slices import run_from_the_repository

from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, MODEL_FILE, load_model_card
from sarcoscope.training import train_or_resume
from sarcoscope.training.data import find_pairs
from sarcoscope.training.evaluate import held_out_comparison, update_card

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "sarcoscope" / "segmentation" / "models"
#: The rows of the continued recipe are its held-out folds' (one model per held-out slice), not one model's.
CANDIDATE = "continued (held-out folds)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "continue")
    parser.add_argument("--holdout", type=int, default=2, help="unseen slices held out per fold")
    parser.add_argument("--max-epochs", type=int, help="epochs per training (default: finetune.yaml's)")
    parser.add_argument("--install", action="store_true", help="install the final model when it is better")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    real, work = run_from_the_repository(args.shared, args.work)
    cases = [case for case, _, _ in find_pairs(real)]

    baseline = work / "baseline"
    if not (baseline / MODEL_FILE).is_file():  # a copy: --install must not move the model under the folds
        shutil.copytree(MODELS, baseline, dirs_exist_ok=True)
    card = load_model_card(baseline)
    seen = set(card["training_data"]["train"]["data_cases"])
    unseen = [c for c in cases if c not in seen]
    if not unseen:
        raise SystemExit(f"The shipped model has seen every slice of {real}: nothing to test it on.")
    description = (
        f"Continued from {card['model_id']} (phantom-pretrained, then fine-tuned on {len(seen)} real "
        f"slices: {', '.join(sorted(seen))}) on all {len(cases)} real L3 reference slices of {real} "
        "(contrast-enhanced CT from one Dutch hospital, several Siemens and GE scanners; public samples of "
        "rbrecheisen/mosamatic3, labelled by the HU-threshold-in-compartments protocol), each shown 10 times "
        "per epoch with "
        "augmentation, plus 24 fresh phantom slices (6 more for early stopping). It has seen "
        f"{len(cases)} real patients: a research model, not a validated clinical tool."
    )
    settings = {
        "data_dirs": [str(real)],
        "init_from": str(baseline),
        "data_description": description,
        "max_epochs": args.max_epochs,
    }

    def candidate_for(held_out: list[str]) -> Path:
        others = [c for c in cases if c not in held_out]
        out = work / f"fold-{'-'.join(held_out)}"
        return train_or_resume(MODELS / "finetune.yaml", out, cases=others, **settings)

    comparison, text = held_out_comparison(
        real,
        unseen,
        seen,
        args.holdout,
        CANDIDATE,
        candidate_for,
        card["model_id"],
        baseline,
        "Slices the previous model never saw, each segmented by it and by a model continued exactly like "
        "this one but **without that slice** (nor the other slice of its held-out fold; HU refinement on, "
        "as the product runs it):",
    )
    print(text)

    final = train_or_resume(MODELS / "finetune.yaml", work / "final", cases=cases, **settings)
    update_card(final, evaluation=text, continuation=comparison)
    if args.install and comparison["better"]:
        for name in (MODEL_FILE, CARD_FILE, CARD_MD_FILE, "history.png"):
            shutil.copy2(final / name, MODELS / name)
        print(f"installed {final} into {MODELS}")
    elif args.install:
        print("not installed: the continued recipe did not measure better on the held-out slices")


if __name__ == "__main__":
    main()
