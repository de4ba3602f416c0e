"""Image analysis behind automatic L3 localization: spine centreline, disc profile, intervertebral discs.

Everything runs on a coarse canonical grid (about 2 mm in-plane, 1.5-3 mm along z, z inferior -> superior,
y anterior -> posterior) so a whole CT takes well under a second; positions are returned in millimetres along
the patient's superior axis and mapped back to the caller's slice indices by `WorkGrid.to_index`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.errors import LevelError, TooFewSlicesError
from sarcoscope.imaging.noise import robust_sd
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level.peaks import find_peaks

#: HU above which a voxel counts as bone for tracking and anchors (cortical and dense trabecular bone).
BONE_HU = 180.0
#: The smallest z coverage in which two discs (one vertebra) can be seen.
MIN_COVERAGE_MM = 60.0
_INPLANE_MM = 2.0


@dataclass
class WorkGrid:
    """The volume resampled to a coarse canonical grid, with the map back to the caller's slices."""

    hu: np.ndarray  # (z, y, x) float32; z inferior -> superior, y anterior -> posterior
    spacing: tuple[float, float, float]  # (z, y, x) mm
    z_mm: np.ndarray  # superior position (mm) of every working slice
    slice_mm: np.ndarray  # superior position (mm) of every original slice, in original order
    max_gap_mm: float  # largest distance between neighbouring original slices

    def to_index(self, mm: float) -> int:
        """Original slice index whose position is nearest to `mm` (superior millimetres)."""
        return int(np.argmin(np.abs(self.slice_mm - mm)))

    #: In-plane block size and whether y / x were flipped, to map working pixels back to the caller's.
    block: tuple[int, int] = (1, 1)
    flipped: tuple[bool, bool] = (False, False)

    def to_pixel(self, y: float, x: float) -> tuple[int, int]:
        """Row and column in the caller's (unflipped, full-resolution) slice of a working pixel."""
        out = []
        for v, n, f, flip in zip((y, x), self.hu.shape[1:], self.block, self.flipped, strict=True):
            v = (n - 1 - v) if flip else v
            out.append(round(v * f + (f - 1) / 2))
        return out[0], out[1]


def _axis_signs(direction: np.ndarray) -> tuple[int, int, int]:
    """Signs that turn the array axes into (superior, posterior, left); refuse non-axial acquisitions."""
    d = np.asarray(direction, dtype=float)
    normal = d[:, 2] / max(np.linalg.norm(d[:, 2]), 1e-9)
    dominant = int(np.argmax(np.abs(normal)))
    if dominant != 2 or abs(normal[2]) < 0.7:
        plane = {0: "sagittal", 1: "coronal"}.get(dominant, "oblique")
        raise LevelError(
            f"The slices are not axial (slice normal {np.round(normal, 2).tolist()} looks {plane}); "
            "automatic L3 localization needs an axial acquisition. Choose the level with --slice/--range."
        )
    sz = 1 if normal[2] > 0 else -1
    sy = 1 if d[1, 1] >= 0 else -1
    sx = 1 if d[0, 0] >= 0 else -1
    return sz, sy, sx


