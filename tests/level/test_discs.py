"""The chain of discs on known profiles: a disc is a dip between two close endplates, and lumbar levels are
longer than the thoracic ones that set the period of a chest-to-pelvis column."""

from __future__ import annotations

import numpy as np

from sarcoscope.level.spine import _best_chain, _level_gaps, _walls


def test_walls_tell_a_disc_from_a_dip_in_mid_body() -> None:
    # 3 mm samples: a disc (95 HU) between bright endplates (250 HU), then a 30 mm body whose sparse middle
    # (140 HU) dips below its endplates, 15 mm away on either side, as deep as the disc's own contrast.
    profile = np.array([140, 250, 95, 95, 250, *[140] * 9, 250, 140], dtype=float)
    disc, mid_body = _walls(profile, np.array([2, 9]), 3.0)
    assert disc == 155.0  # both endplates within 9 mm
    assert mid_body == 0.0  # its walls lie further away


def _lumbar_under_thoracic() -> tuple[np.ndarray, list[float]]:
    """Disc positions (mm, 1 mm samples) of a chest-to-pelvis column: five lumbar levels of 33-38 mm under
    thirteen thoracic ones of 30-22 mm, so the column's period (its most numerous levels) is 24 mm."""
    levels = [37, 38, 37, 35, 33, 30, 28, 26, 25, 24, 24, 24, 23, 23, 23, 22, 22, 22]
    return np.concatenate([[0], np.cumsum(levels)]).astype(int), [float(v) for v in levels]


def test_lumbar_levels_longer_than_the_period_are_one_level_each() -> None:
    discs, _ = _lumbar_under_thoracic()
    chain, skips = _best_chain(discs, np.full(len(discs), 100.0), 1.0, 24.0)
    assert [int(discs[i]) for i in chain] == discs.tolist() and not any(skips)


def test_dips_in_mid_body_do_not_split_the_lumbar_levels() -> None:
    # A minimum in the middle of every lumbar body, as deep as a disc but with its walls far away: scored by
    # its walls, it does not pass for a disc (at one period, it used to halve each lumbar level).
    discs, levels = _lumbar_under_thoracic()
    mids = discs[:5] + np.array(levels[:5], dtype=int) // 2
    peaks = np.sort(np.concatenate([discs, mids]))
    score = np.where(np.isin(peaks, mids), 0.0, 100.0)
    chain, _ = _best_chain(peaks, score, 1.0, 24.0)
    assert [int(peaks[i]) for i in chain] == discs.tolist()


def test_a_missed_thoracic_disc_is_still_bridged() -> None:
    # Two thoracic levels of 24 mm with their disc unseen (48 mm, two periods) among 24 mm levels: a skipped
    # disc, not one level twice as long as its neighbours.
    discs = np.array([0, 24, 48, 96, 120, 144])
    chain, skips = _best_chain(discs, np.full(len(discs), 100.0), 1.0, 24.0)
    assert [int(discs[i]) for i in chain] == discs.tolist()
    assert skips == [False, False, True, False, False]


def test_no_level_is_longer_than_an_adult_lumbar_level_whatever_the_period() -> None:
    # A period read at two levels (48 mm on the wide trace of chest to pelvis at 5 mm, seed 79) let a "level"
    # of 1.45 periods through: 66 mm, two lumbar levels, so the chain took every other disc.
    assert _level_gaps(66.0 / 48.0, 48.0) == []
    # one lumbar level of 44 mm still reads as one, at a lumbar period or at a thoracic one
    assert (44.0 / 33.0, False) in _level_gaps(44.0 / 33.0, 33.0)
    assert (44.0 / 24.0, False) in _level_gaps(44.0 / 24.0, 24.0)


def test_a_weak_dip_that_makes_the_top_level_taller_than_the_one_below_is_no_disc() -> None:
    # Four lumbar discs 36 mm apart (1 mm samples), then above the last a weak dip (scored 14, as the real
    # volume's 5 mm slices left the T12/L1 disc blurred into a one-sided dip 9 mm above it, in T12): 45 mm
    # above, it would make the top level 25 % taller than the one below it and than the period, which no level
    # above the lumbar ones is; 27 mm above (25 % shorter, as thoracic levels are) the same dip is taken.
    lumbar = [0, 36, 72, 108]
    for above, taken in ((45, False), (27, True)):
        peaks = np.array([*lumbar, 108 + above])
        chain, _ = _best_chain(peaks, np.array([100.0] * 4 + [14.0]), 1.0, 36.0)
        assert [int(peaks[i]) for i in chain] == (peaks.tolist() if taken else lumbar)
