"""What a U-Net model folder holds (model.onnx, model_card.json, MODEL_CARD.md) and how its card is read:
shared by the engine (segmentation/unet.py) and the model registry (segmentation/registry.py), so neither
imports the other for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sarcoscope.errors import SegmentationError

#: The model shipped with the package (trained by `sarcoscope train`, see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).with_name("models")
MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
CARD_MD_FILE = "MODEL_CARD.md"


def load_model_card(model_dir: str | Path) -> dict[str, Any]:
    """Read model_card.json, raising SegmentationError with the path when it is missing or unreadable."""
    path = Path(model_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegmentationError(
            f"No U-Net model card at {path}: a model folder needs {MODEL_FILE} and {CARD_FILE} "
            "(written by `sarcoscope train`)."
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SegmentationError(f"Cannot read the U-Net model card {path}: {exc}") from None
    for key in ("model_id", "input", "labels"):
        if key not in card:
            raise SegmentationError(f"U-Net model card {path} lacks '{key}'.")
    return card


def model_onnx_path(model_dir: Path, card: dict[str, Any]) -> Path:
    """The ONNX file a model card names in its folder, raising SegmentationError when it is missing."""
    path = model_dir / card.get("files", {}).get("onnx", MODEL_FILE)
    if not path.is_file():
        raise SegmentationError(f"U-Net model file {path} is missing.")
    return path
