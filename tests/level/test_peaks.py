"""The NumPy peak finder gives scipy.signal.find_peaks's peaks and prominences (issue 18: no scipy.signal)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks as scipy_find_peaks

from sarcoscope.level.peaks import find_peaks


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(18)
    out: list[np.ndarray] = [np.zeros(0), np.ones(1), np.array([0.0, 1.0]), np.array([0.0, 1.0, 0.0])]
    out += [np.array([0, 2, 2, 2, 1, 3, 3, 0, 1, 1], float), np.array([1, 1, 1], float)]
    for n in (5, 40, 200, 700):
        for _ in range(60):
            x = rng.normal(size=n).cumsum() + 20 * np.sin(np.arange(n) / rng.uniform(2, 12))
            if rng.random() < 0.5:
                x = np.round(x / rng.uniform(0.5, 6))  # plateaus and ties in height
            out.append(x)
    return out


@pytest.mark.parametrize("distance", [1, 1.5, 2, 3, 7, 25])
@pytest.mark.parametrize("prominence", [0.0, 1.0, 8.0])
def test_same_as_scipy(distance: float, prominence: float) -> None:
    for x in _inputs():
        want, props = scipy_find_peaks(x, distance=distance, prominence=prominence)
        got, prom = find_peaks(x, distance=distance, prominence=prominence)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(prom, props["prominences"])


def test_distance_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="distance"):
        find_peaks(np.arange(5.0), distance=0.5, prominence=0.0)
