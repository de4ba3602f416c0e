"""The learning loop end to end: a web app store with corrected phantom studies -> `sarcoscope train
--from-store` (or its export) -> a model card comparing the new model with the default on held-out patients ->
the model registered, the default unchanged until `models use` accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.phantom import make_slice
from sarcoscope.segmentation.registry import MODELS_DIR_ENV, ModelRegistry, judge
from sarcoscope.store import Store
from sarcoscope.training import train
from sarcoscope.training.adapt import split_patients
from sarcoscope.web.training_data import export_training_data
from sarcoscope.web.volumes import UploadedPart, VolumeCache, ingest

#: study name -> patient: five studies of four patients (P1 twice), so a split by study could part P1.
STUDIES = {"s1": "P1", "s2": "P1", "s3": "P2", "s4": "P3", "s5": "P4"}
#: A tiny recipe (64-pixel canvas at 3 mm, 2 phantoms) so that a run takes seconds.
RECIPE = (
    "phantoms: 2\nphantom_size: 96\nval_from: phantoms\nval_fraction: 0.5\nmax_epochs: 1\naugment: false\n"
)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net trained for 2 epochs on phantoms: the site default the loop fine-tunes."""
    from test_training import tiny_config, write_dataset

    root = tmp_path_factory.mktemp("base")
    data = write_dataset(root / "d", n=4)
    train(tiny_config(data, root / "model", max_epochs=2, phantoms=2, phantom_size=96))
    return root / "model"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A web app data folder: five phantom studies, each segmented (v1) and corrected by a person (v2,
    the phantom's exact labels), through the same functions the upload and save routes use."""
    root = tmp_path_factory.mktemp("store")
    store = Store(root / "data")
    store.migrate()
    for i, (name, patient) in enumerate(STUDIES.items()):
        ph = make_slice(100 + i, size=96)
        noise = np.random.default_rng(i).normal(0, 5, (3, 96, 96))
        hu = np.rint(np.asarray(ph.hu)[None] + noise).astype(np.int16)
        spacing = (3.0, *(float(s) for s in ph.pixel_spacing))
        files = write_dicom_series(hu, spacing, root / name, metadata=CTMetadata(patient_id=patient), seed=i)
        parts = [UploadedPart(f.name, f, f.stat().st_size) for f in files]
        work = store.new_tmp_dir()
        study, _ = ingest(store, parts, work, actor="tester")
        indices = [0, 1, 2]
        store.update_study(
            study.id, "tester", "select-l3", selection={"mode": "range", "first": 0, "last": 2}
        )
        truth = np.repeat(np.asarray(ph.labels, np.uint8)[None], 3, axis=0)
        automatic = np.where(truth == 4, 1, truth).astype(np.uint8)  # the "model" missed the IMAT
        store.save_version(
            study.id, base_version=None, labels=automatic, indices=indices, author="tester", source="segment",
            engine="threshold", model_id="threshold-v3",
        )  # fmt: skip
        store.save_version(
            study.id, base_version=1, labels=truth, indices=indices, author="dr-a", source="edit"
        )
    store.close()
    return root / "data"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_model: Path) -> ModelRegistry:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "registry"))
    registry = ModelRegistry()
    base = registry.add(base_model)
    registry.use(base.model_id, force=True)
    return registry


def invoke(*args: str) -> tuple[int, str]:
    """`sarcoscope train ARGS`: exit code and output on one line (rich wraps at the terminal's width)."""
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, " ".join(result.output.split())


def run_cli(*args: str) -> str:
    code, output = invoke(*args, "--threads", "1", "--no-progress")
    assert code == 0, output
    return output


def check_comparison(out: Path, registry: ModelRegistry, baseline: str) -> dict:
    """The card compares both models on the same held-out cases, split by patient; returns the card."""
    card = json.loads((out / "model_card.json").read_text())
    comparison = card["comparison"]
    split = comparison["split"]
    assert comparison["candidate"] == card["model_id"] and comparison["baseline"] == baseline
    scored = {
        m: sorted(r["case"] for r in comparison["cases"] if r["model"] == m)
        for m in (card["model_id"], baseline)
    }
    assert scored[card["model_id"]] == scored[baseline] == split["validation_cases"] != []
    # by patient: no patient on both sides, and P1's two studies together
    assert not set(split["validation_patients"]) & set(split["train_patients"])
    sides = {
        "validation" if c in split["validation_cases"] else "train"
        for c, p in split["patients"].items()
        if p == split["patients"][split["validation_cases"][0]]
    }
    assert len(sides) == 1 and len(split["patients"]) == len(STUDIES)
    assert len(set(split["patients"].values())) == len(set(STUDIES.values()))
    # the held-out cases never trained
    trained = {c.split("#")[0] for c in card["training_data"]["train"]["data_cases"]}
    assert trained == set(split["train_cases"]) and not trained & set(split["validation_cases"])
    assert card["training_data"]["initialised_from"] == baseline
    for row in comparison["cases"]:
        assert 0 <= row["muscle_dice"] <= 1 and row["muscle_area_err_pct"] is not None
    assert comparison["better"] == judge(comparison, card["model_id"], baseline).better
    markdown = (out / "MODEL_CARD.md").read_text()
    assert "## Comparison with the previous default" in markdown and baseline in markdown
    # registered, not the default
    assert any(m.model_id == card["model_id"] for m in registry.models())
    assert registry.default_id() == baseline
    return card


