"""Anatomical cues to the lumbar levels that need neither the sacrum nor the ribs (issue 14).

Each cue is a measured landmark on the working grid, with the evidence it was found on, or why it was not
found; `below_view` says the landmark lies below the lowest slice (the structure that ends at it runs on to
that slice). The labelling (`level.labelling`) turns a landmark into a weak likelihood over which vertebra
holds it. Two are built: the aortic bifurcation (`aortic_bifurcation`) and the top of the iliac crests
(`iliac_crest`).

The aortic bifurcation: the abdominal aorta runs down in front of the lumbar column, left of the midline,
and divides into the two common iliac arteries, which diverge in front of L4-L5. On every working slice the
soft tissue in front of the vertebral body (fat left out) is split into its blobs (eroded by one voxel, so
that vessels touching the psoas, a bowel loop or each other come apart); the aorta is a round blob of its
calibre close to the midline, the iliac arteries two smaller blobs side by side, one each side of where the
aorta was. The bifurcation is the lowest slice with the aorta on it (seen on a second slice close above,
at the same place) and two such arteries within three working slices below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.level.spine import SpineTrace, WorkGrid

#: Soft tissue (vessel wall and blood, enhanced or not) is above this (HU); fat is below.
SOFT_HU = -30.0
#: ... and below this: bone's cortex, metal.
VESSEL_MAX_HU = 600.0
#: The region searched: this far (mm) in front of the vertebral body's front and to each side of the midline.
FRONT_MM = 40.0
SIDE_MM = 45.0
#: The abdominal aorta's diameter (mm): 15-24 mm in adults, ectatic up to 30 (aneurysms excepted).
AORTA_MM = (13.0, 32.0)
#: Its centre lies this far (mm) right of the midline to this far left of it (the abdominal aorta runs at the
#: midline or left of it; the inferior vena cava, as wide, lies right of it) and this far in front of the
#: body's front.
AORTA_X_MM = (-10.0, 30.0)
AORTA_FRONT_MM = 28.0
#: A common iliac artery is narrower than the aorta (about 0.6 of it): its blob's diameter is this share of
#: the aorta's.
ILIAC_MM = (0.35, 0.8)
#: Just below the bifurcation, the common iliac arteries lie within this distance (mm) of the aorta's axis
#: to each side and at most this much further back or forward (mm).
ILIAC_SIDE_MM = 12.0
ILIAC_DEPTH_MM = 10.0
#: The aorta is followed up from the bifurcation over SUPPORT_MM, from slice to slice within CONFIRM_MM (mm)
#: of where it was; it must be seen on MIN_SUPPORT slices there (the common iliac arteries dividing in the
#: pelvis look like a small aorta dividing, but not over so long a stretch).
CONFIRM_MM = 6.0
GAP_SLICES = 2
#: ... and keeps its calibre from slice to slice within this ratio (a common iliac artery is about 0.6 of it).
SIZE_RATIO = 1.25
#: The chain taken for the aorta is at least this long (mm).
MIN_AORTA_MM = 30.0
#: Soft tissue is tried above each of these (HU): any tissue against fat, and enhanced blood against
#: unenhanced tissue (a contrast scan's vessels part from the psoas and bowel they touch).
SOFT_LEVELS_HU = (SOFT_HU, 120.0)
#: The iliac arteries are looked for within this many working slices below the aorta.
BELOW_SLICES = 3
#: The aorta runs straight down in front of the column; a common iliac artery leaves it 20-30 degrees from
#: the midline, 11-17 mm sideways over MIN_AORTA_MM. A chain to the lowest slice that moves more than this
#: (mm) sideways over its lowest MIN_AORTA_MM is an iliac artery: the aorta divided in view.
DIVERGE_MM = 8.0


@dataclass
class Blob:
    """A blob of soft tissue in front of the column on one working slice: its diameter (mm, of the circle of
    its area) and its centre relative to the midline (mm, + patient left) and to the body's front (mm in
    front)."""

    diameter_mm: float
    x_mm: float
    front_mm: float


@dataclass
class Cue:
    """One landmark: where it was found (working slice, mm above the grid's first slice) or why not."""

    name: str
    found: bool
    z: float | None = None  # working-grid slice (fractional)
    evidence: str = ""
    #: When not found: the structure that ends at the landmark was seen down to the lowest slice, so the
    #: landmark lies below the field of view (a censored observation), else None.
    below_view: bool = False


def front_blobs(grid: WorkGrid, trace: SpineTrace, soft_hu: float = SOFT_HU) -> list[list[Blob]]:
    """The soft-tissue blobs in front of the vertebral body on every working slice.

    Per slice the region is FRONT_MM in front of the body's front (to a voxel before it) and SIDE_MM to each
    side of the midline; the regions of all slices are stacked into one array (voxels beyond a slice's
    region, or the image, read as fat) and eroded and labelled at once, slice by slice."""
    nz, ny, nx = grid.hu.shape
    _, dy, dx = grid.spacing
    front = trace.body_y - 0.5 * trace.body_depth_mm / dy
    y0 = np.maximum(0, np.round(front - FRONT_MM / dy)).astype(int)
    y1 = np.round(front - 1).astype(int)
    x0 = np.maximum(0, np.round(trace.cx - SIDE_MM / dx)).astype(int)
    x1 = np.minimum(nx - 1, np.round(trace.cx + SIDE_MM / dx)).astype(int)
    h, w = int(max(1, (y1 - y0).max() + 1)), int(max(1, (x1 - x0).max() + 1))
    rows = y0[:, None] + np.arange(h)[None, :]  # (z, h)
    cols = x0[:, None] + np.arange(w)[None, :]  # (z, w)
    inside = ((rows <= y1[:, None]) & (rows < ny))[:, :, None] & (cols <= x1[:, None])[:, None, :]
    roi = grid.hu[
        np.arange(nz)[:, None, None],
        np.minimum(rows, ny - 1)[:, :, None],
        np.minimum(cols, nx - 1)[:, None, :],
    ]
    plane = np.zeros((3, 3, 3), bool)  # no joins across slices
    plane[1] = ndi.generate_binary_structure(2, 1)
    mask = ndi.binary_erosion(inside & (roi > soft_hu) & (roi < VESSEL_MAX_HU), structure=plane)
    labels, n = ndi.label(mask, structure=plane)
    out: list[list[Blob]] = [[] for _ in range(nz)]
    if n == 0:
        return out
    idx = np.arange(1, n + 1)
    # the eroded blob's area grown back by one voxel all round (its perimeter), as a circle's diameter
    area = ndi.sum(mask, labels, idx)
    grown = area + 2 * np.sqrt(np.pi * area) + np.pi
    for a, (z, cy, cx) in zip(grown, ndi.center_of_mass(mask, labels, idx), strict=True):
        k = round(z)
        out[k].append(
            Blob(
                diameter_mm=float(2 * np.sqrt(a * dy * dx / np.pi)),
                x_mm=float((cx + x0[k] - trace.cx[k]) * dx),
                front_mm=float((front[k] - (cy + y0[k])) * dy),
            )
        )
    return out


def _aortas(blobs: list[Blob]) -> list[Blob]:
    """The blobs that can be the aorta."""
    return [
        b
        for b in blobs
        if AORTA_MM[0] <= b.diameter_mm <= AORTA_MM[1]
        and AORTA_X_MM[0] <= b.x_mm <= AORTA_X_MM[1]
        and b.front_mm <= AORTA_FRONT_MM
    ]


def _iliacs(blobs: list[Blob], aorta: Blob) -> list[Blob]:
    """The blobs that can be a common iliac artery just below `aorta`: narrower than it, close to its axis
    (the left one goes on almost in line with the aorta, which runs left of the midline; the right one
    crosses the midline and often lies against the iliac veins, as wide as the aorta together)."""
    return [
        b
        for b in blobs
        if ILIAC_MM[0] * aorta.diameter_mm <= b.diameter_mm <= ILIAC_MM[1] * aorta.diameter_mm
        and abs(b.x_mm - aorta.x_mm) <= ILIAC_SIDE_MM
        and b.front_mm <= AORTA_FRONT_MM + ILIAC_DEPTH_MM
    ]


def _drift(
    cands: list[list[Blob]], source: list[list[tuple[int, int] | None]], z: int, i: int, slices: float
) -> float:
    """How far (mm) the chain ending at blob i of slice z moves sideways over its lowest `slices` slices."""
    x0, k, j = cands[z][i].x_mm, z, i
    while (up := source[k][j]) is not None and up[0] - z <= slices:
        k, j = up
    return abs(cands[k][j].x_mm - x0)


def aortic_bifurcation(grid: WorkGrid, trace: SpineTrace) -> Cue:
    """Where the aorta divides into the common iliac arteries (working slice), or why it was not found.

    The aorta is the longest chain of aorta-like blobs followed down the column (from slice to slice within
    CONFIRM_MM, over gaps of up to GAP_SLICES slices where it touches a bowel loop or the psoas); where that
    chain ends, two iliac arteries must lie within BELOW_SLICES below. A chain that runs to the lowest slice
    puts the bifurcation below the field of view."""
    dz = grid.spacing[0]
    nz = grid.hu.shape[0]
    per_level = [front_blobs(grid, trace, hu) for hu in SOFT_LEVELS_HU]
    blobs = [[b for level in per_level for b in level[z]] for z in range(nz)]
    cands = [_aortas(b) for b in blobs]
    # longest chain (number of slices) from above ending at each candidate, and where it came from
    length: list[list[int]] = [[] for _ in range(nz)]
    source: list[list[tuple[int, int] | None]] = [[] for _ in range(nz)]  # the blob above in the chain
    for z in range(nz - 1, -1, -1):
        for a in cands[z]:
            up = [
                (length[k][j], k, j)
                for k in range(z + 1, min(nz, z + GAP_SLICES + 2))
                for j, b in enumerate(cands[k])
                if abs(b.x_mm - a.x_mm) <= CONFIRM_MM
                and 1 / SIZE_RATIO <= b.diameter_mm / a.diameter_mm <= SIZE_RATIO
            ]
            n, k, j = max(up, default=(0, -1, -1))
            length[z].append(1 + n)
            source[z].append((k, j) if n else None)
    ends = sorted(((n, -z, i) for z in range(nz) for i, n in enumerate(length[z])), reverse=True)
    longest = ends[0][0] if ends else 0
    if longest * dz < MIN_AORTA_MM:
        return Cue(
            "aortic_bifurcation",
            False,
            evidence=f"no aorta followed over {MIN_AORTA_MM:.0f} mm in front of the column "
            f"(at most {longest * dz:.0f} mm)",
        )
    # every chain end (longest first) with the two iliac arteries right below it
    for n, neg_z, i in ends:
        z, a = -neg_z, cands[-neg_z][i]
        if n * dz < MIN_AORTA_MM:
            break
        seen = f"the aorta followed over {n} slices down to working slice {z}"
        if z <= 1:
            if _drift(cands, source, z, i, MIN_AORTA_MM / dz) > DIVERGE_MM:
                continue  # a common iliac artery running out to the side: divided in view
            evidence = seen + ", the lowest: not divided in view"
            return Cue("aortic_bifurcation", False, evidence=evidence, below_view=True)
        for k in range(z - 1, max(-1, z - BELOW_SLICES - 1), -1):
            iliac = _iliacs(blobs[k], a)
            if iliac:
                b = min(iliac, key=lambda c: abs(c.x_mm - a.x_mm))
                return Cue(
                    "aortic_bifurcation",
                    True,
                    z=0.5 * (z + k),
                    evidence=(
                        f"{seen} ({a.diameter_mm:.0f} mm wide), an artery of {b.diameter_mm:.0f} mm "
                        f"{b.x_mm - a.x_mm:+.0f} mm to its side on slice {k}"
                    ),
                )
    return Cue("aortic_bifurcation", False, evidence="no aorta followed down to two arteries")


#: The iliac wings' cortex is above this (HU) on the working grid (enhanced kidneys and bowel stay under it).
WING_HU = 250.0
#: The wings are looked for this far (mm) to each side of the column's midline: beyond the transverse
#: processes and the sacrum's alae, within the pelvis (arms alongside the trunk lie further out) ...
WING_SIDE_MM = (60.0, 150.0)
#: ... and from this far in front of the vertebral body's centre to this far behind it (mm; the CT table
#: lies further back).
WING_FRONT_MM = 90.0
WING_BACK_MM = 80.0
#: A wing's section on the lowest slice is at least this large (mm²): a rib's, a transverse process's or a
#: thin line of bright voxels along the whole scan are smaller.
WING_MIN_MM2 = 50.0
#: A piece on the lowest slice no thicker than this (mm, front to back) and at least TABLE_FLAT times as wide
#: is the CT table's top behind a thin patient (a wing's section runs front to back, curved), not a wing.
TABLE_MM = 10.0
TABLE_FLAT = 3.0
#: The two crests' tops lie within this distance (mm) of each other (a pelvis tilted sideways a little);
#: further apart, one wing was broken into pieces or joined to other bone, and the crest is not given.
CREST_SIDES_MM = 20.0


def iliac_crest(grid: WorkGrid, trace: SpineTrace) -> Cue:
    """The top of the iliac crests (working slice), followed up from the lowest slice, or why not found.

    The iliac wings beside the column on the lowest slice are followed upwards as one piece of bone on each
    side (3-D connected); the crest is where that piece ends, the mean of the two sides. Ribs, kidneys and
    the table are other pieces, not joined to the wing (the table's top, flat, is left out where it comes
    into the window behind a thin patient). No bone beside the column on the lowest slice puts
    the crests below the field of view (a scan that ends above the pelvis)."""
    nz, ny, nx = grid.hu.shape
    _, dy, dx = grid.spacing
    ys = (np.arange(ny)[None, :] - trace.body_y[:, None]) * dy  # (z, y): mm behind the body's centre
    inside_y = (ys >= -WING_FRONT_MM) & (ys <= WING_BACK_MM)
    rows = np.flatnonzero(inside_y.any(axis=0))
    tops: list[tuple[str, int]] = []
    tables: list[str] = []  # the sides where the table's top came into the window
    for sign, side in ((-1, "right"), (1, "left")):
        # the columns this side's window can reach on any slice, then the window itself within them
        ends = trace.cx[:, None] + sign * np.array(WING_SIDE_MM)[None, :] / dx
        x0, x1 = max(0, int(np.floor(ends.min()))), min(nx, int(np.ceil(ends.max())) + 1)
        if x1 <= x0 or rows.size == 0:
            continue
        xs = (np.arange(x0, x1)[None, :] - trace.cx[:, None]) * dx * sign  # (z, x): mm out from the midline
        lateral = (xs >= WING_SIDE_MM[0]) & (xs <= WING_SIDE_MM[1])
        box = grid.hu[:, rows[0] : rows[-1] + 1, x0:x1] > WING_HU
        mask = box & inside_y[:, rows[0] : rows[-1] + 1, None] & lateral[:, None, :]
        labels = ndi.label(mask)[0]
        ids, counts = np.unique(labels[0][labels[0] > 0], return_counts=True)
        large = ids[counts * dy * dx >= WING_MIN_MM2]
        at_bottom = [i for i in large if not _flat(labels[0] == i, dy, dx)]
        tables += [side] * (len(large) - len(at_bottom))
        if not at_bottom:
            continue
        zs = np.flatnonzero(np.isin(labels, at_bottom).any(axis=(1, 2)))
        tops.append((side, int(zs.max())))
    if not tops:
        return Cue(
            "iliac_crest",
            False,
            evidence="no bone beside the column on the lowest slice: the iliac crests lie below the scan"
            + (f" (the table's flat top left out on the {' and '.join(tables)})" if tables else ""),
            below_view=True,
        )
    sides = ", ".join(f"{side} at working slice {t}" for side, t in tops)
    if len(tops) == 1:  # a rib's tip or a kidney's wall beside the lowest slice on one side; not a pelvis
        return Cue("iliac_crest", False, evidence=f"bone beside the column on one side only ({sides})")
    z = float(np.mean([t for _, t in tops]))
    if max(t for _, t in tops) - min(t for _, t in tops) > CREST_SIDES_MM / grid.spacing[0]:
        return Cue("iliac_crest", False, evidence=f"the two wings' tops disagree ({sides})")
    if z >= nz - 1:
        return Cue("iliac_crest", False, evidence="the bone beside the column reaches the top of the scan")
    return Cue(
        "iliac_crest",
        True,
        z=z,
        evidence=f"top of the iliac wing followed up from the lowest slice: {sides}",
    )


def _flat(section: np.ndarray, dy: float, dx: float) -> bool:
    """Whether a piece's section (2-D mask) is a flat horizontal line: TABLE_MM thick at most, TABLE_FLAT
    times as wide."""
    rows, cols = np.nonzero(section)
    thick = (rows.max() - rows.min() + 1) * dy
    return bool(thick <= TABLE_MM and (cols.max() - cols.min() + 1) * dx >= TABLE_FLAT * thick)
