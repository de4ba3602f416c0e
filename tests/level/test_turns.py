"""Volumes turned in-plane in their files (a NIfTI written with the wrong affine or its x and y axes swapped,
a DICOM without ImageOrientationPatient) are localized the right way up: read as stored, the real 3 mm volume
with its axes swapped was refused ("The vertebrae cannot be counted"), upside down its count was flagged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import L3Localization, locate_l3, spine
from sarcoscope.level.turns import FLAG_TURNED, quarter_turns, stored_pixel
from sarcoscope.phantom import PhantomVolume, make_volume

Change = Callable[[np.ndarray], np.ndarray]

#: How a file can hold the slices turned, as changes of its data: (name, the change of (z, y, x) arrays).
TURNS: list[tuple[str, Change]] = [
    ("transposed", lambda a: np.swapaxes(a, -2, -1)),
    ("rotated 90 left", lambda a: np.rot90(a, 1, axes=(-2, -1))),
    ("rotated 90 right", lambda a: np.rot90(a, -1, axes=(-2, -1))),
    ("upside down", lambda a: a[..., ::-1, :]),
]

#: The eight layouts a slice can be stored in (the four quarter turns, and those of its transpose).
LAYOUTS: list[Change] = [
    (lambda a, k=k, t=t: np.rot90(np.swapaxes(a, -2, -1) if t else a, k, axes=(-2, -1)))
    for t in (False, True)
    for k in range(4)
]


def _layout(upright: np.ndarray, stored: np.ndarray) -> Change:
    """The change that turns the upright slices into the stored ones."""
    (change,) = [
        c for c in LAYOUTS if c(upright).shape == stored.shape and np.array_equal(c(upright), stored)
    ]
    return change


def _check(
    upright: L3Localization, loc: L3Localization, change: Change, upright_shape: tuple[int, int]
) -> None:
    """`loc` (of the volume stored turned by `change`) finds the upright L3 within 10 mm, is flagged, and
    places the vertebrae where the turned file holds the upright reading's (within a working pixel)."""
    assert upright.l3_mid_mm is not None and loc.l3_mid_mm is not None
    assert abs(loc.l3_mid_mm - upright.l3_mid_mm) <= 10.0
    assert loc.has_flag(FLAG_TURNED) and not upright.has_flag(FLAG_TURNED)
    for name in ("L3", "L1"):
        v, w = upright.vertebrae[name], loc.vertebrae[name]
        assert v.row is not None and v.col is not None and w.row is not None and w.col is not None
        marker = np.zeros(upright_shape, bool)
        marker[v.row, v.col] = True
        ((row, col),) = np.argwhere(change(marker))
        assert abs(w.row - row) <= 2 and abs(w.col - col) <= 2, name


def test_a_turned_pixel_is_found_where_it_is_stored():
    stored = np.arange(5 * 7).reshape(5, 7)
    for turns in range(4):
        view = np.rot90(stored, turns)
        for r, c in np.ndindex(view.shape):
            assert stored[stored_pixel(r, c, turns, (5, 7))] == view[r, c]


@pytest.fixture(scope="module")
def real(shared_data: Path) -> tuple[Path, CTVolume, L3Localization]:
    from sarcoscope.imaging.read import read_ct

    path = shared_data / "real" / "volumes" / "ts_example" / "example_ct.nii.gz"
    volume = read_ct(path)
    return path, volume, locate_l3(volume)


@pytest.mark.parametrize(("name", "change"), TURNS)
def test_the_real_volume_turned_in_its_file_is_localized_the_right_way_up(
    real: tuple[Path, CTVolume, L3Localization], tmp_path: Path, name: str, change: Change
):
    """The NIfTI's data turned, its affine kept (as a tool that swaps the axes writes it)."""
    import nibabel as nib

    from sarcoscope.imaging.read import read_ct

    path, upright_volume, upright = real
    img = nib.load(path)
    data = np.asarray(img.dataobj).transpose(2, 1, 0)  # (z, y, x) of the file's (R, A, S) axes
    turned = np.ascontiguousarray(change(data).transpose(2, 1, 0))
    nib.save(nib.Nifti1Image(turned, img.affine, img.header), tmp_path / "turned.nii.gz")
    volume = read_ct(tmp_path / "turned.nii.gz")
    # before: transposed and turned by a quarter refused (LevelError), upside down flagged counting_uncertain
    loc = locate_l3(volume)
    _check(upright, loc, _layout(upright_volume.hu, volume.hu), upright_volume.hu.shape[1:])
    assert loc.l3_mid == upright.l3_mid, name  # the same slices, read so (slice 74; upside down before: 73)


@cache
def _phantom(seed: int, coverage: str = "abdomen") -> tuple[PhantomVolume, L3Localization]:
    pv = make_volume(seed, shape_xy=192, coverage=coverage)
    return pv, locate_l3(pv.to_ctvolume())


def _turned(volume: CTVolume, change: Change) -> CTVolume:
    """The volume as read from a file that holds it turned: its slices changed, their spacing as stored."""
    hu = np.ascontiguousarray(change(volume.hu))
    dz, dy, dx = volume.spacing
    return replace(volume, hu=hu, spacing=(dz, dy, dx) if hu.shape == volume.hu.shape else (dz, dx, dy))


@pytest.mark.parametrize(("name", "change"), TURNS)
def test_a_phantom_volume_turned_in_its_file_is_localized_the_right_way_up(name: str, change: Change):
    pv, upright = _phantom(1)
    assert upright.l3_mid is not None and abs(upright.l3_mid - pv.truth["l3_mid_index"]) <= 1
    loc = locate_l3(_turned(pv.to_ctvolume(), change))
    _check(upright, loc, change, pv.hu.shape[1:])
    assert abs(loc.l3_mid - pv.truth["l3_mid_index"]) <= 1, name


@pytest.mark.parametrize(
    ("seed", "coverage"), [(1, "abdomen"), (3, "chest-pelvis"), (5, "lower"), (7, "no-ribs")]
)
def test_volumes_the_right_way_up_are_read_as_stored(seed: int, coverage: str):
    pv, loc = _phantom(seed, coverage)
    assert quarter_turns(spine.make_grid(pv.to_ctvolume())).turns == 0
    assert not loc.has_flag(FLAG_TURNED)


def test_metadata_that_flips_an_axis_is_followed_before_the_anatomy_is_read():
    """Slices stored front at the bottom with a direction that says so are the right way up (the grid flips
    them); turned by a quarter as well, the turn that brings them up runs the other way round."""
    pv, upright = _phantom(1)
    volume = pv.to_ctvolume()
    flipped = replace(
        volume, hu=np.ascontiguousarray(volume.hu[:, ::-1]), direction=np.diag([1.0, -1.0, 1.0])
    )
    assert quarter_turns(spine.make_grid(flipped)).turns == 0
    loc = locate_l3(flipped)
    assert loc.l3_mid == upright.l3_mid and not loc.has_flag(FLAG_TURNED)
    left = TURNS[1][1]
    loc = locate_l3(_turned(flipped, left))
    _check(upright, loc, lambda a: left(a[..., ::-1, :]), pv.hu.shape[1:])
