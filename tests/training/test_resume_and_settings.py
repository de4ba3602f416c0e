"""What `train` refuses with one clear message instead of training on something else than asked: a resumed
run whose data or split changed, settings given with --resume that differ from the run's recipe, values no
run can use, and a starting model whose card lacks what fine-tuning reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from test_training import tiny_config, write_dataset
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.errors import InputError
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR
from sarcoscope.training import load_config, train
from sarcoscope.training import trainer as trainer_module
from sarcoscope.training.config import LAST


def cli(*args: str) -> tuple[int, str]:
    """`sarcoscope train ARGS`: exit code and output on one line (rich wraps at the terminal's width)."""
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, " ".join(result.output.split())


def epochs_in(out: Path) -> list[int]:
    return [row["epoch"] for row in json.loads((out / "history.json").read_text())]


def test_resume_refuses_changed_data_or_split_and_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_dataset(tmp_path / "d", n=4)
    out = tmp_path / "run"
    train(tiny_config(data, out, max_epochs=2, epochs_this_run=1))
    checkpoint = (out / LAST).read_bytes()

    def resume(**kw: object) -> object:
        return train(tiny_config(data, out, resume=True, **kw))

    # settings given with --resume that differ from the run's recipe are named, not silently dropped
    with pytest.raises(InputError) as err:
        resume(learning_rate=1e-3, batch_size=3)
    message = str(err.value)
    assert "learning_rate (--lr): the run has 0.005, given 0.001" in message
    assert "batch_size (--batch-size): the run has 2, given 3" in message
    assert "start a new run with -o NEW" in message
    with pytest.raises(InputError, match=r"data_dirs \(DATA\)"):
        resume(data_dirs=[str(write_dataset(tmp_path / "other", n=4))])
    with pytest.raises(InputError, match=r"max_epochs .* the run has 2, given 1"):
        resume(max_epochs=1)  # fewer epochs: only raising is a safe change

    # a case added to DATA since the run started would change the split: refused, the run left as it was
    np.save(data / "labels" / "new.npy", np.load(data / "labels" / "case0.npy"))
    shutil.copy(data / "images" / "case0.npy", data / "images" / "new.npy")
    shutil.copy(data / "images" / "case0.json", data / "images" / "new.json")
    with pytest.raises(
        InputError, match=r"^DATA changed since this run started: added .*/new; start a new run"
    ):
        resume()
    for name in ("labels/new.npy", "images/new.npy", "images/new.json"):
        (data / name).unlink()
    # ... and so is a case whose label map was edited
    labels = np.load(data / "labels" / "case1.npy")
    np.save(data / "labels" / "case1.npy", np.where(labels == 4, 1, labels).astype(labels.dtype))
    with pytest.raises(InputError, match=r"DATA changed since this run started: changed .*/case1;"):
        resume()
    np.save(data / "labels" / "case1.npy", labels)
    # the same data split otherwise (e.g. after a change of how patients are read) is refused too
    real_split = trainer_module.split_by_patient
    monkeypatch.setattr(trainer_module, "split_by_patient", lambda s, c: real_split(s, c)[::-1])
    with pytest.raises(InputError, match="the train/validation split differs"):
        resume()
    monkeypatch.undo()
    assert (out / LAST).read_bytes() == checkpoint and epochs_in(out) == [1]

    # more epochs may be asked for: applied and said
    result = resume(max_epochs=3, data_dirs=[str(data)])  # DATA given again, unchanged: fine
    assert result.notes == ["max_epochs raised from 2 to 3"] and epochs_in(out) == [1, 2, 3]
    assert result.finished and "resume: max_epochs raised from 2 to 3" in (out / "train.log").read_text()
    card = json.loads((out / "model_card.json").read_text())
    assert card["recipe"]["max_epochs"] == 3 and "given" not in card["recipe"]


def test_cli_resume_names_the_options_it_cannot_take(tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ("--input-size", "64", "--pixel-spacing", "6", "--channels", "4,8", "--no-progress")
    code, output = cli("-o", str(out), "--phantoms", "4", "--epochs", "2", "--epochs-this-run", "1", *common)
    assert code == 0, output
    code, output = cli(
        str(tmp_path / "missing"), "-o", str(out), "--resume", "--epochs", "3", "--phantoms", "8",
        "--lr", "0.001", "--no-progress",
    )  # fmt: skip
    assert code == 1 and "internal error" not in output, output
    for part in ("data_dirs (DATA): the run has []", "phantoms (--phantoms): the run has 4, given 8"):
        assert part in output, output
    assert "max_epochs (--epochs)" not in output  # raising is allowed
    assert epochs_in(out) == [1]
    code, output = cli("-o", str(out), "--resume", "--epochs", "3", "--no-progress")
    assert code == 0 and "resumed: max_epochs raised from 2 to 3" in output, output
    assert "finished after 3 epoch(s)" in output and epochs_in(out) == [1, 2, 3]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"data_repeat": 0}, "data_repeat must be >= 1"),
        ({"input_size": 0}, "input_size must be a positive multiple of 32"),
        ({"input_size": -64}, "input_size must be a positive multiple of 32"),
        ({"channels": [8], "strides": []}, "channels needs at least 2 levels"),
        ({"epochs_this_run": 0}, "epochs_this_run must be >= 1"),
        ({"seed": -1}, "seed and phantom_seed must be >= 0"),
        ({"phantom_size": 32}, "phantom_size must be >= 64"),
        ({"batch_size": "four"}, "batch_size must be a whole number, got 'four'"),
        ({"channels": "8,16"}, "channels must be a list of whole numbers"),
        ({"dropout": 1.0}, "dropout in"),
        ({"blur_mm": -0.5}, "blur_mm must be >= 0"),
        ({"fov_cut": 1.5}, r"fov_cut must be in \[0, 1\]"),
        ({"fov_cut_max": 0.5}, r"fov_cut_max in \[0, 0.5\)"),
        ({"unenhanced": 1.5}, r"unenhanced must be in \[0, 1\]"),
    ],
)
def test_config_refuses_values_no_run_can_use(setting: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_config(None, phantoms=1, **setting)


def test_config_reads_numbers_yaml_leaves_as_text_and_records_what_was_given(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1e-3\nphantoms: 2\n")  # YAML 1.1: `1e-3` (no dot) is a string
    config = load_config(recipe, batch_size=2, patience=None)
    assert config.learning_rate == 0.001
    assert config.given == {"learning_rate", "phantoms", "batch_size"}
    assert "given" not in config.as_dict()
    with pytest.raises(InputError, match="Unknown training setting"):
        load_config(None, phantoms=1, given=["x"])


@pytest.mark.parametrize(
    "args",
    [
        ("--input-size", "0"),
        ("--input-size", "-64"),
        ("--channels", "a,b"),
        ("--channels", "8"),
        ("--data-repeat", "0"),
        ("--epochs-this-run", "0"),
        ("--seed", "-1"),
    ],
)
def test_cli_out_of_range_options_are_user_errors(tmp_path: Path, args: tuple[str, str]) -> None:
    code, output = cli("-o", str(tmp_path / "m"), "--phantoms", "2", "--no-progress", *args)
    assert code == 1 and output.startswith("error:") and "internal error" not in output, output
    assert not (tmp_path / "m").exists()


def test_fine_tuning_from_a_malformed_card_is_a_user_error(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n=2)
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model, ignore=shutil.ignore_patterns("*.yaml"))
    card = json.loads((model / "model_card.json").read_text())
    del card["input"]["pixel_spacing_mm"]
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=r"Cannot fine-tune from .*'input\.pixel_spacing_mm' is missing"):
        train(tiny_config(data, tmp_path / "out", init_from=str(model)))
    code, output = cli(str(data), "-o", str(tmp_path / "o2"), "--init-from", str(model), "--no-progress")
    assert code == 1 and "input.pixel_spacing_mm" in output and "internal error" not in output, output


@pytest.mark.parametrize("recipe", sorted(DEFAULT_MODEL_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_runnable_configs(recipe: Path) -> None:
    """A misspelt key or a value no run can use in a shipped recipe fails here, not after an hour of training
    on it."""
    config = load_config(recipe)
    assert config.given and config.given <= set(config.as_dict())
