"""Which vertebrae bear ribs, decided at the costovertebral joint, side by side.

A rib starts at its vertebra: its head and neck lie beside the body and run back to the transverse process
(the joint window), and from there the bone goes on laterally and downwards, however long or steep it is.
A transverse process starts in the same window but stops a few centimetres out. So every vertebra and side
is probed in its own joint window, the bone found there is followed slice by slice downwards (never
upwards, so a neighbouring rib that touches it further out cannot lead back up to another joint), and the
lateral reach and the drop of what was followed are the evidence. Judging a rib where it starts, not where
it ends laterally, finds a long steep lowest rib as well as a short flat one, and each side on its own.
Where a joint window holds only the neck of a steep rib whose head lies above the window's upper disc (the
disc read a few millimetres into the body above, on coarse or non-square pixels), the neck is followed up
from the window to that head and the rib is credited to the vertebra above. Ribs come in pairs: where one
side's rib is found and the other's is not, the other side is followed again at a lower threshold, since a
thin shaft dimmed under the bone threshold (interpolated slices, a lower calibration, noise) breaks what is
followed from its joint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.level.spine import BONE_HU, SpineTrace, WorkGrid

#: HU above which a working-grid voxel may be rib on thick slices, where partial volume dims thin ribs.
RIB_HU = 110.0
#: Slices at least this thick (mm) dim the ribs to RIB_HU; thinner slices use BONE_HU, above contrast-
#: enhanced liver, spleen and kidney.
THICK_SLICE_MM = 4.0
#: Where one side's rib is followed from a joint at BONE_HU and the other's is not, the other is followed
#: again at this HU: a thin shaft dimmed under BONE_HU (interpolated slices, a lower calibration, noise)
#: breaks the bone followed.
FAINT_RIB_HU = 140.0
#: ... only where it lies this far (HU) above the soft tissue beside the column (the median voxel from -50
#: to 300 HU in the rows searched for ribs: 18-22 on the real volume, 55-59 with soft tissue enhanced by
#: 40 HU, 92-96 by 80): where enhanced organs come close to it, they would join bone at it.
FAINT_ABOVE_TISSUE_HU = 60.0
#: Bone followed from the joint that reaches this far (mm) beyond the side of the vertebral body is a rib:
#: transverse processes (the longest, L3's, reach 20-30 mm) stop short of it, even a short 12th rib passes it.
RIB_REACH_MM = 36.0
#: A rib found on one side only counts when it reaches this far (mm).
LONE_RIB_REACH_MM = 100.0
#: ... or this far when it does not drop at all (a short horizontal rib is still longer than any process).
FLAT_RIB_REACH_MM = 50.0
#: A rib drops at least this much (mm) from its joint to its lateral end when it is shorter than
#: FLAT_RIB_REACH_MM.
RIB_DROP_MM = 5.0
#: A piece of bone on one slice larger than this (cm²) is no rib section (an iliac wing); a rib running in
#: the slice from its neck past its angle covers up to about 8 cm².
MAX_SECTION_CM2 = 10.0
#: Bone is followed from this far (mm) beyond the side of the body: closer in, the articular processes
#: form a column of bone from level to level that would lead from one joint down to the next.
SIDE_GAP_MM = 2.0
#: The body's side is measured to a working pixel, and a rib's head and neck run within a pixel or two of
#: it: where no rib is followed with the column cut SIDE_GAP_MM beyond the measured side, the cut is moved
#: by these many working pixels (closer, then further out), and a rib followed from either counts.
OTHER_CUTS_PX = (-1, 1)
#: Bone at one place (y, x) over more than this height (mm) is no rib.
TALL_MM = 30.0
#: Ribs are searched from a body depth in front of the vertebral body's centre to this far (mm) behind its
#: back.
BEHIND_MM = 80.0
#: Behind FACET_FORWARD body depths from the body's centre, bone closer than FACET_MM beyond the body's
#: side is the articular processes, which are stacked from level to level.
FACET_MM = 6.0
FACET_FORWARD = 0.3
#: How far below its joint (in vertebral levels) a rib is followed.
FOLLOW_LEVELS = 2.5
#: Bone within this far (mm) beyond the body's side is a rib's neck (the joint window's width).
NECK_MM = 18.0
#: A rib whose neck goes on up this far (mm) above the upper disc has its head at the joint above: on 5 mm
#: slices a phantom's horizontal 12th-rib neck, below the disc, blurs to one 3 mm working slice above it.
NECK_ABOVE_MM = 6.0
#: ... and comes at least this much (mm) closer to the body there than anywhere in the window.
HEAD_STEP_MM = 3.0


@dataclass
class VertebraRibs:
    """Rib evidence for one vertebra: on each side (patient right/left) whether a rib starts at its joint,
    how far (mm) the bone followed from the joint reaches beyond the body's side and how far it drops.
    A transverse process shows as a short reach without a rib."""

    segment: int  # 0 = below the lowest disc
    right: bool = False
    left: bool = False
    right_reach_mm: float = 0.0
    left_reach_mm: float = 0.0
    right_drop_mm: float = 0.0
    left_drop_mm: float = 0.0
    vertebra: str = ""  # named once the column is labelled

    @property
    def any(self) -> bool:
        return self.right or self.left

    @property
    def bears_ribs(self) -> bool:
        """Counted as rib-bearing: ribs on both sides, or one long rib (LONE_RIB_REACH_MM). A lone shorter
        "rib" is more often an enhanced kidney or liver tip met by a transverse process than a rib missing
        on the other side."""
        return (self.right and self.left) or max(self.right_reach_mm, self.left_reach_mm) >= LONE_RIB_REACH_MM


def rib_threshold(grid: WorkGrid) -> float:
    """HU above which a voxel may be rib: RIB_HU on thick slices, where partial volume dims the ribs; on
    thinner slices BONE_HU, above contrast-enhanced liver, spleen and kidney."""
    thickness = float(np.median(np.diff(np.sort(grid.slice_mm))))
    return RIB_HU if thickness >= THICK_SLICE_MM else BONE_HU


def body_extent(grid: WorkGrid, trace: SpineTrace, z_lo: float, z_hi: float) -> tuple[float, float]:
    """Half the transverse width (mm) of the vertebral body between z_lo and z_hi (working slices), and
    how far (mm, + to the image right) its middle lies from the traced midline.

    Measured along the body's centre row on the lower half of the body (rib heads sit on the upper half
    and would lengthen the run): the runs of voxels above 100 HU out from the traced midline to each side,
    median over slices; the half width is bounded by the body's depth (bodies are 1.1-1.9 times as wide as
    deep). A trace pulled sideways by the aorta is re-centred on the body this way.
    """
    dx = grid.spacing[2]
    depth = trace.body_depth_mm
    runs: dict[int, list[float]] = {-1: [], 1: []}
    first = max(0, round(z_lo + 0.2 * (z_hi - z_lo)))
    for z in range(first, min(grid.hu.shape[0], round(z_lo + 0.5 * (z_hi - z_lo)) + 1)):
        y, x = round(trace.body_y[z]), round(trace.cx[z])
        row = grid.hu[z, max(0, y - 1) : y + 2].mean(axis=0) > 100.0
        for step in (-1, 1):
            n, xi = 0, x
            while 0 <= xi < row.size and row[xi]:
                n, xi = n + 1, xi + step
            runs[step].append(n * dx)
    if not runs[1]:
        return 0.7 * depth, 0.0
    left, right = float(np.median(runs[-1])), float(np.median(runs[1]))
    hw = float(np.clip((left + right) / 2, 0.55 * depth, 0.95 * depth))
    return hw, float(np.clip((right - left) / 2, -hw / 2, hw / 2))


def _outside_column(d: np.ndarray, forward: np.ndarray, hw_z: np.ndarray, depth: float) -> np.ndarray:
    """Beside the vertebral body (more than SIDE_GAP_MM beyond its side, at half width `hw_z` per slice)
    and clear of the articular processes behind it (the column of facet joints that bone would otherwise
    be followed down)."""
    hw = hw_z[:, None, None]
    return (d > hw + SIDE_GAP_MM) & ((d > hw + FACET_MM) | (forward < FACET_FORWARD * depth))


@dataclass
class _Side:
    """The bone pieces on one side of the column, slice by slice, and how they touch from slice to slice."""

    sgn: float  # -1 patient right (image left), +1 patient left
    labels: np.ndarray  # (z, y, x) per-slice piece labels, 0 = none (cropped to the side's band)
    lateral: np.ndarray  # (z, 1, x) mm from the column's midline toward this side
    forward: np.ndarray  # (z, y, 1) mm behind the vertebral body's centre
    reach: np.ndarray  # largest lateral distance (mm) of each piece (index = label)
    inner: np.ndarray  # smallest lateral distance (mm) of each piece
    below: dict[int, set[int]]  # piece -> pieces on the slice below that it touches
    above: dict[int, set[int]]  # piece -> pieces on the slice above that touch it


def _side(bone: np.ndarray, lateral: np.ndarray, forward: np.ndarray, sgn: float, max_px: int) -> _Side:
    """Pieces of bone on one side, labelled slice by slice (ids unique over the volume); pieces too large
    for a rib's section dropped."""
    cols = np.flatnonzero(bone.any(axis=(0, 1)))
    rows = np.flatnonzero(bone.any(axis=(0, 2)))
    if cols.size == 0:
        cols = rows = np.array([0])
    sy, sx = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    bone = bone[:, sy, sx]
    lat = sgn * lateral[:, :, sx]
    fwd = forward[:, sy, :]
    in_slice = np.zeros((3, 3, 3), dtype=bool)
    in_slice[1] = True
    labels, n = ndi.label(bone, structure=in_slice)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    if (sizes[1:] > max_px).any():
        labels[sizes[labels] > max_px] = 0
    piece = labels > 0
    reach = _label_maxima(np.broadcast_to(lat, labels.shape), labels, piece, n)
    inner = -_label_maxima(np.broadcast_to(-lat, labels.shape), labels, piece, n)
    # which pieces touch which on the slice below: each pixel's neighbourhood holds at most two pieces in
    # practice, the largest and the smallest label
    big = np.iinfo(labels.dtype).max
    below: dict[int, set[int]] = {}
    above: dict[int, set[int]] = {}
    lower = labels[:-1]
    for grown in (
        ndi.maximum_filter(labels, size=(1, 3, 3)),
        ndi.minimum_filter(np.where(labels > 0, labels, big), size=(1, 3, 3)),
    ):
        upper = grown[1:]
        both = (upper > 0) & (upper < big) & (lower > 0)
        # the distinct (upper, lower) pairs, as one integer each (a faster unique than one over columns)
        pairs = np.unique(upper[both].astype(np.int64) * (n + 1) + lower[both])
        for a, b in np.stack(np.divmod(pairs, n + 1), axis=1).tolist():
            below.setdefault(a, set()).add(b)
            above.setdefault(b, set()).add(a)
    return _Side(sgn, labels, lat, fwd, reach, inner, below, above)


