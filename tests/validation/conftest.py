"""Fixtures of the validation tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from validation_synth import build_cohort


@pytest.fixture
def cohort() -> Callable[..., list[tuple[str, str, np.ndarray, np.ndarray]]]:
    """Builder of a synthetic 3-site cohort (see validation_synth.build_cohort)."""
    return build_cohort
