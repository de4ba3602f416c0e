"""Whether a volume is turned in-plane in its file, read from the anatomy, and the L3 localization of such a
volume turned the right way up (`quarter_turns`, `turned`, `back`).

Why: the reader lays the slices out front at the top by the file's orientation metadata, but a NIfTI written
with the wrong affine or its x and y axes swapped, or a DICOM without ImageOrientationPatient, arrives turned,
and the localizer, which follows the column at the back of the body, then refused the real 3 mm volume with
its axes swapped ("The vertebrae cannot be counted") and read it upside down one slice off, its count flagged.
Many slices vote, on the working grid the localizer reads anyway: the body wider than deep (every trunk is)
says which axis runs front to back, the vertebra (the largest bone in the middle third of the width) at one
end of it says which end is the back. The lowest slices of a pelvis (the pubic bones in front, the largest
midline bone) and enhanced kidneys or bowel contrast vote wrong, so a median and majorities with margins
decide, and in doubt the volume is read as stored."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.imaging.anatomy import vertebra_depth, width_by_depth
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level.result import L3Localization, VertebraPosition, add_flag
from sarcoscope.level.spine import WorkGrid

log = logging.getLogger(__name__)

FLAG_TURNED = "images_turned"

#: Working slices read (evenly spaced, the outermost left out): a few milliseconds each.
SAMPLES = 24
#: Air and the body: above this HU is body (the table is cut off by an opening of `TABLE_CUT_PX` pixels).
BODY_HU = -500.0
TABLE_CUT_PX = 2
#: A slice whose largest object is smaller than this (cm²) is no trunk (a leg, the head's top): no vote.
TRUNK_CM2 = 150.0
#: The median width-by-depth of the trunk beyond which (or below whose inverse) one axis is the front-to-back
#: one; between, the volume is read as stored.
WIDER = 1.1
#: The vertebra (found on at least half of the slices read) names the back when on AGREE of the slices where
#: it is found it lies beyond BACK_BEYOND of the body's depth from one end (the real volume: 0.53-0.82 from
#: the front from L5 to T10). Bowel contrast in front, larger than the vertebra on 12 of 24 slices of a
#: phantom's L1-L5, and the pubic bones low in a pelvis, do not make such a majority.
BACK_BEYOND = 0.6
AGREE = 2 / 3


@dataclass(frozen=True)
class Turning:
    """The quarter turns (np.rot90 over (y, x)) that bring the stored slices the right way up, and why."""

    turns: int
    evidence: str


def quarter_turns(grid: WorkGrid) -> Turning:
    """The quarter turns of the stored volume that put the front at the top, read from the anatomy on the
    localizer's working grid (laid out as the metadata says: front at the top)."""
    turning = _quarter_turns(grid)
    log.debug("in-plane quarter turns %d: %s", turning.turns, turning.evidence)
    return turning