def test_train_from_store_compares_with_the_default_and_registers(
    registry: ModelRegistry, store_dir: Path, tmp_path: Path
) -> None:
    baseline = registry.default_id()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    output = run_cli(
        "--from-store", str(store_dir), "-o", str(out), "--config", str(recipe), "--holdout", "0.25"
    )
    card = check_comparison(out, registry, baseline)
    assert f"Model {card['model_id']} registered" in output
    # said before the training: one held-out patient cannot make the model the default
    said = " ".join(output.split())
    assert "1 of 4 patients held out: fewer than 5 cannot show a gain beyond chance" in said
    assert len(card["comparison"]["split"]["validation_patients"]) == 1  # 0.25 of 4 patients
    assert (out / "data" / "sarcoscope-training-export.json").is_file()
    # `use` follows the card: one held-out patient cannot show a gain beyond chance (p >= 1/2), whatever
    # the two models measured, so the card says not better and `use` refuses, saying why
    assert not card["comparison"]["better"]
    reasons = "; ".join(card["comparison"]["reasons"])
    assert "1 validation patient(s) cannot show a gain beyond chance" in reasons
    with pytest.raises(Exception, match=r"Not switching.*hold out at least 5"):
        registry.use(card["model_id"])
    # the run folder is not reused by accident
    assert invoke("--from-store", str(store_dir), "-o", str(out)) == (
        1,
        f"error: {out} already holds a learning-loop run; use --resume or another -o folder.",
    )


def test_train_on_an_export_zip_resumes_after_an_interruption_and_a_pause(
    registry: ModelRegistry, store_dir: Path, tmp_path: Path
) -> None:
    baseline = registry.default_id()
    store = Store(store_dir)
    export_training_data(store, VolumeCache(store, 1), tmp_path / "export", "tester")
    store.close()
    from sarcoscope.web.training_data import zip_folder

    zipped = tmp_path / "export.zip"
    with open(zipped, "wb") as f:
        zip_folder(tmp_path / "export", f)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace("max_epochs: 1", "max_epochs: 2"))
    out = tmp_path / "run"

    def interrupted(config: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the first epoch: no checkpoint yet

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sarcoscope.training.adapt.train", interrupted)
        assert invoke(str(zipped), "-o", str(out), "--config", str(recipe))[0] == 130
    # --resume starts the training again on the same data and split
    split = json.loads((out / "split.json").read_text())
    paused = run_cli(
        str(zipped), "-o", str(out), "--config", str(recipe), "--epochs-this-run", "1", "--resume"
    )
    assert "paused after 1 epoch" in paused and "--resume" in paused
    assert [m.model_id for m in registry.models()][-1] == baseline  # nothing registered yet
    run_cli(str(zipped), "-o", str(out), "--resume")
    card = check_comparison(out, registry, baseline)
    assert card["validation"]["epochs_run"] == 2 and card["comparison"]["split"] == split["split"]


def test_the_loop_needs_two_patients_and_refuses_settings_it_decides(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="at least 2"):
        split_patients({"a": "P1", "b": "P1"}, 0.2, 0)
    split = split_patients({"a": "P1", "b": "P1", "c": "P2"}, 0.9, 0)  # never holds out every patient
    assert len(split["validation_patients"]) == 1 and len(split["train_patients"]) == 1
    code, output = invoke("--from-store", str(tmp_path), "-o", str(tmp_path / "o"))
    assert code == 1 and "neither a web app data folder" in output
    code, output = invoke("--from-store", str(tmp_path))
    assert code == 1 and "needs an output folder" in output
    code, output = invoke("--from-store", str(tmp_path), "-o", str(tmp_path / "o"), "--cases", "a")
    assert code == 1 and "sets cases itself" in output
    assert not (tmp_path / "o").exists()
