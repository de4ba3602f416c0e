"""What a U-Net model folder holds (model.onnx, model_card.json, MODEL_CARD.md) and how its card is read:
shared by the engine (segmentation/unet.py) and the model registry (segmentation/registry.py), so neither
imports the other for it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sarcoscope.errors import SegmentationError

#: The model shipped with the package (trained by `sarcoscope train`, see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).with_name("models")
MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
CARD_MD_FILE = "MODEL_CARD.md"


def load_model_card(model_dir: str | Path) -> dict[str, Any]:
    """Read model_card.json and check the structure the engine, the registry and fine-tuning read from it,
    raising SegmentationError naming the card and the field (a hand-made or foreign card would otherwise
    fail later with a bare KeyError)."""
    path = Path(model_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegmentationError(
            f"No U-Net model card at {path}: a model folder needs {MODEL_FILE} and {CARD_FILE} "
            "(written by `sarcoscope train`)."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegmentationError(f"Cannot read the U-Net model card {path}: {exc}") from None
    problem = card_problem(card)
    if problem:
        raise SegmentationError(
            f"U-Net model card {path} is not a usable sarcoscope model card: {problem} "
            "(a model folder written by `sarcoscope train` has a complete one)."
        )
    return card


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _missing_or(card: dict[str, Any], dotted: str, ok: bool, wanted: str) -> str | None:
    """'<field> is missing' or '<field> must be <wanted>' when the check failed, else None."""
    if ok:
        return None
    section, _, key = dotted.partition(".")
    holder = card.get(section) if key else card
    name = key or section
    if isinstance(holder, dict) and name not in holder:
        return f"'{dotted}' is missing"
    return f"'{dotted}' must be {wanted}"


def card_problem(card: Any) -> str | None:
    """What is wrong with a parsed model card (first problem found), or None when it has what is read."""
    if not isinstance(card, dict):
        return f"it holds {type(card).__name__} {json.dumps(card)[:40]}, not a JSON object"
    checks: list[tuple[str, bool, str]] = [
        (
            "model_id",
            isinstance(card.get("model_id"), str) and bool(card.get("model_id")),
            "a non-empty text",
        ),
        ("labels", isinstance(card.get("labels"), dict), "an object"),
        ("input", isinstance(card.get("input"), dict), "an object"),
        ("architecture", isinstance(card.get("architecture"), dict), "an object"),
    ]
    for dotted, ok, wanted in checks:
        problem = _missing_or(card, dotted, ok, wanted)
        if problem:
            return problem
    i, a = card["input"], card["architecture"]
    window = i.get("hu_window")
    channels, strides = a.get("channels"), a.get("strides")
    checks = [
        (
            "input.pixel_spacing_mm",
            _number(i.get("pixel_spacing_mm")) and i["pixel_spacing_mm"] > 0,
            "a number > 0",
        ),
        (
            "input.hu_window",
            isinstance(window, list)
            and len(window) == 2
            and all(map(_number, window))
            and window[0] < window[1],
            "[low, high] with low < high",
        ),
        ("input.size_multiple", _whole(i.get("size_multiple"), 1), "a whole number >= 1"),
        (
            "input.canvas",
            i.get("canvas") is None or _whole(i.get("canvas"), 1),
            "a whole number >= 1 or null",
        ),
        (
            "architecture.channels",
            isinstance(channels, list) and len(channels) >= 2 and all(_whole(c, 1) for c in channels),
            "a list of at least 2 whole numbers >= 1",
        ),
        (
            "architecture.strides",
            isinstance(strides, list)
            and all(_whole(s, 1) for s in strides)
            and isinstance(channels, list)
            and len(strides) == len(channels) - 1,
            "a list of whole numbers >= 1, one fewer than the channels",
        ),
        ("architecture.num_res_units", _whole(a.get("num_res_units"), 0), "a whole number >= 0"),
        (
            "architecture.dropout",
            _number(a.get("dropout")) and 0 <= a["dropout"] < 1,
            "a number in [0, 1)",
        ),
    ]
    files = card.get("files", {})
    checks += [
        ("files", isinstance(files, dict), "an object"),
        *[
            (f"files.{key}", not isinstance(files, dict) or isinstance(files.get(key, ""), str), "a text")
            for key in ("onnx", "sha256")
        ],
        *[(key, isinstance(card.get(key, {}), dict), "an object") for key in ("training_data", "validation")],
        ("comparison", isinstance(card.get("comparison") or {}, dict), "an object or null"),
    ]
    for dotted, ok, wanted in checks:
        problem = _missing_or(card, dotted, ok, wanted)
        if problem:
            return problem
    return None


def model_onnx_path(model_dir: Path, card: dict[str, Any]) -> Path:
    """The ONNX file a model card names in its folder, raising SegmentationError when it is missing."""
    path = model_dir / card.get("files", {}).get("onnx", MODEL_FILE)
    if not path.is_file():
        raise SegmentationError(f"U-Net model file {path} is missing.")
    return path
