"""Automatic L3 localization: count vertebrae from the sacrum and from the last rib, check they agree.

The method (`METHOD`): track the vertebral column, read the intervertebral discs off a density profile taken
across the vertebral bodies, then name the vertebrae by counting up from the sacrum (the highest disc with
sacrum-wide bone below it is L5/S1) and down from the last rib-bearing vertebra (T12). When both ends are
visible and the counts disagree, the anatomy is transitional or a rib is missing/extra, and the result is
flagged rather than silently trusted. Every flag carries a reason a reader can check on the QC picture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from sarcoscope.conventions import L3_INFERIOR_ENDPLATE, L3_MID, L3_RANGE
from sarcoscope.errors import LevelError
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import anchors, cues, labelling, spine
from sarcoscope.level.ribs import RibBone, VertebraRibs, joint_ribs, rib_bone
from sarcoscope.level.selection import L3Selection

#: Recorded with every result; bump when the output changes (v2: the CT table is no rib, the shoulder girdle
#: no sacrum; v3: rib evidence per vertebra and side, candidate probabilities; v4: ribs decided at the
#: costovertebral joint, one labelling of the column with the transverse-process lengths; v6: a level up to
#: 1.9 disc periods long is one level when its neighbours agree, and minima count as discs by their walls;
#: v7: a count from the sacrum alone is checked against the ribs it names, an inferred L5/S1 disc weighs
#: less; v8: the rib series is followed over two vertebrae whose ribs were missed; v11: the wide trace is
#: held within 70 mm in front of the spinal canal, the sacrum's width on bone joined behind the body's front;
#: v12: the aortic bifurcation and the iliac crests (`level.cues`), weighed when they lie below the scan).
METHOD = "disc-count-v12"

FLAG_NOT_IN_FOV = "l3_not_in_fov"
FLAG_PARTIAL = "l3_partially_in_fov"
FLAG_COUNTING = "counting_uncertain"
FLAG_LOW_CONFIDENCE = "low_confidence"
FLAG_MISSING_SLICES = "missing_slices"

#: Median HU across vertebral bodies that a traced structure must have to count as a spine.
BODY_HU = (60.0, 450.0)

#: Confidence below which the result is flagged for a human check.
LOW_CONFIDENCE = 0.5

#: With the sacrum alone, the labelling is flagged when its probability falls below this (the
#: transverse-process lengths disagree with the count).
UNCERTAIN_P = 0.8
#: Discs of the two column traces farther apart than this share of the disc period disagree.
DISC_SHIFT = 0.4
#: The two traces' last rib-bearing vertebrae farther apart than this share of the period disagree.
RIB_SHIFT = 0.5
#: A gap in a disc chain over this many disc periods holds a disc the chain missed.
GAP_PERIODS = 1.6

_ORDER = [f"T{i}" for i in range(1, 13)] + ["L1", "L2", "L3", "L4", "L5", "S1"]
#: Localization facts the L3Selection already holds in its own fields (left out of its `details`).
_IN_SELECTION = {"confidence", "flags", "method", "l3_inferior_endplate"}


@dataclass
class VertebraPosition:
    """Axial slice indices of one vertebral body (first <= last in array order)."""

    first: int
    last: int
    center: int
    complete: bool  # False when a neighbouring disc is outside the volume and an end was estimated
    row: int | None = None  # y (array row) of the body centre on the centre slice, for labels on pictures
    col: int | None = None  # x (array column) of the body centre on the centre slice


@dataclass
class L3Candidate:
    """One of the two places L3 may be when the count is uncertain, with its probability."""

    l3_mid: int  # slice through the centre of this candidate's L3 body
    probability: float
    counted_from: str  # which count (or which failure of it) puts L3 here


@dataclass
class L3Localization:
    """Where L3 is, how sure the localizer is, and why (JSON via `as_dict`)."""

    l3_upper_endplate: int | None  # slice index of the superior endplate of the L3 body
    l3_lower_endplate: int | None  # slice index of the inferior endplate
    l3_mid: int | None  # slice through the centre of the L3 body (default analysis slice)
    l3_inferior_endplate: int | None  # same slice as l3_lower_endplate; the Asan/Korean convention
    vertebrae: dict[str, VertebraPosition]  # every vertebra identified, "T11".."S1", inferior to superior
    confidence: float  # 0..1
    flags: list[dict[str, str]] = field(default_factory=list)  # [{"flag": ..., "reason": ...}]
    counted_from: str = ""  # "sacrum+ribs" | "sacrum" | "ribs"
    l3_mid_mm: float | None = None  # superior position (mm) of mid-L3 relative to slice 0
    rib_vertebrae: list[str] = field(default_factory=list)  # the rib series counted from, lowest first
    #: Per vertebra searched (inferior to superior): rib on each side, with reach and drop as measured.
    ribs: list[VertebraRibs] = field(default_factory=list)
    #: The two candidate L3s (more probable first) when counting is uncertain, else empty.
    candidates: list[L3Candidate] = field(default_factory=list)
    #: Probability that the vertebrae are named right (the labelling of the column from the sacrum, the ribs
    #: and the transverse processes), before the disc and field-of-view terms of `confidence`.
    labelling_probability: float = 0.0
    #: The landmarks beside the column (`level.cues`): per landmark whether it was found, its slice, the
    #: vertebra the labelling puts it on (or that it lies below the scan) and the evidence.
    landmarks: list[dict[str, Any]] = field(default_factory=list)
    #: When the landmarks changed which vertebra is L3: what they said.
    landmark_note: str = ""
    method: str = METHOD
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        return self.l3_mid is not None

    def has_flag(self, name: str) -> bool:
        return any(f["flag"] == name for f in self.flags)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uncertainty": self.uncertainty()}

    def uncertainty(self) -> str:
        """One line naming both candidate L3s with their probabilities; empty when the count is sure."""
        if len(self.candidates) < 2:
            return ""
        a, b = self.candidates[:2]
        return (
            f"L3 uncertain: L3 at slice {a.l3_mid} (p={a.probability:.2f}, {a.counted_from}) or at slice "
            f"{b.l3_mid} (p={b.probability:.2f}, {b.counted_from})"
        ) + (f"; {self.landmark_note}" if self.landmark_note else "")

    def describe(self) -> str:
        """A few lines for a terminal or a report: where L3 is, how it was counted, every flag."""
        if self.found:
            lines = [
                f"L3: mid slice {self.l3_mid}, body slices "
                f"{self.l3_lower_endplate}..{self.l3_upper_endplate} "
                f"(inferior endplate {self.l3_inferior_endplate}); "
                f"confidence {self.confidence:.2f}, counted from {self.counted_from}."
            ]
        else:
            lines = ["L3 was not located."]
        if self.vertebrae:
            lines.append(
                "Vertebrae (centre slice): "
                + ", ".join(f"{k} {v.center}" for k, v in reversed(list(self.vertebrae.items())))
            )
        if self.candidates:
            lines.append(self.uncertainty() + ".")
        lines += [f"[{f['flag']}] {f['reason']}" for f in self.flags]
        return "\n".join(lines)


def _flag(flags: list[dict[str, str]], name: str, reason: str) -> None:
    """Raise `name` with `reason`; a flag raised twice keeps one entry with both reasons."""
    for f in flags:
        if f["flag"] == name:
            f["reason"] += " " + reason
            return
    flags.append({"flag": name, "reason": reason})


_TRACES = ((8.0, False), (16.0, True))
#: Consecutive rib-bearing vertebrae that only the thorax has: the iliac wings beside S1-S3 can read as three
#: (with 3, true sacra of normal phantoms were rejected as the shoulder girdle).
_THORAX_SEGMENTS = 4
#: Vertebrae in a row whose ribs may be missed inside the rib series (see _last_rib).
_RIB_GAP = 2
#: Vertebrae right above the sacrum that bear no ribs, whatever the anatomy (L3-L5; L4-L6 with six lumbar-type
#: vertebrae, L2-L4 with a sacralised L5). The iliac crest beside L5 read as a rib on the real volume, and
#: beside L5 on one of 72 phantom readings, beside L4 on none.
_LUMBAR_ABOVE = 3


@dataclass
class _Reading:
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


def _read(
    grid: spine.WorkGrid,
    trace: spine.SpineTrace,
    rib_trace: spine.SpineTrace,
    bone: RibBone,
    pieces: anchors.BoneSlices,
) -> _Reading | None:
    """Discs and sacrum along one trace, ribs beside `rib_trace` (the posterior-weighted one, which an
    enhanced aorta cannot pull off the column; `bone` = rib_bone(grid, rib_trace)); None when the trace
    shows no vertebral column. `bone` and `pieces` (the bone pieces per slice) serve both readings."""
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

    seg_lo, seg_hi = discs.segments(dz)

    def rib_vertebrae(first_segment: int) -> list[VertebraRibs]:
        """Rib evidence at the joints of every vertebra from `first_segment` up."""
        return joint_ribs(grid, rib_trace, seg_lo, seg_hi, first_segment, bone)

    sacrum = anchors.find_sacrum_disc(pieces, trace, discs.z, period)
    searched: list[VertebraRibs] = []  # rib evidence from `searched[0].segment` up, when it was needed
    if sacrum is not None:
        # The shoulder girdle, and T12 with its ribs joined to the body, are wide bone below a disc with bone
        # beside it too; but ribs below it, vertebra after vertebra, or on the three vertebrae above it
        # (lumbar vertebrae bear none; the iliac crest beside L5 can read as a rib), show the thorax. (Ribs
        # below are only checked for a "sacrum" with several discs below it.)
        searched = rib_vertebrae(0 if sacrum >= _THORAX_SEGMENTS else sacrum + 1)
        bearing = {r.segment for r in searched if r.bears_ribs}
        below = {seg for seg in bearing if seg <= sacrum}
        if any(all(seg + k in below for k in range(_THORAX_SEGMENTS)) for seg in below) or all(
            sacrum + k in bearing for k in range(1, _LUMBAR_ABOVE + 1)
        ):
            sacrum = None
    # Ribs sit well above the pelvis (a 13th pair on L1 at the lowest): start the search at L3 when the sacrum
    # is known, clear of the iliac crests beside L4 and L5.
    if sacrum is not None:
        ribs = [r for r in searched if r.segment >= sacrum + 3]
    else:
        ribs = searched if searched and searched[0].segment == 0 else rib_vertebrae(0)
    rib_segs = [r.segment for r in ribs if r.bears_ribs]
    last = _last_rib(rib_segs)
    # Ribs come as a series from T1 down, and only a whole thorax (neck in view) has rib-free vertebrae
    # above its ribs: a short "rib" series with two whole rib-free vertebrae above it is bone beside the
    # pelvis or metal's streaks.
    if last is not None and max(rib_segs) - last < 6 and len(discs.z) - 1 - max(rib_segs) >= 2:
        last = None
    series = [s for s in rib_segs if last is not None and s >= last]
    return _Reading(trace, profile, discs, sacrum, series, last, ribs)


def _counted_top(reading: _Reading) -> int:
    """The highest working slice a reading's count uses: T11's upper disc when it found the last rib (the
    count runs up from the sacrum, or down from the last rib, to L3 below it), else its highest disc."""
    z = reading.discs.z
    top = len(z) - 1 if reading.last_rib is None else min(reading.last_rib + 1, len(z) - 1)
    return int(np.ceil(z[top]))


def _hardware_on(
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


def _last_rib(rib_segs: list[int]) -> int | None:
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
            (g + 1 for g in range(_RIB_GAP + 1) if all(last - g - k in rib_segs for k in range(1, g + 2))),
            None,
        )
        if step is None:
            break
        last -= step
    return last if last is not None and last >= 2 else None


def locate_l3(volume: CTVolume) -> L3Localization:
    """Find L3 on an axial CT that covers the lumbar spine.

    Raises LevelError (with the reason) when no vertebra can be identified at all: single slice, non-axial
    slices, no bone, no spine, or neither the sacrum nor the lowest ribs in view.
    """
    t0 = time.perf_counter()
    grid = spine.make_grid(volume)
    dz = grid.spacing[0]
    # Two ways of following the column (spine.trace_spine): close to the bodies, or wide and weighted
    # backwards so that a contrast-filled aorta cannot capture it. Where the close trace runs well in front
    # of the wide one along the stretch of column the count uses (up to T11, as the wide trace reads it),
    # it is on the aorta (the column is the most posterior dense structure at the midline); a close trace
    # that leaves the column higher in the chest (for a contrast-filled heart) still counts the lumbar
    # spine. Otherwise keep the reading that finds more anchors and clearer discs.
    band = spine.column_band(grid)
    close, wide = (spine.trace_spine(grid, band, s, w) for s, w in _TRACES)
    streaked = anchors.metal_slices(grid, close)
    pieces = anchors.BoneSlices(grid, anchors.sacrum_bone_hu(grid, close), streaked)
    bone = rib_bone(grid, wide)
    readings = [r for r in (_read(grid, c, wide, bone, pieces) for c in (close, wide)) if r is not None]
    if len(readings) == 2:
        lo, hi = int(readings[1].discs.z[0]), int(np.ceil(readings[1].discs.z[-1]))
        hi = min(hi, _counted_top(readings[1]))
        ahead = (wide.body_y - close.body_y)[lo : hi + 1] * grid.spacing[1]
        if np.mean(ahead > 12.0) > 0.1:
            readings = readings[1:]
    if not readings:
        raise LevelError(
            "No vertebral column with intervertebral discs was found: the volume does not seem to contain "
            "a lumbar spine (head, neck or chest-only CT, or no spine in view), so L3 cannot be located. "
            "Use --slice/--range."
        )
    reading = max(readings, key=lambda r: r.score)
    other = next((r for r in readings if r is not reading), None)
    trace, profile, discs = reading.trace, reading.profile, reading.discs
    sacrum, last_rib = reading.sacrum, reading.last_rib
    rib_segs = reading.rib_segs
    period = discs.period_mm
    # Segments: one below the lowest disc, one between each pair, one above the highest disc.
    n_seg = len(discs.z) + 1
    seg_lo, seg_hi = discs.segments(dz)

    flags: list[dict[str, str]] = []
    if sacrum is None and last_rib is None:
        raise LevelError(
            "The vertebrae cannot be counted: neither the sacrum nor the last rib-bearing vertebra with a "
            "rib-free vertebra below it is in the field of view, so L3 cannot be identified. Use "
            "--slice/--range."
        )
    # landmarks beside the column that need neither the sacrum nor the ribs, found once on the wide trace
    found = [cues.aortic_bifurcation(grid, wide), cues.iliac_crest(grid, wide)]
    # the other trace's count weighs in (its disagreement is then in the probability, not a penalty)
    pooled = other is not None and (other.sacrum is not None or other.last_rib is not None)

    def column_labelling(marks: list[cues.Cue]) -> labelling.Labelling:
        lab = _labelling(reading, marks, dz)
        if pooled and other is not None:
            theirs = _labelling(other, marks, dz)
            lab = labelling.pooled(
                lab, theirs, _same_l3(other, reading, dz), _share(other.score, reading.score)
            )
        return lab

    lab = column_labelling(found)
    bare_count = column_labelling([])
    t12 = lab.best
    counted_from = (
        "sacrum+ribs"
        if sacrum is not None and last_rib is not None
        else "sacrum"
        if sacrum is not None
        else "ribs"
    )
    if sacrum is not None and last_rib is not None:
        lumbar_between = last_rib - sacrum - 1
        if lumbar_between != 5:
            _flag(
                flags,
                FLAG_COUNTING,
                f"Counting from the sacrum and from the last rib disagree: {lumbar_between} rib-free "
                "vertebrae above the sacrum (5 expected). Possible transitional anatomy (six lumbar-type "
                "vertebrae, lumbarised S1, sacralised L5) or 11/13 rib pairs. Both counts were weighed with "
                "the transverse-process lengths.",
            )
    elif sacrum is None:
        _flag(
            flags,
            FLAG_COUNTING,
            "The sacrum was not identified (outside the field of view or not recognisable): vertebrae were "
            "counted from the last rib-bearing vertebra, checked against the transverse-process lengths; "
            "11 or 13 rib pairs cannot be told from a missed or extra rib.",
        )
    elif lab.probability < UNCERTAIN_P:
        _flag(
            flags,
            FLAG_COUNTING,
            "The transverse-process lengths do not fit the count from the sacrum (L3's are usually the "
            "longest).",
        )
    names = [labelling.name_of(s, t12) or "?" for s in range(n_seg)]

    def position(seg: int) -> VertebraPosition:
        lo, hi = seg_lo[seg], seg_hi[seg]
        complete = 0 < seg < n_seg - 1
        if complete:
            lower, upper = spine.endplates(profile, lo, hi, dz)
        else:
            lower, upper = lo + 0.15 * (hi - lo), hi - 0.15 * (hi - lo)
        idx = [grid.to_index(grid.z_mm[0] + z * dz) for z in (lower, upper, (lower + upper) / 2)]
        k = int(np.clip(round((lower + upper) / 2), 0, len(trace.body_y) - 1))
        row, col = grid.to_pixel(trace.body_y[k], trace.cx[k])
        return VertebraPosition(
            first=min(idx[0], idx[1]),
            last=max(idx[0], idx[1]),
            center=idx[2],
            complete=complete,
            row=row,
            col=col,
        )

    top_mm = (grid.hu.shape[0] - 1) * dz
    vertebrae: dict[str, VertebraPosition] = {}
    for s in range(n_seg):
        centre_mm = 0.5 * (seg_lo[s] + seg_hi[s]) * dz
        # Sacral segments below S1 are fused (their "discs" are remnants): name nothing below S1.
        if names[s].startswith("?") or (names[s] not in _ORDER) or not (0 <= centre_mm <= top_mm):
            continue
        vertebrae[names[s]] = position(s)

    loc = L3Localization(
        l3_upper_endplate=None,
        l3_lower_endplate=None,
        l3_mid=None,
        l3_inferior_endplate=None,
        vertebrae=vertebrae,
        confidence=0.0,
        flags=flags,
        counted_from=counted_from,
        labelling_probability=round(lab.probability, 3),
        rib_vertebrae=[names[s] for s in rib_segs if 0 <= s < n_seg],
        ribs=[
            replace(r, vertebra=names[r.segment])
            for r in reading.ribs
            if 0 <= r.segment < n_seg and names[r.segment] in _ORDER
        ],
    )
    loc.landmarks = [_landmark_report(m, grid, discs, t12) for m in found]
    weighed = [d["reading"] for d, m in zip(loc.landmarks, found, strict=True) if _weighed(m)]
    if weighed:
        loc.landmark_note = f"weighed in: {', '.join(weighed)}"
    if bare_count.best != t12:
        loc.landmark_note = (
            f"the landmarks beside the column moved L3 {'up' if t12 > bare_count.best else 'down'} by "
            f"{abs(t12 - bare_count.best)} vertebra(e) from the count alone ({', '.join(weighed)})"
        )
        _flag(flags, FLAG_COUNTING, f"The landmarks decided the count: {loc.landmark_note}.")
    l3 = [s for s in range(n_seg) if names[s] == "L3" and names[s] in vertebrae]
    if not l3:
        seen = [n for n in names if n in vertebrae]
        if _below_l3(seen):
            where = "above"
        elif seen and all(_ORDER.index(n) < _ORDER.index("L3") for n in seen if n in _ORDER):
            where = "below"
        else:
            where = "outside"
        _flag(
            flags,
            FLAG_NOT_IN_FOV,
            f"L3 lies {where} the scanned range (vertebrae identified: {', '.join(seen) or 'none'}).",
        )
        loc.seconds = time.perf_counter() - t0
        return loc

    s3 = l3[0]
    lower, upper = spine.endplates(profile, seg_lo[s3], seg_hi[s3], dz)
    mid_mm = grid.z_mm[0] + 0.5 * (lower + upper) * dz
    to_idx = grid.to_index
    loc.l3_lower_endplate = to_idx(grid.z_mm[0] + lower * dz)
    loc.l3_upper_endplate = to_idx(grid.z_mm[0] + upper * dz)
    loc.l3_inferior_endplate = loc.l3_lower_endplate
    loc.l3_mid = to_idx(mid_mm)
    loc.l3_mid_mm = round(float(mid_mm - grid.slice_mm[0]), 2)

    # the disc the count starts from: L5/S1, else the last rib-bearing vertebra's lower one (one is known)
    anchor_disc = sacrum if sacrum is not None else int(last_rib or 0) - 1
    shift = _disc_shift(discs, other, min(anchor_disc, s3 - 1), max(anchor_disc, s3), dz)
    traces_differ = shift is not None and shift > DISC_SHIFT * period
    if traces_differ:
        _flag(
            flags,
            FLAG_COUNTING,
            f"The two traces of the column disagree on the discs between the {counted_from.split('+')[0]} "
            f"and L3 (up to {shift:.0f} mm apart): a disc may have been missed or a false one counted.",
        )
    # the last rib matters where the count leans on it: no sacrum, or a sacrum whose count it contradicts
    ribs_decide = sacrum is None or (last_rib is not None and last_rib - sacrum - 1 != 5)
    rib_shift = _last_rib_shift(reading, other, dz) if ribs_decide else None
    if rib_shift is not None and rib_shift > RIB_SHIFT * period:
        traces_differ = True
        _flag(
            flags,
            FLAG_COUNTING,
            f"The two traces of the column put the last rib-bearing vertebra {rib_shift:.0f} mm apart: the "
            "discs bounding it differ, so its ribs may be a neighbour's.",
        )
    count_doubted = traces_differ and not pooled
    bare = _bare_thoracic(reading.ribs, names)
    if bare:
        count_doubted = True
        _flag(
            flags,
            FLAG_COUNTING,
            f"The vertebrae counted as {' and '.join(bare)} bear no ribs while vertebrae above them do: a "
            "false or missed disc may have shifted the count.",
        )
    # A count from the sacrum alone (neither trace found a series of ribs to count from) is checked against
    # the rib evidence it names: ribs ending on the vertebra it calls L1 (a 13th pair, ~1-8 %, or T12 counted
    # as L1), or none on T11 and T12 wholly in view (T11 bears ribs with 11, 12 or 13 pairs), say the sacrum
    # may have been found a disc high or low, which would shift every level. "Ribs" on L2 as well would put
    # the count two off, which the sacrum is not: they are bone passing by (steep lower ribs, a kidney).
    rib_check = ""
    if sacrum is not None and last_rib is None and (other is None or other.last_rib is None):
        on = {n: n in names and _bears(reading.ribs, names.index(n)) for n in ("L1", "L2")}
        if on["L1"] and not on["L2"]:
            rib_check = (
                "Ribs were found on the vertebra counted from the sacrum as L1 (lumbar vertebrae bear none "
                "but a rare 13th pair): the sacrum may have been found a disc high, which would shift every "
                "level."
            )
        elif _ribless_thorax(reading.ribs, names, n_seg):
            rib_check = (
                "The vertebrae counted from the sacrum as T11 and T12 are in view but no rib was found on "
                "either (T11 bears ribs with 11, 12 or 13 pairs): the last rib cannot confirm the count, and "
                "a disc missed or taken for L5/S1 would shift every level."
            )
    if rib_check:
        count_doubted = True
        _flag(flags, FLAG_COUNTING, rib_check)
    metal = _hardware_on(grid, trace, discs, anchor_disc, s3)
    # a count from the sacrum through hardware that the count from the last rib, clear of it, agrees with
    # has neither lost nor gained a disc there
    agree = last_rib is not None and sacrum is not None and last_rib - sacrum - 1 == 5
    if metal and agree and not _hardware_on(grid, trace, discs, int(last_rib or 0) - 1, s3):
        metal = []
    if metal:
        count_doubted = True
        _flag(
            flags,
            FLAG_COUNTING,
            f"Spinal hardware lies beside the column between the {counted_from.split('+')[0]} and L3 (slices "
            f"{metal[0]}-{metal[-1]}): the streaks of metal can hide a disc or add bone, so the count may be "
            "off by a vertebra.",
        )

    if loc.has_flag(FLAG_COUNTING):
        loc.candidates = _candidates(lab, n_seg, sacrum, last_rib, position)
        if loc.candidates and loc.candidates[0].l3_mid != loc.l3_mid:
            loc.candidates[0] = replace(loc.candidates[0], l3_mid=loc.l3_mid)
        for f in flags:
            if f["flag"] == FLAG_COUNTING and loc.candidates:
                f["reason"] += f" {loc.uncertainty()}."

    # Confidence: which anchors agreed, how clear L3's two discs are, how regular its height is.
    proms = discs.prominence[[i for i in (s3 - 1, s3) if 0 <= i < len(discs.z)]]
    disc_quality = float(np.clip(proms / 60.0, 0, 1).mean())
    height = (seg_hi[s3] - seg_lo[s3]) * dz
    regularity = float(np.clip(1 - 2 * abs(height / period - 1), 0, 1))
    confidence = lab.probability * (0.5 + 0.3 * disc_quality + 0.2 * regularity)
    if count_doubted:
        confidence *= 0.7
    if not 0 < s3 < n_seg - 1:
        confidence *= 0.5
        _flag(
            flags,
            FLAG_PARTIAL,
            "L3 is cut by the edge of the scanned range: its outer endplate was estimated from the height "
            "of the other vertebrae.",
        )
    if proms.min() == 0:
        _flag(flags, FLAG_LOW_CONFIDENCE, "One of the discs bounding L3 was not seen and was inferred.")
    if grid.max_gap_mm > 2.5 * float(np.median(np.diff(np.sort(grid.slice_mm)))):
        gap_at = grid.slice_mm[np.argmax(np.abs(np.diff(np.sort(grid.slice_mm))))]
        near = seg_lo[s3] * dz - period <= gap_at - grid.z_mm[0] <= seg_hi[s3] * dz + period
        _flag(
            flags,
            FLAG_MISSING_SLICES,
            f"The slices have a gap of {grid.max_gap_mm:.1f} mm"
            + (" near L3; the discs there were interpolated." if near else " away from L3."),
        )
        if near:
            confidence *= 0.7
    loc.confidence = round(float(confidence), 3)
    if loc.confidence < LOW_CONFIDENCE and not loc.has_flag(FLAG_LOW_CONFIDENCE):
        _flag(
            flags,
            FLAG_LOW_CONFIDENCE,
            f"Confidence {loc.confidence:.2f} is below {LOW_CONFIDENCE}: check the vertebra labels on the "
            "QC picture before using this slice.",
        )
    loc.seconds = time.perf_counter() - t0
    return loc


def _bare_thoracic(ribs: list[VertebraRibs], names: list[str]) -> list[str]:
    """T11 and T12 when the labelling names both rib-free while a vertebra above them bears ribs (none
    otherwise). One rib-free T12 is 11 rib pairs or a missed short pair; two in a row below ribs are a count
    the ribs contradict."""
    if "T12" not in names:
        return []
    t12 = names.index("T12")  # T11 is the segment above it
    bears = {r.segment: r.bears_ribs for r in ribs}
    if bears.get(t12, True) or bears.get(t12 + 1, True):  # not searched, or ribs found
        return []
    return ["T11", "T12"] if any(b for s, b in bears.items() if s > t12 + 1) else []


def _bears(ribs: list[VertebraRibs], segment: int) -> bool:
    """Whether `segment` was searched and counted as rib-bearing."""
    return any(r.segment == segment and r.bears_ribs for r in ribs)


def _ribless_thorax(ribs: list[VertebraRibs], names: list[str], n_seg: int) -> bool:
    """Whether the labelling names T11 and T12, both wholly in view (between two discs), searched and
    neither bearing a rib on either side."""
    if "T12" not in names:
        return False
    t12 = names.index("T12")  # T11 is the segment above it
    bears = {r.segment: r.any for r in ribs}
    in_view = t12 > 0 and t12 + 1 < n_seg - 1
    return in_view and not any(bears.get(s, True) for s in (t12, t12 + 1))  # True: not searched


def _labelling(reading: _Reading, marks: list[cues.Cue], dz: float) -> labelling.Labelling:
    """The posterior over T12 from one reading's anchors, transverse-process lengths (the reach beside
    the body of its rib-free vertebrae) and the landmarks `marks` placed on its segments."""
    tp_mm = {r.segment: max(r.right_reach_mm, r.left_reach_mm) for r in reading.ribs if not r.any}
    seen = reading.sacrum is None or bool(reading.discs.prominence[reading.sacrum] > 0)
    return labelling.label_column(
        len(reading.discs.z) + 1,
        reading.sacrum,
        reading.last_rib,
        tp_mm,
        seen,
        tuple(_landmarks(reading, marks, dz)),
    )


def _landmark_report(mark: cues.Cue, grid: spine.WorkGrid, discs: spine.Discs, t12: int) -> dict[str, Any]:
    """One landmark for `l3.details`: found or not, its slice, the vertebra the labelling puts it on."""
    dz = grid.spacing[0]
    out: dict[str, Any] = {
        "name": mark.name,
        "found": mark.found,
        "below_view": mark.below_view,
        "weighed": _weighed(mark),
    }
    label = mark.name.replace("_", " ")
    if mark.found and mark.z is not None:
        on = labelling.name_of(int(np.floor(_segment_at(discs, mark.z, dz))), t12) or "?"
        out.update(slice=grid.to_index(grid.z_mm[0] + mark.z * dz), vertebra=on)
        # found in view, a landmark is too often misplaced to weigh in (`_landmarks`): say so beside it
        out["reading"] = f"{label} at slice {out['slice']}, on {on} (not weighed: unvalidated in view)"
    elif mark.below_view:
        out["reading"] = f"{label} below the scan"
    else:
        out["reading"] = f"{label} not found"
    out["evidence"] = mark.evidence
    return out


def _segment_at(discs: spine.Discs, z: float, dz: float) -> float:
    """The continuous segment coordinate of working slice z (k + the fraction of the way up segment k)."""
    lo, hi = discs.segments(dz)
    k = int(np.searchsorted(np.asarray(discs.z), z, side="right"))
    return k + (z - lo[k]) / max(hi[k] - lo[k], 1e-6)


def _landmarks(reading: _Reading, marks: list[cues.Cue], dz: float) -> list[labelling.Landmark]:
    """The landmarks that weigh in, on this reading's segments: those that lie below the lowest slice (the
    aorta followed undivided to it, no iliac wing on it; right on every one of 94 phantoms where it was
    said). A landmark found in view is reported, not weighed: the bifurcation found lay within 15 mm of the
    phantom's in 32 of 70, and the crest (30 of 32) only gained where the phantoms draw it as the published
    prior expects it (docs/validation/l3-notes.md, 2026-12-06, landmarks)."""
    lowest = _segment_at(reading.discs, 0.0, dz)
    return [labelling.Landmark(m.name, lowest, below=True) for m in marks if _weighed(m)]


def _weighed(mark: cues.Cue) -> bool:
    """Whether a landmark weighs in the labelling (see `_landmarks`)."""
    return mark.below_view


def _same_l3(other: _Reading, own: _Reading, dz: float) -> Callable[[int], int | None]:
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


def _share(other_score: float, own_score: float) -> float:
    """The other reading's weight when the two are pooled: equal when they found as much, small when it
    found one anchor fewer (the score counts 2 per anchor)."""
    return float(1.0 / (1.0 + np.exp(own_score - other_score)))


def _disc_shift(discs: spine.Discs, other: _Reading | None, first: int, last: int, dz: float) -> float | None:
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


def _last_rib_shift(reading: _Reading, other: _Reading | None, dz: float) -> float | None:
    """How far apart (mm) the two readings put the middle of the last rib-bearing vertebra; None unless
    both found one. Where the column's discs near the ribs are faint, one trace may place the disc above a
    vertebra a few millimetres into the next, and the joint window then holds the next vertebra's rib."""
    if other is None or reading.last_rib is None or other.last_rib is None:
        return None

    def middle(r: _Reading) -> float:
        lo, hi = r.discs.segments(dz)
        return 0.5 * (lo[int(r.last_rib or 0)] + hi[int(r.last_rib or 0)])

    return abs(middle(reading) - middle(other)) * dz