def _label_maxima(values: np.ndarray, labels: np.ndarray, piece: np.ndarray, n: int) -> np.ndarray:
    """Largest value per label 1..n (`piece`: labels > 0), 0 for a label without pixels and for the
    background (label 0, never a piece): ndimage.maximum's result, without its sort of the whole volume (the
    pieces are a small share of it)."""
    out = np.full(n + 1, -np.inf)
    np.maximum.at(out, labels[piece], values[piece].astype(float))
    out[0] = 0.0
    out[np.isneginf(out)] = 0.0
    return out


@dataclass
class RibBone:
    """Voxels that may be rib, in the rows from a body depth in front of the column to BEHIND_MM behind it
    (the only rows that can hold a rib's start); computed once per CT, shared by every reading of it."""

    mask: np.ndarray  # (z, y1 - y0, x) bool
    y0: int
    faint: np.ndarray | None = None  # the same at FAINT_RIB_HU, where it is used (see rib_bone)


def rib_bone(grid: WorkGrid, trace: SpineTrace) -> RibBone:
    """Bone-dense voxels beside the column, without what stays in place over TALL_MM: a rib (or a
    transverse process) passes any one place within a rib's height; the CT table, the wall of an enhanced
    kidney and an iliac wing do not (an opening along z)."""
    dz, dy, _ = grid.spacing
    depth = trace.body_depth_mm
    y0 = max(0, int(np.floor(trace.body_y.min() - depth / dy)))
    y1 = min(grid.hu.shape[1], int(np.ceil(trace.body_y.max() + (depth + BEHIND_MM) / dy)) + 1)
    smooth = ndi.gaussian_filter(grid.hu[:, y0:y1], (0.0, 0.6, 0.6))
    run = max(2, round(TALL_MM / dz))

    def short(hu: float) -> np.ndarray:
        bone = (smooth > hu).view(np.uint8)
        tall = ndi.maximum_filter1d(ndi.minimum_filter1d(bone, run, axis=0), run, axis=0)
        return bone.astype(bool) & ~tall.astype(bool)

    threshold = rib_threshold(grid)
    sample = smooth[::2, ::2, ::2]
    sample = sample[(sample > -50.0) & (sample < 300.0)]
    tissue = float(np.median(sample)) if sample.size else np.inf
    faint = threshold > FAINT_RIB_HU and tissue <= FAINT_RIB_HU - FAINT_ABOVE_TISSUE_HU
    return RibBone(short(threshold), y0, short(FAINT_RIB_HU) if faint else None)


