"""Training recipe: loss definition, data loading, a short run, resume, ONNX export and the model card."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from sarcoscope.errors import InputError, SegmentationError  # noqa: E402
from sarcoscope.segmentation import get_engine  # noqa: E402
from sarcoscope.segmentation.unet import InputSpec, UNetEngine  # noqa: E402
from sarcoscope.training import load_config, train, train_or_resume  # noqa: E402
from sarcoscope.training.data import (  # noqa: E402
    find_pairs,
    load_folder,
    read_image,
    read_labels,
    split_by_patient,
)
from sarcoscope.training.export import export_onnx, load_onnx_weights, onnx_max_difference  # noqa: E402
from sarcoscope.training.trainer import build_loss, build_network  # noqa: E402

SPACING = 1.5  # mm of the synthetic slices


def synthetic_slice(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Concentric body: SAT ring, muscle ring with IMAT specks, VAT core; exact labels by construction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    a, b = size * rng.uniform(0.36, 0.44), size * rng.uniform(0.28, 0.34)
    r = np.sqrt(((yy - size / 2) / b) ** 2 + ((xx - size / 2) / a) ** 2)
    hu = np.full((size, size), -1000.0, np.float32)
    labels = np.zeros((size, size), np.uint8)
    sat_in, musc_in = rng.uniform(0.75, 0.85), rng.uniform(0.55, 0.65)
    for lo, hi, lab, value in ((sat_in, 1.0, 2, -100), (musc_in, sat_in, 1, 50), (0, musc_in, 3, -90)):
        m = (r >= lo) & (r < hi)
        hu[m], labels[m] = value, lab
    specks = (labels == 1) & (rng.random((size, size)) < 0.03)
    hu[specks], labels[specks] = -80, 4
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    return hu, labels


def write_dataset(root: Path, n: int = 6, prefix: str = "") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        hu, labels = synthetic_slice(i)
        np.save(root / "images" / f"{prefix}case{i}.npy", hu)
        (root / "images" / f"{prefix}case{i}.json").write_text(
            json.dumps({"pixel_spacing": [SPACING, SPACING]})
        )
        np.save(root / "labels" / f"case{i}.npy", labels)
    return root


def tiny_config(data: Path, out: Path, **kw: object):
    settings = dict(
        data_dirs=[str(data)],
        output_dir=str(out),
        input_size=64,
        pixel_spacing_mm=3.0,
        channels=[4, 8, 16],
        strides=[2, 2],
        num_res_units=1,
        batch_size=2,
        learning_rate=5e-3,
        val_fraction=0.34,
        augment=False,
        progress=False,
        num_threads=1,
    )
    settings.update(kw)
    return load_config(None, **settings)


def test_loss_is_half_dice_plus_half_cross_entropy() -> None:
    """Hand-checked on 2 images × 3 pixels × 5 classes, computed here with numpy."""
    logits = torch.tensor(np.random.default_rng(0).normal(size=(2, 5, 1, 3)), dtype=torch.float32)
    target = torch.tensor([[[[0, 1, 4]]], [[[2, 2, 3]]]])
    got = float(build_loss(load_config(None, phantoms=1))(logits, target))

    p = np.exp(logits.numpy())
    p /= p.sum(axis=1, keepdims=True)
    t = target.numpy()[:, 0]
    onehot = np.stack([(t == c) for c in range(5)], axis=1).astype(float)
    ce = -np.mean(np.log((p * onehot).sum(axis=1)))
    inter = (p * onehot).sum(axis=(2, 3))
    dice = 1 - (2 * inter + 1e-5) / (p.sum(axis=(2, 3)) + onehot.sum(axis=(2, 3)) + 1e-5)
    assert got == pytest.approx(0.5 * dice.mean() + 0.5 * ce, rel=1e-5)


def test_blur_augmentation_softens_edges_and_leaves_labels_alone(tmp_path: Path) -> None:
    """blur_mm: half the slices come out smoothed (a softer kernel), never sharper; labels untouched."""
    from sarcoscope.training.trainer import SliceDataset, input_spec

    data = write_dataset(tmp_path / "d", n=1)
    still = {"augment": True, "rotate_deg": 0.0, "scale_range": 0.0, "translate_mm": 0.0}
    still |= {"flip_lr": False, "noise_hu": 0.0}
    config = tiny_config(data, tmp_path / "out", blur_mm=6.0, **still)
    spec = input_spec(config)
    samples = load_folder(data, config, spec)

    def roughness(image: torch.Tensor) -> float:
        return float(image.diff(dim=-1).abs().mean())

    plain = SliceDataset(samples, spec, replace(config, blur_mm=0.0), augment=True, seed=0)[0]
    draws = [SliceDataset(samples, spec, config, augment=True, seed=s)[0] for s in range(12)]
    ratios = [roughness(d["image"]) / roughness(plain["image"]) for d in draws]
    assert all(r <= 1.0 + 1e-6 for r in ratios), ratios
    assert 2 <= sum(r < 0.95 for r in ratios) <= 10, ratios  # about half are blurred
    assert all(torch.equal(d["label"], plain["label"]) for d in draws)


def test_field_of_view_cut_ends_the_body_at_a_straight_edge_and_unlabels_beyond_it(tmp_path: Path) -> None:
    """fov_cut: the slice is cut as a smaller field of view cuts it, inside the body, never wider than
    fov_cut_max of the body; what is left is the slice as it was, and about fov_cut of the draws are cut."""
    from sarcoscope.training.trainer import SliceDataset, input_spec

    data = write_dataset(tmp_path / "d", n=1)
    still = {"augment": True, "rotate_deg": 0.0, "scale_range": 0.0, "translate_mm": 0.0}
    still |= {"flip_lr": False, "noise_hu": 0.0}
    config = tiny_config(data, tmp_path / "out", fov_cut=0.5, fov_cut_max=0.2, **still)
    spec = input_spec(config)
    samples = load_folder(data, config, spec)
    plain = SliceDataset(samples, spec, replace(config, fov_cut=0.0), augment=True, seed=0)[0]
    body = plain["label"][0] > 0
    rows, cols = body.any(dim=1).nonzero()[:, 0], body.any(dim=0).nonzero()[:, 0]
    height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    cut_draws = 0
    for seed in range(40):
        item = SliceDataset(samples, spec, config, augment=True, seed=seed)[0]
        kept = (item["label"][0] > 0) | (item["image"][0] > 0)
        removed = body & ~kept
        if not removed.any():
            assert torch.equal(item["label"], plain["label"]) and torch.equal(item["image"], plain["image"])
            continue
        cut_draws += 1
        # whole columns (a side) or whole rows (the front) are gone, the rest is untouched
        gone_cols = removed.any(dim=0).nonzero()[:, 0]
        gone_rows = removed.any(dim=1).nonzero()[:, 0]
        side_cut = len(gone_rows) > len(gone_cols) or len(gone_cols) == 0
        lost = gone_cols if side_cut else gone_rows
        extent = width if side_cut else height
        if side_cut:
            assert torch.equal(removed[:, lost], body[:, lost])
        else:
            assert torch.equal(removed[lost], body[lost])
        assert 0 < len(lost) <= 2 * 0.2 * extent + 2
        assert torch.equal(item["label"][0][kept], plain["label"][0][kept])
        assert torch.equal(item["image"][0][kept], plain["image"][0][kept])
        assert item["label"][0][removed].eq(0).all() and item["image"][0][removed].eq(0).all()
    assert 10 <= cut_draws <= 30  # about half of 40 (some draws cut less than a pixel)


def test_config_from_yaml_with_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "batch_size: 8\nlearning_rate: 0.001\nchannels: [8, 16, 32]\nstrides: [2, 2]\nphantoms: 3\n"
    )
    config = load_config(path, batch_size=2, patience=None)
    assert (config.batch_size, config.learning_rate, config.channels) == (2, 0.001, (8, 16, 32))
    assert (config.patience, config.max_epochs, config.lambda_dice, config.lambda_ce) == (10, 50, 0.5, 0.5)
    assert not config.window_augmentation
    with pytest.raises(InputError, match="Unknown training setting"):
        load_config(None, phantoms=1, learnig_rate=1)
    with pytest.raises(InputError, match="multiple of 32"):
        load_config(None, phantoms=1, input_size=250)
    for bad in (float("nan"), float("inf"), 0.0):  # a NaN passed every "<= 0" check
        with pytest.raises(InputError, match="learning_rate must be positive"):
            load_config(None, phantoms=1, learning_rate=bad)


def test_dataset_pairs_by_stem_or_suffix_and_maps_labels(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n=3, prefix="L3_")
    assert next((c, i.name) for c, i, _ in find_pairs(data)) == ("case0", "L3_case0.npy")
    (data / "images" / "L3_case0.json").unlink()
    with pytest.raises(InputError, match="sidecar"):
        load_folder(data, tiny_config(data, tmp_path / "o"), InputSpec())
    (tmp_path / "text.npy").write_text("not an array")  # was numpy's ValueError: an internal error
    with pytest.raises(InputError, match=r"text\.npy is not a NumPy array file"):
        read_image(tmp_path / "text.npy")
    # TotalSegmentator tissue ids (1 SAT, 2 torso fat, 3 muscle) through the built-in mapping
    np.save(tmp_path / "ts.npy", np.array([[0, 1, 2, 3]], np.uint8))
    mapped = read_labels(tmp_path / "ts.npy", "totalsegmentator-tissue-types")
    assert mapped.tolist() == [[[0, 2, 3, 1]]]
    with pytest.raises(InputError, match="unknown label id"):
        np.save(tmp_path / "bad.npy", np.array([[7]], np.uint8))
        read_labels(tmp_path / "bad.npy", None)


def test_train_or_resume_finishes_an_interrupted_run_then_skips_it(tmp_path: Path) -> None:
    """A long recipe rerun after an interruption continues each step where it stopped and redoes none."""
    data = write_dataset(tmp_path / "d", n=4)
    out = tmp_path / "run"
    first = train(tiny_config(data, out, max_epochs=3, epochs_this_run=1))  # "interrupted" after one epoch
    assert not first.finished and (out / "model.onnx").exists()  # exported at the stop, but not done
    assert train_or_resume(None, out, progress=False, num_threads=1) == out  # the stored recipe
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3  # header and epochs 1-3: resumed, not restarted
    stamp = (out / "model.onnx").stat().st_mtime_ns
    train_or_resume(None, out)
    assert (out / "model.onnx").stat().st_mtime_ns == stamp


def test_manual_labels_from_slice_o_matic_and_pngs_train(
    shared_data: Path, tmp_path: Path, write_tag, alberta_tags
) -> None:
    """Real slices labelled as a TAG file and as tissue PNGs load exactly like their .npy references,
    and a one-epoch run (with two phantoms) trains on them."""
    from PIL import Image

    real = shared_data / "real" / "l3_slices"
    tagged, plain = tmp_path / "tagged", tmp_path / "plain"
    for root in (tagged, plain):
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
    for case in ("EMC101", "EMC100"):
        for root in (tagged, plain):
            shutil.copy(real / "images" / f"L3_{case}.dcm", root / "images")
        shutil.copy(real / "labels" / f"{case}.npy", plain / "labels")
    labels = np.load(real / "labels" / "EMC101.npy")
    write_tag(tagged / "labels" / "EMC101.tag", alberta_tags(labels))
    (tagged / "labels" / "EMC100").mkdir()
    reference = np.load(real / "labels" / "EMC100.npy")
    for name, label in (("muscle", 1), ("sat", 2), ("vat", 3), ("imat", 4)):
        mask = ((reference == label) * 255).astype(np.uint8)
        Image.fromarray(mask).save(tagged / "labels" / "EMC100" / f"{name}.png")
    spec = InputSpec(3.0, (-250, 350), 4)
    config = tiny_config(tagged, tmp_path / "o", label_mapping="slice-o-matic-alberta")
    got = load_folder(tagged, config, spec)
    expected = load_folder(plain, tiny_config(plain, tmp_path / "o"), spec)
    assert [s.case for s in got] == [s.case for s in expected] == ["EMC100", "EMC101"]
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.hu, b.hu)
        assert set(np.unique(a.labels)) == {0, 1, 2, 3, 4}
    result = train(replace(config, max_epochs=1, phantoms=2, phantom_size=96, val_from="phantoms"))
    assert result.epochs_run == 1 and (tmp_path / "o" / "model.onnx").is_file()
    with pytest.raises(InputError, match=r"EMC101\.tag is a Slice-O-Matic TAG file"):
        load_folder(tagged, tiny_config(tagged, tmp_path / "o2"), spec)


def test_patients_are_held_as_pseudonyms_never_as_their_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The learning loop's split and model card name the patients of a run, and cards travel with a model: a
    # PatientID (DICOM or sidecar) is the installation's keyed pseudonym there, as in de-identified exports.
    from sarcoscope.imaging.deidentify.policy import PSEUDONYM_PREFIX, SECRET_FILE_ENV
    from sarcoscope.imaging.dicom_writer import write_dicom_series
    from sarcoscope.imaging.volume import CTMetadata
    from sarcoscope.training.adapt import split_patients
    from sarcoscope.training.data import case_patients

    monkeypatch.setenv(SECRET_FILE_ENV, str(tmp_path / "deid.key"))  # not a key in the machine's home
    data = write_dataset(tmp_path / "d", n=3)
    for i, patient in enumerate(["MRN-0042", "MRN-0042", "MRN-0043"]):
        sidecar = {"pixel_spacing": [SPACING, SPACING], "patient": patient}
        (data / "images" / f"case{i}.json").write_text(json.dumps(sidecar))
    hu, labels = synthetic_slice(3)
    (dcm,) = write_dicom_series(
        np.rint(hu)[None].astype(np.int16),
        (3.0, SPACING, SPACING),
        tmp_path / "dcm",
        metadata=CTMetadata(patient_id="MRN-0043"),
    )
    shutil.copy(dcm, data / "images" / "case3.dcm")
    np.save(data / "labels" / "case3.npy", labels)
    patients = case_patients(data)
    assert all(p.startswith(PSEUDONYM_PREFIX) for p in patients.values())
    assert patients["case0"] == patients["case1"] != patients["case2"] == patients["case3"]
    assert case_patients(data) == patients  # stable: the same key, the same pseudonyms
    assert "MRN" not in json.dumps(split_patients(patients, 0.5, 0))


def test_split_is_by_patient(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n=6)
    config = tiny_config(data, tmp_path / "o", val_cases=["case5"])
    samples = load_folder(data, config, InputSpec(3.0, (-250, 350), 4))
    assert samples[0].hu.shape == (64, 64)
    train_s, val_s = split_by_patient(samples, config)
    assert "case5" in {s.case for s in val_s}
    assert not {s.patient for s in train_s} & {s.patient for s in val_s}
    assert len(train_s) + len(val_s) == 6
    # a few real cases all train when validation is drawn from the phantoms
    phantoms = [replace(s, case=f"p{i}", patient=f"p{i}", source="phantom") for i, s in enumerate(samples)]
    config = tiny_config(data, tmp_path / "o", val_from="phantoms", val_fraction=0.5)
    train_s, val_s = split_by_patient(samples + phantoms, config)
    assert {s.source for s in val_s} == {"phantom"} and len(val_s) == 3
    assert {s.case for s in samples} <= {s.case for s in train_s}
    with pytest.raises(InputError, match="No phantom patients"):
        split_by_patient(samples, config)


def test_short_run_reduces_loss_exports_card_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("sarcoscope.phantom")
    data = write_dataset(tmp_path / "d", n=6)
    out = tmp_path / "run"
    # 6 folder cases + 3 tiny phantoms (generated on the fly)
    first = train(tiny_config(data, out, max_epochs=8, epochs_this_run=4, phantoms=3, phantom_size=96))
    assert not first.finished and first.epochs_run == 4
    result = train(tiny_config(data, out, resume=True))  # the stored recipe is used
    hist = result.history
    assert [r["epoch"] for r in hist] == list(range(1, 9))
    assert hist[:4] == first.history  # resumed, not restarted
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    assert result.finished and result.best_val_loss == min(r["val_loss"] for r in hist)
    for name in (
        "model.onnx",
        "model_card.json",
        "MODEL_CARD.md",
        "history.png",
        "history.csv",
        "config.yaml",
    ):
        assert (out / name).is_file(), name

    card = json.loads((out / "model_card.json").read_text())
    for key in (
        "model_id",
        "architecture",
        "input",
        "labels",
        "hu_ranges",
        "training_data",
        "recipe",
        "validation",
        "software",
        "files",
    ):
        assert key in card, key
    assert card["labels"] == {"0": "background", "1": "muscle", "2": "sat", "3": "vat", "4": "imat"}
    assert card["input"]["pixel_spacing_mm"] == 3.0 and card["input"]["size_multiple"] == 4
    counts = card["training_data"]
    assert counts["train"]["slices"] + counts["validation"]["slices"] == 9
    assert counts["train"]["phantom_slices"] + counts["validation"]["phantom_slices"] == 3
    assert card["recipe"]["learning_rate"] == 5e-3 and card["recipe"]["batch_size"] == 2
    assert card["validation"]["best_epoch"] == result.best_epoch
    assert card["software"]["onnx_opset"] == 17
    assert card["model_id"] in (out / "MODEL_CARD.md").read_text()

    # the exported model runs in the engine on a slice of another size and spacing
    hu, _ = synthetic_slice(0, size=144)
    seg = UNetEngine(out, refine=False).segment(hu[None], (1.0, 1.0))
    assert seg.shape == (1, 144, 144) and seg.dtype == np.uint8
    # ... and by name wherever an engine name goes ("unet:PATH")
    assert get_engine(f"unet:{out}").model_id.startswith(card["model_id"] + "+refine-v")
    with pytest.raises(SegmentationError, match="no trained model"):
        get_engine(f"threshold:{out}")

    with pytest.raises(InputError, match="already holds"):
        train(tiny_config(data, out))
    # a trained model without its checkpoints (received, or cleaned up) is not overwritten either
    received = tmp_path / "received"
    received.mkdir()
    for name in ("model.onnx", "model_card.json"):
        (received / name).write_bytes((out / name).read_bytes())
    with pytest.raises(InputError, match="already holds a trained model"):
        train(tiny_config(data, received))
    assert (received / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()


def test_training_never_writes_into_the_model_registry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SARCOSCOPE_MODELS_DIR", str(tmp_path / "models"))
    data = write_dataset(tmp_path / "d", n=2)
    for out in (tmp_path / "models", tmp_path / "models" / "new-model"):
        with pytest.raises(InputError, match="inside the model registry"):
            train(tiny_config(data, out, max_epochs=1))
    assert not (tmp_path / "models").exists()


def test_onnx_matches_pytorch(tmp_path: Path) -> None:
    config = load_config(None, phantoms=1, channels=[4, 8, 16, 32], strides=[2, 2, 2])
    torch.manual_seed(0)
    model = build_network(config)
    model.eval()
    export_onnx(model, tmp_path / "m.onnx", torch.rand(1, 1, 64, 64))
    # other batch size and a non-square size than the export example: the axes are dynamic
    assert onnx_max_difference(model, tmp_path / "m.onnx", torch.rand(3, 1, 48, 80)) < 1e-4


def test_onnx_weights_load_back_into_the_network(tmp_path: Path) -> None:
    """Fine-tuning starts from an exported model: its ONNX weights rebuild the same network exactly."""
    config = load_config(None, phantoms=1, channels=[4, 8, 16, 32], strides=[2, 2, 2])
    torch.manual_seed(0)
    trained = build_network(config)
    with torch.no_grad():  # PReLU slopes away from their 0.25 default, so a mix-up would show
        for name, param in trained.named_parameters():
            if name.endswith("adn.A.weight"):
                param.uniform_(0.0, 0.5)
    export_onnx(trained, tmp_path / "m.onnx", torch.rand(1, 1, 64, 64))
    torch.manual_seed(1)
    fresh = build_network(config)
    load_onnx_weights(fresh, tmp_path / "m.onnx")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    other = build_network(load_config(None, phantoms=1, channels=[4, 8, 16], strides=[2, 2]))
    with pytest.raises(InputError, match="does not match"):
        load_onnx_weights(other, tmp_path / "m.onnx")


def _prelu_export(model: torch.nn.Module, path: Path) -> None:
    """The network exported as before 2026-12-05: torch's own ONNX, with its PRelu nodes."""
    axes = {0: "n", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        (torch.rand(1, 1, 64, 64),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": axes, "logits": axes},
    )


def test_single_slope_prelu_is_exported_as_leaky_relu_with_bit_identical_outputs(tmp_path: Path) -> None:
    """ONNX Runtime's CPU PRelu broadcasts a slope element by element; LeakyRelu is the same function. The
    export has none left, gives the PRelu export's outputs bit for bit, and older PRelu files still load."""
    import onnx
    import onnxruntime as ort

    config = load_config(None, phantoms=1, channels=[4, 8, 16, 32], strides=[2, 2, 2])
    torch.manual_seed(0)
    trained = build_network(config)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if name.endswith("adn.A.weight"):
                param.uniform_(0.0, 0.5)
    trained.eval()
    _prelu_export(trained, tmp_path / "prelu.onnx")
    export_onnx(trained, tmp_path / "m.onnx", torch.rand(1, 1, 64, 64))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    old_ops = [n.op_type for n in onnx.load(str(tmp_path / "prelu.onnx")).graph.node]
    assert "PRelu" not in ops and ops.count("LeakyRelu") == old_ops.count("PRelu") > 0
    image = np.random.default_rng(0).normal(0, 1, (2, 1, 48, 80)).astype(np.float32)
    got = [
        ort.InferenceSession(str(tmp_path / f)).run(None, {"image": image})[0]
        for f in ("m.onnx", "prelu.onnx")
    ]
    np.testing.assert_array_equal(got[0], got[1])
    fresh = build_network(config)
    load_onnx_weights(fresh, tmp_path / "prelu.onnx")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_slope_used_elsewhere_stays_a_prelu() -> None:
    from onnx import TensorProto, helper

    from sarcoscope.training.export import prelu_as_leaky_relu

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("PRelu", ["x", "a"], ["p"]),
        helper.make_node("PRelu", ["p", "b"], ["q"]),
        helper.make_node("Mul", ["q", "b"], ["r"]),  # b used again: it stays
        helper.make_node("PRelu", ["r", "c"], ["y"]),  # c has two values: it stays
    ]
    inits = [
        helper.make_tensor("a", TensorProto.FLOAT, [1], [0.1]),
        helper.make_tensor("b", TensorProto.FLOAT, [1], [0.2]),
        helper.make_tensor("c", TensorProto.FLOAT, [4], [0.1, 0.2, 0.3, 0.4]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits))
    assert prelu_as_leaky_relu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["LeakyRelu", "PRelu", "Mul", "PRelu"]
    assert model.graph.node[0].attribute[0].f == np.float32(0.1)
    assert sorted(t.name for t in model.graph.initializer) == ["b", "c"]


def test_fine_tuning_starts_from_the_given_model(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n=6)
    base = train(tiny_config(data, tmp_path / "base", max_epochs=6))
    # other network settings on the command line are overridden by the starting model's card
    tuned = train(
        tiny_config(
            data, tmp_path / "tuned", max_epochs=2, init_from=str(tmp_path / "base"),
            channels=[8, 16, 32], augment=True, elastic=True, blur_mm=1.0,
        )
    )  # fmt: skip
    assert tuned.history[0]["train_loss"] < 0.9 * base.history[0]["train_loss"]
    card = json.loads((tmp_path / "tuned" / "model_card.json").read_text())
    base_id = json.loads((tmp_path / "base" / "model_card.json").read_text())["model_id"]
    assert card["architecture"]["channels"] == [4, 8, 16]
    assert card["training_data"]["initialised_from"] == base_id
    markdown = (tmp_path / "tuned" / "MODEL_CARD.md").read_text()
    assert f"Fine-tuned from `{base_id}`" in markdown and "elastic deformation" in markdown
    assert "Gaussian blur up to 1.0 mm" in markdown
    with pytest.raises(InputError, match="Cannot fine-tune"):
        train(tiny_config(data, tmp_path / "x", init_from=str(tmp_path / "nothing")))
