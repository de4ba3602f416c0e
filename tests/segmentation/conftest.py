"""Fixtures of the segmentation tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from segmentation_synth import synthetic_abdomen


@pytest.fixture
def abdomen() -> Callable[..., tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Builder of the synthetic L3-like slice with exact labels (see segmentation_synth.synthetic_abdomen)."""
    return synthetic_abdomen
