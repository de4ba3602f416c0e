"""Windowing presets and multiplanar reconstructions (superior at the top, true proportions)."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.imaging import (
    CTVolume,
    body_centre,
    coronal,
    display_aspect,
    display_extent,
    sagittal,
    window,
)


def _volume(direction: np.ndarray | None = None) -> CTVolume:
    """z = 0 inferior ... 9 superior; slice value = 10 * z; a vertical 'spine' of bone at y=14, x=10."""
    hu = np.full((10, 20, 21), -1000, dtype=np.int16)
    hu[:, 4:18, 3:18] = (10 * np.arange(10, dtype=np.int16))[:, None, None]
    hu[:, 13:16, 9:12] = 1200
    return CTVolume(
        hu=hu,
        spacing=(5.0, 0.8, 0.7),
        origin=(0, 0, 0),
        direction=np.eye(3) if direction is None else direction,
    )


def test_window_presets_and_pairs() -> None:
    hu = np.array([-1000, -160, 40, 240, 3000])
    np.testing.assert_array_equal(window(hu, "soft_tissue"), [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(window(hu, (40, 400)), window(hu, "soft_tissue"))
    assert window(np.array([400.0]), "bone")[0] == 128
    assert window(np.array([-600.0]), "lung")[0] == 128
    assert window(np.zeros((3, 4)), "abdomen").dtype == np.uint8
    with pytest.raises(ValueError, match="unknown window preset"):
        window(hu, "brain")
    with pytest.raises(ValueError, match="width"):
        window(hu, (40, 0))


def test_coronal_and_sagittal_put_superior_on_top() -> None:
    vol = _volume()
    cor = coronal(vol, y=10)
    sag = sagittal(vol, x=5)
    assert cor.shape == (10, 21) and sag.shape == (10, 20)
    assert cor[0, 5] == 90 and cor[-1, 5] == 0  # top row = most superior slice
    assert sag[0, 10] == 90 and sag[-1, 10] == 0
    # a series stored superior -> inferior (normal pointing to the feet) is not flipped again
    feet_first = _volume(np.diag([1.0, 1.0, -1.0]))
    assert coronal(feet_first, y=10)[0, 5] == 0


def test_default_plane_goes_through_the_spine() -> None:
    vol = _volume()
    assert body_centre(vol) == (14, 10)
    assert np.all(coronal(vol)[:, 10] == 1200)
    assert np.all(sagittal(vol)[:, 14] == 1200)


def test_thick_slab_mip_and_mean() -> None:
    vol = _volume()
    thin = coronal(vol, y=12)
    assert thin[0, 10] == 90  # just in front of the spine
    assert coronal(vol, y=12, slab_mm=3.0)[0, 10] == 1200  # +-2 rows reach the bone
    mean = sagittal(vol, x=10, slab_mm=1.4, mode="mean")
    assert mean.dtype == np.float32 and mean[0, 14] == pytest.approx(1200.0)
    with pytest.raises(ValueError, match="outside"):
        coronal(vol, y=20)


def test_extent_and_aspect_in_mm() -> None:
    vol = _volume()
    assert display_extent(vol, "coronal") == pytest.approx((0, 21 * 0.7, 0, 10 * 5.0))
    assert display_extent(vol, "sagittal") == pytest.approx((0, 20 * 0.8, 0, 50.0))
    assert display_extent(vol, "axial") == pytest.approx((0, 21 * 0.7, 0, 20 * 0.8))
    assert display_aspect(vol, "coronal") == pytest.approx(5.0 / 0.7)
    with pytest.raises(ValueError, match="plane"):
        display_aspect(vol, "oblique")  # type: ignore[arg-type]
