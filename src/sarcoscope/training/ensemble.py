"""Several trained U-Nets as one model: one ONNX file that runs them all on the same input, one output each.

Why: with a handful of real training slices, two trainings of the same recipe differ on a slice by as much as
two more patients add (docs/validation/continuation.md); the mean of two networks' probabilities cancels part
of that variance. The engine averages the softmax of every output (segmentation.unet), so the registry, the
model card's input contract and every caller stay as they are. (The average is not in the graph: ONNX
Runtime's Softmax over the class axis of NCHW tensors took longer than both networks together.) Each member
keeps its own weights under a name prefix, so a member can be taken out again (`member_graph`) to be
fine-tuned by the learning loop or compared on its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from sarcoscope.errors import InputError
from sarcoscope.fileio import atomic_write, atomic_write_text
from sarcoscope.segmentation.model_files import (
    CARD_FILE,
    CARD_MD_FILE,
    MODEL_FILE,
    load_model_card,
    model_onnx_path,
)
from sarcoscope.training.card import card_markdown

#: The card fields every member must share: the engine prepares one input and reads one output for all.
SHARED_FIELDS = ("input", "labels", "hu_ranges", "output")


def member_prefix(index: int) -> str:
    return f"member{index}/"


def combine_models(members: list[Path], out: Path, description: str) -> Path:
    """Write the ensemble of the model folders `members` (model.onnx + model_card.json each) into `out`:
    model.onnx, model_card.json (with every member's card) and MODEL_CARD.md; returns `out`.

    The members must share their input, labels, HU ranges and network architecture (the learning loop
    fine-tunes a member with the architecture the card states); the last member is the one fine-tuned."""
    import onnx
    from onnx import helper

    if len(members) < 2:
        raise InputError("An ensemble needs at least two models.")
    cards = [load_model_card(m) for m in members]
    if any("members" in card for card in cards):
        raise InputError("An ensemble's members must be single networks, not ensembles.")
    for field in (*SHARED_FIELDS, "architecture"):
        first = _comparable(cards[0], field)
        for path, card in zip(members[1:], cards[1:], strict=True):
            if _comparable(card, field) != first:
                raise InputError(f"Cannot combine {members[0]} and {path}: their '{field}' differ.")
    from sarcoscope.training.export import prelu_as_leaky_relu

    protos = [onnx.load(str(model_onnx_path(m, c))) for m, c in zip(members, cards, strict=True)]
    for proto in protos:  # members exported before export_onnx did it: the same outputs, faster
        prelu_as_leaky_relu(proto)
    nodes, initializers, outputs = [], [], []
    for index, proto in enumerate(protos):
        graph = onnx.compose.add_prefix(proto, member_prefix(index)).graph
        prefixed_input = graph.input[0].name
        for node in graph.node:  # every member reads the ensemble's own input
            node.input[:] = [proto.graph.input[0].name if n == prefixed_input else n for n in node.input]
        nodes += graph.node
        initializers += graph.initializer
        outputs += graph.output
    graph = helper.make_graph(
        nodes, "sarcoscope-unet-ensemble", list(protos[0].graph.input), outputs, initializer=initializers
    )
    model = helper.make_model(graph, opset_imports=list(protos[0].opset_import))
    model.ir_version = protos[0].ir_version
    onnx.checker.check_model(model)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MODEL_FILE, lambda tmp: onnx.save(model, str(tmp)))
    digest = hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()
    card = ensemble_card(cards, digest, dt.datetime.now(dt.UTC), description)
    atomic_write_text(out / CARD_FILE, json.dumps(card, indent=2) + "\n")
    atomic_write_text(out / CARD_MD_FILE, card_markdown(card))
    return out


def _comparable(card: dict[str, Any], field: str) -> Any:
    value = card.get(field)
    if field == "architecture":  # what builds the network; the name and counts may be worded differently
        return {k: value.get(k) for k in ("channels", "strides", "num_res_units", "dropout")}
    return value


def ensemble_card(
    cards: list[dict[str, Any]], digest: str, created: dt.datetime, description: str
) -> dict[str, Any]:
    """The ensemble's card: what the engine reads (shared by the members), what it learnt from (the union of
    the members' data), and every member's own card in full under `members`."""
    data = [c.get("training_data", {}) for c in cards]
    cases = sorted({case for d in data for case in d.get("train", {}).get("data_cases", [])})
    arch = cards[-1]["architecture"]
    return {
        "model_id": f"sarcoscope-unet-ensemble-{created:%Y%m%d}-{digest[:8]}",
        "created_utc": created.isoformat(timespec="seconds"),
        "architecture": {
            **arch,
            "name": f"Ensemble of {len(cards)} networks ({arch['name']}), the mean of their probabilities",
            "parameters": int(sum(c["architecture"].get("parameters", 0) for c in cards)),
            "fine_tune_member": len(cards) - 1,
        },
        **{field: cards[0][field] for field in SHARED_FIELDS},
        "output": "one output per member, its logits (n, 5, height, width); the engine averages their "
        "softmax probabilities, and the arg-max over axis 1 of that mean is the label id",
        "training_data": {
            "description": description,
            "initialised_from": None,
            "data_dirs": sorted({d for x in data for d in x.get("data_dirs", [])}),
            "label_mapping": data[-1].get("label_mapping", "sarcoscope"),
            "phantoms": int(sum(x.get("phantoms", 0) for x in data)),
            "train": {"data_slices": len(cases), "data_cases": cases},
        },
        "validation": {"finished": True},
        "software": {**cards[-1]["software"], "onnx_vs_torch_max_abs_probability_diff": None},
        "files": {"onnx": MODEL_FILE, "sha256": digest},
        "members": cards,
    }


def member_graph(proto: Any, index: int) -> Any:
    """Member `index` of an ensemble ONNX model (onnx.ModelProto) as a model of its own, with the names it
    had before it was combined, so `load_onnx_weights` reads it like any exported network."""
    import onnx
    from onnx import helper

    prefix = member_prefix(index)
    graph = onnx.ModelProto()
    graph.CopyFrom(proto)  # the names are changed in place
    graph = graph.graph
    nodes = [n for n in graph.node if n.name.startswith(prefix)]
    if not nodes:
        raise InputError(f"The ONNX model has no member {index}.")

    def strip(name: str) -> str:
        return name.removeprefix(prefix)

    for node in nodes:
        node.name = strip(node.name)
        node.input[:] = [strip(n) for n in node.input]
        node.output[:] = [strip(n) for n in node.output]
    initializers = [t for t in graph.initializer if t.name.startswith(prefix)]
    for tensor in initializers:
        tensor.name = strip(tensor.name)
    output = next(o for o in graph.output if o.name.startswith(prefix))
    output.name = strip(output.name)
    member = helper.make_graph(nodes, f"member{index}", list(graph.input), [output], initializer=initializers)
    model = helper.make_model(member, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def write_member(ensemble: Path, index: int, out: Path) -> Path:
    """Member `index` of the ensemble folder `ensemble` as a model folder of its own in `out` (its own card,
    naming the ensemble it came from), e.g. to build the next ensemble on it; returns `out`."""
    import onnx

    card = load_model_card(ensemble)
    members = card.get("members") or []
    if not 0 <= index < len(members):
        raise InputError(f"{ensemble} holds no member {index}: it has {len(members)}.")
    model = member_graph(onnx.load(str(model_onnx_path(ensemble, card))), index)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MODEL_FILE, lambda tmp: onnx.save(model, str(tmp)))
    own = dict(members[index])
    own["files"] = {
        "onnx": MODEL_FILE,
        "sha256": hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest(),
        "taken_from": f"member {index} of {card['model_id']}",
    }
    atomic_write_text(out / CARD_FILE, json.dumps(own, indent=2) + "\n")
    atomic_write_text(out / CARD_MD_FILE, card_markdown(own))
    return out
