"""The graph ONNX Runtime gets (onnx_graph): PRelu as LeakyRelu, the same outputs bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.errors import SegmentationError
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, MODEL_FILE
from sarcoscope.segmentation.onnx_graph import prelu_as_leaky_relu
from sarcoscope.segmentation.unet import UNetEngine

ort = pytest.importorskip("onnxruntime")

REAL_CASES = ("EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172")


def _as_shipped(engine: UNetEngine) -> UNetEngine:
    """The engine with a session of the model file as it is (the engine before the rewrite)."""
    plain = copy.copy(engine)
    plain._session = ort.InferenceSession(
        str(DEFAULT_MODEL_DIR / MODEL_FILE), providers=["CPUExecutionProvider"]
    )
    return plain


def _slices(shared_data: Path | None) -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    from sarcoscope.phantom import make_slice

    out = []
    for i, (size, mm) in enumerate(((512, 0.7), (384, 0.9), (512, 0.78), (256, 1.5))):
        ph = make_slice(300 + i, size=size, pixel_spacing=mm)
        out.append((f"phantom {i}", np.asarray(ph.hu, np.float32), ph.pixel_spacing))
    if shared_data is not None:
        import pydicom
        from pydicom.pixels import apply_rescale

        for case in REAL_CASES:
            ds = pydicom.dcmread(shared_data / "real" / "l3_slices" / "images" / f"L3_{case}.dcm")
            hu = apply_rescale(ds.pixel_array, ds).astype(np.float32)
            out.append((case, hu, (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))))
    return out


def test_shipped_model_has_every_prelu_rewritten() -> None:
    raw = (DEFAULT_MODEL_DIR / MODEL_FILE).read_bytes()
    model, rewritten = prelu_as_leaky_relu(raw)
    assert rewritten == 42  # 21 activations in each of the two networks
    assert prelu_as_leaky_relu(model) == (model, 0)
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    before, after = onnx.load_from_string(raw), onnx.load_from_string(model)
    onnx.checker.check_model(after)
    slopes = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    pairs = list(zip(before.graph.node, after.graph.node, strict=True))
    assert all(a.output == b.output and a.name == b.name for a, b in pairs)
    for a, b in pairs:
        if a.op_type == "PRelu":
            assert b.op_type == "LeakyRelu" and list(b.input) == [a.input[0]]
            assert np.float32(b.attribute[0].f).tobytes() == slopes[a.input[1]].astype(np.float32).tobytes()
        else:
            assert a == b
    # the slopes are gone, every weight is kept
    assert {t.name for t in before.graph.initializer} - {t.name for t in after.graph.initializer} == {
        a.input[1] for a in before.graph.node if a.op_type == "PRelu"
    }


@pytest.mark.parametrize("refine", [True, False])
def test_labels_and_probabilities_are_those_of_the_model_file(
    refine: bool, request: pytest.FixtureRequest
) -> None:
    """Issue 18: the faster graph changes no output: pixel-identical labels and probabilities on phantoms and
    (with ../shared) the nine real L3 slices, one at a time and as a range."""
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        shared = None
    engine = UNetEngine(refine=refine)
    plain = _as_shipped(engine)
    assert plain._session is not engine._session
    for name, hu, spacing in _slices(shared):
        assert np.array_equal(engine.segment(hu, spacing), plain.segment(hu, spacing)), name
        if refine:  # the probabilities do not depend on it
            assert engine.predict_proba(hu, spacing).tobytes() == plain.predict_proba(hu, spacing).tobytes()
    x = np.random.default_rng(3).random((3, 1, 128, 96)).astype(np.float32)
    outputs = engine._session.run(None, {"image": x}), plain._session.run(None, {"image": x})
    assert [a.tobytes() for a in outputs[0]] == [b.tobytes() for b in outputs[1]]


def _tiny_model(slope_shape: tuple[int, ...], extra_use: bool = False, slope_is_input: bool = False) -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    slope = numpy_helper.from_array(np.full(slope_shape, 0.3, np.float32), "slope")
    nodes = [
        helper.make_node("PRelu", ["x", "slope"], ["y"]),
        helper.make_node("PRelu", ["y", "slope"], ["z"]),  # one slope shared by two activations
    ]
    if extra_use:
        nodes.append(helper.make_node("Add", ["z", "slope"], ["out"]))
    else:
        nodes.append(helper.make_node("Identity", ["z"], ["out"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])]
    if slope_is_input:
        inputs.append(helper.make_tensor_value_info("slope", TensorProto.FLOAT, list(slope_shape)))
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [slope]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"slope_shape": (1, 1, 1)}, 2),
        ({"slope_shape": ()}, 2),
        ({"slope_shape": (1, 1, 1), "extra_use": True}, 2),  # the slope stays for the Add
        ({"slope_shape": (2, 1, 1)}, 0),  # one slope per channel: PRelu's own job
        ({"slope_shape": (1, 1, 1), "slope_is_input": True}, 0),  # a caller may pass another slope
    ],
)
def test_only_single_slopes_are_rewritten_and_outputs_stay(case: dict, expected: int) -> None:
    raw = _tiny_model(**case)
    model, rewritten = prelu_as_leaky_relu(raw)
    assert rewritten == expected
    x = np.linspace(-2, 2, 18, dtype=np.float32).reshape(1, 2, 3, 3)
    feeds = {"x": x}
    if case.get("slope_is_input"):
        feeds["slope"] = np.full(case["slope_shape"], 0.5, np.float32)
    a = ort.InferenceSession(raw, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert a.tobytes() == b.tobytes()


def test_a_file_it_cannot_read_is_reported_by_onnx_runtime(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    (folder / MODEL_FILE).write_bytes(b"\xff\xff\xff not a model")
    with pytest.raises(SegmentationError, match="Cannot load U-Net model"):
        UNetEngine(folder)
