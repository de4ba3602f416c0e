"""One reading of the column: the discs along one trace, the sacrum and the last rib-bearing vertebra
counted from, and how two readings of the same column (two traces) compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sarcoscope.level import anchors, spine
from sarcoscope.level.ribs import RibBone, VertebraRibs, joint_ribs

#: Median HU across vertebral bodies that a traced structure must have to count as a spine.
BODY_HU = (60.0, 450.0)
#: A gap in a disc chain over this many disc periods holds a disc the chain missed.
GAP_PERIODS = 1.6
#: The two traces of the column (`spine.trace_spine`'s smoothing and whether it is weighted backwards): close
#: to the bodies, and wide and weighted backwards so that a contrast-filled aorta cannot capture it.
TRACES = ((8.0, False), (16.0, True))
#: Consecutive rib-bearing vertebrae that only the thorax has: the iliac wings beside S1-S3 can read as three
#: (with 3, true sacra of normal phantoms were rejected as the shoulder girdle).
THORAX_SEGMENTS = 4
#: Vertebrae in a row whose ribs may be missed inside the rib series (see last_rib_of).
RIB_GAP = 2
#: Vertebrae right above the sacrum that bear no ribs, whatever the anatomy (L3-L5; L4-L6 with six lumbar-type
#: vertebrae, L2-L4 with a sacralised L5). The iliac crest beside L5 read as a rib on the real volume, and
#: beside L5 on one of 72 phantom readings, beside L4 on none.
LUMBAR_ABOVE = 3


@dataclass
class Reading:
    """Discs and anchors read along one trace of the column."""

    trace: spine.SpineTrace
    profile: np.ndarray
    discs: spine.Discs
    sacrum: int | None  # index of the L5/S1 disc in discs.z
    rib_segs: list[int]  # segments (0 = below the lowest disc) of the rib series, from the last rib up
    last_rib: int | None  # segment taken as T12
    ribs: list[VertebraRibs]  # rib evidence per segment searched

    @property
    def score(self) -> float:
        anchors_found = (self.sacrum is not None) + (self.last_rib is not None)
        bridged = int(np.sum(self.discs.prominence[1:-1] == 0))
        return 2.0 * anchors_found - 1.0 * bridged + float(self.discs.prominence.sum()) / 1e4


def read(
    grid: spine.WorkGrid,
    trace: spine.SpineTrace,
    rib_trace: spine.SpineTrace,
    bone: RibBone,
    pieces: anchors.BoneSlices,
    missed_sacrum: bool = False,
) -> Reading | None:
    """Discs and sacrum along one trace, ribs beside `rib_trace` (the posterior-weighted one, which an
    enhanced aorta cannot pull off the column; `bone` = rib_bone(grid, rib_trace)); None when the trace
    shows no vertebral column. `bone` and `pieces` (the bone pieces per slice) serve both readings.
    `missed_sacrum`: no trace found the sacrum on its discs, so an L5/S1 disc this chain missed is looked
    for at the sacrum's top (`anchors.sacrum_top`)."""
    dz = grid.spacing[0]
    profile = spine.disc_profile(grid, trace)
    discs = spine.find_discs(profile, dz, trace.strength)
    if len(discs.z) < 2:
        return None
    # Vertebral bodies are trabecular bone (roughly 60-450 HU across the body); a skull, a femur or metal
    # traced by mistake is solid cortex or brighter.
    body_hu = float(np.median(profile[int(discs.z[0]) : int(np.ceil(discs.z[-1])) + 1]))
    if not BODY_HU[0] <= body_hu <= BODY_HU[1]:
        return None
    period = discs.period_mm
    sacrum = anchors.find_sacrum_disc(pieces, trace, discs.z, period)
    top = anchors.sacrum_top(pieces, trace, discs.z, period) if missed_sacrum and sacrum is None else None
    if top is not None:
        # L5/S1 missed below the chain (faint, or the trace off the column below L5): a disc at the top of
        # the sacrum-wide bone, kept only when it passes the sacrum test
        missed = spine.Discs(np.r_[top, discs.z], np.r_[0.0, discs.prominence], period)
        if anchors.find_sacrum_disc(pieces, trace, missed.z, period) == 0:
            discs, sacrum = missed, 0
    seg_lo, seg_hi = discs.segments(dz)

    def rib_vertebrae(first_segment: int) -> list[VertebraRibs]:
        """Rib evidence at the joints of every vertebra from `first_segment` up."""
        return joint_ribs(grid, rib_trace, seg_lo, seg_hi, first_segment, bone)

    searched: list[VertebraRibs] = []  # rib evidence from `searched[0].segment` up, when it was needed
    if sacrum is not None:
        # The shoulder girdle, and T12 with its ribs joined to the body, are wide bone below a disc with bone
        # beside it too; but ribs below it, vertebra after vertebra, or on the three vertebrae above it
        # (lumbar vertebrae bear none; the iliac crest beside L5 can read as a rib), show the thorax. (Ribs
        # below are only checked for a "sacrum" with several discs below it.)
        searched = rib_vertebrae(0 if sacrum >= THORAX_SEGMENTS else sacrum + 1)
        bearing = {r.segment for r in searched if r.bears_ribs}
        below = {seg for seg in bearing if seg <= sacrum}
        if any(all(seg + k in below for k in range(THORAX_SEGMENTS)) for seg in below) or all(
            sacrum + k in bearing for k in range(1, LUMBAR_ABOVE + 1)
        ):
            sacrum = None
    # Ribs sit well above the pelvis (a 13th pair on L1 at the lowest): start the search at L3 when the sacrum
    # is known, clear of the iliac crests beside L4 and L5.
    if sacrum is not None:
        ribs = [r for r in searched if r.segment >= sacrum + 3]
    else:
        ribs = searched if searched and searched[0].segment == 0 else rib_vertebrae(0)
    rib_segs = [r.segment for r in ribs if r.bears_ribs]
    last = last_rib_of(rib_segs)
    # Ribs come as a series from T1 down, and only a whole thorax (neck in view) has rib-free vertebrae
    # above its ribs: a short "rib" series with two whole rib-free vertebrae above it is bone beside the
    # pelvis or metal's streaks.
    if last is not None and max(rib_segs) - last < 6 and len(discs.z) - 1 - max(rib_segs) >= 2:
        last = None
    series = [s for s in rib_segs if last is not None and s >= last]
    return Reading(trace, profile, discs, sacrum, series, last, ribs)