def joint_ribs(
    grid: WorkGrid,
    trace: SpineTrace,
    seg_lo: list[float],
    seg_hi: list[float],
    first_segment: int = 0,
    bone: RibBone | None = None,
) -> list[VertebraRibs]:
    """Rib evidence for every segment from `first_segment` up (segment k spans working slices
    seg_lo[k]..seg_hi[k], disc to disc), inferior to superior. `bone`: `rib_bone(grid, trace)` if already
    computed."""
    dz, dy, dx = grid.spacing
    nz, _, nx = grid.hu.shape
    depth = trace.body_depth_mm
    rb = bone if bone is not None else rib_bone(grid, trace)
    y0, y1 = rb.y0, rb.y0 + rb.mask.shape[1]
    xs = np.arange(nx)[None, :]
    ys = np.arange(y0, y1)[:, None]
    level = float(np.median(np.subtract(seg_hi, seg_lo)))
    out: list[VertebraRibs] = []
    moved: dict[tuple[int, str], tuple[_Followed, _Followed, tuple[float, bool]]] = {}
    followed: dict[tuple[int, str], tuple[_Followed, tuple[float, bool]]] = {}
    # one side at a time: the column and everything medial to the body's side is taken out, so each side's
    # pieces are separate from the vertebra and from the other side
    extents = np.array([body_extent(grid, trace, lo, hi) for lo, hi in zip(seg_lo, seg_hi, strict=True)])
    hws = extents[:, 0]
    seg_of = np.searchsorted(np.asarray(seg_hi), np.arange(nz), side="left").clip(0, len(seg_hi) - 1)
    hw_z = hws[seg_of]
    centre = trace.cx * dx + extents[seg_of, 1]  # the body's middle (mm) on every slice
    lateral = xs[None] * dx - centre[:, None, None]  # signed, + to the image right (patient left)
    forward = (ys[None] - trace.body_y[:, None, None]) * dy  # + posterior
    band = (forward > -depth) & (forward < depth + BEHIND_MM)
    max_px = round(MAX_SECTION_CM2 * 100.0 / (dy * dx))
    sides: dict[tuple[str, float, bool], _Side] = {}
    # how the bone is read, in order: the column cut where measured, a pixel closer, a pixel further out;
    # at FAINT_RIB_HU the same, only for a side whose pair is found (see below)
    cuts = [c * dx for c in (0, *OTHER_CUTS_PX)]
    ways = [(c, False) for c in cuts]
    faint_ways = [(c, True) for c in cuts] if rb.faint is not None else []

    def pieces(side: str, way: tuple[float, bool]) -> _Side:
        """One side's pieces, the column cut `way[0]` mm beyond the measured side, at FAINT_RIB_HU if
        `way[1]` (built when first asked)."""
        cut, faint = way
        if (side, cut, faint) not in sides:
            sgn = -1.0 if side == "right" else 1.0
            outside = _outside_column(sgn * lateral, forward, hw_z + cut, depth)
            mask = rb.faint if faint and rb.faint is not None else rb.mask
            sides[side, cut, faint] = _side(mask & band & outside, lateral, forward, sgn, max_px)
        return sides[side, cut, faint]

    windows: dict[int, tuple[int, int]] = {}

    def follow(
        k: int, side: str, way: tuple[float, bool], skip: set[int] | frozenset[int] = frozenset()
    ) -> _Followed:
        return _follow(pieces(side, way), hws[k], way[0], depth, windows[k], level, dz, seg_hi[k], skip)

    for k in range(first_segment, len(seg_lo)):
        lo, hi = seg_lo[k], seg_hi[k]
        v = VertebraRibs(segment=k)
        # the joint window: the upper half of the body, up to just below its upper disc, where the heads of
        # the lowest ribs (T10-T12) articulate; the rib of the vertebra above has left the joint zone by then
        z_top = min(nz - 1, int(np.floor(hi - 0.05 * (hi - lo))))
        z_bot = max(0, int(np.ceil(lo + 0.4 * (hi - lo))))
        if z_top < z_bot:
            out.append(v)
            continue
        windows[k] = (z_bot, z_top)
        for side in ("right", "left"):
            # the body's side is known to a working pixel, and a thin neck running within a pixel or two of
            # it is broken or kept by where the column is cut: a rib followed from any of the cuts counts
            way, got = _first_rib(ways, lambda w, k=k, side=side: follow(k, side, w))
            _record(v, side, got)
            followed[k, side] = (got, way)
            if _is_rib(got) and got.from_above:
                moved[k, side] = (got, follow(k, side, way, got.path), way)
        out.append(v)
    by_segment = {v.segment: v for v in out}
    # A rib whose neck runs up across the upper disc starts at the joint above: it is that vertebra's, and
    # this one keeps what it has without it, when the vertebra above found none on that side or found the
    # same bone (their paths, with the column cut alike, share a piece of the neck).
    for (k, side), (rib, rest, way) in sorted(moved.items()):
        upper = by_segment.get(k + 1)
        if upper is None:
            continue
        if not getattr(upper, side):
            _record(upper, side, rib)
        else:
            theirs, their_way = followed[k + 1, side]
            if their_way != way:
                theirs = follow(k + 1, side, way)
            if not _neck(pieces(side, way), rib.path, hws[k]) & theirs.path:
                continue
        _record(by_segment[k], side, rest)
    # Ribs come in pairs: where one side's rib is found and the other's is not, a thin shaft may have been
    # dimmed under the threshold (slices interpolated, a scanner calibrated lower, noise), and that side is
    # followed again at FAINT_RIB_HU. Only where the vertebra above bears ribs or is out of view (ribs come
    # as a series from T1 down: a lone rib below rib-free vertebrae is more often a transverse process met
    # by other bone), and not where the bone found is the vertebra above's (its neck running up across the
    # disc; this joint's window holding the rib moved up; the rib followed from the joint above sharing a
    # piece of its neck).
    for k in sorted(windows, reverse=True) if faint_ways else []:
        v, upper = by_segment[k], by_segment.get(k + 1)
        if k + 1 in windows and not (upper is not None and upper.bears_ribs):
            continue
        for side, pair in (("right", "left"), ("left", "right")):
            if not getattr(v, pair) or getattr(v, side) or (k, side) in moved:
                continue
            way, got = _first_rib(faint_ways, lambda w, k=k, side=side: follow(k, side, w))
            if not _is_rib(got) or got.from_above:
                continue
            if (
                k + 1 in windows
                and _neck(pieces(side, way), got.path, hws[k]) & follow(k + 1, side, way).path
            ):
                continue
            _record(v, side, got)
    return out


