"""The learning loop: fine-tune the site's default model on corrected slices, compare it, register it.

`sarcoscope train --from-store SOURCE -o OUT` runs `adapt` on the corrected slices of the web app
(sarcoscope.web.training_data puts them in OUT/data):

1. **Split by patient**: a seeded `holdout` fraction of the patients (at least one) is the validation split.
   It is never trained on and not used for early stopping (that runs on phantom slices, as in the shipped
   model's fine-tuning), so it is a fair test of both models.
2. **Fine-tune** the current default model (`init_from`) on the other patients' slices plus fresh phantoms
   (recipe models/adapt.yaml; flags override it).
3. **Compare**: the new model and the previous default segment the validation cases with the "unet" engine
   as the product runs it (HU refinement on); Dice per tissue and the muscle-area error per case, their
   means and the verdict of segmentation.registry.COMPARISON_RULE go into the model card (JSON and MD).
4. **Register** the model (segmentation.registry); it becomes the default only by `sarcoscope models use`.

`resume` continues an interrupted run in OUT with its data and split.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarcoscope.errors import InputError
from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, load_model_card
from sarcoscope.segmentation.refine import REFINEMENT_VERSION
from sarcoscope.segmentation.registry import (
    MIN_PATIENTS,
    InstalledModel,
    ModelRegistry,
    build_comparison,
)
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.training import load_config, train
from sarcoscope.training.config import LAST
from sarcoscope.training.data import EXPORT_MANIFEST, case_patients, choose_patients
from sarcoscope.training.evaluate import evaluate, update_card

if TYPE_CHECKING:  # importing the trainer imports torch; `train` says what to install when it is missing
    from sarcoscope.training.trainer import TrainingResult

log = logging.getLogger(__name__)

ADAPT_RECIPE = DEFAULT_MODEL_DIR / "adapt.yaml"
SPLIT_FILE = "split.json"
#: Settings the loop decides; a recipe or flag may not set them.
LOOP_SETTINGS = ("data_dirs", "cases", "val_cases", "val_from", "init_from", "output_dir", "resume")


@dataclass(frozen=True)
class AdaptResult:
    """The training run, and once it finished, the registered model and the comparison in its card."""

    training: TrainingResult
    model: InstalledModel | None = None
    comparison: dict[str, Any] | None = None


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse settings the loop decides itself (LOOP_SETTINGS), before any work is done."""
    fixed = sorted(k for k in LOOP_SETTINGS if overrides.get(k) is not None)
    if fixed:
        raise InputError(f"The learning loop sets {', '.join(fixed)} itself; leave them out.")


def split_patients(patients: dict[str, str], holdout: float, seed: int) -> dict[str, Any]:
    """Hold out `holdout` of the patients (at least one, never all) for the comparison, seeded."""
    names = sorted(set(patients.values()))
    if len(names) < 2:
        raise InputError(
            f"The corrected slices come from {len(names)} patient(s); the loop needs at least 2: one to "
            "train on and one to compare the models on."
        )
    if not 0 < holdout < 1:
        raise InputError(f"The held-out fraction must be between 0 and 1, got {holdout}.")
    held = choose_patients(names, min(len(names) - 1, max(1, round(holdout * len(names)))), seed)
    return {
        "by": "patient",
        "seed": seed,
        "fraction": holdout,
        "engine": f"unet (HU refinement v{REFINEMENT_VERSION})",
        "validation_cases": sorted(c for c, p in patients.items() if p in held),
        "validation_patients": sorted(held),
        "train_cases": sorted(c for c, p in patients.items() if p not in held),
        "train_patients": sorted(set(names) - held),
        "patients": dict(sorted(patients.items())),
    }


