"""Training the U-Net (extra [train]: torch + MONAI); none of it is needed for inference.

`train(load_config(...))` runs the paper's recipe and writes an ONNX model with its model card that the
"unet" segmentation engine loads. Importing this package does not import torch; `train` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sarcoscope.training.config import TrainConfig, load_config, save_config

if TYPE_CHECKING:
    from sarcoscope.training.trainer import TrainingResult

__all__ = ["TrainConfig", "TrainingResult", "load_config", "save_config", "train"]


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


def __getattr__(name: str) -> object:
    if name == "TrainingResult":
        from sarcoscope.training.trainer import TrainingResult

        return TrainingResult
    raise AttributeError(name)