def _first_rib(
    ways: list[tuple[float, bool]], follow: Callable[[tuple[float, bool]], _Followed]
) -> tuple[tuple[float, bool], _Followed]:
    """The first way of reading the bone that follows a rib from the joint, and what it followed; else the
    first way's (a transverse process's length is read as the bone stands)."""
    got = follow(ways[0])
    for way in ways[1:]:
        if _is_rib(got):
            break
        alt = follow(way)
        if _is_rib(alt):
            return way, alt
    return ways[0], got


def _neck(side: _Side, pieces: set[int], hw: float) -> set[int]:
    """The pieces within NECK_MM of the body's side."""
    return {a for a in pieces if side.inner[a] - hw < NECK_MM}


def _is_rib(got: _Followed) -> bool:
    """Bone followed from a joint is a rib when it reaches past any transverse process."""
    return bool((got.reach >= RIB_REACH_MM and got.drop >= RIB_DROP_MM) or got.reach >= FLAT_RIB_REACH_MM)


def _record(v: VertebraRibs, side: str, got: _Followed) -> None:
    """Set one side's evidence of `v` from what was followed."""
    setattr(v, side, _is_rib(got))
    setattr(v, f"{side}_reach_mm", round(got.reach, 1))
    setattr(v, f"{side}_drop_mm", round(got.drop, 1))


