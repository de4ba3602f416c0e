"""Post-processing shared by the engines: body mask, morphology in mm, HU windows, compartments to tissues.

The reference protocol (Alberta / Slice-O-Matic) defines each tissue as "pixels inside a compartment whose HU
lies in the tissue window". Engines that predict compartments (the U-Net, the threshold baseline) therefore
finish with the same HU rules, so that their areas are comparable with manual Slice-O-Matic measurements.
All sizes are in millimetres and converted with the slice's pixel spacing, so results do not depend on the
scanner's field of view.
"""

from __future__ import annotations

from collections.abc import Callable

import edt
import numpy as np
from scipy import ndimage as ndi

from sarcoscope.conventions import DEFAULT_HU_RANGES, HURanges, Label

#: Pixels above this HU are "something" (body, table, clothes); air and out-of-field padding are below it.
BODY_THRESHOLD_HU = -500.0


#: Band along the body outline (mm) whose pixels always take a tissue compartment (tissues_from_scores).
OUTLINE_MM = 2.0

#: Fat enclosed by muscle after a closing of this radius (mm) is intermuscular (IMAT); both engines use it.
IMAT_CLOSING_MM = 4.0

#: Bump when tissues_from_scores changes its output (2: IMAT only where muscle and bone enclose the fat;
#: 3: arms beside the trunk are not body; 4: the muscle's partial-volume rim in a fat compartment is muscle;
#: 5: the visceral fat's rim against organs and bowel is VAT; 6: arms pressed broadly on the trunk are not
#: body).
REFINEMENT_VERSION = 6

#: A pixel of muscle HU in a fat compartment within this distance (mm; at least one pixel) of muscle is
#: muscle: the protocol's muscle edge is its HU threshold, and the network's compartment boundary, resampled
#: from its coarser grid, falls a pixel or two inside it (measured on the real slices: 0.8 mm gains little,
#: beyond 1.6 mm nothing; docs/validation/muscle-rim.md).
MUSCLE_RIM_MM = 1.2

#: A pixel of fat HU in the "other" compartment (organs, bowel, vessels) within this distance (mm; at least
#: one pixel) of visceral fat is visceral fat, for the muscle rim's reason: the protocol's VAT reaches the
#: organs' HU edge, and the network's "other" compartment ends a pixel or two outside it
#: (docs/validation/vat-rim.md).
VAT_RIM_MM = 1.2

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

#: Up to this radius (pixels) a structuring element is faster than a distance transform.
_SMALL_RADIUS_PX = 4.0