def _candidates(
    lab: labelling.Labelling,
    n_seg: int,
    sacrum: int | None,
    last_rib: int | None,
    position: Callable[[int], VertebraPosition],
) -> list[L3Candidate]:
    """The two most probable L3s in view with their probabilities and the evidence behind each."""
    seen = [(s, p) for s, p in lab.l3_candidates() if 0 <= s < n_seg][:2]
    if len(seen) < 2:
        return []

    reasons: dict[int, str] = {}  # T12's segment -> the evidence that puts it there (strongest last)
    if last_rib is not None:
        # segments are numbered upwards: T12 below the last rib found makes that rib T11's, above it L1's
        reasons[last_rib - 1] = "if the lowest rib pair was missed or there are 11"
        reasons[last_rib + 1] = "if the last rib found is a 13th or no rib"
    if sacrum is not None:
        # one lumbar vertebra more or fewer above the sacrum found: the anatomy, or the sacrum's disc missed
        reasons[sacrum + 7] = "with six lumbar-type vertebrae or the sacrum found a disc low"
        reasons[sacrum + 5] = "with a sacralised L5 or the sacrum found a disc high"
        reasons[sacrum + 6] = "counted from the sacrum"
    if last_rib is not None:
        both = sacrum is not None and last_rib == sacrum + 6
        reasons[last_rib] = (
            "counted from the sacrum and the last rib" if both else "counted from the last rib"
        )

    def why(l3: int) -> str:
        return reasons.get(l3 + 3, "from the transverse-process lengths")

    return [L3Candidate(position(s).center, round(p, 2), why(s)) for s, p in seen]


