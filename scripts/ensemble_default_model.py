"""Make the shipped U-Net an ensemble of two networks, and install it only when it measures better.

    python scripts/ensemble_default_model.py [--shared ../shared/data] [--work runs/ensemble] [--install]

With nine real slices, two trainings of one recipe differ on a slice by as much as two more patients add
(docs/validation/continuation.md): the variance of a training, not its recipe, decides most comparisons.
The mean of two networks' probabilities (sarcoscope.training.ensemble) cancels part of it.

1. **First member**: the shipped model (member 0 of it, when it is already an ensemble).
2. **Pretrain** a second network on phantoms (`models/pretrain.yaml`).
3. **Held-out folds**: the real slices the first member never saw, in pairs; for each pair, fine-tune the
   pretrained network on every other real slice (`models/ensemble_member.yaml`) and segment the pair with
   the first member alone and with the ensemble of both. Neither has seen the pair: the evidence, by the
   model registry's rule (segmentation.registry.COMPARISON_RULE: higher mean muscle Dice, mean absolute
   muscle-area error not higher, the Dice gain beyond chance over the patients: four held-out slices
   cannot show that, 1/16 at best, so `--install` needs more real slices than the nine of ../shared).
4. **Final**: the same fine-tuning on every real slice; the ensemble of the first member and it goes to
   WORK/ensemble with the comparison in its model card, and with `--install` into the package when better.

Every training resumes or is skipped when finished. On 2 CPU cores: about 20 minutes of pretraining and 15
per fine-tuning.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from real_slices import run_from_the_repository

from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, MODEL_FILE, load_model_card
from sarcoscope.segmentation.refine import REFINEMENT_VERSION
from sarcoscope.training import train_or_resume
from sarcoscope.training.data import find_pairs
from sarcoscope.training.ensemble import combine_models, write_member
from sarcoscope.training.evaluate import held_out_comparison, update_card

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "sarcoscope" / "segmentation" / "models"
#: The candidate's rows come from one ensemble per held-out pair, not from one model.
CANDIDATE = "ensemble (held-out folds)"


def first_member(work: Path) -> Path:
    """A copy of the shipped model, or of its member 0 when it is an ensemble (--install must not change
    the model under the folds)."""
    out = work / "member0"
    if not (out / MODEL_FILE).is_file():
        if "members" in load_model_card(MODELS):
            write_member(MODELS, 0, out)
        else:
            shutil.copytree(MODELS, out, dirs_exist_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "ensemble")
    parser.add_argument("--install", action="store_true", help="install the ensemble when it is better")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    real, work = run_from_the_repository(args.shared, args.work)
    cases = [case for case, _, _ in find_pairs(real)]

    first = first_member(work)
    card = load_model_card(first)
    seen = set(card["training_data"]["train"]["data_cases"])
    unseen = [c for c in cases if c not in seen]
    if not unseen:
        raise SystemExit(f"The first member has seen every slice of {real}: nothing to test on.")
    pretrained = train_or_resume(MODELS / "pretrain.yaml", work / "pretrain")
    settings = {"data_dirs": [str(real)], "init_from": str(pretrained)}
    member = MODELS / "ensemble_member.yaml"

    def candidate_for(held_out: list[str]) -> Path:
        name = "-".join(held_out)
        others = [c for c in cases if c not in held_out]
        fold = train_or_resume(member, work / f"fold-{name}", cases=others, **settings)
        return combine_models([first, fold], work / f"ensemble-{name}", "held-out fold")

    comparison, text = held_out_comparison(
        real,
        unseen,
        seen,
        2,
        CANDIDATE,
        candidate_for,
        card["model_id"],
        first,
        "Slices the first member never saw, each segmented by it alone and by its ensemble with a second "
        "network fine-tuned exactly like the shipped one but **without that slice** (nor the other slice of "
        f"its held-out pair); HU refinement (v{REFINEMENT_VERSION}) and mirror averaging on, as the product "
        "runs them:",
    )
    print(text)

    final = train_or_resume(member, work / "final", cases=cases, **settings)
    ensemble = combine_models(
        [first, final],
        work / "ensemble",
        f"The mean of two networks' class probabilities. Member 0, `{card['model_id']}`: "
        f"{card['training_data']['description']} Member 1: "
        f"{load_model_card(final)['training_data']['description']} Together they have seen "
        f"{len(cases)} real patients: a research model, not a validated clinical tool.",
    )
    update_card(ensemble, evaluation=text, ensemble_comparison=comparison)
    if args.install and comparison["better"]:
        for name in (MODEL_FILE, CARD_FILE, CARD_MD_FILE):
            shutil.copy2(ensemble / name, MODELS / name)
        shutil.copy2(final / "history.png", MODELS / "history.png")  # the new member's training curves
        print(f"installed {ensemble} into {MODELS}")
    elif args.install:
        print("not installed: the ensemble did not measure better on the held-out slices")


if __name__ == "__main__":
    main()
