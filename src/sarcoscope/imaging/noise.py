"""Image noise read from the HU themselves: the robust spread that the localizer's noise index and the
quality check's slice noise both use."""

from __future__ import annotations

import numpy as np

#: 1.4826 x median absolute deviation is the standard deviation of normally distributed values.
MAD_TO_SD = 1.4826


def robust_sd(values: np.ndarray) -> float:
    """The standard deviation of `values` read from their median absolute deviation: the noise's spread,
    not pulled up by the few values (edges, vessels, bone) that are not noise."""
    return MAD_TO_SD * float(np.median(np.abs(values - np.median(values))))
