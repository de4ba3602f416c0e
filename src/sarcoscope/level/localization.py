"""Automatic L3 localization: count vertebrae from the sacrum and from the last rib, check they agree.

The method (`METHOD`): track the vertebral column, read the intervertebral discs off a density profile taken
across the vertebral bodies, then name the vertebrae by counting up from the sacrum (the highest disc with
sacrum-wide bone below it is L5/S1) and down from the last rib-bearing vertebra (T12). When both ends are
visible and the counts disagree, the anatomy is transitional or a rib is missing/extra, and the result is
flagged rather than silently trusted. Every flag carries a reason a reader can check on the QC picture.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from sarcoscope.errors import LevelError
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import anchors, cues, labelling, naming, spine, turns
from sarcoscope.level.reading import (
    TRACES,
    counted_top,
    disc_shift,
    hardware_on,
    last_rib_shift,
    read,
    same_l3,
    share,
)
from sarcoscope.level.result import (
    FLAG_COUNTING,
    FLAG_LOW_CONFIDENCE,
    FLAG_MISSING_SLICES,
    FLAG_NOT_IN_FOV,
    FLAG_PARTIAL,
    L3Localization,
    VertebraPosition,
    add_flag,
)
from sarcoscope.level.ribs import rib_bone

#: Confidence below which the result is flagged for a human check.
LOW_CONFIDENCE = 0.5

#: With the sacrum alone, the labelling is flagged when its probability falls below this (the
#: transverse-process lengths disagree with the count).
UNCERTAIN_P = 0.8
#: Discs of the two column traces farther apart than this share of the disc period disagree.
DISC_SHIFT = 0.4
#: The two traces' last rib-bearing vertebrae farther apart than this share of the period disagree.
RIB_SHIFT = 0.5
#: The localizer's noise index (`spine.noise_hu`, HU at 3 mm pixels; not the slice noise of
#: segmentation.quality.NOISY_SLICE_HU) above which the disc profile is not trusted: the real
#: volume reads 19 (with 20 and 40 HU of noise added 22 and 30, where the two traces' cross-check still
#: flags the miscounts), phantoms 6-16; with 80 HU added it reads 44 and the discs were read half a level
#: off on both traces alike, unflagged.
NOISY_SPINE_INDEX_HU = 35.0


def locate_l3(volume: CTVolume) -> L3Localization:
    """Find L3 on an axial CT that covers the lumbar spine.

    A volume turned in-plane in its file (wrong orientation metadata: `turns`) is read the right way up; its
    in-plane positions are given in the stored layout and the result is flagged (turns.FLAG_TURNED).
    Raises LevelError (with the reason) when no vertebra can be identified at all: single slice, non-axial
    slices, no bone, no spine, or neither the sacrum nor the lowest ribs in view.
    """
    t0 = time.perf_counter()
    grid = spine.make_grid(volume)
    turning = turns.quarter_turns(grid)
    if not turning.turns:
        return _located(grid, t0)
    try:
        loc = _located(spine.make_grid(turns.turned(volume, turning.turns)), t0)
    except LevelError as exc:
        raise type(exc)(f"{exc} {turns.turned_reason(turning)}") from exc
    return turns.back(loc, turning, (volume.hu.shape[1], volume.hu.shape[2]))


def _located(grid: spine.WorkGrid, t0: float) -> L3Localization:
    """`locate_l3` on the volume's working grid, the right way up (`t0`: when the localization began)."""
    dz = grid.spacing[0]
    # Two ways of following the column (spine.trace_spine): close to the bodies, or wide and weighted
    # backwards so that a contrast-filled aorta cannot capture it. Where the close trace runs well in front
    # of the wide one along the stretch of column the count uses (up to T11, as the wide trace reads it),
    # it is on the aorta (the column is the most posterior dense structure at the midline); a close trace
    # that leaves the column higher in the chest (for a contrast-filled heart) still counts the lumbar
    # spine. Otherwise keep the reading that finds more anchors and clearer discs.
    band = spine.column_band(grid)
    close, wide = (spine.trace_spine(grid, band, s, w) for s, w in TRACES)
    streaked = anchors.metal_slices(grid, close)
    pieces = anchors.BoneSlices(grid, anchors.sacrum_bone_hu(grid, close), streaked)
    bone = rib_bone(grid, wide)
    readings = [r for r in (read(grid, c, wide, bone, pieces) for c in (close, wide)) if r is not None]
    missed = bool(readings) and all(r.sacrum is None for r in readings)
    if missed:
        # neither chain has L5/S1 with the sacrum below it: one may have missed that disc (its trace off the
        # column below L5), which the sacrum's top places; a disc found on a chain is preferred to it
        again = (read(grid, c, wide, bone, pieces, missed_sacrum=True) for c in (close, wide))
        readings = [r for r in again if r is not None]
    if len(readings) == 2:
        lo, hi = int(readings[1].discs.z[0]), int(np.ceil(readings[1].discs.z[-1]))
        hi = min(hi, counted_top(readings[1]))
        ahead = (wide.body_y - close.body_y)[lo : hi + 1] * grid.spacing[1]
        behind = (close.body_y - wide.body_y) * grid.spacing[1] > 12.0
        if np.mean(behind[lo : hi + 1]) > 0.1:
            # the close trace's "bodies" well behind the wide one's: it may have followed the arch behind the
            # canal; where so, the body lies in front of the canal
            close = spine.bodies_across_canal(grid, close, behind)
            again = read(grid, close, wide, bone, pieces, missed_sacrum=missed)
            readings = [r for r in (again, readings[1]) if r is not None]
            ahead = (wide.body_y - close.body_y)[lo : hi + 1] * grid.spacing[1]
        if len(readings) == 2 and np.mean(ahead > 12.0) > 0.1:
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
        lab = naming.reading_labelling(reading, marks, dz)
        if pooled and other is not None:
            theirs = naming.reading_labelling(other, marks, dz)
            lab = labelling.pooled(
                lab, theirs, same_l3(other, reading, dz), share(other.score, reading.score)
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
            add_flag(
                flags,
                FLAG_COUNTING,
                f"Counting from the sacrum and from the last rib disagree: {lumbar_between} rib-free "
                "vertebrae above the sacrum (5 expected). Possible transitional anatomy (six lumbar-type "
                "vertebrae, lumbarised S1, sacralised L5) or 11/13 rib pairs. Both counts were weighed with "
                "the transverse-process lengths.",
            )
    elif sacrum is None:
        add_flag(
            flags,
            FLAG_COUNTING,
            "The sacrum was not identified (outside the field of view or not recognisable): vertebrae were "
            "counted from the last rib-bearing vertebra, checked against the transverse-process lengths; "
            "11 or 13 rib pairs cannot be told from a missed or extra rib.",
        )
    elif lab.probability < UNCERTAIN_P:
        add_flag(
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
        if names[s].startswith("?") or (names[s] not in naming.ORDER) or not (0 <= centre_mm <= top_mm):
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
            if 0 <= r.segment < n_seg and names[r.segment] in naming.ORDER
        ],
    )
    loc.landmarks = [naming.landmark_report(m, grid, discs, t12) for m in found]
    weighed = [d["reading"] for d, m in zip(loc.landmarks, found, strict=True) if naming.weighed(m)]
    if weighed:
        loc.landmark_note = f"weighed in: {', '.join(weighed)}"
    if bare_count.best != t12:
        loc.landmark_note = (
            f"the landmarks beside the column moved L3 {'up' if t12 > bare_count.best else 'down'} by "
            f"{abs(t12 - bare_count.best)} vertebra(e) from the count alone ({', '.join(weighed)})"
        )
        add_flag(flags, FLAG_COUNTING, f"The landmarks decided the count: {loc.landmark_note}.")
    l3 = [s for s in range(n_seg) if names[s] == "L3" and names[s] in vertebrae]
    if not l3:
        seen = [n for n in names if n in vertebrae]
        if naming.below_l3(seen):
            where = "above"
        elif seen and all(
            naming.ORDER.index(n) < naming.ORDER.index("L3") for n in seen if n in naming.ORDER
        ):
            where = "below"
        else:
            where = "outside"
        add_flag(
            flags,
            FLAG_NOT_IN_FOV,
            f"L3 lies {where} the scanned range (vertebrae identified: {', '.join(seen) or 'none'}).",
        )

        def in_view(seg: int) -> bool:
            return 0 <= seg < n_seg and 0 <= 0.5 * (seg_lo[seg] + seg_hi[seg]) * dz <= top_mm

        # an uncertain count names the L3 in view that a count off by one would give, with its probability
        alt = naming.in_view_alternative(lab, in_view) if loc.has_flag(FLAG_COUNTING) else None
        if alt is not None:
            add_flag(
                flags,
                FLAG_COUNTING,
                f"L3 uncertain: {where} the scanned range (p={lab.probability:.2f}) or at slice "
                f"{position(alt[0]).center} (p={alt[1]:.2f}, {naming.why(alt[0], sacrum, last_rib)}).",
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
    shift = disc_shift(discs, other, min(anchor_disc, s3 - 1), max(anchor_disc, s3), dz)
    traces_differ = shift is not None and shift > DISC_SHIFT * period
    if traces_differ:
        add_flag(
            flags,
            FLAG_COUNTING,
            f"The two traces of the column disagree on the discs between the {counted_from.split('+')[0]} "
            f"and L3 (up to {shift:.0f} mm apart): a disc may have been missed or a false one counted.",
        )
    # the last rib matters where the count leans on it: no sacrum, or a sacrum whose count it contradicts
    ribs_decide = sacrum is None or (last_rib is not None and last_rib - sacrum - 1 != 5)
    rib_shift = last_rib_shift(reading, other, dz) if ribs_decide else None
    if rib_shift is not None and rib_shift > RIB_SHIFT * period:
        traces_differ = True
        add_flag(
            flags,
            FLAG_COUNTING,
            f"The two traces of the column put the last rib-bearing vertebra {rib_shift:.0f} mm apart: the "
            "discs bounding it differ, so its ribs may be a neighbour's.",
        )
    count_doubted = traces_differ and not pooled
    bare = naming.bare_thoracic(reading.ribs, names)
    if bare:
        count_doubted = True
        add_flag(
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
        on = {n: n in names and naming.rib_bearing(reading.ribs, names.index(n)) for n in ("L1", "L2")}
        if on["L1"] and not on["L2"]:
            rib_check = (
                "Ribs were found on the vertebra counted from the sacrum as L1 (lumbar vertebrae bear none "
                "but a rare 13th pair): the sacrum may have been found a disc high, which would shift every "
                "level."
            )
        elif naming.ribless_thorax(reading.ribs, names, n_seg):
            rib_check = (
                "The vertebrae counted from the sacrum as T11 and T12 are in view but no rib was found on "
                "either (T11 bears ribs with 11, 12 or 13 pairs): the last rib cannot confirm the count, and "
                "a disc missed or taken for L5/S1 would shift every level."
            )
    if rib_check:
        count_doubted = True
        add_flag(flags, FLAG_COUNTING, rib_check)
    metal = hardware_on(grid, trace, discs, anchor_disc, s3)
    # a count from the sacrum through hardware that the count from the last rib, clear of it, agrees with
    # has neither lost nor gained a disc there
    agree = last_rib is not None and sacrum is not None and last_rib - sacrum - 1 == 5
    if metal and agree and not hardware_on(grid, trace, discs, int(last_rib or 0) - 1, s3):
        metal = []
    if metal:
        count_doubted = True
        add_flag(
            flags,
            FLAG_COUNTING,
            f"Spinal hardware lies beside the column between the {counted_from.split('+')[0]} and L3 (slices "
            f"{metal[0]}-{metal[-1]}): the streaks of metal can hide a disc or add bone, so the count may be "
            "off by a vertebra.",
        )

    if loc.has_flag(FLAG_COUNTING):
        loc.candidates = naming.candidates(lab, n_seg, sacrum, last_rib, position)
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
    noise = spine.noise_hu(grid)
    if noise > NOISY_SPINE_INDEX_HU:
        confidence *= 0.7
        add_flag(
            flags,
            FLAG_LOW_CONFIDENCE,
            f"The image is very noisy ({noise:.0f} HU between neighbouring soft-tissue voxels at 3 mm, over "
            f"{NOISY_SPINE_INDEX_HU:.0f}): the discs may have been read in the middle of the vertebral "
            "bodies, which shifts the count by half a level or more.",
        )
    if not 0 < s3 < n_seg - 1:
        confidence *= 0.5
        add_flag(
            flags,
            FLAG_PARTIAL,
            "L3 is cut by the edge of the scanned range: its outer endplate was estimated from the height "
            "of the other vertebrae.",
        )
    if proms.min() == 0:
        add_flag(flags, FLAG_LOW_CONFIDENCE, "One of the discs bounding L3 was not seen and was inferred.")
    if grid.max_gap_mm > 2.5 * float(np.median(np.diff(np.sort(grid.slice_mm)))):
        gap_at = grid.slice_mm[np.argmax(np.abs(np.diff(np.sort(grid.slice_mm))))]
        near = seg_lo[s3] * dz - period <= gap_at - grid.z_mm[0] <= seg_hi[s3] * dz + period
        add_flag(
            flags,
            FLAG_MISSING_SLICES,
            f"The slices have a gap of {grid.max_gap_mm:.1f} mm"
            + (" near L3; the discs there were interpolated." if near else " away from L3."),
        )
        if near:
            confidence *= 0.7
    loc.confidence = round(float(confidence), 3)
    if loc.confidence < LOW_CONFIDENCE and not loc.has_flag(FLAG_LOW_CONFIDENCE):
        add_flag(
            flags,
            FLAG_LOW_CONFIDENCE,
            f"Confidence {loc.confidence:.2f} is below {LOW_CONFIDENCE}: check the vertebra labels on the "
            "QC picture before using this slice.",
        )
    loc.seconds = time.perf_counter() - t0
    return loc