def counted_top(reading: Reading) -> int:
    """The highest working slice a reading's count uses: T11's upper disc when it found the last rib (the
    count runs up from the sacrum, or down from the last rib, to L3 below it), else its highest disc."""
    z = reading.discs.z
    top = len(z) - 1 if reading.last_rib is None else min(reading.last_rib + 1, len(z) - 1)
    return int(np.ceil(z[top]))


def hardware_on(
    grid: spine.WorkGrid, trace: spine.SpineTrace, discs: spine.Discs, anchor: int, l3: int
) -> list[int]:
    """Slice indices with metal beside the column on the counted stretch: from the anchor (the sacrum's
    disc with the window below it where the sacrum was judged, or the last rib-bearing vertebra) to L3."""
    dz = grid.spacing[0]

    def at(i: int) -> float:
        return float(discs.z[int(np.clip(i, 0, len(discs.z) - 1))])

    if anchor < l3:  # L5/S1 below L3, whose upper disc is l3
        lo, hi = at(anchor) - 0.65 * discs.period_mm / dz, at(l3)
    else:  # the last rib-bearing vertebra above L3, between discs anchor and anchor + 1
        lo, hi = at(l3 - 1), at(anchor + 1)
    slices = range(max(0, round(lo)), min(grid.hu.shape[0] - 1, round(hi)) + 1)
    metal = {grid.to_index(grid.z_mm[0] + k * dz) for k in slices if anchors.hardware_beside(grid, trace, k)}
    return sorted(metal)


