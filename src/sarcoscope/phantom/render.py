"""Paint one axial cross-section of an `Anatomy` as a tissue-class map, then turn it into HU and labels.

Painting works on small bounding-box windows, so a 512x512 section costs a few tens of milliseconds.
The label definition (module docstring of `sarcoscope.phantom`) follows the reference protocol of the real
data: HU thresholds inside the compartments, with partial-volume pixels given to the tissue they blur from.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.conventions import DEFAULT_HU_RANGES, Label
from sarcoscope.phantom.anatomy import Anatomy, Blob, Vertebra
from sarcoscope.phantom.habitus import Exam

# Tissue classes of the painted (pre-blur) map.
(AIR, SAT, SKIN, MUS, MUS_PS, MUS_ES, IMAT, VAT, FASC, BWALL, GAS, FLUID, OCON, STOOL, SFAT, COLLAPSED,
 KCOR, KMED, URINE, LIVER, SPLEEN, AORTA, IVC, VESSEL, CALC, CORT, CANC, CANAL, DISC, TABLE, LUNG,
 BLOOD) = range(32)  # fmt: skip
EPIDURAL = 32  # fat inside the spinal canal: fat HU, but in no labelled compartment
N_CLASSES = 33
MUSCLES = (MUS, MUS_PS, MUS_ES)


def _lut(classes: tuple[int, ...]) -> np.ndarray:
    t = np.zeros(N_CLASSES, bool)
    t[list(classes)] = True
    return t


OVER_CAVITY = _lut((VAT,))
OVER_MUSCLE = _lut(MUSCLES)
OVER_NOT_BONE = _lut(tuple(c for c in range(N_CLASSES) if c not in (CORT, CANC, DISC, AIR, TABLE, SKIN)))
#: Fat compartment of each class (label id), 0 for none.
FAT_LABEL = np.zeros(N_CLASSES, np.uint8)
FAT_LABEL[SAT], FAT_LABEL[VAT], FAT_LABEL[IMAT] = Label.SAT, Label.VAT, Label.IMAT
MUSCLE_COMPARTMENT = _lut((*MUSCLES, IMAT))
#: Soft-tissue classes whose partial-volume edge pixels may take a neighbouring fat label.
EDGE_TO_FAT = _lut((*MUSCLES, SKIN, FASC, BWALL, COLLAPSED, KCOR, LIVER, SPLEEN, AORTA, IVC, VESSEL))


def hu_table(anat: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean HU and texture amplitude for this patient and contrast phase."""
    h, ex = anat.habitus, anat.exam
    mean = np.zeros(N_CLASSES, np.float32)
    tex = np.zeros(N_CLASSES, np.float32)
    mu = 57.0 - 32.0 * h.myosteatosis + rng.normal(0, 3)
    kv = {80.0: 1.0, 100.0: 0.5}.get(ex.kvp, 0.0)  # low kVp: darker fat, brighter iodine
    sat = rng.normal(-101, 5) - 8 * kv
    enh = {"none": 0.0, "arterial": 1.0, "portal": 0.75}[ex.contrast] * (1 + 0.35 * kv)
    art = ex.contrast == "arterial"
    vals = {
        AIR: -1000, SAT: sat, SKIN: rng.uniform(15, 55), MUS: mu, MUS_PS: mu + rng.uniform(0, 7),
        MUS_ES: mu - rng.uniform(0, 8) * (0.3 + h.myosteatosis), IMAT: sat + rng.uniform(3, 12),
        VAT: sat + rng.uniform(3, 12), FASC: rng.uniform(10, 45), BWALL: 40 + 45 * enh + rng.normal(0, 8),
        GAS: -1000, FLUID: rng.uniform(2, 20), OCON: rng.uniform(150, 450), STOOL: rng.uniform(5, 45),
        SFAT: rng.uniform(-110, -60), COLLAPSED: 45 + 35 * enh + rng.normal(0, 6),
        KCOR: 32 + (190 if art else 140) * enh + rng.normal(0, 15),
        KMED: 30 + (60 if art else 140) * enh + rng.normal(0, 15), URINE: rng.uniform(3, 15),
        LIVER: 58 + 50 * enh * (0.4 if art else 1.0) + rng.normal(0, 6),
        SPLEEN: 48 + 70 * enh + rng.normal(0, 6),
        AORTA: 42 + (280 if art else 130) * enh + rng.normal(0, 15),
        IVC: 40 + (40 if art else 110) * enh + rng.normal(0, 10), VESSEL: 40 + 140 * enh,
        CALC: rng.uniform(350, 800), CORT: rng.uniform(650, 1000),
        CANC: 230 - 1.3 * max(h.age_years - 30, 0) + rng.normal(0, 20), CANAL: rng.uniform(5, 25),
        DISC: rng.uniform(65, 100), TABLE: rng.uniform(250, 700), LUNG: rng.uniform(-880, -800),
        BLOOD: 42 + 150 * enh,
    }  # fmt: skip
    for k, v in vals.items():
        mean[k] = v
    mean[EPIDURAL] = mean[VAT]
    for k, v in {
        MUS: 9,
        MUS_PS: 8,
        MUS_ES: 10,
        SAT: 7,
        VAT: 8,
        IMAT: 5,
        LIVER: 5,
        SPLEEN: 5,
        KCOR: 10,
        KMED: 10,
        BWALL: 8,
        COLLAPSED: 12,
        STOOL: 25,
        CANC: 45,
        DISC: 8,
        LUNG: 25,
        FLUID: 3,
        OCON: 25,
        CORT: 80,
    }.items():
        tex[k] = v
    tex[EPIDURAL] = tex[VAT]
    return mean, tex


@dataclass
class Grid:
    """Pixel grid of one section: mm coordinates of columns (x) and rows (y) in the body frame."""

    psy: float
    psx: float
    x: np.ndarray  # (nx,) mm
    y: np.ndarray  # (ny,) mm

    @classmethod
    def make(cls, n: int, psy: float, psx: float, cx_mm: float, cy_mm: float) -> Grid:
        """`cx_mm, cy_mm`: body-frame position of the image centre."""
        c = (n - 1) / 2.0
        x = ((np.arange(n) - c) * psx + cx_mm).astype(np.float32)
        y = ((np.arange(n) - c) * psy + cy_mm).astype(np.float32)
        return cls(psy, psx, x, y)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.y), len(self.x))

    def crop(self, x0: float, x1: float, y0: float, y1: float) -> tuple[Grid, slice, slice]:
        """The part of the grid inside a mm box (where the body is), with its slices into the full grid."""
        j0, j1 = (int(v) for v in np.searchsorted(self.x, [x0, x1]))
        i0, i1 = (int(v) for v in np.searchsorted(self.y, [y0, y1]))
        j1, i1 = max(j1, j0 + 2), max(i1, i0 + 2)
        j0, i0 = min(j0, len(self.x) - 2), min(i0, len(self.y) - 2)
        sy, sx = slice(i0, i1), slice(j0, j1)
        return Grid(self.psy, self.psx, self.x[sx], self.y[sy]), sy, sx

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """Radius (mm) and angle-table index of every pixel about the body-frame origin (cached)."""
        cached = getattr(self, "_polar", None)
        if cached is None:
            X, Y = self.x[None, :], self.y[:, None]
            rho = np.sqrt(X * X + Y * Y)
            ti = ((np.arctan2(Y, X) + np.pi) * (N_THETA / (2 * np.pi))).astype(np.int32) % N_THETA
            cached = (rho, ti)
            self._polar = cached
        return cached


