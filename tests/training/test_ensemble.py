"""Ensembles of trained U-Nets (training.ensemble): one ONNX model whose output is the members' mean
probability, members that come out again unchanged, fine-tuning from a member, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("monai")

import onnxruntime as ort  # noqa: E402

from sarcoscope.errors import InputError  # noqa: E402
from sarcoscope.segmentation.model_files import CARD_FILE, load_model_card  # noqa: E402
from sarcoscope.segmentation.unet import UNetEngine  # noqa: E402
from sarcoscope.training import train  # noqa: E402
from sarcoscope.training.ensemble import combine_models, write_member  # noqa: E402
from sarcoscope.training.trainer import build_network, starting_model  # noqa: E402
from training.test_training import synthetic_slice, tiny_config, write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny networks trained with different seeds: same architecture, different weights."""
    root = tmp_path_factory.mktemp("ensemble")
    data = write_dataset(root / "data", n=4)
    return [
        train(tiny_config(data, root / f"m{seed}", max_epochs=2, seed=seed)).output_dir for seed in (0, 1)
    ]


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_ensemble_runs_its_members_and_the_engine_averages_their_probabilities(
    members: list[Path], tmp_path: Path
) -> None:
    out = combine_models(members, tmp_path / "ens", "two tiny networks")
    x = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32)  # dynamic batch and size kept
    one, two = (_run(m / "model.onnx", x)[0] for m in members)
    assert np.abs(_softmax(one) - _softmax(two)).max() > 0.01  # the members differ: a real test
    got = _run(out / "model.onnx", x)  # one output per member, in order, exactly the member's
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], one)
    np.testing.assert_array_equal(got[1], two)
    card = load_model_card(out)
    assert card["model_id"].startswith("sarcoscope-unet-ensemble-")
    assert [m["model_id"] for m in card["members"]] == [load_model_card(m)["model_id"] for m in members]
    assert card["architecture"]["fine_tune_member"] == 1
    assert "Member 1:" in (out / "MODEL_CARD.md").read_text()
    # the engine reads it like any model, with the mean of the members' probabilities
    hu, _ = synthetic_slice(7)
    mean = (
        UNetEngine(members[0], mirror=False).predict_proba(hu, (1.5, 1.5))
        + UNetEngine(members[1], mirror=False).predict_proba(hu, (1.5, 1.5))
    ) / 2
    engine = UNetEngine(out, refine=False, mirror=False)
    np.testing.assert_allclose(engine.predict_proba(hu, (1.5, 1.5)), mean, atol=1e-6)
    assert (engine.segment(hu, (1.5, 1.5)) == mean.argmax(axis=1)).mean() > 0.999


def test_a_member_comes_out_unchanged(members: list[Path], tmp_path: Path) -> None:
    ens = combine_models(members, tmp_path / "ens", "two tiny networks")
    x = np.random.default_rng(1).random((1, 1, 64, 64), dtype=np.float32)
    for index, member in enumerate(members):
        out = write_member(ens, index, tmp_path / f"member{index}")
        np.testing.assert_array_equal(_run(out / "model.onnx", x)[0], _run(member / "model.onnx", x)[0])
        card = load_model_card(out)
        assert card["model_id"] == load_model_card(member)["model_id"]
        assert card["files"]["taken_from"] == f"member {index} of {load_model_card(ens)['model_id']}"
    with pytest.raises(InputError, match="no member 2"):
        write_member(ens, 2, tmp_path / "member2")


def test_fine_tuning_from_an_ensemble_starts_from_its_last_member(
    members: list[Path], tmp_path: Path
) -> None:
    """The learning loop fine-tunes the site default; when that is an ensemble, from its last member's
    weights (one network), named as such in the new card."""
    ens = combine_models(members, tmp_path / "ens", "two tiny networks")
    start = starting_model(str(ens))
    assert start.member == 1 and start.model_id.endswith("(member 1)")
    from sarcoscope.training.export import load_onnx_weights

    network = build_network(tiny_config(tmp_path, tmp_path / "x"))
    load_onnx_weights(network, start.onnx_path, start.member)
    x = np.random.default_rng(2).random((1, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        got = network.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run(members[1] / "model.onnx", x)[0], atol=1e-4)


def test_members_that_do_not_fit_together_are_refused(members: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(members[1], other)
    card = json.loads((other / CARD_FILE).read_text())
    card["input"]["pixel_spacing_mm"] = 1.5
    (other / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(InputError, match="'input' differ"):
        combine_models([members[0], other], tmp_path / "a", "x")
    with pytest.raises(InputError, match="at least two"):
        combine_models(members[:1], tmp_path / "b", "x")
    ens = combine_models(members, tmp_path / "ens", "x")
    with pytest.raises(InputError, match="single networks"):
        combine_models([ens, members[0]], tmp_path / "c", "x")