def last_rib_of(rib_segs: list[int]) -> int | None:
    """Segment of the last rib-bearing vertebra (T12 normally).

    Ribs come as a series from T1 down, vertebra after vertebra: the series is followed down from the
    highest rib seen, so a rib-like piece below a rib-free vertebra (a transverse process touching an
    enhanced kidney or pelvic bone) is skipped. A thoracic vertebra between rib-bearing ones bears ribs
    too, so a gap of one or two vertebrae whose ribs were missed is bridged when the series goes on for
    one vertebra more than the gap below it: on thick slices the thin mid-thoracic discs blur, a disc
    missed or found mid-body shifts the segments by half a level, and the joint windows of two of them miss
    the rib heads. The last rib is only a landmark when a rib-free vertebra is seen below it (else it may
    be the lower edge of a chest CT).
    """
    last = max(rib_segs, default=None)
    while last is not None:
        step = next(
            (g + 1 for g in range(RIB_GAP + 1) if all(last - g - k in rib_segs for k in range(1, g + 2))),
            None,
        )
        if step is None:
            break
        last -= step
    return last if last is not None and last >= 2 else None


def same_l3(other: Reading, own: Reading, dz: float) -> Callable[[int], int | None]:
    """Maps a T12 position of `other` to the one of `own` whose L3 lies at the same height (within half a
    level), or None."""
    period = own.discs.period_mm / dz
    lo, hi = -12, len(own.discs.z) + 12
    centres = np.array([own.discs.centre(s, dz) for s in range(lo, hi)])

    def match(t12: int) -> int | None:
        gaps = np.abs(centres - other.discs.centre(t12 - 3, dz))
        k = int(np.argmin(gaps))
        return lo + k + 3 if gaps[k] <= 0.5 * period else None

    return match


def share(other_score: float, own_score: float) -> float:
    """The other reading's weight when the two are pooled: equal when they found as much, small when it
    found one anchor fewer (the score counts 2 per anchor)."""
    return float(1.0 / (1.0 + np.exp(own_score - other_score)))


def disc_shift(discs: spine.Discs, other: Reading | None, first: int, last: int, dz: float) -> float | None:
    """How far (mm) the discs `first`..`last` of one reading lie from the nearest disc the other trace of
    the column found; None without another reading. On a clear column both traces see the same discs, so a
    chain shifted against the other's is one that gained or lost a disc. A disc that falls in a gap of the
    other chain (over `GAP_PERIODS` disc periods: a disc it missed) says nothing of a shift and is skipped."""
    if other is None:
        return None
    ours = discs.z[max(first, 0) : min(last, len(discs.z) - 1) + 1]
    theirs = other.discs.z
    ours = ours[(ours > theirs[0]) & (ours < theirs[-1])]
    if len(ours) == 0:
        return None
    above = np.searchsorted(theirs, ours)
    gap = (theirs[above] - theirs[above - 1]) * dz
    compared = ours[gap <= GAP_PERIODS * discs.period_mm]
    if len(compared) == 0:
        return None
    return float(np.abs(compared[:, None] - theirs[None, :]).min(axis=1).max() * dz)


def last_rib_shift(reading: Reading, other: Reading | None, dz: float) -> float | None:
    """How far apart (mm) the two readings put the middle of the last rib-bearing vertebra; None unless
    both found one. Where the column's discs near the ribs are faint, one trace may place the disc above a
    vertebra a few millimetres into the next, and the joint window then holds the next vertebra's rib."""
    if other is None or reading.last_rib is None or other.last_rib is None:
        return None

    def middle(r: Reading) -> float:
        lo, hi = r.discs.segments(dz)
        return 0.5 * (lo[int(r.last_rib or 0)] + hi[int(r.last_rib or 0)])

    return abs(middle(reading) - middle(other)) * dz
