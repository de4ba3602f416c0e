"""The body in an axial slice: what the engines measure in. The CT table and cushions are cut off, and so are
arms lying against the trunk (arms are not trunk: none of their tissue counts).
"""

from __future__ import annotations

import threading

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segmentation.morphology import (
    bounding_box,
    convex_hull_mask,
    convex_hull_vertices,
    depth_in_hull,
    distance_mm,
    fill_holes,
    in_convex_hull,
    largest_component,
    open_mm,
)

#: Pixels above this HU are "something" (body, table, clothes); air and out-of-field padding are below it.
BODY_THRESHOLD_HU = -500.0

#: An arm touching the trunk meets it through a neck of skin; eroding the body by one of these depths (mm)
#: cuts the neck while the arm, thicker than twice the depth, keeps a core of its own. Shallow first (thin
#: forearms, narrow contacts), deeper for an arm pressed broadly against the side.
LIMB_NECK_MM = (12.0, 18.0, 24.0)

#: A piece cut off at such a neck is a limb when it holds bone (its own humerus, radius or ulna): a fold of
#: the abdominal fat has none. Bone here is this many HU and at least `LIMB_BONE_MM2` of it.
LIMB_BONE_HU = 300.0
LIMB_BONE_MM2 = 50.0

#: An arm pressed on the trunk over a contact wider than any neck is still round where the trunk is round:
#: the body's outline dips between the two, above and below the contact, in notches this deep (mm) below
#: the body's convex hull.
LIMB_NOTCH_MM = 6.0

#: A piece cut off between two notches is a limb only when it holds bone, none of that bone lies on the cut,
#: the cut is at most `LIMB_CUT_MM` long and the piece at most `LIMB_SHARE` of the body (an arm beside an
#: adult trunk at L3 is a few percent of it).
LIMB_CUT_MM = 130.0
LIMB_SHARE = 0.2

#: The trunk's outline this close (mm) to the notches shows how it runs on under the arm.
LIMB_ARC_MM = 40.0


def body_mask(
    hu: np.ndarray,
    pixel_spacing: tuple[float, float],
    threshold_hu: float = BODY_THRESHOLD_HU,
    table_cut_mm: float = 4.0,
) -> np.ndarray:
    """The body in one axial slice: largest object above `threshold_hu`, holes filled, table cut off, arms
    lying against it removed (see `body_and_limbs`)."""
    return body_and_limbs(hu, pixel_spacing, threshold_hu, table_cut_mm)[0]