def _block_means(hu: np.ndarray, order: np.ndarray, ny: int, fy: int, nx: int, fx: int) -> np.ndarray:
    """Mean of every fy×fx block of the slices `order`, as float32 (n, ny, nx).

    Strided adds, a few slices at a time: 6-8× faster than `reshape(ny, fy, nx, fx).mean(axis=(1, 3))` and
    bit-identical for integer HU (sums of a few int16 are exact in float32); float HU may differ in the
    last bit (another summation order)."""
    n = len(order)
    small = np.empty((n, ny, nx), dtype=np.float32)
    chunk = max(1, 2**21 // max(1, ny * nx * fy * fx))  # ≈ 4 MB of int16 per step
    for k0 in range(0, n, chunk):
        idx = order[k0 : k0 + chunk]
        step = np.diff(idx)
        if len(idx) > 1 and abs(int(step[0])) == 1 and (step == step[0]).all():  # a run: a view, no copy
            lo, hi = sorted((int(idx[0]), int(idx[-1])))
            src = hu[lo : hi + 1, : ny * fy, : nx * fx][:: int(step[0])]
        else:
            src = hu[idx][:, : ny * fy, : nx * fx]
        acc = small[k0 : k0 + len(idx)]
        np.copyto(acc, src[:, 0::fy, 0::fx], casting="unsafe")
        for a in range(fy):
            for b in range(fx):
                if a or b:
                    np.add(acc, src[:, a::fy, b::fx], out=acc, casting="unsafe")
        acc /= np.float32(fy * fx)
    return small


def make_grid(volume: CTVolume) -> WorkGrid:
    """Resample to the working grid; raise LevelError for inputs that cannot contain a countable spine."""
    if volume.hu.ndim != 3 or volume.n_slices < 2:
        raise TooFewSlicesError(
            "The input is a single slice: automatic L3 localization needs a volume that covers the lumbar "
            "spine. Analyse the slice as given or choose the level with --slice/--range."
        )
    sz, sy, sx = _axis_signs(volume.direction)
    n = volume.n_slices
    dz, dy, dx = (float(s) for s in volume.spacing)
    pos = np.asarray(volume.slice_positions, dtype=float) if volume.slice_positions is not None else None
    if pos is None or pos.shape != (n,):
        pos = np.arange(n, dtype=float) * dz
    slice_mm = pos * sz
    order = np.argsort(slice_mm)
    sorted_mm = slice_mm[order]
    coverage = float(sorted_mm[-1] - sorted_mm[0])
    if coverage < MIN_COVERAGE_MM:
        raise TooFewSlicesError(
            f"The volume covers only {coverage:.0f} mm along the body ({n} slices); at least "
            f"{MIN_COVERAGE_MM:.0f} mm around L3 are needed to count vertebrae. Use --slice/--range."
        )
    gaps = np.diff(sorted_mm)
    step = float(np.clip(np.median(gaps), 1.5, 3.0))
    fy = max(1, round(_INPLANE_MM / dy))
    fx = max(1, round(_INPLANE_MM / dx))
    ny, nx = volume.hu.shape[1] // fy, volume.hu.shape[2] // fx
    z_mm = np.arange(sorted_mm[0], sorted_mm[-1] + 1e-6, step)
    # Block-average in plane ...
    small = _block_means(volume.hu, order, ny, fy, nx, fx)
    # ... then interpolate linearly between the neighbouring original slices at each working position.
    hi = np.clip(np.searchsorted(sorted_mm, z_mm), 1, n - 1)
    lo = hi - 1
    w = ((z_mm - sorted_mm[lo]) / np.maximum(sorted_mm[hi] - sorted_mm[lo], 1e-6)).astype(np.float32)
    hu = np.empty((len(z_mm), ny, nx), dtype=np.float32)
    for k in range(0, len(z_mm), 16):  # a few slices at a time: no volume-sized temporaries (peak memory)
        c = slice(k, k + 16)
        hu[c] = small[lo[c]] * (1 - w[c])[:, None, None] + small[hi[c]] * w[c][:, None, None]
    if sy < 0:
        hu = hu[:, ::-1, :]
    if sx < 0:
        hu = hu[:, :, ::-1]
    return WorkGrid(
        hu=np.ascontiguousarray(hu),
        spacing=(step, dy * fy, dx * fx),
        z_mm=z_mm,
        slice_mm=slice_mm,
        max_gap_mm=float(gaps.max()),
        block=(fy, fx),
        flipped=(sy < 0, sx < 0),
    )


#: Soft tissue (HU) whose side-by-side voxel differences measure the image noise.
NOISE_TISSUE_HU = (-100.0, 150.0)


def noise_hu(grid: WorkGrid) -> float:
    """Image noise of the working grid scaled to 3 x 3 mm pixels (the disc profile averages a fixed area, so
    finer pixels of the same dose read the same): the robust spread of the differences between side-by-side
    soft-tissue voxels on every other slice, where anatomy varies little from one voxel to the next. Noise
    correlated over a pixel reads lower than its standard deviation: an index, compared with what the
    localizer was measured on."""
    a, b = grid.hu[::2, :, 1:], grid.hu[::2, :, :-1]
    lo, hi = NOISE_TISSUE_HU
    diff = (a - b)[(a > lo) & (a < hi) & (b > lo) & (b < hi)]
    if diff.size < 100:
        return 0.0
    return robust_sd(diff) / np.sqrt(2.0) * float(np.sqrt(grid.spacing[1] * grid.spacing[2])) / 3.0


@dataclass
class SpineTrace:
    """Where the spine is on every working slice."""

    cy: np.ndarray  # tracked bone ridge (posterior body / canal region), working-grid y per slice
    cx: np.ndarray  # midline of the vertebral column, working-grid x per slice
    body_y: np.ndarray  # centre of the vertebral body (y), per slice
    body_depth_mm: float  # typical antero-posterior depth of the vertebral bodies
    strength: np.ndarray  # bone score along the trace per slice (0..1)


def _viterbi_2d(score: np.ndarray, penalty: float) -> np.ndarray:
    """Best path through (z, a, b) that moves at most one cell per slice in a and b (maximum total score)."""
    nz, na, nb = score.shape
    acc = score[0].copy()
    back = np.zeros((nz, na, nb), dtype=np.int8)
    moves = [(da, db) for da in (-1, 0, 1) for db in (-1, 0, 1)]
    for z in range(1, nz):
        best = np.full((na, nb), -np.inf, dtype=np.float32)
        arg = np.zeros((na, nb), dtype=np.int8)
        for m, (da, db) in enumerate(moves):
            shifted = np.full((na, nb), -np.inf, dtype=np.float32)
            src_a = slice(max(0, -da), na - max(0, da))
            dst_a = slice(max(0, da), na - max(0, -da))
            src_b = slice(max(0, -db), nb - max(0, db))
            dst_b = slice(max(0, db), nb - max(0, -db))
            shifted[dst_a, dst_b] = acc[src_a, src_b] - penalty * (abs(da) + abs(db))
            better = shifted > best
            best[better] = shifted[better]
            arg[better] = m
        acc = best + score[z]
        back[z] = arg
    path = np.zeros((nz, 2), dtype=int)
    a, b = np.unravel_index(int(np.argmax(acc)), acc.shape)
    for z in range(nz - 1, -1, -1):
        path[z] = (a, b)
        da, db = moves[back[z, a, b]]
        a, b = a - da, b - db
    return path


def _median_index(counts: np.ndarray) -> float:
    """np.median of the indices of a mask's pixels, from their count per index (no list of every pixel)."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def kth(k: int) -> int:  # the index of the k-th pixel (from 0) in index order
        return int(np.searchsorted(cumulative, k, side="right"))

    return float(kth(n // 2)) if n % 2 else (kth(n // 2 - 1) + kth(n // 2)) / 2.0


@dataclass
class ColumnBand:
    """The bone of the midline band where the column lies (55 mm either side of the body's middle), and the
    body mask: the same for every trace of the column, so made once. Where the spinal canal can be
    followed, `gate` weighs bone far in front of it (oral contrast in bowel) down for the wide trace."""

    bone: np.ndarray  # (z, y, x1 - x0) 0..1 bone score
    body: np.ndarray  # (z, y, x) bool
    x0: int
    x1: int
    gate: np.ndarray | None = None  # (z, y, 1) weights from the canal (`_canal_gate`), or None


def column_band(grid: WorkGrid) -> ColumnBand:
    """The midline band of the working grid; LevelError when the volume holds no body or no bone."""
    hu = grid.hu
    dz, dy, dx = grid.spacing
    body = hu > -400
    if not body.any():
        raise LevelError("The volume contains no body (every voxel is below -400 HU); L3 cannot be located.")
    if (hu > BONE_HU).sum() * dz * dy * dx < 20_000:  # less than 20 cm^3 of bone
        raise LevelError(
            f"No bone is visible (almost no voxel above {BONE_HU:.0f} HU): this does not look like a CT "
            "with a spine in it, so L3 cannot be located. Use --slice/--range."
        )
    mid_x = _median_index(body.sum(axis=(0, 1)))
    half = round(55.0 / dx)
    x0 = max(0, int(mid_x) - half)
    x1 = min(hu.shape[2], int(mid_x) + half + 1)
    canal = canal_track(grid, x0, x1)
    gate = None if canal is None else _canal_gate(grid, canal)
    return ColumnBand(np.clip((hu[:, :, x0:x1] - 120.0) / 150.0, 0, 1), body, x0, x1, gate)


#: The spinal canal: a hole in the bone (ringed by the body, pedicles and laminae) of this area (mm²), at
#: most CANAL_MAX_MM across, filled with soft tissue, CSF or epidural fat (mean HU in CANAL_HU).
CANAL_AREA_MM2 = (40.0, 700.0)
CANAL_MAX_MM = 60.0
CANAL_HU = (-100.0, 150.0)
#: The canal is followed only when at least this share of the slices where a canal-like hole was found
#: lie on one track (CANAL_ON_MM of it), and at least CANAL_MIN_SLICES of them.
CANAL_ON_SHARE = 0.6
CANAL_ON_MM = 6.0
CANAL_MIN_SLICES = 10
#: Where the canal is followed, the vertebral body lies in front of it, its front at most about 60 mm from
#: the canal's middle (a canal's radius and the deepest lumbar body): bone further in front (oral contrast
#: in bowel lying in front of the sacrum and L5) counts CANAL_OUTSIDE as much.
CANAL_FRONT_MM = 70.0
CANAL_OUTSIDE = 0.3


def _canal_holes(grid: WorkGrid, x0: int, x1: int) -> list[list[tuple[float, float]]]:
    """Per working slice, the canal-like holes in the bone of the band x0:x1 (row, band column): holes
    ringed by bone, of a canal's size, filled with soft tissue, CSF or fat. Bowel loops, kidneys and the
    spaces between bones give such holes too; the canal is the one that goes on through the column."""
    _, dy, dx = grid.spacing
    out: list[list[tuple[float, float]]] = []
    for k in range(grid.hu.shape[0]):
        sl = grid.hu[k, :, x0:x1]
        ring = ndi.binary_closing(sl > BONE_HU - 30.0, iterations=1)
        labels, _ = ndi.label(ndi.binary_fill_holes(ring) & ~ring)
        found = []
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            if box is None:
                continue
            if max((box[0].stop - box[0].start) * dy, (box[1].stop - box[1].start) * dx) > CANAL_MAX_MM:
                continue
            rr, cc = np.nonzero(labels[box] == i)
            area = len(rr) * dy * dx
            mean = float(sl[box][rr, cc].mean())
            if CANAL_AREA_MM2[0] <= area <= CANAL_AREA_MM2[1] and CANAL_HU[0] <= mean <= CANAL_HU[1]:
                found.append((float(box[0].start + rr.mean()), float(box[1].start + cc.mean())))
        out.append(found)
    return out


def canal_track(grid: WorkGrid, x0: int, x1: int) -> np.ndarray | None:
    """The spinal canal's (row, band column) on every working slice, followed through the slices where it
    is seen as a hole ringed by bone; None when it is not seen consistently enough to follow (laminae thin
    against the pixels leave the ring open on most slices, and other holes then dominate).

    The canal is a landmark bowel cannot imitate: positive oral contrast (150-450 HU) lying in front of the
    sacrum and L5 is as dense as bone and larger, and drew both traces of the column 40-95 mm in front of
    the bodies (chest to pelvis at 5 mm, seed 85), while the canal stays behind the bodies."""
    _, dy, dx = grid.spacing
    holes = _canal_holes(grid, x0, x1)
    seen = [k for k, h in enumerate(holes) if h]
    if len(seen) < CANAL_MIN_SLICES:
        return None
    hits = np.zeros((grid.hu.shape[0], grid.hu.shape[1], x1 - x0), dtype=np.float32)
    for k in seen:
        for y, x in holes[k]:
            hits[k, round(y), round(x)] = 1.0
    sigma = (0, 3.0 / dy, 3.0 / dx)
    r = int(np.ceil(4 * max(sigma)))  # the filter's reach
    impulse = np.zeros((1, 2 * r + 1, 2 * r + 1), dtype=np.float32)
    impulse[0, r, r] = 1.0
    peak = float(ndi.gaussian_filter(impulse, sigma).max())  # a hole scores 1 where it was seen
    path = _viterbi_2d((ndi.gaussian_filter(hits, sigma) / peak).astype(np.float32), penalty=0.05)
    on = sum(
        any(
            abs(y - path[k, 0]) * dy <= CANAL_ON_MM and abs(x - path[k, 1]) * dx <= CANAL_ON_MM
            for y, x in holes[k]
        )
        for k in seen
    )
    if on < max(CANAL_MIN_SLICES, CANAL_ON_SHARE * len(seen)):
        return None
    return path


def _canal_gate(grid: WorkGrid, canal: np.ndarray) -> np.ndarray:
    """Weights (z, y, 1) for the bone score: CANAL_OUTSIDE more than CANAL_FRONT_MM in front of the canal,
    1 elsewhere."""
    dy = grid.spacing[1]
    ys = np.arange(grid.hu.shape[1])[None, :, None]
    front = ys < canal[:, 0][:, None, None] - CANAL_FRONT_MM / dy
    return np.where(front, CANAL_OUTSIDE, 1.0).astype(np.float32)


def trace_spine(
    grid: WorkGrid, band: ColumnBand, sigma_mm: float = 8.0, posterior_weight: bool = False
) -> SpineTrace:
    """Follow the vertebral column from the bottom to the top slice (dynamic programming on bone mass).

    `sigma_mm` sets the size of the bone mass followed. A vertebra-sized 8 mm follows the bodies closely;
    a wide 16 mm with `posterior_weight` (rows count more the further back they lie in the body) cannot be
    captured by a contrast-filled aorta of bone-like density in front of the column, nor, where the spinal
    canal can be followed (`band.gate`), by oral contrast in bowel far in front of it. The close trace is
    left free: on the sacrum it finds the sacral segments' remnants, which can set the disc period of its
    whole profile at a lumbar level's height (39 instead of 24 mm on chest to pelvis at 5 mm, seed 74).
    """
    hu = grid.hu
    _, dy, dx = grid.spacing
    bone, body, x0, x1 = band.bone, band.body, band.x0, band.x1
    score = ndi.gaussian_filter(bone, (0, sigma_mm / dy, sigma_mm / dx)).astype(np.float32)
    if posterior_weight:
        rows = body[:, :, x0:x1].any(axis=2)
        ys = np.arange(hu.shape[1])[None, :]
        has = rows.any(axis=1)
        front = np.where(has, np.argmax(rows, axis=1), 0)[:, None]
        back = np.where(has, hu.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1), hu.shape[1] - 1)[:, None]
        weight = 0.6 + 0.8 * np.clip((ys - front) / np.maximum(back - front, 1), 0, 1)
        score *= weight[:, :, None].astype(np.float32)
        if band.gate is not None:
            score *= band.gate
    path = _viterbi_2d(score, penalty=0.05)
    cy = ndi.gaussian_filter1d(path[:, 0].astype(float), 1.5)
    cx = ndi.gaussian_filter1d(path[:, 1].astype(float) + x0, 1.5)
    strength = score[np.arange(len(path)), path[:, 0], path[:, 1]]
    body_y, depth = _vertebral_bodies(grid, cy, cx)
    return SpineTrace(cy=cy, cx=cx, body_y=body_y, body_depth_mm=depth, strength=strength)


def sagittal_slab(grid: WorkGrid, cx: np.ndarray, half_width_mm: float = 4.0) -> np.ndarray:
    """Mid-sagittal reformation (z, y) that follows the column sideways (scoliosis), averaged over a slab."""
    hu = grid.hu
    h = max(1, round(half_width_mm / grid.spacing[2]))
    out = np.empty(hu.shape[:2], dtype=np.float32)
    for z in range(hu.shape[0]):
        c = round(cx[z])
        out[z] = hu[z, :, max(0, c - h) : c + h + 1].mean(axis=1)
    return out


#: The spinal canal's depth (mm, front to back at the midline; adult lumbar canals 12-25 mm, under 10 a
#: severe stenosis) between the back of a vertebral body and the front of its arch; it holds CSF, fat and
#: nerve roots, under CANAL_SOFT_HU on the smoothed sagittal slab, and no bone. The splits noise makes in
#: a body's trabecular bone are shallower or denser (real volume under 40 HU of noise: 2-14 mm, 28-109 HU;
#: those of 10 mm or more 82-87 HU), or have bone between them (under 80 HU).
CANAL_DEPTH_MM = (10.0, 25.0)
CANAL_SOFT_HU = 60.0


def bodies_across_canal(grid: WorkGrid, trace: SpineTrace, where: np.ndarray) -> SpineTrace:
    """The trace with its bodies looked for in front of the canal too on the slices `where` (bool per
    working slice): where its ridge is the arch (laminae, spinous processes), the bone run reaching the
    ridge is the arch's, not the body's."""
    body_y, depth = _vertebral_bodies(grid, trace.cy, trace.cx, across_canal=where)
    return replace(trace, body_y=body_y, body_depth_mm=depth)


def _vertebral_bodies(
    grid: WorkGrid, cy: np.ndarray, cx: np.ndarray, across_canal: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Body centre per slice: the bone run on the sagittal slab that reaches the tracked ridge."""
    dz, dy, _ = grid.spacing
    slab = ndi.gaussian_filter(sagittal_slab(grid, cx), (5.0 / dz, 1.0 / dy))  # bridge the discs
    ny = slab.shape[1]
    front = np.full(len(cy), np.nan)
    back = np.full(len(cy), np.nan)
    reach = round(20.0 / dy)
    canal = [round(mm / dy) for mm in CANAL_DEPTH_MM]
    for z in range(len(cy)):
        c = round(cy[z])
        lo = max(0, c - round(65.0 / dy))
        hi = min(ny, c + round(8.0 / dy) + 1)
        dense = slab[z, lo:hi] > 110.0
        labels, n = ndi.label(dense)
        runs = [np.nonzero(labels == lab)[0] + lo for lab in range(1, n + 1)]  # front to back
        near = [r for r in runs if r.max() >= c - reach]
        if across_canal is not None and across_canal[z]:  # the run right in front, across the canal
            near += [
                r
                for r, q in itertools.pairwise(runs)
                if q.max() >= c - reach
                and canal[0] <= q.min() - r.max() - 1 <= canal[1]
                and slab[z, r.max() + 1 : q.min()].min() < CANAL_SOFT_HU
            ]
        best = 0
        for idx in near:
            if idx.size > best:
                best = idx.size
                front[z], back[z] = idx.min(), idx.max()
    depth = (back - front) * dy
    ok = np.isfinite(depth) & (depth > 15.0) & (depth < 60.0)
    typical = float(np.median(depth[ok])) if ok.sum() >= 5 else 35.0
    typical = float(np.clip(typical, 20.0, 50.0))
    centre = np.where(ok, (front + back) / 2.0, np.nan)
    good = np.isfinite(centre)
    if good.sum() >= 2:
        centre = np.interp(np.arange(len(cy)), np.nonzero(good)[0], centre[good])
    else:
        centre = cy - 0.5 * typical / dy
    centre = ndi.median_filter(centre, size=max(3, round(25.0 / dz)), mode="nearest")
    return ndi.gaussian_filter1d(centre, 6.0 / dz), typical


def disc_profile(grid: WorkGrid, trace: SpineTrace) -> np.ndarray:
    """Mean HU across the vertebral body, perpendicular to the column, for every working slice.

    Sampling across the body line, at the tilt (within ±30°) that gives the darkest band, keeps the
    wedge-shaped lordotic L4/L5 and L5/S1 discs as sharp as the others.
    """
    dz, dy, _ = grid.spacing
    slab = sagittal_slab(grid, trace.cx, half_width_mm=6.0)
    nz = slab.shape[0]
    y_mm = trace.body_y * dy
    ty = np.gradient(ndi.gaussian_filter1d(y_mm, 3.0))
    tz = np.full(nz, dz)
    norm = np.hypot(ty, tz)
    uy, uz = ty / norm, tz / norm
    offs = np.linspace(-0.3, 0.3, 9) * trace.body_depth_mm
    best = np.full(nz, np.inf)
    for tilt in np.deg2rad([-30.0, -15.0, 0.0, 15.0, 30.0]):
        # Unit vector across the body, rotated by `tilt` from the normal of the column.
        ny_ = uz * np.cos(tilt) - uy * np.sin(tilt)
        nz_ = -uy * np.cos(tilt) - uz * np.sin(tilt)
        zs = (np.arange(nz)[:, None] * dz + offs[None, :] * nz_[:, None]) / dz
        ys = (y_mm[:, None] + offs[None, :] * ny_[:, None]) / dy
        vals = ndi.map_coordinates(slab, [zs.ravel(), ys.ravel()], order=1, mode="nearest")
        best = np.minimum(best, vals.reshape(nz, len(offs)).mean(axis=1))
    return best


@dataclass
class Discs:
    """Intervertebral discs found along the column, ordered inferior -> superior (working-slice units)."""

    z: np.ndarray  # disc centres (fractional working slice)
    prominence: np.ndarray  # depth of the profile minimum (HU); 0 for discs inferred from spacing
    period_mm: float  # typical vertebral level height (body + disc)

    def segments(self, dz: float) -> tuple[list[float], list[float]]:
        """Lower and upper bound (working slice) of every segment: one below the lowest disc, one between
        each pair, one above the highest disc (the outer two one period long)."""
        z = [float(v) for v in self.z]
        level = self.period_mm / dz
        return [z[0] - level, *z], [*z, z[-1] + level]

    def centre(self, segment: int, dz: float) -> float:
        """Centre (working slice) of any segment, those beyond the outer discs one period apart: where a
        vertebra the count names lies, in view or not."""
        level, last = self.period_mm / dz, len(self.z) - 1

        def disc(i: int) -> float:
            if i < 0:
                return float(self.z[0]) + i * level
            return float(self.z[min(i, last)]) + max(i - last, 0) * level

        return 0.5 * (disc(segment - 1) + disc(segment))


def _period(detrended: np.ndarray, dz: float) -> float:
    """Typical level height from the autocorrelation of the profile (24-48 mm in adults)."""
    x = detrended - detrended.mean()
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    lags = np.arange(len(ac)) * dz
    ok = (lags >= 24.0) & (lags <= 48.0)
    if not ok.any() or ac[0] <= 0:
        return 33.0
    cand = np.nonzero(ok)[0]
    return float(lags[cand[np.argmax(ac[cand])]])


#: Half-width (mm) of the window in which a disc's endplates lie (a lumbar disc is 8-12 mm high, and a
#: thick slice spreads its endplates by a few mm more).
WALL_MM = 9.0
#: Longest single level (in periods): the column's period follows its most numerous levels, the thoracic
#: ones on a chest-to-pelvis scan (about 24 mm), and lumbar levels are up to 1.6-1.8 times as high.
LEVEL_MAX = 1.9
#: ... and no single level is longer than this (mm; adult lumbar levels, body and disc, are 33-44 mm).
LEVEL_MAX_MM = 46.0
#: ... and whatever the period, no level is longer than this (mm): the tallest adults' lumbar levels reach
#: about 48 mm (a quarter more allowed for the spread of thick slices); a longer "level" is two, as when the
#: period itself is read at two levels (48 mm) and 1.45 periods would allow 70 mm.
LEVEL_CAP_MM = 60.0
#: A minimum counts in the chain of discs with at most this multiple of the depth of its walls (`_walls`).
WALL_WEIGHT = 2.0
#: Penalty per unit of log height ratio between neighbouring levels of the chain, and the extra for a level
#: taller than the one below it and than the period (`_height_change`).
HEIGHT_CHANGE = 30.0
GROWTH_EXTRA = 30.0


def find_discs(profile: np.ndarray, dz: float, strength: np.ndarray) -> Discs:
    """Pick the regular chain of profile minima that best explains the column (the discs)."""
    smooth = ndi.gaussian_filter1d(profile, 1.0 / dz)
    detr = smooth - ndi.gaussian_filter1d(smooth, 12.0 / dz)
    # Where the trace runs on the column (bone within a level's height); discs themselves are not bone.
    valid = ndi.uniform_filter1d(strength, size=max(3, round(30.0 / dz))) > 0.15
    period = _period(np.where(valid, detr, 0.0), dz)
    peaks, prom = find_peaks(-detr, distance=max(1, int(0.45 * period / dz)), prominence=8.0)
    keep = valid[peaks]
    peaks, prom = peaks[keep], prom[keep]
    if len(peaks) < 2:
        return Discs(z=peaks.astype(float), prominence=prom, period_mm=period)
    chain, skips = _best_chain(peaks, np.minimum(prom, WALL_WEIGHT * _walls(smooth, peaks, dz)), dz, period)
    zs: list[float] = []
    proms: list[float] = []
    for a, b, skipped in zip(chain, [*chain[1:], None], [*skips, False], strict=True):
        zs.append(float(peaks[a]))
        proms.append(float(prom[a]))
        if b is not None and skipped:
            zs.append(float(peaks[a] + peaks[b]) / 2.0)  # a disc hidden by metal, noise or a gap
            proms.append(0.0)
    # Above the last clear disc the column often goes on with fainter (thoracic) discs: continue the
    # rhythm for up to two levels so the vertebrae carrying the lowest ribs can still be named.
    if len(zs) >= 2:
        step = zs[-1] - zs[-2]
        for _ in range(2):
            nxt = zs[-1] + step
            if nxt > len(profile) - 1 - 0.3 * step or not valid[min(int(nxt), len(valid) - 1)]:
                break
            zs.append(nxt)
            proms.append(0.0)
    return Discs(z=np.array(zs), prominence=np.array(proms), period_mm=period)


def _walls(smooth: np.ndarray, peaks: np.ndarray, dz: float) -> np.ndarray:
    """How deep (HU) each profile minimum lies below the lower of the brightest points within WALL_MM on
    either side: a disc is a dip between two close endplates, a dip in the middle of a body (dense
    endplates, a sparse middle, as in osteoporotic bone) has its walls a half body height away."""
    k = max(1, round(WALL_MM / dz))
    last = len(smooth) - 1
    return np.array(
        [
            min(smooth[max(p - k, 0) : p + 1].max(), smooth[p : min(p + k, last) + 1].max()) - smooth[p]
            for p in peaks
        ],
        dtype=float,
    )


def _level_gaps(gap: float, period: float) -> list[tuple[float, bool]]:
    """The readings of a gap between two discs (in periods): the height of one level and whether a disc was
    skipped. A gap of 1.7-LEVEL_MAX periods is either one long (lumbar) level or two short ones; the chain's
    neighbouring levels decide."""
    out = []
    if 0.7 <= gap <= min(max(1.45, min(LEVEL_MAX, LEVEL_MAX_MM / period)), LEVEL_CAP_MM / period):
        out.append((gap, False))
    if 1.7 <= gap <= 2.4:
        out.append((gap / 2.0, True))
    return out


def _height_change(level: float, below: float) -> float:
    """Penalty for a level of the chain `level` periods high above one `below` periods high.

    Levels change height slowly along the column; the lumbar ones are the tallest (body and disc 33-44 mm;
    T12 about 30, T11 28; L5 and the sacral segments often shorter than L4), and the period follows the most
    numerous levels. So a level taller than both the one below it and the period is more often a misread
    than anatomy: a dip read inside the body above a disc that thick slices blurred (the real volume's 5 mm
    slices: the T12/L1 disc read 9 mm up in T12, L1 then 25 % taller than L2, and T12's ribs counted on
    L1). That growth costs GROWTH_EXTRA more. Growth back to the period after a short level (a
    dip in mid-body read as a disc below) is not suspect."""
    change = float(np.log(level / below))
    growth = float(np.log(level / max(below, 1.0)))
    return HEIGHT_CHANGE * abs(change) + GROWTH_EXTRA * max(0.0, growth)


def _best_chain(
    peaks: np.ndarray, prom: np.ndarray, dz: float, period: float
) -> tuple[list[int], list[bool]]:
    """Indices of the profile minima forming the best chain of discs, and for each step of the chain
    whether it skipped a disc.

    Scores the depth of each minimum (`prom`: find_discs limits it by its walls); neighbouring levels must
    have similar heights (ratio 0.75-1.33), since vertebral heights change gradually along the column, and a
    level is rarely taller than both the one below it and the period (`_height_change`); one missed disc may
    be bridged.
    """
    n = len(peaks)
    # (i, j, skipped) -> (score, back-pointer (h, skipped at h->i) or None)
    score: dict[tuple[int, int, bool], tuple[float, tuple[int, bool] | None]] = {}
    for j in range(n):
        for i in range(j):
            for lv in _level_gaps((peaks[j] - peaks[i]) * dz / period, period):
                step = prom[j] - 15.0 * abs(lv[0] - 1.0) - (60.0 if lv[1] else 0.0)
                best, back = prom[i] + step, None
                for h in range(i):
                    for prev in _level_gaps((peaks[i] - peaks[h]) * dz / period, period):
                        if (h, i, prev[1]) not in score:
                            continue
                        ratio = lv[0] / prev[0]
                        if 0.75 <= ratio <= 1.33:
                            value = score[(h, i, prev[1])][0] + step - _height_change(lv[0], prev[0])
                            if value > best:
                                best, back = value, (h, prev[1])
                score[(i, j, lv[1])] = (best, back)
    if not score:
        return [int(np.argmax(prom))], []
    key = max(score, key=lambda k: score[k][0])
    chain, skips = [key[1], key[0]], [key[2]]
    while (back := score[key][1]) is not None:
        key = (back[0], key[0], back[1])
        chain.append(key[0])
        skips.append(key[2])
    return chain[::-1], skips[::-1]


def endplates(profile: np.ndarray, lower_disc: float, upper_disc: float, dz: float) -> tuple[float, float]:
    """Lower and upper endplate of the body between two discs (fractional working slices).

    Each endplate is where the profile crosses halfway between the disc and the body's own density,
    which does not depend on how bright the endplate cortex is.
    """
    smooth = ndi.gaussian_filter1d(profile, 1.0 / dz)
    last = len(smooth) - 1
    lo_i, hi_i = int(np.clip(round(lower_disc), 0, last)), int(np.clip(round(upper_disc), 0, last))
    span = upper_disc - lower_disc
    if hi_i - lo_i < 3:
        return lower_disc + 0.15 * span, upper_disc - 0.15 * span
    inner = smooth[lo_i : hi_i + 1]
    body = float(np.median(inner[len(inner) // 5 : len(inner) - len(inner) // 5 or None]))

    def crossing(start: int, step: int, stop: int) -> float:
        thr = 0.5 * (smooth[start] + body)
        i = start
        while i != stop and smooth[i] < thr:
            i += step
        if i == start:
            return float(start)
        prev = i - step
        frac = (thr - smooth[prev]) / max(smooth[i] - smooth[prev], 1e-6)
        return float(prev + step * np.clip(frac, 0, 1))

    mid = (lo_i + hi_i) // 2
    lower = crossing(lo_i, 1, mid)
    upper = crossing(hi_i, -1, mid)
    if not lower < upper:
        lower, upper = lower_disc + 0.15 * span, upper_disc - 0.15 * span
    return lower, upper
