"""Bins, summaries, Bland–Altman, ICC and Holm against hand-computed / published answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarcoscope.validation.stats import (
    bland_altman,
    compare_sites,
    holm,
    icc,
    iou_bin,
    iou_bin_counts,
    summarize,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "0.9–1.0"),
        (0.9, "0.9–1.0"),  # boundary belongs to the upper bin
        (9 / 10, "0.9–1.0"),
        (0.8999999, "0.8–0.89"),
        (0.8, "0.8–0.89"),
        (0.7999999, "0.7–0.79"),
        (0.7, "0.7–0.79"),
        (0.6999999, "< 0.7"),
        (0.0, "< 0.7"),
    ],
)
def test_iou_bin_boundaries(value, expected):
    assert iou_bin(value) == expected


def test_iou_bin_counts_ignore_nan():
    counts = iou_bin_counts([0.95, 0.9, 0.85, 0.5, math.nan])
    assert counts["0.9–1.0"] == (2, 0.5)
    assert counts["0.8–0.89"] == (1, 0.25)
    assert counts["0.7–0.79"] == (0, 0.0)
    assert counts["< 0.7"] == (1, 0.25)
    assert all(math.isnan(r) for _, r in iou_bin_counts([math.nan]).values())


def test_summarize():
    s = summarize([0.9, 0.8, math.nan, 1.0], ["a", "b", "c", "d"])
    assert (s.n, s.worst, s.worst_case) == (3, 0.8, "b")
    assert s.mean == pytest.approx(0.9)
    assert s.sd == pytest.approx(0.1)
    assert s.median == pytest.approx(0.9)


def test_bland_altman_hand_computed():
    # differences 1, 0, 2: bias 1, SD 1, limits 1 ± 1.96; CI of the bias 1 ± t(0.975, 2)·1/√3
    ba = bland_altman([10, 12, 14], [9, 12, 12])
    assert (ba.n, ba.bias, ba.sd) == (3, pytest.approx(1.0), pytest.approx(1.0))
    assert ba.loa_low == pytest.approx(-0.96)
    assert ba.loa_high == pytest.approx(2.96)
    assert ba.bias_ci_high == pytest.approx(1 + 4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(bland_altman([1.0], [2.0]).bias)


def test_icc_shrout_fleiss_published_example():
    # Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = 0.29, ICC(3,1) = 0.71.
    ratings = np.array(
        [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
    )
    out = icc(ratings)
    assert round(out["icc2_1"], 2) == 0.29
    assert round(out["icc3_1"], 2) == 0.71


def test_icc_penalises_offset_only_in_absolute_agreement():
    ref = np.array([100.0, 120.0, 140.0, 160.0, 180.0])
    out = icc(np.column_stack([ref + 20, ref]))  # perfect consistency, constant bias
    assert out["icc3_1"] == pytest.approx(1.0)
    # hand: MSR = 2*sum((ref+10-140)^2)/4 = 2000, MSC = 5*2*100/1 = 1000, MSE = 0
    assert out["icc2_1"] == pytest.approx(2000 / (2000 + 2 * 1000 / 5))


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.5, math.nan])
    assert out[0] == 0.5 and math.isnan(out[1])


def test_compare_sites_flags_the_shifted_site():
    rng = np.random.default_rng(1)
    sites = ["A"] * 8 + ["B"] * 8 + ["C"] * 8
    dice = np.concatenate([0.95 + 0.01 * rng.standard_normal(16), 0.85 + 0.01 * rng.standard_normal(8)])
    tests, pairs = compare_sites({"muscle_dice": dice}, sites, min_effect={"muscle_dice": 0.02})
    assert {t.site for t in tests if t.flagged} == {"C"}
    assert {(q.site_a, q.site_b) for q in pairs if q.differs} == {("A", "C"), ("B", "C")}
    c = next(t for t in tests if t.site == "C")
    assert c.differs_from == ("A", "B") and c.n_compared == 2
    # Same data, but requiring a larger effect than present: nobody flagged.
    tests, _ = compare_sites({"muscle_dice": dice}, sites, min_effect={"muscle_dice": 0.5})
    assert not any(t.flagged for t in tests)
    # Too few cases: not tested (NaN), not flagged.
    few, pairs = compare_sites({"m": [0.9, 0.8, 0.9, 0.9]}, ["A", "A", "B", "B"], min_effect={})
    assert all(math.isnan(q.p_value) for q in pairs)
    assert not any(t.flagged for t in few)
