"""The two ends the vertebral count starts from: the sacrum (from below) and the last rib (from above)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.level.spine import BONE_HU, SpineTrace, WorkGrid

#: The bone joined to the column is at least this wide (mm) on the sacrum (alae, sacroiliac joints);
#: lumbar bodies with their transverse processes stay narrower on axial slices through the body.
SACRUM_WIDTH_MM = 110.0
#: Bone area beside the column (cm² per slice) that only the iliac wings reach.
PELVIS_CM2 = 10.0
#: Ribs are thin: on 5 mm slices partial volume leaves them near 150 HU, so they get a lower threshold.
RIB_HU = 110.0
#: Slices at least this thick (mm) dim the ribs to RIB_HU.
THICK_SLICE_MM = 4.0
#: A rib piece must start within this distance (mm) of the column's midline: rib necks start at the
#: transverse process; on thick slices the neck may vanish and the shaft start a little further out.
RIB_REACH_MM = 60.0
#: A rib head lies beside the vertebra: its medial end is at most this many vertebral-body depths behind
#: the body's centre (the costotransverse joint is about one). Bone further back is the CT table.
RIB_HEAD_BEHIND_DEPTHS = 2.5
#: A rib's medial end (its head and neck) spans at most this height (mm); a table rail or a muscle edge
#: that passes the threshold is as near the column over far more slices.
RIB_HEAD_HEIGHT_MM = 50.0


def rib_threshold(grid: WorkGrid) -> float:
    """HU above which a voxel may be rib: RIB_HU on thick slices, where partial volume dims the ribs; on
    thinner slices BONE_HU, above contrast-enhanced liver, spleen and kidney, which a rib touching them
    would otherwise merge with (and be rejected as too big)."""
    thickness = float(np.median(np.diff(np.sort(grid.slice_mm))))
    return RIB_HU if thickness >= THICK_SLICE_MM else BONE_HU


def column_width(grid: WorkGrid, trace: SpineTrace, z: int) -> float:
    """Left-right extent (mm) of the bone joined to the vertebral body on working slice z."""
    dy, dx = grid.spacing[1], grid.spacing[2]
    mask = ndi.binary_closing(grid.hu[z] > BONE_HU - 30.0, iterations=1)
    labels, _ = ndi.label(mask)
    y, x = round(trace.body_y[z]), round(trace.cx[z])
    r = max(1, round(6.0 / dy))
    patch = labels[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
    ids = np.unique(patch[patch > 0])
    if ids.size == 0:
        return 0.0
    xs = np.nonzero(np.isin(labels, ids))[1]
    return float((xs.max() - xs.min() + 1) * dx)


def lateral_bone_cm2(grid: WorkGrid, trace: SpineTrace, z: int) -> float:
    """Bone area (cm²) more than 50 mm to the side of the column on working slice z: the iliac wings in
    the pelvis, only thin rib sections higher up."""
    dy, dx = grid.spacing[1], grid.spacing[2]
    xs = np.abs(np.arange(grid.hu.shape[2]) - trace.cx[z]) * dx
    return float((grid.hu[z][:, xs > 50.0] > BONE_HU).sum() * dy * dx / 100.0)


def find_sacrum_disc(grid: WorkGrid, trace: SpineTrace, discs_z: np.ndarray, period_mm: float) -> int | None:
    """Index (into discs_z) of the L5/S1 disc: the lowest disc with sacrum-wide bone right below it
    and a narrow lumbar vertebra right above it.

    None when no disc has the sacrum below it in the field of view.
    """
    dz = grid.spacing[0]
    nz = grid.hu.shape[0]

    def window(a: float, b: float) -> range | None:
        lo, hi = round(a), round(b)
        return range(lo, hi + 1) if 0 <= lo <= hi < nz else None

    level = period_mm / dz
    for i, d in enumerate(discs_z):
        # Windows keep clear of the disc itself: the wedge-shaped L5/S1 disc lets the alae reach higher
        # at the sides than the body does at the midline.
        below = window(d - 0.65 * level, d - 0.2 * level)
        above = window(d + 0.2 * level, d + 0.65 * level)
        if below is None or above is None:
            continue
        wide_below = np.mean([column_width(grid, trace, z) >= SACRUM_WIDTH_MM for z in below])
        wide_above = np.mean([column_width(grid, trace, z) >= SACRUM_WIDTH_MM for z in above])
        pelvis = np.median([lateral_bone_cm2(grid, trace, z) for z in below])
        # Wide below, narrow above (a skull or a table is wide on both sides), iliac wings beside it
        # (ribs joined to a thoracic body are wide too, but thin). The lowest such disc.
        if wide_below >= 0.5 and wide_above <= 0.4 and pelvis >= PELVIS_CM2:
            return i
    return None


@dataclass
class Rib:
    """A rib found near the column: where it meets the spine and which side it is on."""

    side: str  # "right" | "left" (patient), assuming the canonical x right -> left
    z_medial: float  # working-slice z where the rib is nearest the column (its vertebral attachment)
    length_mm: float  # lateral reach from its medial end


@dataclass
class VertebraRibs:
    """Whether one vertebra bears a rib on each side (patient right/left), with the ribs' lateral reach (mm)
    as evidence; 0 where no rib was found."""

    segment: int  # 0 = below the lowest disc
    right_mm: float = 0.0
    left_mm: float = 0.0
    vertebra: str = ""  # named once the column is labelled

    @property
    def right(self) -> bool:
        return self.right_mm > 0

    @property
    def left(self) -> bool:
        return self.left_mm > 0


def ribs_by_vertebra(ribs: list[Rib], segment_of: Callable[[float], int]) -> list[VertebraRibs]:
    """Group ribs by the vertebra (segment) their medial end belongs to, inferior to superior."""
    out: dict[int, VertebraRibs] = {}
    for r in ribs:
        v = out.setdefault(segment_of(r.z_medial), VertebraRibs(segment_of(r.z_medial)))
        if r.side == "right":
            v.right_mm = max(v.right_mm, round(r.length_mm, 1))
        else:
            v.left_mm = max(v.left_mm, round(r.length_mm, 1))
    return [out[k] for k in sorted(out)]


def find_ribs(grid: WorkGrid, trace: SpineTrace, z_min: float = 0.0) -> list[Rib]:
    """Ribs: separate bones that start beside the column and run laterally and downwards.

    Transverse processes also sit beside the column but run horizontally and stay short; iliac wings
    rise laterally; both are rejected by the shape tests. The table's rails, long and beside the column
    too, lie behind the back.
    """
    dz, dy, dx = grid.spacing
    nx = grid.hu.shape[2]
    z0 = max(0, int(np.floor(z_min)))
    # A light blur keeps thin ribs in one piece on noisy low-dose scans.
    bone = ndi.gaussian_filter(grid.hu[z0:], (0.0, 0.6, 0.6)) > rib_threshold(grid)
    xx = np.arange(nx)[None, None, :]
    dist = np.abs(xx - trace.cx[z0:, None, None]) * dx
    bone &= dist > 22.0
    labels, n = ndi.label(bone, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    ribs: list[Rib] = []
    objects = ndi.find_objects(labels)
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab
        vol_cm3 = sub.sum() * dz * dy * dx / 1000.0
        if vol_cm3 < 0.3 or vol_cm3 > 60.0:
            continue
        zz, yy, xs = np.nonzero(sub)
        zz = zz + sl[0].start
        yy = yy + sl[1].start
        xs = xs + sl[2].start
        d = np.abs(xs - trace.cx[z0 + zz]) * dx
        dmin, dmax = d.min(), d.max()
        if dmin > RIB_REACH_MM or dmax - dmin < 30.0:
            continue
        med = d < dmin + 8.0
        if np.ptp(zz[med]) * dz > RIB_HEAD_HEIGHT_MM:
            continue
        lat = d > dmax - 10.0
        z_med = float(zz[med].mean()) + z0
        z_lat = float(zz[lat].mean()) + z0
        y_med = float(yy[med].mean())
        if (z_med - z_lat) * dz < 8.0:  # does not run downwards: transverse process or pelvis
            continue
        behind = (y_med - trace.body_y[round(z_med)]) * dy / trace.body_depth_mm
        if behind < -0.3:
            continue  # starts in front of the column: not a rib head
        if behind > RIB_HEAD_BEHIND_DEPTHS:
            continue  # starts behind the back: a piece of the table
        side = "left" if float(np.median(xs - trace.cx[z0 + zz])) > 0 else "right"
        ribs.append(Rib(side=side, z_medial=z_med, length_mm=float(dmax - dmin)))
    return ribs