@dataclass
class _Followed:
    """What was followed from one joint window: reach beyond the body's side and drop (mm), the pieces of
    the rib's path (those leading to its lateral end) and whether its neck goes on up across the upper
    disc (its head at the joint above)."""

    reach: float
    drop: float
    path: set[int] = field(default_factory=set)
    from_above: bool = False


def _follow(
    side: _Side,
    hw: float,
    cut: float,
    depth: float,
    window_z: tuple[int, int],
    level: float,
    dz: float,
    disc: float,
    skip: frozenset[int] | set[int] = frozenset(),
) -> _Followed:
    """Follow the bone that starts in one joint window downwards, leaving out the pieces `skip`; the column
    was cut from `side`'s pieces `cut` mm beyond the measured side (`hw`), where the window starts too.

    The drop is measured from the highest slice where the followed bone leaves the joint (reaches 10 mm
    beyond the body) to the slices of its lateral end.
    """
    z_bot, z_top = window_z
    z_end = max(0, int(np.floor(z_bot - FOLLOW_LEVELS * level)))
    held: set[int] = set()  # pieces followed on the slice above
    held_at: dict[int, set[int]] = {}
    z_neck: int | None = None
    trail: list[tuple[float, int]] = []  # (reach, slice) of what was followed
    for z in range(z_top, z_end - 1, -1):
        lab = side.labels[z]
        ids: set[int] = set()
        for a in held:
            ids |= side.below.get(a, set())
        if z >= z_bot:
            d = np.broadcast_to(side.lateral[z], lab.shape)
            f = np.broadcast_to(side.forward[z], lab.shape)
            inside = (d > hw + cut + SIDE_GAP_MM) & (d < hw + NECK_MM)
            window = inside & (f > -0.2 * depth) & (f < depth / 2 + 25.0)
            ids.update(np.unique(lab[window & (lab > 0)]).tolist())
        ids.discard(0)
        ids -= skip
        if not ids:
            if z < z_bot:
                break
            held = set()
            continue
        held = held_at[z] = ids
        reach = float(side.reach[list(ids)].max()) - hw
        if z_neck is None and reach >= 10.0:
            z_neck = z
        trail.append((reach, z))
    if not trail or z_neck is None:
        return _Followed(max([r for r, _ in trail], default=0.0), 0.0)
    best = max(r for r, _ in trail)
    z_far = float(np.mean([z for r, z in trail if r >= best - 10.0]))
    path = _rib_path(side, held_at, hw, best)
    pieces = set().union(*path.values())
    return _Followed(
        best, max(0.0, (z_neck - z_far) * dz), pieces, _from_above(side, path, hw, window_z, disc, level, dz)
    )