def distance_mm(mask: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Euclidean distance (mm, float32) of every True pixel to the nearest False one; the border is not False.

    The `edt` package computes the same distances as scipy.ndimage.distance_transform_edt four to five times
    faster; the body mask alone needs four of them per slice.
    """
    return edt.edt(
        np.ascontiguousarray(mask, dtype=bool), anisotropy=pixel_spacing, black_border=False, parallel=1
    )


def _disk(radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray | None:
    """Elliptical structuring element for a physical radius, or None when a distance transform is faster."""
    ry, rx = radius_mm / pixel_spacing[0], radius_mm / pixel_spacing[1]
    if max(ry, rx) > _SMALL_RADIUS_PX:
        return None
    ny, nx = int(ry), int(rx)
    yy, xx = np.mgrid[-ny : ny + 1, -nx : nx + 1]
    return (yy * pixel_spacing[0]) ** 2 + (xx * pixel_spacing[1]) ** 2 <= radius_mm**2


def _shifted(mask: np.ndarray, se: np.ndarray, erode: bool) -> np.ndarray:
    """Erosion (the border does not erode) or dilation of a 2-D mask by a symmetric structuring element: the
    AND (OR) of the mask shifted by each of the element's offsets. The same pixels as scipy's binary_erosion
    (border_value=1) and binary_dilation, five times faster than their walk of the element at every pixel."""
    h, w = mask.shape
    out = np.full(mask.shape, erode)
    for dy, dx in np.argwhere(se) - np.array(se.shape) // 2:
        if abs(dy) >= h or abs(dx) >= w:
            continue  # the shift leaves the image: only the border's value, which changes nothing
        to = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
        shifted = mask[max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)]
        if erode:
            out[to] &= shifted
        else:
            out[to] |= shifted
    return out


def _reach_px(radius_mm: float, pixel_spacing: tuple[float, float]) -> int:
    """Pixels beyond a mask's box that a disk of `radius_mm` can reach, plus one."""
    return max(int(np.ceil(radius_mm / s)) + 1 for s in pixel_spacing)


def on_box(mask: np.ndarray, margin: int, op: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`op` of a 2-D mask run on the mask's box grown by `margin` pixels, False beyond it (all False for an
    empty mask): the whole frame's result, for an operation that reaches no farther, on a fraction of the
    pixels."""
    out = np.zeros(mask.shape, dtype=bool)
    if mask.any():
        box = bounding_box(mask, margin=margin)
        out[box] = op(mask[box])
    return out


def near_mm(mask: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Pixels at most `radius_mm` from `mask` (distance_mm(~mask) <= radius_mm)."""
    reach = _reach_px(radius_mm, pixel_spacing)
    return on_box(mask, reach, lambda m: distance_mm(~m, pixel_spacing) <= radius_mm)


def dilate_mm(mask: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Dilation by a Euclidean disk of `radius_mm` (a distance transform for large radii)."""
    se = _disk(radius_mm, pixel_spacing)
    if se is None:
        return near_mm(mask, radius_mm, pixel_spacing)
    reach = _reach_px(radius_mm, pixel_spacing)
    return on_box(mask, reach, lambda m: _shifted(m, se, erode=False))


def erode_mm(mask: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Erosion by a Euclidean disk of `radius_mm`; the image border does not erode (as if padded)."""
    if mask.all():
        return np.ones_like(mask, dtype=bool)
    se = _disk(radius_mm, pixel_spacing)
    # the mask's box and a ring of background around it (or the image's edge) erode as the whole frame
    if se is not None:
        return on_box(mask, 1, lambda m: _shifted(m, se, erode=True))
    return on_box(mask, 1, lambda m: distance_mm(m, pixel_spacing) > radius_mm)


def open_mm(mask: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Morphological opening by a disk of `radius_mm`: removes structures thinner than 2 * radius."""
    return dilate_mm(erode_mm(mask, radius_mm, pixel_spacing), radius_mm, pixel_spacing)


def close_mm(mask: np.ndarray, radius_mm: float, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Morphological closing by a disk of `radius_mm`: bridges gaps narrower than 2 * radius."""
    return erode_mm(dilate_mm(mask, radius_mm, pixel_spacing), radius_mm, pixel_spacing)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D mask (empty mask -> empty mask; on a tie the first in
    raster order, which labelling the mask's box keeps)."""

    def largest(m: np.ndarray) -> np.ndarray:
        lab, n = ndi.label(m, structure=np.ones((3, 3), bool))
        if n == 1:  # the usual case: no need to count
            return m
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        return lab == int(np.argmax(sizes))

    return on_box(mask, 0, largest)


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
    depth = _depth_in_hull(vertices, np.column_stack(np.unravel_index(at, body.shape)), pixel_spacing)
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


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Index slices of the smallest box holding `mask` (grown by `margin` pixels, clipped to the image)."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(int(ys[0]) - margin, 0), int(ys[-1]) + margin + 1),
        slice(max(int(xs[0]) - margin, 0), int(xs[-1]) + margin + 1),
    )


def in_convex_hull(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Which of `points` ((n, 2) pixel coordinates y, x) lie inside the convex hull of a 2-D mask (its
    boundary included; nothing when the mask is fewer than 3 pixels or all on a line).

    Integer arithmetic on the mask's row ends (the hull of a mask is the hull of each row's first and last
    pixel), so the answer is exact; scipy.spatial's Qhull gave the same, at 0.2-0.4 s of import per process.
    """
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if not len(points):
        return np.zeros(0, dtype=bool)
    hull = convex_hull_vertices(mask)
    if hull is None:
        return np.zeros(len(points), dtype=bool)
    first_row = int(points[:, 0].min())
    rows, lo, hi = _hull_spans(hull, first_row, int(points[:, 0].max()) + 1)
    row = points[:, 0] - first_row
    return rows[row] & (points[:, 1] >= lo[row]) & (points[:, 1] <= hi[row])


def convex_hull_mask(mask: np.ndarray, hull: np.ndarray | None = None) -> np.ndarray:
    """The convex hull of a 2-D mask as a mask of the same shape (exact, as `in_convex_hull`; `hull`: its
    vertices, when known)."""
    out = np.zeros(mask.shape, dtype=bool)
    hull = convex_hull_vertices(mask) if hull is None else hull
    if hull is not None:
        rows, lo, hi = _hull_spans(hull, 0, mask.shape[0])
        columns = np.arange(mask.shape[1])
        out[:] = rows[:, None] & (columns >= lo[:, None]) & (columns <= hi[:, None])
    return out


def convex_hull_vertices(mask: np.ndarray) -> np.ndarray | None:
    """The vertices (k, 2; y, x) of the convex hull of a 2-D mask's pixels, in order (None when the mask is
    fewer than 3 pixels or all on a line)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    ends = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(np.int64)
    hull = _hull_vertices(np.unique(ends, axis=0))  # unique also sorts by (y, x), as the chain needs
    return hull if len(hull) >= 3 else None


def _hull_spans(hull: np.ndarray, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows y0..y1-1: whether the convex hull with vertices `hull` reaches the row, and its first and last
    column there."""
    # the chain turns one way throughout: a point (y, x) is inside when no edge (start a, direction e) has it
    # on its outer side, e_y (x - a_x) >= e_x (y - a_y). In a row y that bounds x from below (e_y > 0) or
    # above (e_y < 0), or holds for the whole row (e_y = 0): each row's interval, exactly, in integers
    (ay, ax), (ey, ex) = hull.T, (np.roll(hull, -1, axis=0) - hull).T
    y = np.arange(y0, y1)[:, None]
    bound = ey * ax + ex * (y - ay)  # e_y x >= bound
    up, down = ey > 0, ey < 0
    lo = (-(-bound[:, up] // ey[up])).max(axis=1)  # ceiling of bound / e_y
    hi = (bound[:, down] // ey[down]).min(axis=1)  # floor: dividing by e_y < 0 turns the inequality
    return np.all(bound[:, ~up & ~down] <= 0, axis=1), lo, hi


def _depth_in_hull(hull: np.ndarray, points: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """How deep (mm) points (n, 2) inside a convex hull (vertices `hull`) lie below its boundary: the nearest
    of its edges' lines (a convex polygon is the intersection of their half-planes)."""
    scale = np.asarray(pixel_spacing)
    a = hull * scale
    e = np.roll(a, -1, axis=0) - a
    p = points * scale
    cross = e[:, 0] * (p[:, 1, None] - a[:, 1]) - e[:, 1] * (p[:, 0, None] - a[:, 0])
    return (np.abs(cross) / np.hypot(e[:, 0], e[:, 1])).min(axis=1)


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """The convex hull's vertices of (n, 2) integer points sorted by (y, x), in order (Andrew's monotone
    chain; collinear points dropped)."""

    def chain(pts: np.ndarray) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for y, x in pts.tolist():
            while len(out) >= 2:
                (y1, x1), (y2, x2) = out[-2], out[-1]
                if (y2 - y1) * (x - x1) - (x2 - x1) * (y - y1) > 0:
                    break
                out.pop()
            out.append((y, x))
        return out

    lower, upper = chain(points), chain(points[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.int64).reshape(-1, 2)


def tissue_masks(hu: np.ndarray, hu_ranges: HURanges = DEFAULT_HU_RANGES) -> dict[str, np.ndarray]:
    """Boolean HU-window masks for each tissue name of conventions.TISSUES."""
    out = {}
    for tissue in ("muscle", "sat", "vat", "imat"):
        lo, hi = hu_ranges.for_tissue(tissue)
        out[tissue] = (hu >= lo) & (hu <= hi)
    return out


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of a 2-D mask's background (labels) and which of them are holes (do not reach the edge).

    binary_fill_holes' definition (4-connected background), with one labelling instead of its iterated
    dilation, which is several times slower on a 512² slice.
    """
    lab, n = ndi.label(~mask)
    hole = np.ones(n + 1, dtype=bool)
    hole[0] = False
    hole[np.concatenate((lab[0], lab[-1], lab[:, 0], lab[:, -1]))] = False
    return lab, hole


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """A 2-D mask with its holes filled (as scipy's binary_fill_holes, faster)."""

    def filled(m: np.ndarray) -> np.ndarray:
        lab, hole = _holes(m)
        return m | hole[lab]

    return on_box(mask, 1, filled)  # a ring of background around the mask holds no hole


def muscle_compartments(
    muscle: np.ndarray,
    pixel_spacing: tuple[float, float],
    closing_mm: float = 2.0,
    max_hole_cm2: float = 5.0,
) -> np.ndarray:
    """Muscle compartments of one slice: the muscle mask closed by `closing_mm`, enclosed holes filled.

    Fat enclosed here (between muscle bundles, in the paraspinal pockets) is intermuscular fat by definition.
    Only holes up to `max_hole_cm2` are filled: when the wall, psoas and back muscles form a closed ring, the
    abdominal cavity it encloses is not a muscle compartment.
    """

    def compartments(m: np.ndarray) -> np.ndarray:
        closed = close_mm(m, closing_mm, pixel_spacing) | m
        lab, hole = _holes(closed)
        sizes = np.bincount(lab.ravel(), minlength=hole.size) * pixel_spacing[0] * pixel_spacing[1]
        return closed | (hole & (sizes <= max_hole_cm2 * 100.0))[lab]

    # the closing's reach around the mask's box, and a ring of background beyond it that holds no hole
    return on_box(muscle, _reach_px(closing_mm, pixel_spacing) + 1, compartments)


def remove_small_islands(
    labels: np.ndarray,
    pixel_spacing: tuple[float, float],
    min_area_mm2: dict[int, float] | None = None,
) -> np.ndarray:
    """Drop connected islands smaller than a per-label area (mm²) to background (one slice, (y, x)).

    Defaults remove speckle: muscle and SAT/VAT islands under 10 mm²; IMAT is left alone (it is made of
    small pockets by nature).
    """
    limits = (
        min_area_mm2 if min_area_mm2 is not None else {Label.MUSCLE: 10.0, Label.SAT: 10.0, Label.VAT: 10.0}
    )
    pixel_area = pixel_spacing[0] * pixel_spacing[1]
    out = np.asarray(labels, dtype=np.uint8).copy()
    eight = np.ones((3, 3), bool)
    for label, area in limits.items():
        mask = out == label
        if not mask.any():
            continue
        box = bounding_box(mask)  # every island of the label lies in its box
        lab, _ = ndi.label(mask[box], structure=eight)
        sizes = np.bincount(lab.ravel()) * pixel_area
        small = sizes < area
        small[0] = False
        out[box][small[lab]] = Label.BACKGROUND
    return out


def compartment_scores(probs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A network's class probabilities (..., 5, y, x) as compartment scores (..., 3, y, x) against "other"
    (written into `out` when given: the U-Net writes them straight onto its model grid).

    The five classes pool into four compartments (other; muscle = muscle + IMAT, since IMAT is the fat of a
    muscle compartment; SAT; VAT); the scores are muscle, SAT and VAT minus other. They are linear in the
    probabilities, so resampling them to the CT's grid and then deciding gives the same compartments as
    resampling all five probabilities, at three fifths of the cost.
    """
    p = np.asarray(probs, dtype=np.float32)
    if out is None:
        out = np.empty((*p.shape[:-3], 3, *p.shape[-2:]), dtype=np.float32)
    other = p[..., Label.BACKGROUND, :, :]
    muscle = np.add(p[..., Label.MUSCLE, :, :], p[..., Label.IMAT, :, :], out=out[..., 0, :, :])
    np.subtract(muscle, other, out=muscle)
    np.subtract(p[..., Label.SAT, :, :], other, out=out[..., 1, :, :])
    np.subtract(p[..., Label.VAT, :, :], other, out=out[..., 2, :, :])
    return out


def tissues_from_scores(
    scores: np.ndarray,
    hu: np.ndarray,
    pixel_spacing: tuple[float, float],
    hu_ranges: HURanges = DEFAULT_HU_RANGES,
    body: np.ndarray | None = None,
    muscle_rim_mm: float = MUSCLE_RIM_MM,
    vat_rim_mm: float = VAT_RIM_MM,
) -> np.ndarray:
    """Label map of one slice from compartment scores (3, y, x) (`compartment_scores`), by the protocol.

    Each pixel takes its best compartment (other when no score is above 0) and then the tissue of that
    compartment whose HU window holds the pixel: muscle or IMAT in a muscle compartment, SAT in the
    subcutaneous and VAT in the visceral one; a pixel outside every window is 0. IMAT is only fat that
    muscle (and bone) enclose, by the same rule as the threshold engine (`IMAT_CLOSING_MM`). So the network
    only has to place the compartments, while the tissue boundaries follow the HU thresholds at the CT's own
    resolution, as in manual Slice-O-Matic labelling. Labels outside the body and muscle speckle are cleared.

    Within `OUTLINE_MM` of the body outline "other" is not a candidate: there it stands for the air outside,
    which the body mask already removes, and the network's scores, resampled from its coarser grid, blur
    into that air. The skin line's partial-volume fat is SAT in the reference protocol, and without this rule
    a thin patient would lose a large share of the SAT. For the same reason a muscle-HU pixel of a fat
    compartment within `muscle_rim_mm` (at least one pixel; 0: none) of the muscle is muscle, and a fat-HU
    pixel of the "other" compartment within `vat_rim_mm` of the visceral fat is visceral fat.
    """
    inside = body if body is not None else body_mask(hu, pixel_spacing)
    out = np.zeros(hu.shape, dtype=np.uint8)
    if inside.any():
        # every label lies in the body's bounding box (plus a margin of air): same result, less work
        box = bounding_box(inside, margin=2)
        sub = scores[:, box[0], box[1]]
        rims = (muscle_rim_mm, vat_rim_mm)
        out[box] = _tissues_in_body(sub, hu[box], inside[box], pixel_spacing, hu_ranges, rims)
    return out


def _tissues_in_body(
    scores: np.ndarray,
    hu: np.ndarray,
    inside: np.ndarray,
    pixel_spacing: tuple[float, float],
    hu_ranges: HURanges,
    rims: tuple[float, float],
) -> np.ndarray:
    """tissues_from_scores on a box around the body; `rims` are its (muscle_rim_mm, vat_rim_mm)."""
    outline = inside & ~erode_mm(inside, OUTLINE_MM, pixel_spacing)
    # the best compartment (1 muscle, 2 SAT, 3 VAT) and its score, first one on ties (as np.argmax)
    best = np.where(scores[1] > scores[0], 2, 1)
    top = np.maximum(scores[0], scores[1])
    best[scores[2] > top] = 3
    top = np.maximum(top, scores[2])
    compartment = np.where(outline | (top > 0), best, 0)
    windows = tissue_masks(hu, hu_ranges)
    muscle = (compartment == 1) & windows["muscle"]
    # IMAT is fat enclosed by muscle, or by muscle and bone (the paraspinal pockets against the vertebral
    # arch). Other fat the muscle compartment holds lies on its edge, which the network's coarser grid
    # blurs: it joins the better of the two fat compartments there.
    if muscle.any():
        # within reach of the closing around the muscle compartment, which is all that it decides
        reach = 2 * int(np.ceil(IMAT_CLOSING_MM / min(pixel_spacing))) + 2
        box = bounding_box(compartment == 1, margin=reach)
        enclosing = muscle[box] | (hu[box] > hu_ranges.muscle[1])
        enclosed = muscle_compartments(enclosing, pixel_spacing, closing_mm=IMAT_CLOSING_MM)
        loose = (compartment[box] == 1) & ~enclosed
        compartment[box][loose] = np.where(scores[1][box][loose] >= scores[2][box][loose], 2, 3)
    muscle_rim_mm, vat_rim_mm = rims
    # Fat-HU pixels of the "other" compartment would be nothing; beside the visceral fat they are its rim.
    if vat_rim_mm > 0:
        vat = (compartment == 3) & windows["vat"]
        near = dilate_mm(vat, max(vat_rim_mm, min(pixel_spacing)), pixel_spacing)
        compartment[(compartment == 0) & windows["vat"] & near] = 3
    # Muscle-HU pixels of a fat compartment would be nothing; beside the muscle they are its rim.
    if muscle_rim_mm > 0:
        near = dilate_mm(muscle, max(muscle_rim_mm, min(pixel_spacing)), pixel_spacing)
        muscle = muscle | ((compartment >= 2) & windows["muscle"] & near)
    out = np.zeros(hu.shape, dtype=np.uint8)
    out[muscle] = Label.MUSCLE
    out[(compartment == 1) & windows["imat"]] = Label.IMAT
    out[(compartment == 2) & windows["sat"]] = Label.SAT
    out[(compartment == 3) & windows["vat"]] = Label.VAT
    out[~inside] = Label.BACKGROUND
    return remove_small_islands(out, pixel_spacing, {Label.MUSCLE: 10.0})