def _below_l3(seen: list[str]) -> bool:
    """True when every vertebra seen is below L3 (so L3 is above the field of view)."""
    return bool(seen) and all(_ORDER.index(n) > _ORDER.index("L3") for n in seen if n in _ORDER)


def selection_from_localization(loc: L3Localization, convention: str = L3_MID) -> L3Selection:
    """The slices to analyse under `convention`: mid-L3, the inferior endplate, or the body range."""
    if loc.l3_mid is None or loc.l3_lower_endplate is None or loc.l3_upper_endplate is None:
        reasons = "; ".join(f["reason"] for f in loc.flags) or "L3 was not found."
        raise LevelError(f"L3 cannot be located automatically: {reasons} Use --slice/--range.")
    if convention == L3_MID:
        indices = [loc.l3_mid]
    elif convention == L3_INFERIOR_ENDPLATE:
        indices = [loc.l3_lower_endplate]
    elif convention == L3_RANGE:
        lo, hi = sorted((loc.l3_lower_endplate, loc.l3_upper_endplate))
        indices = list(range(lo, hi + 1))
    else:
        raise LevelError(
            f"Unknown L3 convention '{convention}' (use {L3_MID}, {L3_INFERIOR_ENDPLATE} or {L3_RANGE})."
        )
    # one home per fact: confidence, flags and the method are the selection's own fields, and the inferior
    # endplate is the lower endplate's slice under the name of another convention
    details = {k: v for k, v in loc.as_dict().items() if k not in _IN_SELECTION}
    return L3Selection(
        indices=indices,
        mode="auto",
        convention=convention,
        method=f"automatic ({loc.method}, counted from {loc.counted_from})",
        confidence=loc.confidence,
        flags=[dict(f) for f in loc.flags],
        details=details,
    )
