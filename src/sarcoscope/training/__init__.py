"""Training the U-Net (extra [train]: torch + MONAI); none of it is needed for inference.

`train(load_config(...))` runs the paper's recipe and writes an ONNX model with its model card that the
"unet" segmentation engine loads. Importing this package does not import torch; `train` does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarcoscope.training.config import LAST, TrainConfig, load_config, save_config

if TYPE_CHECKING:
    from sarcoscope.training.trainer import TrainingResult

__all__ = ["TrainConfig", "TrainingResult", "load_config", "save_config", "train", "train_or_resume"]

log = logging.getLogger(__name__)


def train(config: TrainConfig) -> TrainingResult:
    """Train, keep the best checkpoint and export ONNX + model card (see sarcoscope.training.trainer)."""
    try:
        from sarcoscope.training.trainer import train as _train
    except ImportError as exc:
        from sarcoscope.errors import SarcoscopeError

        raise SarcoscopeError(
            f"Training needs PyTorch and MONAI ({exc.name} is missing): pip install 'sarcoscope[train]'."
        ) from None
    return _train(config)


def train_or_resume(config_file: str | Path | None, out: str | Path, **settings: Any) -> Path:
    """Run one training of a multi-step recipe, resume it from its last checkpoint, or skip it when it
    finished, so a long script (scripts/train_default_model.py) can be rerun after an interruption."""
    from sarcoscope.segmentation.model_files import CARD_FILE, load_model_card

    out = Path(out)
    if (out / CARD_FILE).is_file() and load_model_card(out).get("validation", {}).get("finished"):
        log.info("%s: done before, skipped", out)
        return out
    resume = (out / LAST).is_file()
    result = train(load_config(config_file, output_dir=str(out), resume=resume or None, **settings))
    log.info("%s: best epoch %d, val_loss %.4f", out, result.best_epoch, result.best_val_loss)
    return out


def __getattr__(name: str) -> object:
    if name == "TrainingResult":
        from sarcoscope.training.trainer import TrainingResult

        return TrainingResult
    raise AttributeError(name)
