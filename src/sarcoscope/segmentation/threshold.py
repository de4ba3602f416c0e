"""Classical baseline engine "threshold": HU windows inside anatomically traced compartments.

Why it exists: it needs no trained model (works offline, on any install), and it is the baseline every learned
model must beat. It follows the manual Slice-O-Matic protocol of the reference labels:

1. body = largest object above -500 HU, CT table cut off, holes filled (body.body_mask);
2. the abdominal wall is traced along rays from the body centre: walking in from the skin, the subcutaneous
   fat ends at the first run of non-fat tissue thicker than a septum; outliers (fascia gaps, vessels in the
   fat) are repaired by a median over neighbouring rays. Fat outside this line is SAT, inside it VAT;
3. the muscle compartments are the wall ring (walked inwards from the wall line until visceral fat, gas or
   organ-bright tissue), which posteriorly also covers quadratus lumborum and the paraspinal muscles, plus
   the psoas components beside the vertebral body (located from bone > 200 HU). Contrast-enhanced organs are
   told apart from muscle by their smoothed HU relative to this patient's own wall muscle, and tissue in
   front of the vertebral body (vessels, crura) is excluded;
4. fat enclosed by muscle (and the vertebral arch) is IMAT; fat among gas bubbles (stool) is not VAT;
   the HU windows of conventions.HURanges decide every pixel.

All sizes are millimetres, converted with the pixel spacing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.conventions import DEFAULT_HU_RANGES, HURanges, Label
from sarcoscope.errors import SegmentationError
from sarcoscope.imaging import anatomy
from sarcoscope.segmentation.body import SliceBodies, body_mask
from sarcoscope.segmentation.bowel import stool_mask
from sarcoscope.segmentation.morphology import (
    bounding_box,
    close_mm,
    dilate_mm,
    distance_mm,
    fill_holes,
    near_mm,
    open_mm,
)
from sarcoscope.segmentation.refine import (
    IMAT_CLOSING_MM,
    muscle_compartments,
    remove_small_islands,
    tissue_masks,
)

#: Bump when the algorithm changes in a way that changes its output.
ALGORITHM_VERSION = 5  # 4: arms beside the trunk are not body (body.limbs); 5: also arms pressed broadly
#: HU windows for the geometry (where the wall is, what is fat or muscle-like). Fixed, so that a narrower
#: reporting window (e.g. Slice-O-Matic VAT -150..-50) changes which pixels are counted, not the anatomy.
_GEOMETRY = DEFAULT_HU_RANGES


@dataclass(frozen=True)
class ThresholdParams:
    """Geometric parameters of the baseline (mm unless stated); defaults tuned for adult L3 slices."""

    min_body_area_cm2: float = 50.0
    septum_max_mm: float = 1.5  # non-fat runs in the SAT up to this thickness are septa, not the wall
    skin_max_mm: float = 6.0  # a first non-fat run longer than this means there is no SAT on that ray
    wall_gap_mm: float = 2.0  # fat runs up to this thickness inside the wall are intermuscular fat
    back_gap_mm: float = 3.0  # the same in the back muscles, whose fat pockets are larger
    wall_max_mm: float = 30.0  # anterior/lateral wall thickness cap
    back_max_mm: float = 110.0  # posterior (paraspinal) compartment depth cap
    organ_margin_hu: float = 25.0  # smoothed HU above the patient's muscle + this is organ, not wall muscle
    psoas_margin_hu: float = 25.0  # the same limit for the muscles found from the vertebra
    psoas_reach_mm: float = 50.0  # how far from the vertebra those muscles may extend
    organ_step_hu: float = 16.0  # a >= 4 mm stretch this much brighter than muscle ends the wall
    imat_closing_mm: float = IMAT_CLOSING_MM  # fat enclosed by muscle after a closing of this radius is IMAT
    n_rays: int = 720


def _digest(params: ThresholdParams) -> str:
    """Short stable id of non-default parameters, so reports tell tuned runs apart."""
    text = json.dumps(asdict(params), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _circular_median(values: np.ndarray, window: int) -> np.ndarray:
    return ndi.median_filter(values, size=max(3, window | 1), mode="wrap")


def _bridge_gaps(depth: np.ndarray, where: np.ndarray, jump: float, max_width: int) -> np.ndarray:
    """Replace runs of rays that jump deeper by more than `jump` mm (and come back within `max_width`
    rays) with a linear bridge between the rays on either side. Only rays in `where` (one arc) are touched.
    """
    n = depth.size
    if where.all() or not where.any():
        return depth
    out = depth.copy()
    start = int(np.flatnonzero(~where & np.roll(where, -1))[0]) + 1  # first ray of the arc
    order = [(start + i) % n for i in range(n) if where[(start + i) % n]]
    i = 1
    while i < len(order):
        prev = out[order[i - 1]]
        if out[order[i]] - prev > jump:
            end = next(
                (k for k in range(i + 1, min(i + max_width, len(order))) if out[order[k]] - prev < jump / 2),
                None,
            )
            if end is not None:
                t = np.linspace(0.0, 1.0, end - i + 2)[1:-1]
                out[[order[k] for k in range(i, end)]] = prev + t * (out[order[end]] - prev)
                i = end
        i += 1
    return out


def _wall_depth(walk: _InwardWalk, v: np.ndarray, septum: int, skin: int, skin_px: int) -> np.ndarray:
    """Per ray, samples from the skin (where `walk` starts, `v` its samples) in to the wall (NaN where none
    is found): the subcutaneous fat ends at its first non-fat run thicker than `septum` samples; a first
    non-fat run longer than `skin` means no SAT, the wall starting `skin_px` under the skin."""
    lo, hi = _GEOMETRY.sat
    # skip the air/skin partial-volume samples at the boundary, which pass through fat HU
    solid = walk.valid[:, :skin] & (v[:, :skin] > hi)
    offset = np.where(solid.any(axis=1), np.argmax(solid, axis=1), 0)
    fat_hu = (v >= lo) & (v <= hi)
    read = walk.valid & (walk.index[None, :] >= offset[:, None])
    fat = read & fat_hu
    first_fat = np.where(fat.any(axis=1), np.argmax(fat, axis=1), walk.width)
    no_sat = np.minimum(first_fat, walk.length) - offset > skin
    # the non-fat runs after the first fat: the first one thicker than a septum is the wall
    after_fat = read & ~fat_hu & (walk.index[None, :] > first_fat[:, None])
    wall = walk.first_run_start(after_fat, septum + 1, np.full(len(v), -1))
    return np.where(no_sat, offset + skin_px, np.where(wall >= 0, wall, np.nan))


class ThresholdEngine:
    """HU-threshold segmentation inside traced compartments (see module docstring)."""

    name = "threshold"

    def __init__(
        self, hu_ranges: HURanges = DEFAULT_HU_RANGES, params: ThresholdParams | None = None
    ) -> None:
        self.hu_ranges = hu_ranges
        self.params = params or ThresholdParams()
        r = hu_ranges
        custom = "" if self.params == ThresholdParams() else f",params={_digest(self.params)}"
        self.model_id = (
            f"threshold-v{ALGORITHM_VERSION}"
            f"(muscle={r.muscle[0]:g}..{r.muscle[1]:g},sat={r.sat[0]:g}..{r.sat[1]:g},"
            f"vat={r.vat[0]:g}..{r.vat[1]:g},imat={r.imat[0]:g}..{r.imat[1]:g}{custom})"
        )

    def segment(
        self, slices: np.ndarray, pixel_spacing: tuple[float, float], *, bodies: SliceBodies | None = None
    ) -> np.ndarray:
        """Segment HU slices (n, y, x) with in-plane spacing (y, x) mm into uint8 label maps.

        `bodies`: see base.SegmentationEngine.segment (used only when they are of these slices and these HU
        as float32). No `observe`: this engine has no network probabilities."""
        arr = np.asarray(slices)
        if arr.ndim != 3:
            raise SegmentationError(f"expected slices of shape (n, y, x), got shape {arr.shape}")
        spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise SegmentationError(f"invalid pixel spacing {pixel_spacing}: both values must be positive mm")
        if bodies is not None and not (np.can_cast(arr.dtype, np.float32) and bodies.of(arr, spacing)):
            bodies = None
        out = np.zeros(arr.shape, dtype=np.uint8)
        for i, hu in enumerate(arr):
            body = bodies[i][0] if bodies is not None else None
            out[i] = self._segment_slice(hu.astype(np.float32), spacing, i, body)
        return out

    # --- one slice -------------------------------------------------------------------------------------
    def _segment_slice(
        self, hu: np.ndarray, spacing: tuple[float, float], index: int, body: np.ndarray | None = None
    ) -> np.ndarray:
        p = self.params
        if body is None:
            body = body_mask(hu, spacing)
        pixel_area = spacing[0] * spacing[1]
        if body.sum() * pixel_area < p.min_body_area_cm2 * 100.0:
            raise SegmentationError(
                f"no body found in slice {index}: no object above -500 HU "
                f"larger than {p.min_body_area_cm2:g} cm²"
            )
        # work on the body's bounding box (plus a margin of air): same result, less work
        box = bounding_box(body, margin=4)
        labels = np.zeros(hu.shape, dtype=np.uint8)
        labels[box] = self._label_body(hu[box], body[box], spacing)
        return labels

    def _label_body(self, hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        p = self.params
        smooth = ndi.gaussian_filter(hu, sigma=(0.8 / spacing[0], 0.8 / spacing[1]))
        # heavier smoothing to tell enhanced organs from muscle by mean HU despite noise
        coarse = ndi.gaussian_filter(hu, sigma=(1.5 / spacing[0], 1.5 / spacing[1]))
        masks = tissue_masks(hu, self.hu_ranges)
        # the outermost pixel ring is skin partial volume: SAT where it reads as fat (the reference labels'
        # thresholds decide partial volume), never any other tissue
        inner = ndi.minimum_filter(body, size=3, mode="constant")  # a 3x3 erosion, faster than binary_erosion

        spine = anatomy.vertebra(smooth, body, spacing)
        centre = self._centre(body)
        spine_centre = ndi.center_of_mass(spine) if spine.any() else None
        geo = _RayGeometry(centre, body, spacing, p.n_rays)
        posterior = self._posterior_direction(centre, spine_centre, spacing)

        r_skin = geo.skin_mm
        r_wall, wall_ok = self._trace_wall(geo, smooth, r_skin, posterior)
        cavity = geo.star_mask(r_wall)

        muscle_ref = self._muscle_reference(geo, coarse, r_wall, wall_ok)
        organ_hu = min(muscle_ref + p.organ_margin_hu, _GEOMETRY.muscle[1])
        r_inner = self._trace_wall_inner(geo, smooth, coarse, r_wall, posterior, organ_hu, muscle_ref)
        ring = cavity & ~geo.star_mask(r_inner)

        # anatomical frame from the vertebral body: ap (mm, + posterior) and lateral distance (mm)
        yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1]]
        sy, sx = spine_centre or centre
        dy, dx = (yy - sy) * spacing[0], (xx - sx) * spacing[1]  # a column and a row: ap, lateral broadcast
        ap = dy * posterior[0] + dx * posterior[1]
        lateral = np.abs(dx * posterior[0] - dy * posterior[1])
        vertebra = self._vertebra(smooth, spine, spacing)
        psoas = self._psoas(
            coarse,
            cavity,
            spine,
            vertebra,
            ap,
            lateral,
            spacing,
            muscle_ref + p.psoas_margin_hu,
            p.psoas_reach_mm,
        )
        muscle = masks["muscle"] & (ring | psoas) & inner & ~vertebra
        # fat enclosed by muscle, or by muscle and the vertebral arch (the paraspinal pockets), is IMAT;
        # fat between the psoas and the vertebral body is not enclosed by muscle: VAT
        arch = vertebra & cavity & (ap > 5.0)
        enclosed = muscle_compartments(muscle | arch, spacing, closing_mm=p.imat_closing_mm)
        imat = masks["imat"] & inner & cavity & enclosed & ~vertebra
        sat = masks["sat"] & body & ~cavity
        fat = masks["vat"] & inner & cavity & ~imat & ~muscle
        vat = fat & ~stool_mask(hu, cavity, fat, sat, spacing)

        labels = np.zeros(hu.shape, dtype=np.uint8)
        labels[sat] = Label.SAT
        labels[vat] = Label.VAT
        labels[muscle] = Label.MUSCLE
        labels[imat] = Label.IMAT
        return remove_small_islands(labels, spacing, {Label.MUSCLE: 20.0, Label.VAT: 5.0})

    @staticmethod
    def _centre(body: np.ndarray) -> tuple[float, float]:
        cy, cx = ndi.center_of_mass(body)
        if body[round(cy), round(cx)]:
            return float(cy), float(cx)
        dist = distance_mm(body, (1.0, 1.0))
        iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return float(iy), float(ix)

    @staticmethod
    def _vertebra(smooth: np.ndarray, spine: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        """Vertebra with its marrow and the spinal canal: the vertebral body and its arch (often a separate
        bone piece in the slice) closed over 8 mm and filled. Marrow and CSF can have muscle HU."""
        if not spine.any():
            return spine
        vertebra = (smooth > 200.0) & dilate_mm(spine, 20.0, spacing)  # the bone within 20 mm
        return fill_holes(close_mm(vertebra, 8.0, spacing) | vertebra)

    @staticmethod
    def _posterior_direction(
        centre: tuple[float, float], spine_centre: tuple[float, float] | None, spacing: tuple[float, float]
    ) -> np.ndarray:
        """Unit vector (y, x) in mm space from the body centre to the vertebra's centre; +y if no vertebra."""
        if spine_centre is not None:
            sy, sx = spine_centre
            v = np.array([(sy - centre[0]) * spacing[0], (sx - centre[1]) * spacing[1]])
            if np.linalg.norm(v) > 5.0:
                return v / np.linalg.norm(v)
        return np.array([1.0, 0.0])

    def _trace_wall(
        self, geo: _RayGeometry, smooth: np.ndarray, r_skin: np.ndarray, posterior: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Radius (mm) of the outer surface of the muscle wall on every ray, and which rays found it."""
        p = self.params
        step = geo.step_mm
        runs = {
            "septum": round(p.septum_max_mm / step),
            "skin": round(p.skin_max_mm / step),
            "skin_px": round(2.0 / step),  # typical skin thickness
        }
        k_skin = (r_skin / step).astype(int)
        # the wall lies within 64 mm of the skin on nearly every ray: each ray is read that far in first, and
        # on to the centre only where that found neither the wall nor the lack of SAT
        window = round(64.0 / step)
        walk = _InwardWalk(k_skin, np.maximum(k_skin - window, -1), len(geo.radii))
        depth = _wall_depth(walk, walk.sample(geo, smooth), **runs)
        deeper = np.flatnonzero(np.isnan(depth) & (k_skin - window > -1))
        if deeper.size:
            walk = _InwardWalk(k_skin[deeper], np.full(deeper.size, -1), len(geo.radii), rays=deeper)
            depth[deeper] = _wall_depth(walk, walk.sample(geo, smooth), **runs)
        depth = np.where(k_skin < 4, np.nan, depth * step)
        ok = np.isfinite(depth)
        if not ok.any():
            return r_skin - 2.0, ok
        idx = np.arange(geo.n)
        depth = np.interp(idx, idx[ok], depth[ok], period=geo.n)
        r_wall = r_skin - depth
        # repair single rays that slipped through a fascia gap or stopped on a vessel/septum in the fat,
        # but keep the posterior midline notch (SAT between the paraspinal muscles) as traced
        notch = geo.angle_to(posterior) < np.deg2rad(12)
        med = _circular_median(r_wall, int(geo.n * 8 / 360))
        bad = (np.abs(r_wall - med) > 4.0) & ~notch
        r_wall[bad] = med[bad]
        # wider fascia gaps (thin anterior wall, linea alba): the anterior and lateral SAT thickness varies
        # smoothly, so a sudden deepening that comes back within 40 degrees is bridged
        depth = _bridge_gaps(r_skin - r_wall, geo.angle_to(posterior) > np.deg2rad(70), 8.0, geo.n // 9)
        r_wall = r_skin - depth
        # narrower gaps anywhere but the midline notch: rays far deeper than the wider neighbourhood
        med = _circular_median(r_wall, int(geo.n * 25 / 360))
        bad = (r_wall < med - 6.0) & ~notch
        r_wall[bad] = med[bad]
        return np.minimum(r_wall, r_skin), ok

    def _muscle_reference(
        self, geo: _RayGeometry, smooth: np.ndarray, r_wall: np.ndarray, ok: np.ndarray
    ) -> float:
        """This patient's muscle HU, measured 2-6 mm inside the wall line.

        The upper quartile, because the thin wall muscles are diluted by partial volume with fat.
        """
        k = (r_wall / geo.step_mm).astype(int)
        offs = np.arange(int(2.0 / geo.step_mm), int(6.0 / geo.step_mm) + 1)
        kk = np.clip(k[:, None] - offs[None, :], 0, len(geo.radii) - 1)[ok]
        vals = geo.read(smooth, geo.sample_number(np.flatnonzero(ok)[:, None], kk))
        lo, hi = _GEOMETRY.muscle
        vals = vals[(vals >= lo) & (vals <= hi)]
        return float(np.percentile(vals, 75)) if vals.size else 45.0

    def _trace_wall_inner(
        self,
        geo: _RayGeometry,
        smooth: np.ndarray,
        coarse_hu: np.ndarray,
        r_wall: np.ndarray,
        posterior: np.ndarray,
        organ_hu: float,
        muscle_ref: float,
    ) -> np.ndarray:
        """Radius (mm) of the inner surface of the wall/back muscle compartment on every ray."""
        step = geo.step_mm
        back = geo.angle_to(posterior) < np.deg2rad(70)
        k0 = (r_wall / step).astype(int)
        end = np.zeros(geo.n, dtype=int)
        closed = np.zeros(geo.n, dtype=bool)
        # the back and the wall are walked apart: the back's walks are longer, and no organ ends them
        for side in (True, False):
            rays = np.flatnonzero(back == side)
            if rays.size:
                end[rays], closed[rays] = self._walk_muscle(
                    geo, smooth, coarse_hu, rays, k0[rays], side, organ_hu, muscle_ref
                )
        thick = end * step
        # where an organ or bowel lies on the wall without any plane the ray runs on to the cap: take the
        # thickness of the nearest rays that did find the wall's inner surface
        if closed.any() and not closed.all():
            idx = np.arange(geo.n)
            thick = np.where(closed, thick, np.interp(idx, idx[closed], thick[closed], period=geo.n))
        # single rays running into bowel through a thin plane: cap by the neighbours' median
        # (the back is left alone: its depth changes fast from the flank to the paraspinal muscles)
        med = _circular_median(thick, int(geo.n * 10 / 360))
        thick = np.where(back, thick, np.minimum(thick, med + 5.0))
        return r_wall - thick

    def _walk_muscle(
        self,
        geo: _RayGeometry,
        smooth: np.ndarray,
        coarse_hu: np.ndarray,
        rays: np.ndarray,
        k0: np.ndarray,
        back: bool,
        organ_hu: float,
        muscle_ref: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Walking rays `rays` of the back (or of the wall) inwards from the wall line (sample `k0`): how many
        samples of wall/back muscle, and whether the walk ended on the muscle's inner surface (a fat plane,
        bowel gas, an organ's HU step), not on the thickness cap."""
        p = self.params
        step = geo.step_mm
        lo = _GEOMETRY.muscle[0]
        cap = int((p.back_max_mm if back else p.wall_max_mm) / step)
        walk = _InwardWalk(k0, np.maximum(k0 - cap, 0), len(geo.radii), rays=rays)
        v, vc = walk.sample(geo, smooth), walk.sample(geo, coarse_hu)
        musc = (v >= lo) & (vc <= organ_hu)
        gas = v < _GEOMETRY.imat[0]
        limit = walk.length
        if not back:
            # an organ lying on the wall (liver, spleen, enhanced bowel) is brighter than the patient's
            # muscle even when both are inside the muscle window: stop at a sustained brighter stretch,
            # measured against this ray's own wall HU (first 2-5 mm) when that is the brighter
            head = vc[:, round(2.0 / step) : round(5.0 / step)]
            head_ok = walk.valid[:, round(2.0 / step) : round(5.0 / step)] & (head >= lo) & (head <= organ_hu)
            median = _row_medians(head, head_ok)
            base = np.where(head_ok.any(axis=1), np.maximum(muscle_ref, median), muscle_ref)
            # thresholds as float32, as a float32 profile compares with a Python float
            brighter = walk.valid & (vc > (base + p.organ_step_hu).astype(np.float32)[:, None])
            limit = walk.first_run_start(brighter, round(4.0 / step), walk.length)
            # the edge is halfway up the HU step, before the bright stretch begins
            half = vc > (base + p.organ_step_hu / 2).astype(np.float32)[:, None]
            limit = np.where((limit > 0) & (limit < walk.length), walk.after_last(~half, limit), limit)
        # runs of wall muscle; short fat (intermuscular) or bright (vessel) interruptions stay inside the wall
        starts, run_end, run_gas = walk.runs(musc, gas)
        gap = round((p.back_gap_mm if back else p.wall_gap_mm) / step)
        at = walk.index[None, :]
        stopping = starts & ~musc & (at < limit[:, None]) & ((run_end - at > gap) | run_gas)
        stop = np.where(stopping.any(axis=1), np.argmax(stopping, axis=1), walk.width)
        closed = stopping.any(axis=1) | (starts & (at >= limit[:, None])).any(axis=1)
        last_muscle = starts & musc & (at < np.minimum(stop, limit)[:, None])
        has = last_muscle.any(axis=1)
        last = walk.width - 1 - np.argmax(last_muscle[:, ::-1], axis=1)
        return np.where(has, np.minimum(run_end[np.arange(len(rays)), last], limit), 0), closed

    @staticmethod
    def _psoas(
        smooth: np.ndarray,
        region: np.ndarray,
        spine: np.ndarray,
        vertebra: np.ndarray,
        ap: np.ndarray,
        lateral: np.ndarray,
        spacing: tuple[float, float],
        organ_hu: float,
        p_reach_mm: float,
    ) -> np.ndarray:
        """Psoas and back muscles: muscle-HU components touching the vertebra (body, arch and processes).

        Tissue in front of the vertebral body (aorta, vena cava, crura, lymph nodes) is excluded.
        """
        if not spine.any():
            return np.zeros_like(region)
        # stricter than the wall's organ limit: these components must not leak into liver or kidney
        # (behind the vertebral body, the back muscles are bounded by the wall instead)
        near = near_mm(vertebra, p_reach_mm, spacing) | (ap > 20.0)
        cand = region & near & (smooth >= _GEOMETRY.muscle[0]) & (smooth <= organ_hu) & ~vertebra
        front = ap[spine].min()
        half_width = np.percentile(lateral[spine & (ap <= 0)], 98) if (spine & (ap <= 0)).any() else 0.0
        cand &= (ap >= front - 5.0) & ~((ap < 0) & (lateral < 0.8 * half_width))
        cand = open_mm(cand, 3.0, spacing)
        if not cand.any():
            return cand
        near_spine = near_mm(vertebra, 4.0, spacing)
        box = bounding_box(cand)  # the components, labelled in their box
        lab, n = ndi.label(cand[box])
        keep = np.zeros(n + 1, bool)
        keep[lab[near_spine[box]]] = True
        keep[0] = False
        out = np.zeros_like(cand)
        out[box] = keep[lab]
        return muscle_compartments(out, spacing, closing_mm=2.0) | dilate_mm(out, 1.0, spacing)


class _InwardWalk:
    """Rays of `samples` samples read inwards, from sample `start` down to just above `stop` (rays `rays`,
    all by default; ray j has `length[j]` samples, the rest of its row is padding): the per-ray loops of the
    wall tracing, as arrays. `at` is the sample each position reads."""

    def __init__(
        self, start: np.ndarray, stop: np.ndarray, samples: int, rays: np.ndarray | None = None
    ) -> None:
        first = np.minimum(start, samples - 1)  # as a slice start beyond the row is clipped
        self.rays = np.arange(len(start)) if rays is None else rays
        self.length = np.maximum(first - stop, 0)
        self.width = max(int(self.length.max(initial=0)), 1)
        self.index = np.arange(self.width)
        self.valid = self.index[None, :] < self.length[:, None]
        self.at = np.clip(first[:, None] - self.index[None, :], 0, samples - 1)

    def sample(self, geo: _RayGeometry, image: np.ndarray) -> np.ndarray:
        """The walk's samples of an image (NaN on the padding)."""
        keep = np.flatnonzero(self.valid)
        out = np.full(self.valid.shape, np.nan, dtype=np.float32)
        np.put(
            out,
            keep,
            geo.read(image, geo.sample_number(self.rays[keep // self.width], self.at.ravel()[keep])),
        )
        return out

    def first_run_start(self, mask: np.ndarray, min_length: int, default: np.ndarray) -> np.ndarray:
        """Per ray, where the first run of `mask` at least `min_length` long starts (`default` if none)."""
        long = mask.copy()
        long[:, 1:] &= ~mask[:, :-1]  # where a run starts
        width = mask.shape[1]
        for k in range(1, min_length):  # and goes on for k more samples
            long[:, : max(width - k, 0)] &= mask[:, k:]
            long[:, max(width - k, 0) :] = False
        return np.where(long.any(axis=1), np.argmax(long, axis=1), default)

    def after_last(self, mask: np.ndarray, before: np.ndarray) -> np.ndarray:
        """Per ray, 1 + the last sample below `before` where `mask` holds (0 if none)."""
        hit = mask & (self.index[None, :] < before[:, None])
        return np.where(hit.any(axis=1), self.width - np.argmax(hit[:, ::-1], axis=1), 0)

    def runs(self, mask: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Runs of `mask` along each ray: where each starts, and at its start the sample after its end and
        whether `flag` holds anywhere in it."""
        change = np.ones_like(mask)
        change[:, 1:] = mask[:, 1:] != mask[:, :-1]
        starts = change & self.valid
        run = np.cumsum(starts, axis=1) - 1 + (np.arange(len(mask)) * self.width)[:, None]
        ids = run[self.valid]
        n = len(mask) * self.width
        size = np.bincount(ids, minlength=n)
        flagged = np.bincount(ids, weights=flag[self.valid], minlength=n) > 0
        run_end = np.where(starts, self.index[None, :] + size[run], 0)
        return starts, run_end, np.where(starts, flagged[run], False)


def _row_medians(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """np.median of each row's kept values, in the values' dtype (NaN for a row without any)."""
    ordered = np.sort(np.where(keep, values, np.inf), axis=1)
    n = keep.sum(axis=1)
    rows = np.arange(len(values))
    upper = ordered[rows, np.minimum(n // 2, values.shape[1] - 1)]
    lower = ordered[rows, np.maximum(n // 2 - 1, 0)]
    median = np.where(n % 2 == 1, upper, (lower + upper) / 2)
    return np.where(n > 0, median, np.nan).astype(float)


def _pseudo_angle(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A cheap stand-in for the angle of (y, x) in [0, 2 pi): in [0, 4), one per quadrant, and monotone.

    In place in one array (it runs on every pixel of the body's box): y / (|x| + |y|) (0 at the origin),
    4 + that for x >= 0 > y, 2 - that for x < 0."""
    q = np.abs(x) + np.abs(y)
    q[~(q > 0)] = 1
    np.divide(y, q, out=q)
    np.add(q, 4, out=q, where=(x >= 0) & (y < 0))
    np.subtract(2, q, out=q, where=x < 0)
    return q


class _RayGeometry:
    """Rays from a centre point in a body, sampled every `step_mm` (mm), for radial profiles and star-shaped
    masks; `skin_mm` is each ray's distance to its first exit from the body."""

    step_mm = 0.5

    def __init__(
        self, centre: tuple[float, float], body: np.ndarray, spacing: tuple[float, float], n: int
    ) -> None:
        shape = body.shape
        self.n = n
        self.theta = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        extent = (
            np.hypot(
                max(centre[0], shape[0] - centre[0]) * spacing[0],
                max(centre[1], shape[1] - centre[1]) * spacing[1],
            )
            + 1.0
        )
        self.radii = np.arange(0.0, extent, self.step_mm)
        # every sample's pixel coordinates (y, x), centre + (sin, cos) * radius / spacing, computed in place:
        # temporaries and a stacked copy of these 2 x 720 x ~1000 float64 cost more than the arithmetic
        self.coords = np.empty((2, n, len(self.radii)))
        for axis, unit in enumerate((np.sin(self.theta), np.cos(self.theta))):
            np.multiply(unit[:, None], self.radii[None, :], out=self.coords[axis])
            self.coords[axis] /= spacing[axis]
            self.coords[axis] += centre[axis]
        # each pixel's offset (mm) from the centre: a column of rows and a row of columns, broadcast
        self._py = ((np.arange(shape[0], dtype=np.float32) - centre[0]) * spacing[0])[:, None]
        self._px = ((np.arange(shape[1], dtype=np.float32) - centre[1]) * spacing[1])[None, :]
        self.pixel_radius = np.hypot(self._py, self._px)

        # samples nearer the centre than any background pixel and the image's edge are in the body, those
        # farther than any body pixel are not, by more than the half pixel diagonal that rounding to the
        # nearest pixel can move them: only the samples in between are read off the body
        rounding = 0.5 * np.hypot(*spacing) + 1e-3
        clear = min(
            np.min(self.pixel_radius, where=~body, initial=np.inf),
            centre[0] * spacing[0],
            (shape[0] - 1 - centre[0]) * spacing[0],
            centre[1] * spacing[1],
            (shape[1] - 1 - centre[1]) * spacing[1],
        )
        k0 = max(int((clear - rounding) / self.step_mm), 0)
        k1 = int((np.max(self.pixel_radius, where=body, initial=0.0) + rounding) / self.step_mm) + 1
        inside = np.zeros(self.coords.shape[1:], dtype=bool)
        inside[:, :k0] = True
        mask = body.astype(np.float32)
        inside[:, k0:k1] = ndi.map_coordinates(mask, self.coords[:, :, k0:k1], order=0, mode="constant") > 0.5
        first_out = np.argmin(inside, axis=1)
        first_out[inside.all(axis=1)] = inside.shape[1]
        self.skin_mm = np.maximum(first_out - 1, 0) * self.step_mm
        self._read: dict[int, np.ndarray] = {}

        # each pixel's sector of the plane by a cheap stand-in for its angle, and the rays that can hold its
        # angle (those in the sector, and two more either side for rounding): star masks then need the
        # exact angle only of pixels near their outline
        sectors = 256
        angle = _pseudo_angle(self._py, self._px)
        angle *= sectors / 4
        self._sector = np.minimum(angle, sectors - 1, out=angle).astype(int)
        ray_angle = _pseudo_angle(np.sin(self.theta), np.cos(self.theta))
        first = np.searchsorted(ray_angle, np.arange(sectors + 1) * (4 / sectors))
        span = np.arange(-3, int(np.diff(first).max()) + 3)
        self._sector_rays = (first[:-1, None] + np.minimum(span[None, :], np.diff(first)[:, None] + 2)) % n

    def sample_number(self, ray: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Numbers of the samples `index` of rays `ray`, in ray-major order (as `read` takes them)."""
        return ray * len(self.radii) + index

    def read(self, image: np.ndarray, number: np.ndarray) -> np.ndarray:
        """`image` (bilinear, -1024 outside) at the samples numbered `number` (any shape). Each sample of an
        image is interpolated once, when first read: the tracing reads only parts of the rays."""
        if id(image) not in self._read:
            self._read[id(image)] = np.full(self.coords[0].size, np.nan, dtype=np.float32)
        known = self._read[id(image)]
        values = known[number]
        new = np.isnan(values)
        if new.any():
            at = np.take(self.coords.reshape(2, -1), number[new], axis=1)
            values[new] = ndi.map_coordinates(
                np.asarray(image, dtype=np.float32), at, order=1, mode="constant", cval=-1024.0
            )
            known[number[new]] = values[new]
        return values

    def angle_to(self, direction: np.ndarray) -> np.ndarray:
        """Angle (rad) between each ray and a unit direction (y, x) in mm space."""
        cos = np.sin(self.theta) * direction[0] + np.cos(self.theta) * direction[1]
        return np.arccos(np.clip(cos, -1.0, 1.0))

    def star_mask(self, radius_mm: np.ndarray) -> np.ndarray:
        """Pixels inside the star-shaped outline with radius `radius_mm[j]` on ray j (linear in between)."""
        radius = np.maximum(radius_mm, 0.0)
        # within its sector's smallest radius a pixel is inside, beyond the largest outside (with a margin
        # far above rounding); the others are decided by their angle
        near = radius[self._sector_rays]
        low, high = (near.min(axis=1) - 1e-3)[self._sector], (near.max(axis=1) + 1e-3)[self._sector]
        out = self.pixel_radius <= low
        unsure = np.flatnonzero(~out & (self.pixel_radius <= high))
        rows, cols = np.divmod(unsure, out.shape[1])
        theta = np.mod(np.arctan2(self._py[rows, 0], self._px[0, cols]), 2 * np.pi)
        r = np.interp(theta, self.theta, radius, period=2 * np.pi)
        np.put(out, unsure, self.pixel_radius.ravel()[unsure] <= r)
        return out


__all__ = ["ALGORITHM_VERSION", "ThresholdEngine", "ThresholdParams"]
