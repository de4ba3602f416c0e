"""ONNX export of the trained U-Net and its model card (JSON for the engine, Markdown for people)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarcoscope import __version__
from sarcoscope.conventions import DEFAULT_HU_RANGES, TISSUES, Label
from sarcoscope.fileio import atomic_write, atomic_write_text
from sarcoscope.segmentation.model_files import CARD_FILE, CARD_MD_FILE, MODEL_FILE
from sarcoscope.segmentation.unet import InputSpec
from sarcoscope.training.card import card_markdown
from sarcoscope.training.config import TrainConfig

OPSET = 17
#: Largest |ONNX − PyTorch| class-probability difference accepted after export. Probabilities, not logits:
#: logits of a trained network reach ±30, where float32 kernels legitimately differ by ~1e-2 (~1e-3 in
#: probability on boundary pixels); a broken export differs by far more than 0.01.
EXPORT_TOLERANCE = 1e-2


def export_onnx(model: torch.nn.Module, path: Path, example: torch.Tensor) -> None:
    """Export with dynamic batch, height and width (TorchScript exporter: no onnxscript needed), each
    single-slope PRelu as LeakyRelu (`prelu_as_leaky_relu`)."""
    import onnx

    model.eval()
    axes = {0: "n", 2: "height", 3: "width"}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of the TorchScript exporter
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                opset_version=OPSET,
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes},
            )
        proto = onnx.load(str(tmp))
        prelu_as_leaky_relu(proto)
        onnx.save(proto, str(tmp))

    atomic_write(path, write)


def prelu_as_leaky_relu(proto: Any) -> int:
    """Rewrite, in the onnx.ModelProto `proto`, every PRelu whose slope is one float32 initializer (MONAI's
    U-Net learns one slope per activation) as LeakyRelu with that slope as its alpha; returns how many.

    Both are defined as `x if x >= 0 else slope * x` and the float32 slope is stored as a float32 alpha, so
    the outputs are the same bit for bit; ONNX Runtime's CPU PRelu broadcasts the slope element by element
    and was 31 % of the shipped ensemble's network time (114 of 367 ms per slice pair), its LeakyRelu 4 %.
    A slope that is a graph input or output, or used by another node, stays a PRelu."""
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    graph = proto.graph
    exposed = {v.name for v in (*graph.input, *graph.output)}
    slopes = {
        t.name: t
        for t in graph.initializer
        if t.data_type == TensorProto.FLOAT and int(np.prod(t.dims)) == 1 and t.name not in exposed
    }
    uses = Counter(name for node in graph.node for name in node.input)
    nested = any(
        a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute
    )
    rewritten = 0
    for node in graph.node:
        if nested or node.op_type != "PRelu" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.input) != 2 or node.input[1] not in slopes or uses[node.input[1]] != 1:
            continue
        slope = slopes.pop(node.input[1])
        graph.initializer.remove(slope)
        alpha = float(numpy_helper.to_array(slope).reshape(()))  # float32 -> float -> float32: exact
        del node.input[1]
        node.op_type = "LeakyRelu"
        node.attribute.append(helper.make_attribute("alpha", alpha))
        rewritten += 1
    return rewritten


def onnx_max_difference(model: torch.nn.Module, path: Path | bytes, example: torch.Tensor) -> float:
    """Largest absolute class-probability (softmax) difference of ONNX Runtime and PyTorch on `example`
    (`path`: an ONNX file, or a serialised model)."""
    import onnxruntime as ort

    source = path if isinstance(path, bytes) else str(path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"image": example.numpy()})[0])
    model.eval()
    with torch.no_grad():
        want = model(example)
    return float((got.softmax(dim=1) - want.softmax(dim=1)).abs().max())


def load_onnx_weights(model: torch.nn.Module, path: Path, member: int | None = None) -> None:
    """Put the weights of an ONNX file exported by `export_onnx` back into `model` (same architecture); with
    `member`, those of that member of an ensemble (training.ensemble).

    The exporter keeps parameter names except for PReLU slopes, which it renames (and `export_onnx` turns
    into LeakyRelu alphas); those are matched in graph order, which for MONAI's U-Net is the order of its
    modules. The result is checked against ONNX Runtime on
    a random input, so a model that does not fit fails loudly instead of fine-tuning from wrong weights.
    """
    import onnx
    from onnx import numpy_helper

    from sarcoscope.errors import InputError
    from sarcoscope.training.ensemble import member_graph

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises protobuf errors of several types for corrupt files
        raise InputError(f"Cannot read ONNX model {path}: {exc}") from None
    if member is not None:
        proto = member_graph(proto, member)
    graph = proto.graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # in graph order: PRelu slopes (exported before 2026-12-05) or the LeakyRelu alphas they became
    slopes = [
        stored[node.input[1]] if node.op_type == "PRelu" else np.float32(node.attribute[0].f)
        for node in graph.node
        if node.op_type in ("PRelu", "LeakyRelu")
    ]
    state = model.state_dict()
    renamed = [key for key in state if key not in stored]
    if len(renamed) != len(slopes):
        raise InputError(f"The network in {path} does not match the configured architecture.")
    values = {key: stored[key] for key in state if key in stored} | dict(zip(renamed, slopes, strict=True))
    try:
        model.load_state_dict(
            {key: torch.from_numpy(np.array(values[key])).reshape(state[key].shape) for key in state}
        )
    except RuntimeError as exc:
        raise InputError(f"The network in {path} does not match the configured architecture: {exc}") from None
    example = torch.rand(1, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    if onnx_max_difference(model, proto.SerializeToString(), example) > EXPORT_TOLERANCE:
        raise InputError(f"The weights read from {path} do not reproduce its output.")


def export_model(
    model: torch.nn.Module,
    config: TrainConfig,
    spec: InputSpec,
    out: Path,
    example: torch.Tensor,
    training: dict[str, Any],
) -> tuple[Path, Path]:
    """Write model.onnx, model_card.json and MODEL_CARD.md into `out`; returns (onnx path, card path)."""
    onnx_path = out / MODEL_FILE
    export_onnx(model, onnx_path, example)
    diff = onnx_max_difference(model, onnx_path, example)
    if diff > EXPORT_TOLERANCE:
        raise RuntimeError(
            f"ONNX export of {onnx_path} differs from PyTorch by {diff:.2e} (> {EXPORT_TOLERANCE})."
        )
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    created = dt.datetime.now(dt.UTC)
    card = build_card(model, config, spec, training, digest, created, diff)
    card_path = out / CARD_FILE
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    atomic_write_text(out / CARD_MD_FILE, card_markdown(card))
    return onnx_path, card_path


def build_card(
    model: torch.nn.Module,
    config: TrainConfig,
    spec: InputSpec,
    training: dict[str, Any],
    digest: str,
    created: dt.datetime,
    onnx_diff: float,
) -> dict[str, Any]:
    """Everything needed to use, trust and reproduce the model."""
    import monai

    best = training["best"]
    counts = training["counts"]
    return {
        "model_id": f"sarcoscope-unet-{created:%Y%m%d}-{digest[:8]}",
        "created_utc": created.isoformat(timespec="seconds"),
        "architecture": {
            "name": "MONAI UNet (residual units, instance norm, PReLU)",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": len(Label),
            "channels": list(config.channels),
            "strides": list(config.strides),
            "num_res_units": config.num_res_units,
            "dropout": config.dropout,
            "parameters": int(sum(p.numel() for p in model.parameters())),
        },
        "input": {
            **spec.as_dict(),
            "layout": "(n, 1, height, width) float32; rows anterior->posterior, columns patient right->left",
        },
        "output": "logits (n, 5, height, width); arg-max over axis 1 is the label id",
        "labels": {str(int(lab)): lab.name.lower() for lab in Label},
        "hu_ranges": DEFAULT_HU_RANGES.as_dict(),
        "training_data": {
            "description": config.data_description,
            "initialised_from": training.get("initialised_from"),
            "data_dirs": list(config.data_dirs),
            "label_mapping": config.label_mapping or "sarcoscope",
            "phantoms": config.phantoms,
            "train": counts["train"],
            "validation": counts["validation"],
        },
        "recipe": config.as_dict(),
        "validation": {
            "best_epoch": training["best_epoch"],
            "epochs_run": training["epochs_run"],
            "stopped_early": training["stopped_early"],
            "finished": training["finished"],
            "training_seconds": training["seconds"],
            "val_loss": round(float(best["val_loss"]), 5),
            "val_accuracy": round(float(best["val_accuracy"]), 5),
            "val_dice": {t: round(float(best[f"val_dice_{t}"]), 4) for t in TISSUES},
            "train_loss": round(float(best["train_loss"]), 5),
            "train_accuracy": round(float(best["train_accuracy"]), 5),
            "note": "pixel accuracy counts every pixel of the training crop, background included",
        },
        "software": {
            "sarcoscope": __version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "python": platform.python_version(),
            "onnx_opset": OPSET,
            "onnx_vs_torch_max_abs_probability_diff": float(f"{onnx_diff:.3g}"),
        },
        "files": {"onnx": MODEL_FILE, "sha256": digest},
    }