def body_and_limbs(
    hu: np.ndarray,
    pixel_spacing: tuple[float, float],
    threshold_hu: float = BODY_THRESHOLD_HU,
    table_cut_mm: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The body in one axial slice (largest object above `threshold_hu`, holes filled, table cut off), and
    the arms that lay against it and were cut off (`limbs`; empty almost always).

    The CT table and cushions are thin (a few mm) curved shells; an opening of `table_cut_mm` radius breaks
    them (and any thin bridge to the body, e.g. a blanket) while the body survives.
    Out-of-field padding (-1024, -2000, -3024 HU) is below the threshold.
    Returns empty masks when nothing survives (no body in the slice).
    """
    raw = hu > threshold_hu
    out, arms_out = np.zeros(raw.shape, dtype=bool), np.zeros(raw.shape, dtype=bool)
    if not raw.any():
        return out, arms_out
    # nothing below reaches beyond what is above the threshold: work on its bounding box (plus a margin of
    # air, so that erosions and holes see the same background): same result, less work
    frame = bounding_box(raw, margin=2)
    raw = raw[frame]
    core = largest_component(open_mm(raw, table_cut_mm, pixel_spacing))
    if not core.any():
        return out, arms_out
    # Thin pieces the opening removed are either the table (a curve reaching outside the body's convex
    # hull) or body (skin corners, a thin wall over bowel gas: inside the hull). Only the latter are put
    # back before holes are filled, so that a table touching the skin does not enclose air with the body.
    body = core.copy()
    lab, n = ndi.label(raw & ~core, structure=np.ones((3, 3), bool))
    if n:
        # the hull of a more strongly opened body: table pieces welded to the skin do not widen it
        box = bounding_box(core, margin=2)
        solid = largest_component(open_mm(core[box], 2 * table_cut_mm, pixel_spacing))
        hull_of = np.zeros_like(core)
        hull_of[box] = solid if solid.any() else core[box]
        pts = np.argwhere(lab > 0)[::4]  # every 4th pixel is plenty to measure each piece's share
        inside = in_convex_hull(hull_of, pts)
        piece = lab[pts[:, 0], pts[:, 1]]
        share = np.bincount(piece, weights=inside, minlength=n + 1) / np.maximum(
            np.bincount(piece, minlength=n + 1), 1
        )
        share[0] = 0.0
        body |= (share >= 0.9)[lab]
    trunk = fill_holes(largest_component(body))
    # the trunk's box and a ring of background around it give the same distances and pieces
    box = bounding_box(trunk, margin=1)
    trunk = trunk[box]
    arms = limbs(trunk, hu[frame][box], pixel_spacing)
    if arms.any():
        out[frame][box] = largest_component(trunk & ~arms)
        arms_out[frame][box] = trunk & ~out[frame][box]
    else:
        out[frame][box] = trunk
    return out, arms_out


class SliceBodies:
    """`body_and_limbs` of each slice of a stack (n, y, x), found once however many ask: the check for
    slices without a body, the engine and the quality score's second opinion (in another thread) all need
    it, and it is a large share of a slice's segmentation. Each slice's is found at its first request."""

    def __init__(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> None:
        self.slices = slices
        self.pixel_spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
        self._found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._locks = [threading.Lock() for _ in range(len(slices))]
        #: The quarter turns (np.rot90) with which the U-Net read the slices, as turned in their files
        #: (UNetEngine._quarter_turns): 0 the right way up; None until it has read them. The report's
        #: warning comes from here.
        self.read_turned: int | None = None

    def __len__(self) -> int:
        return len(self._locks)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(body, limbs) of slice `index`; a second thread asking for it meanwhile waits for the first."""
        with self._locks[index]:
            if index not in self._found:
                self._found[index] = body_and_limbs(self.slices[index], self.pixel_spacing)
            return self._found[index]

    def of(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> bool:
        """Whether these are the bodies of `slices` (the same HU values) at `pixel_spacing`: an engine given
        bodies of other slices finds its own."""
        spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
        return (
            spacing == self.pixel_spacing
            and slices.shape == self.slices.shape
            and (slices is self.slices or np.array_equal(slices, self.slices))
        )


def limbs(body: np.ndarray, hu: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Arms lying against the trunk in an axial slice (arms are not trunk: none of their tissue counts).

    An arm that touches the trunk joins it through a neck. Eroding the body by a depth of `LIMB_NECK_MM`
    cuts that neck while the trunk and the arm, both thicker, survive as separate cores; a core other than
    the trunk's that holds bone is a limb, and the limb is the body within that depth of its core and nearer
    to it than to the trunk's core. An arm pressed on the trunk over a contact wider than any neck is cut
    off between the notches of the outline instead (`_limbs_between_notches`). An arm that does not touch
    the body is not part of the body's largest component in the first place.
    """
    depth = distance_mm(body, pixel_spacing)
    bone = body & (hu > LIMB_BONE_HU)
    min_bone_px = LIMB_BONE_MM2 / (pixel_spacing[0] * pixel_spacing[1])
    out = np.zeros(body.shape, dtype=bool)
    for neck in LIMB_NECK_MM:
        cores, n = ndi.label(depth > neck)
        if n < 2:
            continue
        sizes = np.bincount(cores.ravel())
        sizes[0] = 0
        trunk = int(np.argmax(sizes))
        reach_trunk: np.ndarray | None = None
        for piece in range(1, n + 1):
            if piece == trunk:
                continue
            reach = distance_mm(cores != piece, pixel_spacing)
            near = body & (reach <= neck)
            if np.count_nonzero(near & bone) < min_bone_px:
                continue
            if reach_trunk is None:
                reach_trunk = distance_mm(cores != trunk, pixel_spacing)
            out |= near & (reach < reach_trunk)
        if out.any():
            return out
    return _limbs_between_notches(body, bone, min_bone_px, pixel_spacing)


def _limbs_between_notches(
    body: np.ndarray, bone: np.ndarray, min_bone_px: float, pixel_spacing: tuple[float, float]
) -> np.ndarray:
    """Arms pressed broadly against the trunk: each is cut off along the straight line between the two
    notches its outline makes with the trunk's (`LIMB_NOTCH_MM` deep; the closest pairs first, a piece
    with bone beyond the cut, see `LIMB_CUT_MM`), and the sliver of the trunk's skin and fat that the
    straight line takes with it is given back (`_under_the_arm`)."""
    out = np.zeros(body.shape, dtype=bool)
    vertices = convex_hull_vertices(body)
    if vertices is None:
        return out
    gaps, n = ndi.label(convex_hull_mask(body, vertices) & ~body, structure=np.ones((3, 3), bool))
    if n < 2:
        return out
    # each gap's deepest pixel below the hull, if deep enough, is a notch
    at = np.flatnonzero(gaps)
    gap = gaps.ravel()[at]
    depth = depth_in_hull(vertices, np.column_stack(np.unravel_index(at, body.shape)), pixel_spacing)
    order = np.lexsort((depth, gap))
    deepest = order[np.append(gap[order][1:] != gap[order][:-1], True)]
    deepest = deepest[depth[deepest] >= LIMB_NOTCH_MM]
    notches = np.column_stack(np.unravel_index(at[deepest], body.shape))
    scale = np.asarray(pixel_spacing)
    pairs = sorted(
        (float(np.hypot(*((notches[i] - notches[j]) * scale))), i, j)
        for i in range(len(notches))
        for j in range(i + 1, len(notches))
    )
    trunk = body.copy()
    for length, i, j in pairs:
        if length > LIMB_CUT_MM:
            break
        steps = 2 * int(np.abs(notches[i] - notches[j]).max()) + 2
        line = np.rint(np.linspace(notches[i], notches[j], steps)).astype(np.int64)
        cut = np.zeros(body.shape, dtype=bool)
        cut[line[:, 0], line[:, 1]] = True
        if (cut & bone).any():
            continue
        pieces, m = ndi.label(trunk & ~cut)  # 4-connected: the 8-connected line separates
        if m < 2:
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        largest, most = int(np.argmax(sizes)), LIMB_SHARE * np.count_nonzero(body)
        for piece in np.flatnonzero(sizes):
            if piece == largest or sizes[piece] > most:
                continue
            limb = pieces == piece
            if np.count_nonzero(limb & bone) >= min_bone_px:
                limb &= ~_under_the_arm(trunk & ~limb, limb, notches[[i, j]], pixel_spacing)
                out |= limb
                trunk &= ~limb
    return out


def _under_the_arm(
    trunk: np.ndarray, limb: np.ndarray, notches: np.ndarray, pixel_spacing: tuple[float, float]
) -> np.ndarray:
    """The pixels of a limb cut off by a straight line that are the trunk's: its outline runs on under the
    arm as it runs beside it, so the circle through its outline within `LIMB_ARC_MM` of the two notches
    bounds it there (up to `LIMB_ARC_MM` / 4 beyond the line; nothing when too little outline is near)."""
    scale = np.asarray(pixel_spacing)
    outline = np.argwhere(trunk & ~ndi.binary_erosion(trunk)) * scale
    a, b = notches * scale
    # the trunk's outline near the notches but not along the cut itself
    along = np.clip((outline - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    off_cut = np.hypot(*(outline - a - along[:, None] * (b - a)).T) > 2.0 * scale.max()
    near = np.minimum(np.hypot(*(outline - a).T), np.hypot(*(outline - b).T)) <= LIMB_ARC_MM
    points = outline[off_cut & near]
    if len(points) < 10:
        return np.zeros(limb.shape, dtype=bool)
    # the circle |p - c|^2 = r^2 as a linear least-squares problem in (c, r^2 - |c|^2)
    design = np.column_stack([2 * points, np.ones(len(points))])
    (cy, cx, k), *_ = np.linalg.lstsq(design, (points**2).sum(axis=1), rcond=None)
    radius = np.sqrt(max(k + cy**2 + cx**2, 0.0))
    pixels = np.argwhere(limb)
    mm, cut = pixels * scale - a, b - a
    length = float(np.hypot(*cut))
    position = mm @ cut / length  # along the cut, from the first notch
    beyond = np.abs(cut[0] * mm[:, 1] - cut[1] * mm[:, 0]) / length  # from the cut's line
    inside = np.hypot(mm[:, 0] + a[0] - cy, mm[:, 1] + a[1] - cx) < radius
    inside &= (beyond <= LIMB_ARC_MM / 4) & (position >= 0) & (position <= length)
    out = np.zeros(limb.shape, dtype=bool)
    out[tuple(pixels[inside].T)] = True
    return out