def _description(data_dir: Path, split: dict[str, Any], baseline: str, phantoms: int) -> str:
    manifest_path = data_dir / EXPORT_MANIFEST
    origin = "corrected L3 slices"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        origin = (
            f"label versions a person corrected in the web app (exported {manifest['created_utc']}; "
            f"rule: {manifest['rule']})"
        )
    return (
        f"Fine-tuned from {baseline} on {len(split['train_cases'])} cases of "
        f"{len(split['train_patients'])} patients: {origin}, plus {phantoms} phantom slices (early stopping "
        f"on a share of them). {len(split['validation_cases'])} cases of {len(split['validation_patients'])} "
        "patients were held out for the comparison with the previous default (section below)."
    )


def warn_if_too_few_held_out(split: dict[str, Any]) -> None:
    """Say before the training, not after it, when the held-out patients are too few for the registry's
    paired test to find any gain beyond chance (segmentation.registry.MIN_PATIENTS)."""
    held = len(split["validation_patients"])
    if held < MIN_PATIENTS:
        log.warning(
            "%d of %d patients held out: fewer than %d cannot show a gain beyond chance, so the model will "
            "be registered but `sarcoscope models use` will not make it the default (only --force). Hold "
            "out more with --holdout when you have the patients.",
            held,
            len(set(split["patients"].values())),
            MIN_PATIENTS,
        )


def adapt(
    data_dir: str | Path,
    out: str | Path,
    *,
    holdout: float = 0.2,
    config_file: str | Path | None = None,
    resume: bool = False,
    registry: ModelRegistry | None = None,
    **overrides: Any,
) -> AdaptResult:
    """Run the loop on a DATA folder of corrected slices (see the module docstring); `overrides` are
    TrainConfig settings (flags) on top of `config_file` (default: models/adapt.yaml)."""
    registry = registry or ModelRegistry()
    data_dir, out = Path(data_dir), Path(out)
    check_overrides(overrides)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    split_path = out / SPLIT_FILE
    if resume:
        if not split_path.is_file():
            raise InputError(f"Nothing to resume: {split_path} does not exist.")
        run = json.loads(split_path.read_text(encoding="utf-8"))
    else:
        if split_path.exists():
            raise InputError(f"{out} already holds a learning-loop run; use --resume or another -o folder.")
        baseline = registry.default()
        seed = overrides.get("seed")
        split = split_patients(case_patients(data_dir), holdout, 0 if seed is None else int(seed))
        run = {"baseline": baseline.model_id, "baseline_path": str(baseline.path), "split": split}
        warn_if_too_few_held_out(split)
    split = run["split"]
    # a run that has a checkpoint continues its stored recipe: only a recipe given again is checked against
    # it (the default one may not be the one the run started with)
    resuming = resume and (out / LAST).is_file()
    config = load_config(
        config_file if resuming else config_file or ADAPT_RECIPE,
        **overrides,
        data_dirs=[str(data_dir)],
        cases=split["train_cases"],
        init_from=run["baseline_path"],
        val_from="phantoms",
        output_dir=str(out),
        # a run stopped before its first epoch ended has no checkpoint: it starts again, same split
        resume=resuming or None,
    )
    if not config.data_description:
        config.data_description = _description(data_dir, split, run["baseline"], config.phantoms)
    if not resume:
        atomic_write_text(split_path, json.dumps(run, indent=2) + "\n")
    result = train(config)
    if not result.finished:  # paused by epochs_this_run: compared and registered when resumed to the end
        return AdaptResult(training=result)

    new_id = str(load_model_card(out)["model_id"])
    engines = {
        new_id: UNetEngine(out, threads=config.num_threads),
        run["baseline"]: UNetEngine(run["baseline_path"], threads=config.num_threads),
    }
    rows = [
        r | {"model": r["engine"], "patient": split["patients"][r["case"]]}
        for r in evaluate(engines, data_dir, cases=split["validation_cases"])
    ]
    comparison = build_comparison(new_id, run["baseline"], rows, split)
    update_card(out, comparison=comparison)
    installed = next((m for m in registry.models() if m.model_id == new_id), None)
    model = installed if installed is not None else registry.add(out)
    return AdaptResult(training=result, model=model, comparison=comparison)
