"""Add a network to the shipped U-Net ensemble, and install the larger ensemble only when it measures better.

    python scripts/ensemble_default_model.py [--shared ../shared/data] [--work runs/ensemble] [--install]

With nine real slices, two trainings of one recipe differ on a slice by as much as two more patients add
(docs/validation/continuation.md): the variance of a training, not its recipe, decides most comparisons.
The mean of several networks' probabilities (sarcoscope.training.ensemble) cancels part of it.

The members: member 0 is the network first shipped (trained on five real slices), and each recipe of
RECIPES adds one, fine-tuned from a phantom-pretrained network. The shipped model holds the first k of them;
the script adds the next recipe.

1. **Member 0**: taken out of the shipped model.
2. **Pretrain** on phantoms (`models/pretrain.yaml`), once for every recipe.
3. **Held-out folds**: the real slices member 0 never saw, in pairs; for each pair, every recipe is
   fine-tuned on every other real slice, and the pair is segmented by the ensemble the shipped model is and
   by the one with the new member, each made of member 0 and these fold networks. Neither has seen the pair:
   the evidence, by the model registry's rule (higher mean muscle Dice, mean absolute muscle-area error not
   higher).
4. **Final**: the new recipe fine-tuned on every real slice; the shipped members and it go to WORK/ensemble
   with the comparison in its model card, and with `--install` into the package when better.

Every training resumes or is skipped when finished. On 2 CPU cores: about 20 minutes of pretraining and 15
per fine-tuning (two folds per recipe and one final).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, MODEL_FILE, load_model_card
from sarcoscope.training import train_or_resume
from sarcoscope.training.data import find_pairs
from sarcoscope.training.ensemble import combine_models, write_member
from sarcoscope.training.evaluate import held_out_comparison, update_card

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "sarcoscope" / "segmentation" / "models"
#: The members after member 0, in the order they joined the ensemble.
RECIPES = (MODELS / "ensemble_member.yaml", MODELS / "ensemble_member_blur.yaml")


def shipped_members(work: Path) -> list[Path]:
    """Copies of the shipped model's networks (--install must not change the models under the folds)."""
    card = load_model_card(MODELS)
    if "members" not in card:
        out = work / "member0"
        if not (out / MODEL_FILE).is_file():
            shutil.copytree(MODELS, out, dirs_exist_ok=True)
        return [out]
    members = [work / f"member{i}" for i in range(len(card["members"]))]
    for index, out in enumerate(members):
        if not (out / MODEL_FILE).is_file():
            write_member(MODELS, index, out)
    return members


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "ensemble")
    parser.add_argument("--install", action="store_true", help="install the ensemble when it is better")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # paths relative to the repository, so the model cards do not record this machine's folders
    real = Path(os.path.relpath(args.shared.resolve() / "real" / "l3_slices", REPO))
    work = Path(os.path.relpath(args.work.resolve(), REPO))
    os.chdir(REPO)
    cases = [case for case, _, _ in find_pairs(real)]

    shipped = shipped_members(work)
    if len(shipped) > len(RECIPES):
        raise SystemExit(f"The shipped model already has {len(shipped)} members: no recipe left to add.")
    recipes = RECIPES[: len(shipped)]
    first = load_model_card(shipped[0])
    seen = set(first["training_data"]["train"]["data_cases"])
    unseen = [c for c in cases if c not in seen]
    if not unseen:
        raise SystemExit(f"Member 0 has seen every slice of {real}: nothing to test on.")
    pretrained = train_or_resume(MODELS / "pretrain.yaml", work / "pretrain")
    settings = {"data_dirs": [str(real)], "init_from": str(pretrained)}
    n = len(shipped) + 1

    def fold_ensemble(held_out: list[str], size: int) -> Path:
        """The ensemble of member 0 and the first size-1 recipes' networks trained without `held_out`."""
        name = "-".join(held_out)
        others = [c for c in cases if c not in held_out]
        folds = [
            train_or_resume(r, work / r.stem / f"fold-{name}", cases=others, **settings)
            for r in recipes[: size - 1]
        ]
        if not folds:
            return shipped[0]
        return combine_models([shipped[0], *folds], work / f"ensemble{size}-{name}", "held-out fold")

    comparison, text = held_out_comparison(
        real,
        unseen,
        seen,
        2,
        f"{n} networks (held-out folds)",
        lambda held_out: fold_ensemble(held_out, n),
        f"{n - 1} network{'s' if n > 2 else ''}, as shipped (held-out folds)",
        lambda held_out: fold_ensemble(held_out, n - 1),
        f"Slices member 0 never saw, each segmented by the shipped model's {n - 1} network(s) and by "
        f"{n} with `{recipes[-1].name}`, every network but member 0 fine-tuned **without that slice** (nor "
        "the other slice of its held-out pair); HU refinement and mirror averaging on, as the product runs "
        "them:",
    )
    print(text)

    final = train_or_resume(recipes[-1], work / recipes[-1].stem / "final", cases=cases, **settings)
    members = [*shipped, final]
    ensemble = combine_models(
        members,
        work / "ensemble",
        f"The mean of {n} networks' class probabilities. "
        + " ".join(
            f"Member {i}: {load_model_card(m)['training_data']['description']}" for i, m in enumerate(members)
        )
        + f" Together they have seen {len(cases)} real patients: a research model, not a validated "
        "clinical tool.",
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