def _rib_path(side: _Side, held_at: dict[int, set[int]], hw: float, best: float) -> dict[int, set[int]]:
    """Per slice, the followed pieces that lead down to the rib's lateral end (within 10 mm of the
    farthest reach): the rib's path from the joint window."""
    path: dict[int, set[int]] = {}
    for z in sorted(held_at):
        far = {a for a in held_at[z] if side.reach[a] - hw >= best - 10.0}
        up = {a for a in held_at[z] if side.below.get(a, set()) & path.get(z - 1, set())}
        if far | up:
            path[z] = far | up
    return path


def _from_above(
    side: _Side,
    path: dict[int, set[int]],
    hw: float,
    window_z: tuple[int, int],
    disc: float,
    level: float,
    dz: float,
) -> bool:
    """Whether the rib's neck goes on upwards from the joint window across the upper disc (working slice
    `disc`) to a head against the body above it: NECK_ABOVE_MM or more above the disc but within half a level
    (a rib runs down from its head, which lies on its own vertebra's body), and HEAD_STEP_MM closer to the
    body than anywhere in the window. The rib is then the vertebra above's: a steep lowest rib read below
    its vertebra when the disc between them was placed in its body."""
    z_bot, z_top = window_z
    tops = [z for z in path if z_bot <= z <= z_top]
    if not tops:
        return False
    in_window = set().union(*(path[z] for z in tops))
    closest = float(side.inner[list(in_window)].min()) - hw
    z, front, nearest = max(tops), path[max(tops)], np.inf
    while front and z + 1 < side.labels.shape[0]:
        front = {a for b in front for a in side.above.get(b, set()) if side.inner[a] - hw < NECK_MM}
        if front:
            z += 1
            nearest = min(nearest, float(side.inner[list(front)].min()) - hw)
        if z > disc + 0.5 * level:
            return False  # bone beside the column that goes on up: no rib's neck
    return (z - disc) * dz >= NECK_ABOVE_MM and nearest <= closest - HEAD_STEP_MM
