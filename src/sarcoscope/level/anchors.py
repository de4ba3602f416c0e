"""The lower end the vertebral count starts from: the sacrum (the upper end, the ribs: `level.ribs`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.level.spine import BONE_HU, SpineTrace, WorkGrid

#: The bone joined to the column is at least this wide (mm) on the sacrum (alae, sacroiliac joints);
#: lumbar bodies with their transverse processes stay narrower on axial slices through the body.
SACRUM_WIDTH_MM = 110.0
#: Bone joined to the traced body narrower than this (mm) on a slice: the trace is off the vertebra (no
#: vertebral body is so narrow), and the slice shows no vertebra, wide or narrow.
ON_BONE_MM = 20.0
#: Bone area beside the column (cm² per slice) that only the iliac wings reach, where the whole band they lie
#: in is in the field of view.
PELVIS_CM2 = 10.0
#: The band beside the column where the iliac wings lie: from LATERAL_MM (clear of the vertebra and its
#: transverse processes) out to WING_REACH_MM, about half an adult's width across the iliac crests
#: (250-300 mm).
LATERAL_MM, WING_REACH_MM = 50.0, 140.0
#: Under this share of that band inside the image, too little of the wings is in view to tell them from rib
#: sections: they are not judged (no sacrum).
WING_SEEN_SHARE = 1 / 3
#: Above any bone, even averaged over a working voxel: metal (pedicle screws, rods, a cage).
METAL_HU = 2000.0
#: Metal this close to the column (mm) is spinal hardware.
HARDWARE_MM = 30.0
#: Beside spinal hardware, bone in which a disc of this radius (mm) does not fit is cut from the sacrum's
#: width test: the metal's streaks (3.3-3.8 mm worked on the phantoms at 1.9 and 2.6 mm pixels; 2.7 left
#: streaks joining L5 to the iliac wings at 1.9 mm, 4.2 cut a thin S1's alae from its body).
STREAK_MM = 3.5


#: The sacrum's bone is bone above this (HU) on the working grid, unless the column's own bone is less dense
SACRUM_BONE_HU = BONE_HU - 30.0
#: ... then above this share of the column's density (a margin for noise), but never below FLOOR_HU, where
#: contrast-enhanced soft tissue beside the column would join it.
DENSITY_SHARE = 0.85
FLOOR_HU = 100.0


def sacrum_bone_hu(grid: WorkGrid, trace: SpineTrace) -> float:
    """The HU above which bone is bone for the sacrum's width, from the density of this patient's column.

    Elderly patients' cancellous bone, the population sarcopenia studies measure, often reads 80-150 HU:
    under a fixed 150 HU the sacrum's body and alae fall apart into pieces narrower than a sacrum, and the
    L5/S1 disc is not recognised (a no-ribs phantom aged 86, whose column reads 129 HU, was counted from a
    false disc in mid-S1, 37 mm off). The column's density is the median HU at the traced body centres.
    """
    rows = np.clip(np.round(trace.body_y).astype(int), 0, grid.hu.shape[1] - 1)
    cols = np.clip(np.round(trace.cx).astype(int), 0, grid.hu.shape[2] - 1)
    density = float(np.median(grid.hu[np.arange(len(grid.hu)), rows, cols]))
    return min(SACRUM_BONE_HU, max(FLOOR_HU, DENSITY_SHARE * density))


class BoneSlices:
    """The bone pieces (above `threshold_hu`) of each working slice, labelled on first use and kept: every
    trace of the column tests the same slices for the sacrum.

    On the slices `streaked` (metal beside the column: `metal_slices`) the bone is first opened by a disc of
    radius STREAK_MM. The streaks that pedicle screws cast through the muscles beside the column read as bone
    in lines a voxel or two wide and join a lumbar vertebra to the iliac wings, as wide as a sacrum (a no-ribs
    phantom's L5 with screws read 57-146 mm wide on the slices of the sacrum test, 21-68 mm without); opened,
    L5 reads 55-65 mm, and S1 with screws keeps its alae, centimetres thick, joined to its body (159-199
    mm)."""

    def __init__(
        self, grid: WorkGrid, threshold_hu: float = SACRUM_BONE_HU, streaked: np.ndarray | None = None
    ) -> None:
        self.grid = grid
        self.threshold_hu = threshold_hu
        self.streaked = streaked
        dy, dx = grid.spacing[1], grid.spacing[2]
        yy, xx = np.mgrid[
            -int(STREAK_MM / dy) : int(STREAK_MM / dy) + 1, -int(STREAK_MM / dx) : int(STREAK_MM / dx) + 1
        ]
        self._cut = (yy * dy) ** 2 + (xx * dx) ** 2 <= STREAK_MM**2  # a disc of radius STREAK_MM
        self._labels: dict[int, np.ndarray] = {}

    def labels(self, z: int) -> np.ndarray:
        if z not in self._labels:
            mask = self.grid.hu[z] > self.threshold_hu
            if self.streaked is not None and self.streaked[z]:
                mask = ndi.binary_opening(mask, structure=self._cut)
            self._labels[z] = ndi.label(ndi.binary_closing(mask, iterations=1))[0]
        return self._labels[z]


def column_width(bones: BoneSlices, trace: SpineTrace, z: int) -> float:
    """Left-right extent (mm) of the bone joined to the vertebral body on working slice z, joined behind
    the body's front: the sacrum's alae grow from the body's sides, while oral contrast in bowel lying
    against the front of L5 joined it to an iliac wing (125-127 mm, chest to pelvis at 5 mm, seed 85)."""
    dy, dx = bones.grid.spacing[1], bones.grid.spacing[2]
    y, x = round(trace.body_y[z]), round(trace.cx[z])
    bone = bones.labels(z) > 0
    bone[: max(0, round(trace.body_y[z] - 0.5 * trace.body_depth_mm / dy))] = False
    labels = ndi.label(bone)[0]
    r = max(1, round(6.0 / dy))
    patch = labels[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
    ids = np.unique(patch[patch > 0])
    if ids.size == 0:
        return 0.0
    xs = np.flatnonzero(np.isin(labels, ids).any(axis=0))
    return float((xs[-1] - xs[0] + 1) * dx)


def lateral_bone_cm2(grid: WorkGrid, trace: SpineTrace, z: int) -> float:
    """Bone area (cm²) more than LATERAL_MM to the side of the column on working slice z: the iliac wings in
    the pelvis, only thin rib sections higher up."""
    dy, dx = grid.spacing[1], grid.spacing[2]
    xs = np.abs(np.arange(grid.hu.shape[2]) - trace.cx[z]) * dx
    return float((grid.hu[z][:, xs > LATERAL_MM] > BONE_HU).sum() * dy * dx / 100.0)


def wing_share(grid: WorkGrid, trace: SpineTrace, z: int) -> float:
    """Share of the band where the iliac wings lie (LATERAL_MM to WING_REACH_MM either side of the column)
    that is inside the image on working slice z. A small field of view cuts the wings at its edge: a 200 mm
    field, centred on the body and not on the column, ends 68-84 mm to one side of the real volume's sacrum,
    and what is left of its wings reads 8.2-9.7 cm², against 14-20 cm² in the whole field."""
    dx = grid.spacing[2]
    band = WING_REACH_MM - LATERAL_MM
    sides = ((trace.cx[z] + 0.5) * dx, (grid.hu.shape[2] - 0.5 - trace.cx[z]) * dx)
    return float(sum(np.clip(s - LATERAL_MM, 0.0, band) for s in sides) / (2 * band))


def wing_cm2(grid: WorkGrid, trace: SpineTrace, z: int) -> float:
    """The bone beside the column (`lateral_bone_cm2`) on working slice z scaled to the whole band of the
    wings by the share of it in the field (`wing_share`): the wings are judged by what of them is in view.
    0 where under WING_SEEN_SHARE of the band is in view."""
    share = wing_share(grid, trace, z)
    return lateral_bone_cm2(grid, trace, z) / share if share >= WING_SEEN_SHARE else 0.0


def hardware_beside(grid: WorkGrid, trace: SpineTrace, z: int) -> bool:
    """Whether metal lies within HARDWARE_MM of the vertebral body on working slice z."""
    dy, dx = grid.spacing[1], grid.spacing[2]
    y, x = round(trace.body_y[z]), round(trace.cx[z])
    ry, rx = round(HARDWARE_MM / dy), round(HARDWARE_MM / dx)
    patch = grid.hu[z, max(0, y - ry) : y + ry + 1, max(0, x - rx) : x + rx + 1]
    return bool((patch > METAL_HU).any())


def metal_slices(grid: WorkGrid, trace: SpineTrace) -> np.ndarray:
    """Per working slice, whether metal lies within HARDWARE_MM of the vertebral body (`hardware_beside`)."""
    return np.array([hardware_beside(grid, trace, z) for z in range(grid.hu.shape[0])], dtype=bool)


def find_sacrum_disc(
    bones: BoneSlices, trace: SpineTrace, discs_z: np.ndarray, period_mm: float
) -> int | None:
    """Index (into discs_z) of the L5/S1 disc: the lowest disc with sacrum-wide bone right below it,
    reaching up to it, and a narrow lumbar vertebra right above it.

    None when no disc has the sacrum below it in the field of view. Beside spinal hardware the widths are
    measured on bone cut free of the metal's streaks (`BoneSlices`).
    """
    grid = bones.grid
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
        wide_below = np.mean([column_width(bones, trace, z) >= SACRUM_WIDTH_MM for z in below])
        # The alae rise to the L5/S1 disc (higher at the sides than the body at the midline): sacrum-wide
        # bone between the window's top and the disc. A dip in mid-L5 also has the alae in its window, but
        # their top lies a quarter level or more below it.
        reaches = any(
            column_width(bones, trace, z) >= SACRUM_WIDTH_MM for z in range(below[-1], round(d) + 1)
        )
        # narrow above is judged where the trace is on the vertebra's bone: a slice without it shows
        # nothing narrow (a trace that left the sacrum for an iliac wing)
        seen = [w for w in (column_width(bones, trace, z) for z in above) if w >= ON_BONE_MM]
        wide_above = np.mean([w >= SACRUM_WIDTH_MM for w in seen]) if 2 * len(seen) >= len(above) else 1.0
        pelvis = np.median([wing_cm2(grid, trace, z) for z in below])
        # Wide below, narrow above (a skull or a table is wide on both sides), iliac wings beside it
        # (ribs joined to a thoracic body are wide too, but thin), as much of them as the field shows. The
        # lowest such disc.
        if wide_below >= 0.5 and reaches and wide_above <= 0.4 and pelvis >= PELVIS_CM2:
            return i
    return None


#: A missed L5/S1 disc at the sacrum's top lies this far (in disc periods) below the chain's lowest disc,
#: L4/L5: one level, L5, short or tall (the real volume's L5 is 11-11.5 slices against a period of 11-12).
MISSED_LEVEL = (0.6, 1.4)


def sacrum_top(bones: BoneSlices, trace: SpineTrace, discs_z: np.ndarray, period_mm: float) -> float | None:
    """Working slice of the L5/S1 disc a chain of discs missed below its lowest disc: the top of the
    sacrum-wide bone (the alae rise to the disc), when it lies about one level below the lowest disc.

    A trace that runs off the column below L5 sees no L5/S1 disc and its chain starts at L4/L5, while the
    sacrum's width, measured on the bone joined to the column, does not depend on the trace. None when no
    slice in that stretch is sacrum-wide; the disc placed here must still pass `find_sacrum_disc`.
    """
    level = period_mm / bones.grid.spacing[0]
    lowest = float(discs_z[0])
    lo, hi = max(0, round(lowest - MISSED_LEVEL[1] * level)), round(lowest - MISSED_LEVEL[0] * level)
    wide = [z for z in range(lo, hi + 1) if column_width(bones, trace, z) >= SACRUM_WIDTH_MM]
    return float(max(wide)) if wide else None
