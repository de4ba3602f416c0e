"""The learning loop on real slices: a web app store whose corrections are the reference labels, then
`train --from-store` exactly as a hospital would run it; prints the time of each step and the comparison.

    python scripts/benchmark_learning_loop.py [--shared ../shared/data] [--work runs/learning-loop]

1. A store in WORK/store with one study per real L3 slice (../shared/data/real/l3_slices): segmented by the
   threshold engine (version 1), then "corrected" to the reference labels (version 2, source edit), through
   the same functions the web app's upload and save routes call.
2. The loop with a registry of its own (WORK/registry, so the site default is the shipped model): the
   corrected slices exported to WORK/run/data, patients held out, the shipped model fine-tuned with
   models/adapt.yaml, both models scored on the held-out patients, the new model registered.

The shipped model was fine-tuned on five of the nine slices (its card lists them), so a held-out patient it
has seen would favour it. The split's seed is therefore the first that holds out only slices it has not seen;
the script says which. Each step resumes (an existing store, data or run is reused).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_store(real: Path, store_dir: Path) -> None:
    """One study per real slice: the threshold engine's labels (v1), then the reference labels (v2)."""
    from sarcoscope.segmentation import get_engine
    from sarcoscope.store import Store
    from sarcoscope.training.data import find_pairs, read_labels
    from sarcoscope.web.volumes import UploadedPart, ingest

    store = Store(store_dir)
    store.migrate()
    threshold = get_engine("threshold")
    for case, image, label in find_pairs(real):
        part = store.new_tmp_dir() / "part.dcm"
        part.write_bytes(image.read_bytes())
        study, volume = ingest(
            store, [UploadedPart(image.name, part, part.stat().st_size)], part.parent, actor="bench"
        )
        store.update_study(study.id, "bench", "select-l3", selection={"mode": "slice", "first": 0, "last": 0})
        auto = threshold.segment(np.asarray(volume.hu[[0]]), volume.pixel_spacing)
        store.save_version(
            study.id, base_version=None, labels=auto, indices=[0], author="bench", source="segment",
            engine="threshold", model_id=threshold.model_id,
        )  # fmt: skip
        ref = read_labels(label, None)
        store.save_version(
            study.id, base_version=1, labels=ref, indices=[0], author="reference", source="edit"
        )
        print(f"store: {case} -> study {study.id[:12]}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "learning-loop")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's 20 epochs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = args.work.resolve()
    os.environ["SARCOSCOPE_MODELS_DIR"] = str(work / "registry")  # before the registry is first used

    from sarcoscope.segmentation.registry import ModelRegistry
    from sarcoscope.training.adapt import adapt, split_patients
    from sarcoscope.training.data import case_patients
    from sarcoscope.web.training_data import collect_training_data

    real = args.shared.resolve() / "real" / "l3_slices"
    t0 = time.monotonic()
    if not (work / "store").is_dir():
        build_store(real, work / "store")
    t_store = time.monotonic() - t0

    data, run = work / "run" / "data", work / "run"
    t0 = time.monotonic()
    if not data.is_dir():
        collect_training_data(work / "store", data, "bench")
    t_export = time.monotonic() - t0
    patients = case_patients(data)
    seen = set(ModelRegistry().default().card["training_data"]["train"]["data_cases"])
    names = _case_names(data)
    seed = next(
        s
        for s in range(1000)
        if not {names[c] for c in split_patients(patients, args.holdout, s)["validation_cases"]} & seen
    )
    held = [names[c] for c in split_patients(patients, args.holdout, seed)["validation_cases"]]
    print(f"seed {seed}: held-out slices {', '.join(held)} (the shipped model has not seen them)")

    t0 = time.monotonic()
    resume = (run / "split.json").is_file()
    result = adapt(
        data, run, holdout=args.holdout, resume=resume, seed=seed, max_epochs=args.epochs,
        num_threads=args.threads, progress=False,
    )  # fmt: skip
    t_loop = time.monotonic() - t0
    assert result.comparison is not None
    history = result.training.history
    print(f"store of {len(patients)} studies: {t_store:.0f} s; export: {t_export:.1f} s")
    per_epoch = np.median([r["seconds"] for r in history])
    print(
        f"loop: {t_loop / 60:.1f} min ({len(history)} epochs, {per_epoch:.0f} s per epoch median, "
        f"best epoch {result.training.best_epoch})"
    )
    print((run / "MODEL_CARD.md").read_text().split("## Comparison with the previous default")[1])


def _case_names(data: Path) -> dict[str, str]:
    """Export case id -> the real slice's name (EMC...), through the study's original PatientID."""
    from sarcoscope.store import Store

    manifest = json.loads((data / "sarcoscope-training-export.json").read_text())
    store = Store(data.parents[1] / "store")
    try:
        return {c["case"]: store.get_study(c["study_id"]).patient_id for c in manifest["cases"]}
    finally:
        store.close()


if __name__ == "__main__":
    main()
