"""Segmentation engines behind one interface (see base.SegmentationEngine)."""

from __future__ import annotations

from typing import Any

from sarcoscope.segmentation.base import (
    DEFAULT_ENGINE,
    SegmentationEngine,
    available_engines,
    get_engine,
    register_engine,
    takes_model,
)


def _threshold_engine(**options: Any) -> SegmentationEngine:
    from sarcoscope.segmentation.threshold import ThresholdEngine

    return ThresholdEngine(**options)


register_engine("threshold", _threshold_engine)


def _unet_engine(**options: Any) -> SegmentationEngine:
    from sarcoscope.segmentation.unet import UNetEngine

    return UNetEngine(**options)


def _unet_raw_engine(**options: Any) -> SegmentationEngine:
    """The U-Net's own arg-max, without HU refinement: to see (and validate) what the refinement changes."""
    from sarcoscope.segmentation.unet import UNetEngine

    return UNetEngine(refine=False, **options)


register_engine("unet", _unet_engine, takes_model=True)
register_engine("unet-raw", _unet_raw_engine, takes_model=True)

__all__ = [
    "DEFAULT_ENGINE",
    "SegmentationEngine",
    "available_engines",
    "get_engine",
    "register_engine",
    "takes_model",
]
