"""The working grid's strided block means equal the reshape-and-mean they replaced (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.level.spine import _block_means


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
@pytest.mark.parametrize(("fy", "fx"), [(1, 1), (2, 3), (3, 3)])
def test_block_means_as_reshape_mean(order: list[int], fy: int, fx: int) -> None:
    rng = np.random.default_rng(7)
    hu = rng.integers(-1024, 3000, size=(5, 31, 29)).astype(np.int16)
    ny, nx = 31 // fy, 29 // fx
    want = np.stack(
        [
            hu[i, : ny * fy, : nx * fx].astype(np.float32).reshape(ny, fy, nx, fx).mean(axis=(1, 3))
            for i in order
        ]
    )
    got = _block_means(hu, np.array(order), ny, fy, nx, fx)
    np.testing.assert_array_equal(got, want)  # integer HU: bit-identical
    floats = hu.astype(np.float32) / np.float32(7)
    want_f = np.stack(
        [floats[i, : ny * fy, : nx * fx].reshape(ny, fy, nx, fx).mean(axis=(1, 3)) for i in order]
    )
    np.testing.assert_allclose(_block_means(floats, np.array(order), ny, fy, nx, fx), want_f, atol=1e-4)


@pytest.mark.parametrize(
    "order", [np.arange(12), np.arange(12)[::-1], np.array([3, 4, 5, 9, 8, 7, 0, 1, 2, 6, 11, 10])]
)
def test_block_means_across_chunks(order: np.ndarray) -> None:
    """Slices are processed a few at a time (here 5, 5 and 2): runs as views, other orders as copies."""
    hu = np.random.default_rng(3).integers(-1024, 2000, size=(12, 600, 600)).astype(np.int16)
    want = np.stack([hu[i].astype(np.float32).reshape(200, 3, 200, 3).mean(axis=(1, 3)) for i in order])
    np.testing.assert_array_equal(_block_means(hu, order, 200, 3, 200, 3), want)
