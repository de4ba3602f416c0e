"""The localizer on rib and field-of-view variants (phantoms with exact anatomy): L3 within 10 mm of the
truth, or, where the evidence cannot decide, flagged with the true L3 among the two candidates."""

from __future__ import annotations

from functools import cache

import pytest

from sarcoscope.level import L3Localization, locate_l3
from sarcoscope.level.localization import FLAG_COUNTING
from sarcoscope.phantom import PhantomVolume, make_volume

pytestmark = pytest.mark.slow  # each phantom volume takes several seconds to render

SHAPE = 192  # ~2 mm pixels, as the other localizer tests


@cache
def _phantom(seed: int, variant: str, coverage: str) -> PhantomVolume:
    return make_volume(seed, shape_xy=SHAPE, variant=variant, coverage=coverage, slice_thickness_mm=3.0)


def _error_mm(pv: PhantomVolume, slice_index: int) -> float:
    truth = pv.truth
    return abs(slice_index - truth["l3_mid_index"]) * truth["slice_thickness_mm"]


def _locate(seed: int, variant: str, coverage: str) -> tuple[PhantomVolume, L3Localization]:
    pv = _phantom(seed, variant, coverage)
    return pv, locate_l3(pv.to_ctvolume())


def test_phantom_variant_truth() -> None:
    pv = _phantom(33, "one-sided-12th-rib", "no-sacrum")
    v = pv.truth["vertebrae"]
    assert v["T12"]["rib_sides"] == ["right"] and v["T11"]["rib_sides"] == ["right", "left"]
    assert v["L1"]["rib_sides"] == [] and pv.truth["rib_pairs"] == 12
    assert pv.truth["vertebrae"]["S1"]["last_index"] is None  # the sacrum is cropped away
    assert pv.truth["l3_in_volume"]


def test_long_steep_12th_ribs_with_sacrum() -> None:
    # The long steep 12th ribs are found on both sides, so both counts agree.
    pv, loc = _locate(31, "long-steep-12th-ribs", "abdomen")
    assert loc.counted_from == "sacrum+ribs" and not loc.has_flag(FLAG_COUNTING)
    assert _error_mm(pv, loc.l3_mid) <= 10.0 and loc.confidence > 0.9
    ribs = {r.vertebra: r for r in loc.ribs}
    assert ribs["T12"].right and ribs["T12"].left and loc.rib_vertebrae[0] == "T12"


def test_long_steep_12th_ribs_without_sacrum() -> None:
    pv, loc = _locate(32, "long-steep-12th-ribs", "no-sacrum")
    assert loc.counted_from == "ribs" and loc.has_flag(FLAG_COUNTING)
    assert _error_mm(pv, loc.l3_mid) <= 10.0
    ribs = {r.vertebra: r for r in loc.ribs}
    assert ribs["T12"].right and ribs["T12"].left and not ribs["L1"].any


def test_normal_ribs_without_sacrum() -> None:
    pv, loc = _locate(34, "normal", "no-sacrum")
    assert _error_mm(pv, loc.l3_mid) <= 10.0 and loc.has_flag(FLAG_COUNTING)
    assert loc.candidates[0].l3_mid == loc.l3_mid


def test_one_sided_12th_rib_without_sacrum() -> None:
    # A lone right 12th rib behind the contrast-enhanced liver: found, and reported on its side only.
    pv, loc = _locate(33, "one-sided-12th-rib", "no-sacrum")
    assert _error_mm(pv, loc.l3_mid) <= 10.0 and loc.has_flag(FLAG_COUNTING)
    t12 = next(r for r in loc.ribs if r.vertebra == "T12")
    assert t12.right and not t12.left


def test_eleven_ribs_without_sacrum_is_flagged_with_the_true_l3_as_candidate() -> None:
    # Eleven pairs and no sacrum: T11 is taken for T12 and L2 for L3, which no count can tell; flagged, and
    # the second candidate (one vertebra lower) is the true L3.
    pv, loc = _locate(36, "11-ribs", "no-sacrum")
    assert loc.has_flag(FLAG_COUNTING)
    first, second = loc.candidates
    assert first.probability > second.probability > 0.0
    assert _error_mm(pv, first.l3_mid) > 10.0 and _error_mm(pv, second.l3_mid) <= 10.0


def test_no_ribs_in_view_a_disc_chain_the_traces_disagree_on_is_flagged() -> None:
    # With the column cut at mid-L1 the wide trace's disc chain gains a short extra level between L5 and L3
    # (37 mm off); the close trace sees the true discs there, so the count is flagged, not trusted.
    pv, loc = _locate(35, "normal", "no-ribs")
    assert _error_mm(pv, loc.l3_mid) <= 10.0 or loc.has_flag(FLAG_COUNTING)
    reason = next(f["reason"] for f in loc.flags if f["flag"] == FLAG_COUNTING)
    assert "two traces of the column disagree" in reason and loc.confidence < 0.7
    assert [f["flag"] for f in loc.flags].count(FLAG_COUNTING) == 1
