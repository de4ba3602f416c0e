"""The labelling of the column (level.labelling): known answers for each combination of evidence."""

from __future__ import annotations

import pytest

from sarcoscope.level.labelling import label_column, name_of, pooled, tp_profile

# A column of 8 segments (0 = lowest): with normal anatomy the L5/S1 disc is disc 1 (L5 = segment 2), so T12
# is segment 7. Transverse processes as measured on a phantom (mm beyond the body): L5..L1.
TP = {2: 17.0, 3: 19.0, 4: 22.0, 5: 18.0, 6: 13.0}


def test_names_follow_t12() -> None:
    assert [name_of(s, 7) for s in (7, 6, 4, 2, 1)] == ["T12", "L1", "L3", "L5", "S1"]
    assert name_of(0, 7) is None  # below S1


def test_agreeing_counts_are_near_certain() -> None:
    lab = label_column(8, sacrum_disc=1, last_rib=7, tp_mm=TP)
    assert lab.best == 7 and lab.probability > 0.99
    assert lab.level_probability(4, "L3") == pytest.approx(lab.probability)


def test_one_count_alone_is_not_certain() -> None:
    ribs_only = label_column(8, sacrum_disc=None, last_rib=7, tp_mm={})
    assert ribs_only.best == 7 and 0.8 < ribs_only.probability < 0.9
    sacrum_only = label_column(8, sacrum_disc=1, last_rib=None, tp_mm={})
    assert sacrum_only.best == 7 and 0.85 < sacrum_only.probability < 0.92


def test_transverse_processes_raise_or_lower_a_single_count() -> None:
    # the lengths fit T12 at 7 (L3's longest): more sure than the rib count alone ...
    fits = label_column(8, sacrum_disc=None, last_rib=7, tp_mm=TP)
    assert fits.best == 7 and fits.probability > label_column(8, None, 7, {}).probability
    # ... and a rib count one too high (11 pairs: T11 taken for T12) is less sure, with the true T12 second
    high = label_column(8, sacrum_disc=None, last_rib=8, tp_mm=TP)
    (first, p1), (second, p2) = high.l3_candidates()[:2]
    assert (first, second) == (5, 4) and p1 < 0.85 and p2 > 0.07


def test_disagreeing_counts_name_both() -> None:
    # six lumbar-type vertebrae: the rib count puts T12 one higher than the sacrum count
    lab = label_column(9, sacrum_disc=1, last_rib=8, tp_mm={})
    cands = dict(lab.l3_candidates()[:2])
    assert set(cands) == {4, 5} and min(cands.values()) > 0.3 and max(cands.values()) < 0.7


def test_tp_profile_prefers_l3_longest() -> None:
    assert tp_profile(TP, 7) > tp_profile(TP, 8) and tp_profile(TP, 7) > tp_profile(TP, 6)
    assert tp_profile({4: 20.0, 5: 10.0}, 7) == 0.0  # fewer than three lengths: no evidence


def test_lengths_that_fit_their_vertebrae_favour_the_naming_that_scores_them() -> None:
    # relative lengths exactly as expected for L5..L1 on segments 2..6 (T12 is segment 7): that naming must
    # beat every naming that scores fewer of them, e.g. with T12 out of view below the column (all sacral or
    # unnamed), which the profile's exponent alone (0 for both) could not tell apart
    fit = {2: 28.5, 3: 27.0, 4: 30.0, 5: 24.0, 6: 16.5}
    assert all(tp_profile(fit, 7) > tp_profile(fit, t) for t in range(-3, 17) if t != 7)
    # with no other evidence, the lengths alone name the column
    assert label_column(8, sacrum_disc=None, last_rib=None, tp_mm=fit).best == 7


def test_pooling_agreeing_readings_changes_nothing() -> None:
    lab = label_column(8, sacrum_disc=1, last_rib=7, tp_mm=TP)
    same = pooled(lab, label_column(8, 1, 7, TP), lambda t: t, share=0.5)
    assert same.best == lab.best and same.probability == pytest.approx(lab.probability, abs=1e-4)


def test_pooling_readings_wrong_in_different_counts_picks_the_count_both_support() -> None:
    # One trace missed the L5/S1 disc (its sacrum count puts T12 at 8, its ribs at 7); the other missed a
    # disc near T12 (sacrum: 7, ribs: 6). At the same heights (identity map), both support T12 at 7.
    own, other = label_column(9, 2, 7, {}), label_column(8, 1, 6, {})
    assert {own.best, other.best} != {7}  # each alone is split between its two counts
    both = pooled(own, other, lambda t: t, share=0.5)
    assert both.best == 7 and 0.4 < both.probability < 0.7  # right, and not sure
    # positions the other reading cannot place carry none of its weight
    alone = pooled(own, other, lambda t: None, share=0.5)
    assert alone.t12 == pytest.approx(own.t12, abs=1e-3)


def test_an_inferred_sacrum_yields_to_a_rib_count_that_disagrees() -> None:
    # Screws in L4-L5 (abdomen seed 9): the sacrum test passed at the L4/L5 disc, inferred between the
    # screws' streaks, while the last rib counted T12 one segment lower. A seen L5/S1 disc outweighs the
    # rib count; an inferred one does not, and alone it still names the same T12, less surely.
    seen = label_column(9, sacrum_disc=2, last_rib=7, tp_mm={})
    inferred = label_column(9, sacrum_disc=2, last_rib=7, tp_mm={}, sacrum_seen=False)
    assert seen.best == 8 and inferred.best == 7 and 0.6 < inferred.probability < 0.9
    alone = label_column(9, sacrum_disc=2, last_rib=None, tp_mm={}, sacrum_seen=False)
    assert alone.best == 8 and alone.probability < label_column(9, 2, None, {}).probability
