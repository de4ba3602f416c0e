"""The interface every segmentation engine implements, and the registry that finds engines by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sarcoscope.errors import SegmentationError


@runtime_checkable
class SegmentationEngine(Protocol):
    """Turns axial HU slices into label maps with the project's label ids (conventions.Label)."""

    #: Short engine name ("threshold", "unet").
    name: str
    #: Identifies the exact model/parameters, written into every report.
    model_id: str

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        """Segment HU slices of shape (n, y, x) with in-plane spacing (y, x) in mm.

        Returns a uint8 array of the same shape. Raises SegmentationError for a slice it cannot handle.
        """
        ...


_ENGINES: dict[str, Callable[..., SegmentationEngine]] = {}

#: The engine `analyze`, `batch` and the web app use unless told otherwise (README, "Accuracy", says why).
DEFAULT_ENGINE = "threshold"


def register_engine(name: str, factory: Callable[..., SegmentationEngine]) -> None:
    """Make an engine available by name; `factory(**options)` builds it (options e.g. hu_ranges)."""
    _ENGINES[name] = factory


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str, **options: Any) -> SegmentationEngine:
    """Instantiate the engine registered under `name` with engine options (e.g. hu_ranges=HURanges())."""
    if name not in _ENGINES:
        raise SegmentationError(
            f"Unknown segmentation engine '{name}'. Available: {', '.join(available_engines()) or 'none'}."
        )
    return _ENGINES[name](**options)
