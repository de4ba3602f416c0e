"""A small NumPy peak finder with the results of `scipy.signal.find_peaks(x, distance=, prominence=)`.

The localizer needs one `find_peaks` call per CT; importing `scipy.signal` for it cost about a second of CPU
per process (issue 18). This reproduces scipy's algorithm step by step (plateau midpoints, the
distance filter by descending height with scipy's tie order, then prominences over the unbounded window),
so peaks and prominences are identical; tests/level/test_peaks.py checks it against scipy.
"""

from __future__ import annotations

import math

import numpy as np


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Indices of local maxima; a flat top gives its middle (rounded down); the ends are never maxima."""
    n = len(x)
    if n < 3:
        return np.zeros(0, dtype=np.intp)
    starts = np.concatenate(([0], np.flatnonzero(x[1:] != x[:-1]) + 1))
    ends = np.concatenate((starts[1:] - 1, [n - 1]))
    inner = (starts > 0) & (ends < n - 1)
    s, e = starts[inner], ends[inner]
    top = (x[s - 1] < x[s]) & (x[e + 1] < x[s])
    return ((s[top] + e[top]) // 2).astype(np.intp)


def _select_by_distance(peaks: np.ndarray, height: np.ndarray, distance: float) -> np.ndarray:
    """Keep the highest peaks first, dropping lower ones closer than `distance` (scipy's rule and order)."""
    min_gap = math.ceil(distance)
    keep = np.ones(len(peaks), dtype=bool)
    for j in np.argsort(height)[::-1]:
        if keep[j]:
            near = np.abs(peaks - peaks[j]) < min_gap
            near[j] = False
            keep[near] = False
    return keep


def _prominences(x: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Height of each peak over the higher of its two bases (lowest points before a higher sample)."""
    out = np.empty(len(peaks), dtype=float)
    for k, p in enumerate(peaks):
        higher = np.flatnonzero(~(x[:p] <= x[p]))  # not <=: a NaN ends the walk as in scipy
        left_min = x[(higher[-1] + 1 if len(higher) else 0) : p + 1].min()
        higher = np.flatnonzero(~(x[p + 1 :] <= x[p]))
        right_min = x[p : (p + 1 + higher[0] if len(higher) else len(x))].min()
        out[k] = x[p] - max(left_min, right_min)
    return out


def find_peaks(x: np.ndarray, *, distance: float, prominence: float) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of `x` at least `distance` samples apart with prominence >= `prominence`, and those
    prominences: `scipy.signal.find_peaks(x, distance=distance, prominence=prominence)` without scipy."""
    x = np.asarray(x, dtype=float)
    if distance < 1:
        raise ValueError("`distance` must be greater or equal to 1")
    peaks = _local_maxima(x)
    peaks = peaks[_select_by_distance(peaks, x[peaks], distance)]
    prom = _prominences(x, peaks)
    keep = prom >= prominence
    return peaks[keep], prom[keep]