def _quarter_turns(grid: WorkGrid) -> Turning:
    nz = grid.hu.shape[0]
    picks = np.unique(np.linspace(0, nz - 1, SAMPLES + 2)[1:-1].round().astype(int))
    spacing = (grid.spacing[1], grid.spacing[2])
    trunks = [(k, body) for k in picks if (body := _trunk(grid.hu[k], spacing)) is not None]
    if not trunks:
        return Turning(0, "no trunk on the slices read")
    ratio = float(np.median([width_by_depth(body, spacing) for _, body in trunks]))
    if ratio >= WIDER:  # front to back along y, as the metadata says
        found = [vertebra_depth(grid.hu[k], body, spacing) for k, body in trunks]
    elif ratio <= 1 / WIDER:  # front to back along x: the slices read transposed
        found = [vertebra_depth(grid.hu[k].T, body.T, spacing[::-1]) for k, body in trunks]
    else:
        return Turning(0, f"the body's median width by depth {ratio:.2f} on {len(trunks)} slices")
    depths = np.array([d for d in found if d is not None])
    back, front = int(np.sum(depths > BACK_BEYOND)), int(np.sum(depths < 1 - BACK_BEYOND))
    axis = "row" if ratio >= WIDER else "column"
    evidence = (
        f"the body's median width by depth {ratio:.2f} on {len(trunks)} slices; the vertebra found on "
        f"{len(depths)}, beyond {BACK_BEYOND} of the way from the first {axis} on {back}, short of "
        f"{1 - BACK_BEYOND:.1f} on {front}"
    )
    if 2 * len(depths) < len(trunks) or max(back, front) < AGREE * len(depths):
        return Turning(0, evidence)
    at_end = back > front  # the back at the last row (column)
    # np.rot90 by one takes the last column to the top, by three to the bottom
    turns = (0 if at_end else 2) if ratio >= WIDER else (3 if at_end else 1)
    # the grid has the stored axes flipped as the metadata says; one flip alone reverses a turn's sense
    if grid.flipped[0] != grid.flipped[1]:
        turns = (4 - turns) % 4
    return Turning(turns, evidence)


def _trunk(hu: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """The largest object above BODY_HU once the table is cut off; None when it is smaller than a trunk."""
    lab, n = ndi.label(ndi.binary_opening(hu > BODY_HU, structure=_DISC))
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if sizes[best] * spacing[0] * spacing[1] < TRUNK_CM2 * 100.0:
        return None
    return lab == best


_DISC = (
    np.hypot(*np.mgrid[-TABLE_CUT_PX : TABLE_CUT_PX + 1, -TABLE_CUT_PX : TABLE_CUT_PX + 1]) <= TABLE_CUT_PX
)


def turned(volume: CTVolume, turns: int) -> CTVolume:
    """The volume turned by `turns` quarter turns in-plane: a view of its HU (no copy), the in-plane spacing
    swapped for an odd number of turns; everything else as read."""
    dz, dy, dx = volume.spacing
    return replace(
        volume,
        hu=np.rot90(volume.hu, turns, axes=(1, 2)),
        spacing=(dz, dx, dy) if turns % 2 else (dz, dy, dx),
    )


def stored_pixel(row: int, col: int, turns: int, shape: tuple[int, int]) -> tuple[int, int]:
    """The stored (row, col) of pixel (row, col) of the stored slices (of `shape`) turned by `turns`."""
    shapes = [shape[:: (-1) ** t] for t in range(turns % 4)]  # each turn's input
    for _, w in reversed(shapes):  # np.rot90 by one puts an input's (r, c) at (w - 1 - c, r)
        row, col = col, w - 1 - row
    return row, col


def turned_reason(turning: Turning) -> str:
    """Why the result is flagged: the images were read turned, so the file's orientation is likely wrong."""
    return (
        f"The images are turned in their file: the localizer read them turned by {90 * turning.turns}° "
        f"(np.rot90 over rows and columns), as the anatomy says ({turning.evidence}; the right way up the "
        "body is wider than deep, the vertebra at the back). The file's orientation (NIfTI affine or DICOM "
        "ImageOrientationPatient) is likely wrong: check the source data. Positions on the slices are given "
        "as stored; left and right (the ribs' sides) are as read turned, and a mirrored file cannot be told."
    )


def back(loc: L3Localization, turning: Turning, shape: tuple[int, int]) -> L3Localization:
    """The localization of the stored volume (its slices of `shape`) read turned by `turning`: the
    vertebrae's rows and columns in the stored layout, and flagged."""

    def stored(v: VertebraPosition) -> VertebraPosition:
        if v.row is None or v.col is None:
            return v
        row, col = stored_pixel(v.row, v.col, turning.turns, shape)
        return replace(v, row=row, col=col)

    loc.vertebrae = {name: stored(v) for name, v in loc.vertebrae.items()}
    add_flag(loc.flags, FLAG_TURNED, turned_reason(turning))
    return loc
