"""Landmarks beside the column (level.cues): the aortic bifurcation and the top of the iliac crests, on
phantoms whose landmarks are known and on the real volume against TotalSegmentator's vertebra labels."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import cues, spine
from sarcoscope.phantom import PhantomVolume, make_volume
from sarcoscope.phantom.anatomy import build_anatomy
from sarcoscope.phantom.habitus import Exam

SHAPE = 192  # ~2 mm pixels, as the other localizer tests


@cache
def _phantom(seed: int, variant: str = "normal", coverage: str = "abdomen") -> PhantomVolume:
    return make_volume(seed, shape_xy=SHAPE, variant=variant, coverage=coverage, slice_thickness_mm=3.0)


def _grid(volume: CTVolume) -> tuple[spine.WorkGrid, spine.SpineTrace]:
    grid = spine.make_grid(volume)
    return grid, spine.trace_spine(grid, spine.column_band(grid), 16.0, True)  # the wide trace, as locate_l3


def _working_slice(pv: PhantomVolume, grid: spine.WorkGrid, z_mm: float) -> float:
    return (z_mm - float(grid.z_mm[0])) / grid.spacing[0]


def _crest_mm(seed: int, variant: str = "normal") -> float:
    """The phantom's iliac crest (anatomy mm), drawn from the seed as make_volume draws it."""
    exam = Exam.sample(np.random.default_rng([seed, 3]))
    return build_anatomy(seed, None, exam, variant).iliac_crest


@pytest.mark.slow
def test_bifurcation_found_where_the_phantom_divides_the_aorta() -> None:
    # phantoms divide the aorta at mid-L4 (render/organs.py); seed 2 is a portal-venous abdomen
    pv = _phantom(2)
    grid, trace = _grid(pv.to_ctvolume())
    cue = cues.aortic_bifurcation(grid, trace)
    l4 = pv.truth["vertebrae"]["L4"]
    truth = _working_slice(pv, grid, 0.5 * (l4["z_lo_mm"] + l4["z_hi_mm"]))
    assert cue.found and cue.z is not None
    assert abs(cue.z - truth) * grid.spacing[0] <= 10.0, cue.evidence


@pytest.mark.slow
def test_crest_found_at_the_top_of_the_phantoms_iliac_wings() -> None:
    pv = _phantom(1)
    grid, trace = _grid(pv.to_ctvolume())
    cue = cues.iliac_crest(grid, trace)
    assert _crest_mm(1) == pytest.approx(pv.truth["vertebrae"]["L4"]["z_lo_mm"], abs=12.5)  # as drawn
    assert cue.found and cue.z is not None
    assert abs(cue.z - _working_slice(pv, grid, _crest_mm(1))) * grid.spacing[0] <= 10.0, cue.evidence


@pytest.mark.slow
def test_a_scan_ending_at_mid_l4_has_both_landmarks_below_it() -> None:
    # "no-sacrum" phantoms end at mid-L4: the aorta runs undivided to the lowest slice, no wing is on it
    pv = _phantom(36, "11-ribs", "no-sacrum")
    grid, trace = _grid(pv.to_ctvolume())
    bif, crest = cues.aortic_bifurcation(grid, trace), cues.iliac_crest(grid, trace)
    assert not bif.found and bif.below_view, bif.evidence
    assert not crest.found and crest.below_view, crest.evidence


def _real_crop(real: CTVolume, lo: int) -> CTVolume:
    pos = real.slice_positions
    return replace(real, hu=real.hu[lo:], slice_positions=None if pos is None else pos[lo:])


@pytest.fixture(scope="module")
def real(shared_data: Path) -> CTVolume:
    from sarcoscope.imaging.read import read_ct

    return read_ct(shared_data / "real" / "volumes" / "ts_example" / "example_ct.nii.gz")


# TotalSegmentator's labels of the real volume (slices): L5 42-58, L4 55-68, L3 65-79.
L4_SLICES = (55, 68)


def test_real_bifurcation_lies_at_the_lower_end_of_l3_or_in_l4(real: CTVolume) -> None:
    grid, trace = _grid(real)
    cue = cues.aortic_bifurcation(grid, trace)
    assert cue.found and cue.z is not None, cue.evidence
    assert L4_SLICES[0] <= cue.z <= L4_SLICES[1] + 3  # 3 mm slices: within one slice of L4's label


def test_real_crest_in_l4_and_below_a_scan_starting_above_it(real: CTVolume) -> None:
    # whole, the left wing breaks into pieces and the two tops disagree: not given
    grid, trace = _grid(real)
    assert not cues.iliac_crest(grid, trace).found
    # from slice 57 (in L4), the wings' tops agree, in L4
    grid, trace = _grid(_real_crop(real, 57))
    cue = cues.iliac_crest(grid, trace)
    assert cue.found and cue.z is not None and L4_SLICES[0] <= 57 + cue.z <= L4_SLICES[1], cue.evidence
    # from slice 63 (upper L4) no wing is on the lowest slice; from slice 75 (L3) the aorta runs undivided
    grid, trace = _grid(_real_crop(real, 63))
    assert cues.iliac_crest(grid, trace).below_view
    grid, trace = _grid(_real_crop(real, 75))
    assert cues.aortic_bifurcation(grid, trace).below_view and cues.iliac_crest(grid, trace).below_view