class Painter:
    """Bounding-box painting of simple shapes into a class map (and an optional vertebra-id map)."""

    def __init__(self, grid: Grid, with_vid: bool) -> None:
        self.g = grid
        self.cls = np.zeros(grid.shape, np.uint8)
        self.vid = np.zeros(grid.shape, np.uint8) if with_vid else None

    def window(self, x0: float, x1: float, y0: float, y1: float):
        g = self.g
        j0, j1 = np.searchsorted(g.x, [x0, x1])
        i0, i1 = np.searchsorted(g.y, [y0, y1])
        if j1 <= j0 or i1 <= i0:
            return None
        return slice(i0, i1), slice(j0, j1), g.x[None, j0:j1], g.y[i0:i1, None]

    def put(
        self, sy: slice, sx: slice, mask: np.ndarray, c: int, over: np.ndarray | None, vid: int = 0
    ) -> None:
        win = self.cls[sy, sx]
        m = mask if over is None else mask & over[win]
        win[m] = c
        if self.vid is not None and vid:
            self.vid[sy, sx][m] = vid

    def ellipse(
        self, cx: float, cy: float, a: float, b: float, c: int, over: np.ndarray | None = None,
        ang: float = 0.0,
        lobes: np.ndarray | None = None, vid: int = 0, cut: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        """Filled (optionally lobulated, rotated) ellipse; `cut=(y, sign)` keeps only sign*(Y-y) > 0."""
        if a <= 0.3 or b <= 0.3:
            return
        r = max(a, b) * (1.3 if lobes is not None else 1.0)
        w = self.window(cx - r, cx + r, cy - r, cy + r)
        if w is None:
            return
        sy, sx, X, Y = w
        ca, sa = np.cos(ang), np.sin(ang)
        u = ((X - cx) * ca + (Y - cy) * sa) / a
        v = (-(X - cx) * sa + (Y - cy) * ca) / b
        rr = u * u + v * v
        if lobes is not None:
            phi = np.arctan2(v, u)
            lim = np.ones_like(phi)
            for k, (amp, ph) in enumerate(lobes, start=2):
                lim = lim + amp * np.cos(k * phi + ph)
            mask = rr < lim * lim
        else:
            mask = rr < 1.0
        if cut is not None:
            mask &= (Y - cut[0]) * cut[1] > 0
        self.put(sy, sx, mask, c, over, vid)

    def segment(
        self, p0: tuple[float, float], p1: tuple[float, float], width: float, c: int,
        over: np.ndarray | None = None, vid: int = 0,
    ) -> None:  # fmt: skip
        """Thick line segment with round ends."""
        h = width / 2
        w = self.window(
            min(p0[0], p1[0]) - h, max(p0[0], p1[0]) + h, min(p0[1], p1[1]) - h, max(p0[1], p1[1]) + h
        )
        if w is None:
            return
        sy, sx, X, Y = w
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        L2 = dx * dx + dy * dy or 1e-9
        t = np.clip(((X - p0[0]) * dx + (Y - p0[1]) * dy) / L2, 0, 1)
        d2 = (X - p0[0] - t * dx) ** 2 + (Y - p0[1] - t * dy) ** 2
        self.put(sy, sx, d2 < h * h, c, over, vid)

    def bone_bar(self, p0, p1, width: float, vid: int = 0) -> None:
        self.segment(p0, p1, width, CORT, OVER_NOT_BONE, vid)
        if width > 4.5:
            self.segment(p0, p1, width - 3.0, CANC, _lut((CORT,)), vid)

    def bone_ellipse(self, cx, cy, a, b, vid: int = 0, ang: float = 0.0, rim: float = 1.6, over=None) -> None:
        self.ellipse(cx, cy, a, b, CORT, OVER_NOT_BONE if over is None else over, ang=ang, vid=vid)
        self.ellipse(cx, cy, a - rim, b - rim, CANC, _lut((CORT,)), ang=ang, vid=vid)

    def polyline(self, pts: np.ndarray, width: float, c: int, over: np.ndarray | None) -> None:
        for p0, p1 in pairwise(pts):
            self.segment((p0[0], p0[1]), (p1[0], p1[1]), width, c, over)


def _harm(theta: np.ndarray, harm: np.ndarray) -> np.ndarray:
    out = np.zeros_like(theta)
    for k, (amp, ph) in enumerate(harm, start=1):
        out += amp * np.cos(k * theta + ph * 3.0)
    return out


N_THETA = 720


@dataclass
class Section:
    """What one painted section hands to the HU/label stage and to the truth."""

    cls: np.ndarray
    vid: np.ndarray | None
    #: body-frame mm: posterior vertebral-body wall, paraspinal (erector spinae) centre and lateral edge
    landmarks: dict[str, float] | None = None


def body_box(anat: Anatomy, zs: np.ndarray) -> tuple[float, float, float, float]:
    """A mm box that surely holds the body at every z in `zs` (painting is restricted to it)."""
    half, top = 0.0, 0.0
    for z in zs:
        sw, sd, ss = anat.body_scale(float(z))
        sat = max(anat.sat) * ss * 1.5 + anat.skin + 12
        half = max(half, anat.fw * sw * 1.08 + sat)
        top = max(top, anat.fda * sd * 1.08 + sat)
    return (-half, half, -top, anat.y_table + 1.0)


def render_outline(anat: Anatomy, z: float, grid: Grid) -> np.ndarray:
    """Boolean body mask at `z` on `grid` (no organs): used to frame the image."""
    crop = (grid, slice(None), slice(None))
    return render_section(anat, z, grid, np.random.default_rng(0), crop=crop, outline_only=True).cls > 0


def render_section(
    anat: Anatomy,
    z: float,
    full: Grid,
    rng: np.random.Generator,
    with_vid: bool = False,
    crop=None,
    outline_only: bool = False,
) -> Section:
    """Paint the axial cross-section of `anat` at height `z` (mm) on the grid `full`.

    `crop` = (sub-grid, row slice, column slice) from `Grid.crop(*body_box(...))`; re-using one crop for
    every slice of a volume lets its polar coordinates be computed once.
    """
    if crop is None:
        crop = full.crop(*body_box(anat, np.array([z])))
    grid, csy, csx = crop
    p = Painter(grid, with_vid)
    hab = anat.habitus
    sw, sd, ss = anat.body_scale(z)
    yc = float(anat.spine_y(z))
    slope = anat.spine_slope(z)
    v_near = min(anat.vertebrae, key=lambda v: abs(v.z_mid - z))
    vw, vd = v_near.width, v_near.depth
    zl3 = anat.l3.z_mid
    thorax = z > anat.vertebra("T11").z_mid
    lumbar_w = float(np.clip((anat.vertebra("T10").z_mid - z) / 60.0, 0, 1))  # 0 thorax .. 1 abdomen

    # ---- abdominal wall outline (polar table about the body-frame origin) ----------------------------
    th = np.linspace(-np.pi, np.pi, N_THETA, endpoint=False).astype(np.float32)
    fw, fda = anat.fw * sw, anat.fda * sd
    es_a, es_b = anat.es_size
    es_a, es_b = es_a * (0.7 + 0.3 * lumbar_w), es_b * (0.65 + 0.35 * lumbar_w)
    if z < -30:
        f = float(np.clip((-30 - z) / 60, 0, 1))
        es_a, es_b = es_a * (1 - 0.6 * f), es_b * (1 - 0.75 * f)
    es_top = yc + vd / 2 + 4
    fdp = es_top + es_b * 1.35
    c, s = np.cos(th), np.sin(th)
    b = np.where(s < 0, np.float32(fda), np.float32(fdp))
    pw = anat.wall_p
    ro = 1.0 / (np.abs(c / fw) ** pw + np.abs(s / b) ** pw) ** (1 / pw)
    ro = ro * (1 + _harm(th, anat.wall_harm))
    psi = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))  # 0 anterior midline .. pi posterior midline
    xo = ro * c
    rect = np.abs(xo) < anat.rectus_w
    rect &= psi < np.pi / 2
    tr = anat.rectus_t * (
        0.75 + 0.25 * np.clip(np.cos(np.clip(np.abs(xo) / anat.rectus_w, 0, 1) * np.pi / 2), 0, 1) ** 0.5
    )
    psi_end = np.deg2rad(128)
    taper = np.clip((psi_end - psi) / np.deg2rad(22), 0, 1)
    lateral = 0.5 + 0.5 * np.clip(
        np.sin(np.clip((psi - np.deg2rad(35)) / np.deg2rad(85), 0, 1) * np.pi / 2), 0, 1
    )
    tw = np.where(rect, tr, anat.oblique_t * taper * lateral * (1 + 2.5 * _harm(th, anat.wall_harm)))
    if thorax:
        tw = np.minimum(tw, 7.0)
    semilunar = np.abs(np.abs(xo) - anat.rectus_w) < 1.6
    ld = (psi > np.deg2rad(105)) & (psi < np.deg2rad(160)) & (z < anat.vertebra("T8").z_mid) & (z > -40)
    ld_t = np.where(ld, (2.0 + 4 * anat.ms) * np.sin((psi - np.deg2rad(105)) / np.deg2rad(55) * np.pi), 0)
    sat_a, sat_l, sat_p = (v * ss for v in anat.sat)
    w_ant, w_post = np.clip(-s, 0, 1) ** 2, np.clip(s, 0, 1) ** 2
    sat_t = w_ant * sat_a + w_post * sat_p + (1 - w_ant - w_post) * sat_l
    sat_t = np.maximum(sat_t * (1 + _harm(th, anat.sat_harm)), 2.5) + anat.skin

    X = grid.x[None, :]
    Y = grid.y[:, None]
    rho, ti = grid.polar()
    ro_px = ro[ti]
    depth = ro_px - rho
    inside = depth > 0
    legs = z < -175
    if legs:
        leg_r = fw * 0.42
        inside = ((X - fw * 0.45) ** 2 + (Y - 10) ** 2 < leg_r**2) | (
            (X + fw * 0.45) ** 2 + (Y - 10) ** 2 < leg_r**2
        )
    fascia = inside.copy()
    # Paraspinal masses bulge beyond the ellipse posteriorly (the midline notch).
    mf_a, mf_b = (7 * anat.ms + 3) * (0.6 + 0.4 * lumbar_w), es_b * 0.9
    sides = (-1, 1)
    es_shapes = []
    para = np.zeros(grid.shape, bool)  # the paraspinal muscle bellies (multifidus, erector spinae)
    if not legs:
        for sgn in sides:
            mfx = sgn * (5 + mf_a)
            esx = sgn * (5 + 2 * mf_a + es_a * 0.75)
            es_shapes.append((mfx, es_top + mf_b, mf_a, mf_b, sgn * -0.15))
            es_shapes.append((esx, es_top + es_b, es_a, es_b, sgn * -0.25))
        for ex, ey, ea, eb, ang in es_shapes:
            w = p.window(ex - ea - 1, ex + ea + 1, ey - ea - eb, ey + ea + eb)
            if w is None:
                continue
            sy, sx, Xw, Yw = w
            ca, sa = np.cos(ang), np.sin(ang)
            u = ((Xw - ex) * ca + (Yw - ey) * sa) / ea
            v = (-(Xw - ex) * sa + (Yw - ey) * ca) / eb
            para[sy, sx] |= u * u + v * v < 1
    fascia |= para
    ld_px = ld_t[ti]
    fascia |= (depth > -ld_px) & (ld_px > 0)

    # ---- body = fascia region grown by the SAT thickness; skin; flattened on the table -----------------
    dist = _distance_outside(fascia, grid)
    sat_px = sat_t[ti]
    # lying on the table: the soft tissue flattens (SAT thins toward the contact line), no sharp corner
    ramp = np.clip((Y - (anat.y_table - 25.0)) / 25.0, 0, 1)
    body = dist < sat_px * (1 - 0.6 * ramp * ramp) + 6.0 * ramp * ramp
    body &= Y < anat.y_table  # noqa: SIM300 (Y is the row-coordinate array)
    if outline_only:
        return Section(cls=body.astype(np.uint8), vid=None)
    cls = p.cls
    cls[body] = SAT
    skin = (dist > sat_px - anat.skin) | (Y > anat.y_table - anat.skin)  # noqa: SIM300
    cls[body & skin] = SKIN
    cls[fascia] = VAT
    # superficial (Scarpa's) fascia: a thin, interrupted layer inside thick SAT, with fibrous septa
    sf = anat.superficial_fascia * sat_px
    layer = (np.abs(dist - sf) < 0.45) & (cls == SAT) & (sat_px > 12)
    layer &= _harm(th, anat.sat_harm * 6)[ti] > -0.15
    cls[layer] = FASC
    sat_idx = np.flatnonzero(cls == SAT)
    if sat_idx.size:
        nx = cls.shape[1]
        for k in rng.choice(sat_idx, size=int(rng.integers(8, 30))):
            x0, y0 = float(grid.x[k % nx]), float(grid.y[k // nx])
            ang = np.arctan2(y0, x0) + rng.normal(0, 0.5)
            L = rng.uniform(3, 15)
            p.segment(
                (x0, y0),
                (x0 + L * np.cos(ang), y0 + L * np.sin(ang)),
                rng.uniform(0.4, 0.9),
                FASC,
                _lut((SAT,)),
            )
        for k in rng.choice(sat_idx, size=int(rng.integers(3, 15))):
            r = rng.uniform(0.6, 1.6)
            p.ellipse(float(grid.x[k % nx]), float(grid.y[k // nx]), r, r, VESSEL, _lut((SAT,)))

    # ---- wall muscles: rectus, obliques (three layers), latissimus ----------------------------------
    if not legs:
        tw_px = tw[ti]
        frac = np.where(tw_px > 0, depth / np.maximum(tw_px, 1e-3), 2.0)
        wall = (depth > 0) & (frac < 1) & (tw_px > 0.5)
        rect_px = rect[ti]
        m = wall & rect_px & (np.abs(X) > anat.linea_alba / 2)
        cls[m] = MUS
        cls[wall & rect_px & (np.abs(X) <= anat.linea_alba / 2)] = SAT  # fat between the recti
        cls[wall & rect_px & (np.abs(X) <= 0.6)] = FASC  # linea alba
        obl = wall & ~rect_px
        cls[obl] = MUS
        pl = anat.fat_plane / np.maximum(tw_px, 1.0)
        plane = obl & (((frac > 0.33) & (frac < 0.33 + pl)) | ((frac > 0.72) & (frac < 0.72 + pl)))
        cls[plane] = IMAT
        cls[wall & semilunar[ti]] = FASC
        cls[(depth <= 0) & (depth > -ld_px) & (ld_px > 0)] = MUS
    else:
        for sgn in sides:
            p.ellipse(sgn * fw * 0.45, 10, fw * 0.42 - 2, fw * 0.42 - 2, MUS, OVER_CAVITY)

    # ---- organs above/below the diaphragm --------------------------------------------------------------
    t9 = anat.vertebra("T9")
    dome_r = t9.z_mid + 5
    if z > anat.vertebra("T12").z_lo - 40 and not legs:
        zd = (
            dome_r
            - 45 * ((np.abs(X) - 0.35 * fw) / (0.6 * fw)) ** 2
            - 85 * np.clip((Y + 10) / (fdp + 10), 0, 1) ** 2
        )
        zd = zd - np.where(X > 0, 12.0, 0.0)
        lung = (zd < z) & (cls == VAT) & (np.abs(X) > 22 + 10 * (Y < yc))  # noqa: SIM300
        lung &= depth > np.where(rect_px, 10, 6)
        cls[lung] = LUNG
        heart_s = float(np.sqrt(max(1 - ((z - (t9.z_mid + 55)) / 65) ** 2, 0.0)))
        if heart_s > 0:
            p.ellipse(15, -fda * 0.25, 58 * heart_s, 48 * heart_s, BLOOD, _lut((VAT, LUNG)), ang=-0.4)
    # Liver (right), spleen (left), shrinking toward their lower tips.
    liver_s = float(np.clip((z - anat.liver_bottom) / 110, 0, 1)) * float(
        np.clip((dome_r - z) / 30 + 0.3, 0, 1)
    )
    if liver_s > 0 and not legs:
        lx = -fw * (0.32 + 0.38 * (1 - liver_s) ** 1.5)
        la, lb = fw * 0.6 * liver_s**0.7 + 8, (fda + fdp) * 0.42 * liver_s**0.6 + 8
        if anat.liver_wall:  # the tip reaches the wall; painted over the cavity only, so it stops there
            lx, la = lx - 10 * (1 - liver_s), la + 25 * (1 - liver_s)
        p.ellipse(lx, -fda * 0.1 + 15 * (1 - liver_s), la, lb,
                  LIVER, OVER_CAVITY, ang=-0.3 * (1 - liver_s))  # fmt: skip
        if liver_s > 0.55:  # left lobe, anterior, crossing the midline
            k = (liver_s - 0.55) / 0.45
            p.ellipse(
                fw * 0.05, -fda * 0.55, fw * 0.45 * k + 5, fda * 0.3 * k + 5, LIVER, OVER_CAVITY, ang=0.25
            )
    t11 = anat.vertebra("T11")
    spl = float(np.clip(1 - abs(z - t11.z_lo) / 55, 0, 1))
    if spl > 0:
        p.ellipse(fw * 0.62, yc - 5, 32 * spl + 5, 45 * spl + 5, SPLEEN, OVER_CAVITY, ang=0.6)

    # ---- retroperitoneal muscles -------------------------------------------------------------------
    l1 = anat.vertebra("L1")
    psoas_s = float(np.clip((l1.z_hi - z) / 70, 0, 1.0)) * (1 + 0.25 * np.clip((zl3 - z) / 60, 0, 1))
    if z < -10:
        psoas_s *= float(np.clip(1 + (z + 10) / 200, 0.4, 1))
    w = float(np.clip((l1.z_lo - z) / 30, 0, 1))  # the patient's psoas shape develops below L1
    ps_fwd, ps_long = w * anat.psoas_shape[0], 1 + w * (anat.psoas_shape[1] - 1)
    ps_a, ps_b = (11 * anat.ms + 6) * psoas_s / ps_long**0.5, (14 * anat.ms + 7) * psoas_s * ps_long
    ql_s = float(np.clip((l1.z_hi + 10 - z) / 40, 0, 1) * np.clip((z - anat.iliac_crest) / 25, 0, 1))
    tp_len = 18 + 6 * max(1 - abs(z - zl3) / 60, 0)
    for sgn in sides:
        if psoas_s > 0.05 and not legs:
            pxc = sgn * (vw / 2 + ps_a * 0.85 + (0 if z > -20 else (-20 - z) * 0.25))
            pyc = yc + 4 + ps_b * (0.25 - ps_fwd) - (0 if z > -20 else (-20 - z) * 0.3)
            p.ellipse(pxc, pyc, ps_a, ps_b, MUS_PS, OVER_CAVITY, ang=sgn * 0.45)
        if ql_s > 0.05 and not thorax:
            qa, qb = (11 * anat.ms + 5) * ql_s, (4 * anat.ms + 3) * ql_s
            qx = sgn * (vw / 2 + tp_len + qa * 0.35)
            p.ellipse(qx, yc + vd / 2 + 12, qa, qb, MUS_PS, _lut((VAT, MUS_ES)), ang=sgn * 0.55)
    # Paraspinals (painted over the cavity class inside the fascia union).
    for ex, ey, ea, eb, ang in es_shapes:
        p.ellipse(ex, ey, ea, eb, MUS_ES, _lut((VAT, SKIN, SAT)), ang=ang)
    # Thoracolumbar fat pocket behind the lamina (IMAT by the reference convention).
    if not legs and not thorax:
        for sgn in sides:
            r = 2.0 + 5.0 * hab.myosteatosis * rng.random() + 2.5 * hab.adiposity
            p.ellipse(sgn * (vw * 0.22 + 4), yc + vd / 2 + 14, r, r * 1.3, IMAT, _lut((MUS_ES, VAT)))
    landmarks = None
    if not legs:
        # Behind the vertebral body, inside the thoracolumbar fascia, the fat between the paraspinals, the
        # posterior arch and psoas is intermuscular (IMAT), not visceral: done before kidneys and bowel,
        # which are painted over VAT only, so they stay in front of this compartment.
        y_wall, (esx, ey) = yc + vd / 2, es_shapes[1][:2]
        behind = _posterior_compartment(para, X, Y, y_wall, abs(esx), ey)
        cls[behind & (cls == VAT)] = IMAT
        landmarks = {
            "vertebral_body_posterior_y": y_wall,
            "paraspinal_centre_x": abs(esx),
            "paraspinal_centre_y": ey,
            "paraspinal_lateral_x": float(np.abs(X)[:, para.any(axis=0)].max(initial=abs(esx))),
        }
    _imat(p, anat, rng, es_shapes)

    # ---- kidneys ------------------------------------------------------------------------------------
    for side, (kx, ky, kz, hl, size) in anat.kidney.items():
        f = 1 - ((z - kz) / hl) ** 2
        if f <= 0 or size == 0:
            continue
        ks = np.sqrt(f) * size
        ka, kb = 24 * ks + 3, 32 * ks + 3
        ang = (-1 if side == "R" else 1) * 0.7
        kyy = ky + (yc - float(anat.spine_y(kz)))
        p.ellipse(kx, kyy, ka, kb, KCOR, _lut((VAT, LIVER, SPLEEN, BWALL, GAS, FLUID, STOOL)), ang=ang)
        p.ellipse(kx, kyy, ka * 0.72, kb * 0.75, KMED, _lut((KCOR,)), ang=ang)
        if ks > 0.55:
            hx = kx - np.sign(kx) * ka * 0.45
            p.ellipse(hx, kyy - kb * 0.15, ka * 0.35, kb * 0.3, VAT, _lut((KMED, KCOR)), ang=ang)
            p.ellipse(
                hx + np.sign(kx) * 2, kyy - kb * 0.1, ka * 0.15, kb * 0.18, URINE, _lut((VAT,)), ang=ang
            )

    # ---- great vessels -------------------------------------------------------------------------------
    z_bif = anat.vertebra("L4").z_mid
    ar = anat.aorta_r * (1 + 0.15 * np.clip((z - zl3) / 200, 0, 1))
    ay = yc - vd / 2 - ar - 2
    if not legs:
        if z > z_bif:
            p.ellipse(anat.aorta_x, ay, ar, ar, AORTA, _lut((VAT, LUNG, BWALL, MUS_PS)))
            if hab.age_years > 55 and rng.random() < 0.6:
                a = rng.uniform(0, 2 * np.pi)
                p.ellipse(
                    anat.aorta_x + ar * np.cos(a) * 0.9,
                    ay + ar * np.sin(a) * 0.9,
                    1.5,
                    1.2,
                    CALC,
                    _lut((AORTA,)),
                )
            p.ellipse(-20 - vw * 0.1, yc - vd / 2 - 9, 13, 8, IVC, _lut((VAT, LUNG, BWALL, MUS_PS)))
            if z < l1.z_hi:  # mesenteric root: SMA / SMV
                p.ellipse(anat.aorta_x - 5, ay - ar - 14, 3.5, 3.5, AORTA, OVER_CAVITY)
                p.ellipse(anat.aorta_x - 17, ay - ar - 12, 5.5, 5, IVC, OVER_CAVITY)
        elif z > -140:
            off = (z_bif - z) * 0.45
            for sgn in sides:
                p.ellipse(sgn * (6 + off), ay + off * 0.3, ar * 0.6, ar * 0.6, AORTA, _lut((VAT, MUS_PS)))
                p.ellipse(
                    sgn * (6 + off) - 4,
                    ay + off * 0.3 + ar * 0.8,
                    ar * 0.7,
                    ar * 0.55,
                    IVC,
                    _lut((VAT, MUS_PS)),
                )

    # ---- bowel -----------------------------------------------------------------------------------------
    for bl in anat.blobs:
        if abs(z - bl.z) < bl.hz:
            _paint_blob(p, bl, z)
    if anat.vat_amount < 0.3 and not thorax:  # cachexia: bowel and mesentery fill the fat planes
        grow_px = round(10.0 * (0.3 - anat.vat_amount) / 0.3 / grid.psx)
        if grow_px > 0:
            gut = _lut((BWALL, COLLAPSED, FLUID, OCON, GAS, STOOL))[cls]
            grown = ndi.binary_dilation(gut, iterations=grow_px) & (cls == VAT)
            cls[grown] = COLLAPSED
    # Bladder in the pelvis.
    bz = -105.0
    bs = 1 - ((z - bz) / 45) ** 2
    if bs > 0:
        p.ellipse(0, -fda * 0.45, 45 * np.sqrt(bs) + 2, 35 * np.sqrt(bs) + 2, URINE, OVER_CAVITY)
        p.ellipse(0, -fda * 0.45, 45 * np.sqrt(bs) + 4.5, 35 * np.sqrt(bs) + 4.5, BWALL, _lut((VAT,)))

    # ---- mesenteric vessels and strands in the visceral fat -----------------------------------------
    if not legs and not thorax:
        root = (anat.aorta_x - 8, ay - ar - 20)
        n_lines = int(rng.integers(10, 35))
        for _ in range(n_lines):
            ang = rng.uniform(0, 2 * np.pi)
            L = rng.uniform(10, 60)
            steps = int(rng.integers(3, 7))
            a_k = ang + np.cumsum(rng.normal(0, 0.5, steps))
            seg = L / steps
            start = (
                np.array(root)
                + rng.normal(0, 25, 2)
                + np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0, 60)
            )
            pts = np.vstack(
                [start, start + np.cumsum(np.column_stack([np.cos(a_k), np.sin(a_k)]) * seg, axis=0)]
            )
            p.polyline(pts, rng.uniform(0.5, 1.3), VESSEL if rng.random() < 0.5 else FASC, OVER_CAVITY)
        for _ in range(int(rng.integers(15, 60))):
            r = rng.uniform(0.8, 3.0)
            p.ellipse(
                rng.uniform(-fw, fw) * 0.8,
                rng.uniform(-fda, yc),
                r,
                r * rng.uniform(0.7, 1.3),
                VESSEL,
                OVER_CAVITY,
            )

    # ---- spine, ribs, pelvis -----------------------------------------------------------------------
    _paint_spine(p, anat, z, yc, slope, float(ro[(3 * N_THETA) // 4]))
    _paint_ribs(p, anat, z, ro, tw, yc)
    _paint_pelvis(p, anat, z, yc, fw, fda)

    # ---- into the full image, with the table beneath the body ----------------------------------------
    out = Painter(full, with_vid)
    out.cls[csy, csx] = cls
    if out.vid is not None and p.vid is not None:
        out.vid[csy, csx] = p.vid
    gap, R, off2, t = anat.table
    t = max(t, 2.2 * full.psy)  # thinner than ~2 pixels, the curved line would break up
    yt = anat.y_table + gap
    for yy, tt in ((yt, t), (yt + off2, t * 0.8)):
        w = out.window(-250, 250, yy - 250**2 / (2 * R) - tt, yy + tt)
        if w is None:
            continue
        sy, sx, Xw, Yw = w
        tab = np.abs(Yw - (yy - (Xw * Xw) / (2 * R))) < tt / 2
        out.put(sy, sx, tab, TABLE, _lut((AIR,)))
    return Section(cls=out.cls, vid=out.vid, landmarks=landmarks)


def _posterior_compartment(
    para: np.ndarray, X: np.ndarray, Y: np.ndarray, y_wall: float, x_centre: float, y_centre: float
) -> np.ndarray:
    """Pixels behind the posterior vertebral-body wall and medial to the paraspinals' lateral edge.

    Row by row the limit is the lateral edge of the muscle bellies; in front of the erector spinae centre it
    is at least the centre (the fat around pedicles, transverse processes and psoas); behind it, the widest
    extent (fat the bellies leave toward the posterolateral wall is inside the thoracolumbar fascia too).
    Retroperitoneal fat lateral to psoas and quadratus, anterior to the erector spinae, stays outside.
    """
    ax = np.abs(X)
    edge = np.where(para, ax, 0.0).max(axis=1)
    widest = float(edge.max(initial=x_centre))
    lim = np.where(Y[:, 0] < y_centre, np.maximum(edge, x_centre), widest)
    return (Y > y_wall) & (ax <= lim[:, None])  # noqa: SIM300 (Y is the row-coordinate array)


def _distance_outside(region: np.ndarray, grid: Grid) -> np.ndarray:
    """Distance (mm) from `region`, computed at half resolution (it only sets the smooth SAT outline)."""
    small = region[::2, ::2]
    d = ndi.distance_transform_edt(~small, sampling=(2 * grid.psy, 2 * grid.psx)).astype(np.float32)
    h, w = region.shape
    rows = np.empty((h, d.shape[1]), np.float32)  # linear interpolation back to full size
    rows[::2] = d
    rows[1:-1:2] = 0.5 * (d[:-1] + d[1:])[: len(rows[1:-1:2])]
    if h % 2 == 0:
        rows[-1] = d[-1]
    full = np.empty((h, w), np.float32)
    full[:, ::2] = rows
    full[:, 1:-1:2] = 0.5 * (rows[:, :-1] + rows[:, 1:])[:, : len(range(1, w - 1, 2))]
    if w % 2 == 0:
        full[:, -1] = rows[:, -1]
    full[region] = 0.0
    return full


def _imat(p: Painter, anat: Anatomy, rng: np.random.Generator, es_shapes: list) -> None:
    """Intermuscular fat: marbling streaks in the paraspinals, dots in every muscle."""
    myo = anat.habitus.myosteatosis
    for ex, ey, ea, eb, _ in es_shapes:
        for _ in range(int(1 + 14 * myo * rng.random() + 4 * myo)):
            x0 = ex + rng.uniform(-0.8, 0.8) * ea
            y0 = ey + rng.uniform(-0.8, 0.8) * eb
            a = rng.normal(np.pi / 2, 0.5) + np.cumsum(rng.normal(0, 0.5, 4))
            L = rng.uniform(2, 7)
            pts = np.vstack(
                [
                    [[x0, y0]],
                    np.array([x0, y0]) + np.cumsum(np.column_stack([np.cos(a), np.sin(a)]) * L, axis=0),
                ]
            )
            p.polyline(pts, rng.uniform(0.6, 1.3 + 1.2 * myo), IMAT, OVER_MUSCLE)
    n_dots = int(3 + 25 * myo**1.5)
    g = p.g
    idx = np.flatnonzero(OVER_MUSCLE[p.cls])
    if idx.size == 0:
        return
    for k in rng.choice(idx, size=n_dots):
        x, y = float(g.x[k % len(g.x)]), float(g.y[k // len(g.x)])
        r = rng.uniform(0.5, 1.5 + 1.5 * myo)
        p.ellipse(x, y, r, r * rng.uniform(0.6, 1.6), IMAT, OVER_MUSCLE)
    for ex, ey, ea, eb, _ in es_shapes[:4]:
        for _ in range(int(40 * myo)):
            r = rng.uniform(0.5, 1.2 + 1.5 * myo)
            p.ellipse(ex + rng.uniform(-1, 1) * ea, ey + rng.uniform(-1, 1) * eb, r, r, IMAT, OVER_MUSCLE)


def _paint_blob(p: Painter, bl: Blob, z: float) -> None:
    f = np.sqrt(max(1 - ((z - bl.z) / bl.hz) ** 2, 0.0))
    a, b = bl.a * (0.35 + 0.65 * f), bl.b * (0.35 + 0.65 * f)
    over = _lut((VAT, BWALL, FLUID, OCON, GAS, STOOL, COLLAPSED))
    content = {"fluid": FLUID, "contrast": OCON, "gas": GAS, "stool": STOOL, "collapsed": COLLAPSED}
    if bl.path is not None:  # loop lying in the plane: a curved tube
        pts = bl.path + np.array([bl.x, bl.y])
        r = min(a, b)
        p.polyline(pts, 2 * r, BWALL, over)
        inner = content[bl.content]
        p.polyline(pts, 2 * (r - bl.wall), inner, _lut((BWALL,)))
        if inner == COLLAPSED:
            p.polyline(pts, 0.5 * (r - bl.wall), FLUID, _lut((COLLAPSED,)))
        return
    p.ellipse(bl.x, bl.y, a, b, BWALL, over, ang=bl.ang, lobes=bl.lobes)
    ia, ib = a - bl.wall, b - bl.wall
    inner = _lut((BWALL,))
    content = content[bl.content]
    if content == COLLAPSED:
        p.ellipse(bl.x, bl.y, ia, ib, COLLAPSED, inner, ang=bl.ang, lobes=bl.lobes)
        p.ellipse(bl.x, bl.y, ia * 0.35, ib * 0.2, FLUID, _lut((COLLAPSED,)), ang=bl.ang)
        return
    p.ellipse(bl.x, bl.y, ia, ib, content, inner, ang=bl.ang, lobes=bl.lobes)
    if (content in (FLUID, OCON, STOOL) and bl.kind != "sb") or content == GAS:
        # supine: gas rises anteriorly (smaller y)
        lvl = bl.y - max(ia, ib) + 2 * max(ia, ib) * (bl.level if content != GAS else 0.9)
        p.ellipse(
            bl.x, bl.y, ia, ib, GAS, _lut((FLUID, OCON, STOOL)), ang=bl.ang, lobes=bl.lobes, cut=(lvl, -1)
        )
        if content == GAS:
            p.ellipse(bl.x, bl.y, ia, ib, FLUID, _lut((GAS,)), ang=bl.ang, lobes=bl.lobes, cut=(lvl, 1))


def _body_shape(
    p: Painter, v: Vertebra, yc: float, cls: int, over: np.ndarray, vid: int, rows: np.ndarray
) -> None:
    """Vertebral body (bean-shaped ellipse) restricted to the rows in `rows` (bool over the window rows)."""
    a, b = v.width / 2, v.depth / 2
    w = p.window(-a, a, yc - b, yc + b)
    if w is None:
        return
    sy, sx, X, Y = w
    m = (X / a) ** 2 + ((Y - yc) / b) ** 2 < 1
    rc = a * 0.42
    m &= X**2 + (Y - (yc + b + rc * 0.55)) ** 2 > rc**2
    m &= rows[sy][:, None]
    p.put(sy, sx, m, cls, over, vid)


def _paint_spine(p: Painter, anat: Anatomy, z: float, yc: float, slope: float, notch_y: float) -> None:
    """Bodies, discs and posterior arch; `notch_y` (mm) is the floor of the midline notch of the back,
    where the spinous processes end under the subcutaneous fat."""
    g = p.g
    verts = anat.vertebrae
    u_rows = z + slope * (g.y - yc)  # position along the column of each row (endplates tilt with the curve)
    v_near = min(verts, key=lambda v: abs(v.z_mid - z))
    all_bone = _lut(tuple(c for c in range(N_CLASSES) if c not in (AIR, TABLE, SKIN)))
    # discs first (slightly larger than the bodies), then bodies with cortical rim and endplates
    for lower, upper in pairwise(verts):
        if not (lower.z_hi - 30 < z < upper.z_lo + 30):
            continue
        rows = (u_rows > lower.z_hi) & (u_rows < upper.z_lo)
        if rows.any():
            mid = Vertebra(
                "disc",
                0,
                "L",
                0,
                0,
                (lower.width + upper.width) / 2 + 2,
                (lower.depth + upper.depth) / 2 + 1.5,
            )
            _body_shape(p, mid, yc, CORT if upper.fused_below else DISC, all_bone, 0, rows)
    for v in verts:
        if not (v.z_lo - 30 < z < v.z_hi + 30):
            continue
        rows = (u_rows >= v.z_lo) & (u_rows <= v.z_hi)
        if rows.any():
            _body_shape(p, v, yc, CORT, all_bone, v.vid, rows)
            inner = (u_rows >= v.z_lo + 1.2) & (u_rows <= v.z_hi - 1.2)
            shrunk = Vertebra(v.name, v.vid, v.kind, 0, 0, v.width - 3.2, v.depth - 3.2)
            _body_shape(p, shrunk, yc, CANC, _lut((CORT,)), v.vid, inner)
    # basivertebral vein notch (darker centre of the posterior body)
    if any((v.z_lo + 5 < z < v.z_hi - 5) for v in verts):
        p.ellipse(0, yc + v_near.depth * 0.3, 3.5, 2.2, DISC, _lut((CANC,)))
    # posterior elements of the vertebra whose arch is at this level
    vd, vw = v_near.depth, v_near.width
    u_post = z + slope * (vd / 2 + 15)
    cy0 = yc + vd / 2
    canal_a, canal_b = vw * 0.22 + 2, vd * 0.25 + 1
    p.ellipse(0, cy0 + canal_b + 1, canal_a, canal_b, CANAL, _lut((VAT, MUS_ES, MUS_PS, IMAT, SAT, LUNG)))
    notch = 0.45 * 0.42 * vw / 2 + 1.0  # anterior epidural fat in the concave posterior wall of the body
    p.ellipse(0, cy0 + canal_b + 1 - notch / 2, canal_a, canal_b + notch / 2, EPIDURAL, _lut((VAT, IMAT)))
    sp_top = cy0 + 2 * canal_b + 3
    sp_len = max(min(anat.es_size[1] * 1.5 + 2, notch_y - 3.0 - sp_top), 6.0)
    if v_near.kind != "S":  # ligamenta flava and the interspinous ligament close the arch between laminae
        soft = _lut((VAT, IMAT))
        for sgn in (-1, 1):
            p.segment((sgn * (canal_a + 3), cy0 + 6), (0, cy0 + 2 * canal_b + 2), 3.5, FASC, soft)
        p.segment((0, sp_top - 2), (0, sp_top + sp_len + 3), 2.5, FASC, soft)
        # supraspinous ligament / thoracolumbar raphe: the notch fat behind it is subcutaneous
        p.segment((-7.0, notch_y), (7.0, notch_y), 1.5, FASC, _lut((VAT, IMAT, SAT)))
    for v in verts:
        f = (u_post - v.z_lo) / v.height
        if f < -1.0 or f > 1.4:
            continue
        vid = v.vid
        thor = v.kind == "T"
        if v.kind == "S":
            if 0.0 <= f <= 1.0:
                k = 1.0 if v.name == "S1" else 0.7
                for sgn in (-1, 1):
                    p.bone_ellipse(
                        sgn * (v.width / 2 + 18 * k), yc + 4, 24 * k, 15 * k, vid=vid, ang=sgn * 0.3
                    )
                p.bone_bar((0, cy0 + 2 * canal_b + 2), (0, cy0 + 2 * canal_b + 14), 6, vid)
                for sgn in (-1, 1):
                    p.bone_bar((sgn * canal_a, cy0 + 2), (sgn * (canal_a + 4), cy0 + 2 * canal_b + 4), 7, vid)
            continue
        if 0.3 <= f <= 0.97:  # pedicles
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 3.5), cy0 + 4, 4.5, 8, vid=vid)
        if (0.5 <= f <= 0.72) if not thor else (0.5 <= f <= 0.95):  # transverse processes
            for sgn in (-1, 1):
                tip = (sgn * (vw / 2 + (22 if not thor else 14)), cy0 + (6 if not thor else 20))
                width = 7.0 if not (v.fused_below and not thor) else 16
                p.bone_bar((sgn * (canal_a + 3), cy0 + 7), tip, width, vid)
        lam = (-0.15, 0.6) if not thor else (-0.3, 0.6)
        if lam[0] <= f <= lam[1]:
            for sgn in (-1, 1):
                p.bone_bar((sgn * (canal_a + 3), cy0 + 8), (0, cy0 + 2 * canal_b + 4), 6, vid)
        sp = (-0.25, 0.55) if not thor else (-1.0, 0.3)
        if sp[0] <= f <= sp[1]:
            length = sp_len if not thor else 26
            p.bone_bar((0, sp_top), (0, sp_top + length), 7 if not thor else 6, vid)
            p.bone_ellipse(0, sp_top + length, 4.5, 5, vid=vid)
        if 0.8 <= f <= 1.3:  # superior articular processes (reaching up beside the disc above)
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 6), cy0 + 14, 5.5, 8, vid=vid, ang=sgn * 0.5)
        if -0.35 <= f <= 0.15:  # inferior articular processes
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 1), cy0 + 20, 5, 7.5, vid=vid, ang=sgn * 0.5)


def _paint_ribs(p: Painter, anat: Anatomy, z: float, ro: np.ndarray, tw: np.ndarray, yc: float) -> None:
    """Each rib runs from its transverse process around the wall, descending ~0.4 mm per mm of arc."""
    over = _lut((VAT, MUS, MUS_PS, MUS_ES, IMAT, LUNG, LIVER, SPLEEN, SAT, FASC))
    for v in anat.vertebrae:
        if not v.rib:
            continue
        t_idx = int(v.name[1:]) if v.kind == "T" else 13
        z_head = v.z_lo + 0.7 * v.height
        if z > z_head + 10 or z < z_head - 260:
            continue
        frac_len, rib_slope = v.rib_length, v.rib_slope
        for sgn in v.rib_sides:
            # neck: from the body to the transverse process tip, at the head level
            tip = (sgn * (v.width / 2 + 14), yc + v.depth / 2 + 20)
            if abs(z - z_head) < 5:
                p.bone_bar((sgn * v.width / 2, yc), tip, 8, 0)
            arc = (z_head - z) / rib_slope
            if arc < 0:
                continue
            th0 = np.arctan2(tip[1], tip[0])
            r_mean = float(np.mean(ro))
            total = np.pi * 1.05 * frac_len * r_mean
            if arc > total:
                continue
            theta = th0 - sgn * arc / r_mean  # runs laterally, then anteriorly
            theta = float(np.angle(np.exp(1j * theta)))
            k = int((theta + np.pi) / (2 * np.pi) * N_THETA) % N_THETA
            rr = ro[k] - max(tw[k] * 0.5, 4.0) - 2.0
            cx, cy = rr * np.cos(theta), rr * np.sin(theta)
            along = min(4.5 / rib_slope, 14.0) * (0.7 if t_idx >= 11 else 1.0)
            p.bone_ellipse(cx, cy, along, 4.2, ang=theta + np.pi / 2, rim=1.4, over=over)


def _paint_pelvis(p: Painter, anat: Anatomy, z: float, yc: float, fw: float, fda: float) -> None:
    crest = anat.iliac_crest
    if z > crest:
        return
    s1 = anat.vertebra("S1")
    # iliac wings: curved plates from the sacroiliac joint to the anterior superior iliac spine
    if -85 < z <= crest:
        f = (crest - z) / (crest + 85)
        lat = fw * (0.78 - 0.25 * f)
        thick = 5 + 9 * f
        for sgn in (-1, 1):
            si = (sgn * (s1.width / 2 + 30 - 8 * f), yc + 8)
            mid = (sgn * lat, yc - 25 - 10 * f)
            ant = (sgn * (lat - 10 - 20 * f), yc - 70 + 10 * f)
            start = si if z < crest - 15 else ((si[0] + mid[0]) / 2, (si[1] + mid[1]) / 2)
            p.bone_bar(start, mid, thick, 0)
            p.bone_bar(mid, ant, thick * 0.8, 0)
            # iliacus inside, gluteus outside the wing
            p.ellipse(sgn * (lat - 28), yc - 30, 18, 28, MUS_PS, OVER_CAVITY, ang=sgn * 0.4)
            p.ellipse(sgn * (lat + 6), yc + 5, 14 + 10 * f, 35, MUS, _lut((VAT, SAT)), ang=sgn * -0.3)
    if -125 < z <= -75:  # acetabulum and femoral head
        for sgn in (-1, 1):
            hx, hy = sgn * fw * 0.6, -5.0
            p.bone_ellipse(hx - sgn * 8, hy, 32, 30, over=_lut((VAT, MUS, MUS_PS, SAT)))
            p.ellipse(hx, hy, 25, 25, FASC, _lut((CORT, CANC)))  # joint space
            p.bone_ellipse(hx, hy, 23, 23, over=_lut((FASC,)))
            p.ellipse(hx + sgn * 26, hy + 35, 28, 40, MUS, _lut((VAT, SAT)))
    if -150 < z <= -115:  # pubic rami and ischium
        for sgn in (-1, 1):
            p.bone_bar((sgn * fw * 0.45, -12), (sgn * 8, -fda * 0.75), 13, 0)
            p.bone_ellipse(sgn * fw * 0.42, 28, 16, 22)
    if z <= -115:  # femora
        for sgn in (-1, 1):
            fx = sgn * (fw * 0.6 - (0 if z > -175 else min((-175 - z) * 0.1, 20)))
            p.bone_ellipse(fx, -5.0 if z > -175 else 10.0, 14, 14, rim=4.5)


@dataclass
class FieldBank:
    """Pre-computed texture and noise fields; a volume re-uses a few of them (flipped) for speed."""

    f1: list[np.ndarray]  # tissue texture (grain ~2.6 px), unit sd
    f2: list[np.ndarray]  # fine texture (stool mottling, trabecular bone), unit sd
    noise: list[np.ndarray]  # correlated noise plus slow shading, in HU
    blur: float

    def hu(self, cls: np.ndarray, mean: np.ndarray, tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Class map -> HU float32. Mutates `cls`: stool mottling becomes gas / stool-fat classes."""

        def pick(fields: list[np.ndarray]) -> np.ndarray:
            if len(fields) == 1:
                return fields[0]
            f = fields[int(rng.integers(len(fields)))]
            sy, sx = (1 if rng.random() < 0.5 else -1), (1 if rng.random() < 0.5 else -1)
            return f[::sy, ::sx]

        f1, f2, noise = pick(self.f1), pick(self.f2), pick(self.noise)
        st = cls == STOOL
        if st.any():
            cls[st & (f2 > 0.8)] = GAS
            cls[st & (f2 < -0.5)] = SFAT
        clean = mean[cls] + tex[cls] * f1
        canc = cls == CANC
        clean[canc] += 25.0 * f2[canc]
        hu = ndi.gaussian_filter(clean, self.blur, truncate=3.0)
        hu += noise
        np.clip(hu, -1024.0, 3071.0, out=hu)
        return hu


def synthesize_fields(
    shape: tuple[int, int], exam: Exam, rng: np.random.Generator, n_fields: int = 1
) -> FieldBank:
    """Texture and noise fields for `exam` (noise sd, grain, blur)."""
    f1s, f2s, ns = [], [], []
    for _ in range(n_fields):
        f1 = ndi.gaussian_filter(rng.standard_normal(shape, np.float32), 2.6, truncate=3.0)
        f1 *= 1.0 / (f1.std() + 1e-6)
        f2 = ndi.gaussian_filter(rng.standard_normal(shape, np.float32), 1.1, truncate=3.0)
        f2 *= 1.0 / (f2.std() + 1e-6)
        noise = ndi.gaussian_filter(rng.standard_normal(shape, np.float32), exam.noise_grain_px, truncate=3.0)
        noise *= exam.noise_hu / (noise.std() + 1e-6)
        # slowly varying shading (beam hardening, scatter): real CT noise is correlated over many pixels
        coarse = rng.standard_normal((12, 12)).astype(np.float32) * rng.uniform(2.0, 6.0)
        noise += ndi.zoom(coarse, (shape[0] / 12, shape[1] / 12), order=1, grid_mode=True, mode="nearest")[
            : shape[0], : shape[1]
        ]
        f1s.append(f1)
        f2s.append(f2)
        ns.append(noise)
    return FieldBank(f1s, f2s, ns, exam.blur_px)


def synthesize(
    cls: np.ndarray, mean: np.ndarray, tex: np.ndarray, anat: Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Class map -> (HU float32, labels uint8). Mutates `cls` (stool mottling becomes gas/fat classes).

    HU = class mean + tissue texture, blurred (partial volume), plus spatially correlated noise.
    Labels = HU thresholds inside compartments (see the package docstring for the exact rule).
    """
    bank = synthesize_fields(cls.shape, anat.exam, rng, 1)
    hu = bank.hu(cls, mean, tex, rng)
    return hu, make_labels(hu, cls)


def make_labels(hu: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Reference-protocol labels from the final HU image and the painted compartments."""
    r = DEFAULT_HU_RANGES
    fat = (hu >= r.sat[0]) & (hu <= r.sat[1])
    mus = (hu >= r.muscle[0]) & (hu <= r.muscle[1])
    fl = FAT_LABEL[cls]
    lab = np.where(fat, fl, 0).astype(np.uint8)
    edge = fat & (fl == 0) & EDGE_TO_FAT[cls]
    if edge.any():
        near = ndi.maximum_filter(fl, size=5)
        lab[edge] = near[edge]
    # the skin lies in the subcutaneous compartment of the real reference labels (body outline to fascia):
    # where it reads as fat (blurred into the air outside, noise) it is SAT there
    lab[fat & (cls == SKIN) & (lab == 0)] = Label.SAT
    mc = MUSCLE_COMPARTMENT[cls]
    lab[fat & mc & (lab == 0)] = Label.IMAT
    muscle_px = OVER_MUSCLE[cls]
    near_muscle = ndi.binary_dilation(muscle_px)
    lab[mus & (mc | (near_muscle & (fl > 0)))] = Label.MUSCLE
    return lab
