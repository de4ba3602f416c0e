"""The localizer's faster computations give exactly what the library calls they replaced gave (issue 18):
the body's median column (np.median over every body voxel) and the rib pieces' reach (ndimage.maximum)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.level.ribs import _label_maxima
from sarcoscope.level.spine import _median_index


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(14)
    out = [np.ones((1, 1, 1), bool), np.eye(4, dtype=bool)[None], np.zeros((2, 3, 5), bool)]
    out[-1][0, 0, 4] = True
    for _ in range(300):
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 13)))
        mask = rng.random(shape) < rng.random()
        if mask.any():
            out.append(mask)
    return out


def test_median_index_is_numpys_median_of_every_pixel() -> None:
    for mask in _masks():
        assert _median_index(mask.sum(axis=(0, 1))) == float(np.median(np.nonzero(mask)[2]))


def test_label_maxima_are_ndimages_maxima() -> None:
    rng = np.random.default_rng(18)
    for mask in _masks():
        labels, n = ndi.label(mask)
        labels[rng.random(labels.shape) < 0.1] = 0  # pieces dropped after labelling: labels without pixels
        values = rng.normal(0.0, 10.0, mask.shape)  # negative maxima too
        want = np.asarray(ndi.maximum(values, labels, index=np.arange(n + 1)), float)
        got = _label_maxima(values, labels, labels > 0, n)
        assert np.array_equal(got[1:], want[1:]) and got[0] == 0.0  # the background (label 0) is no piece
