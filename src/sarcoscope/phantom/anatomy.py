"""The 3-D anatomy of one synthetic patient, as smooth functions of the axial position z.

z is in mm, 0 at the centre of the S1 superior endplate, increasing superiorly. In-plane coordinates are mm in
a body frame: x toward the patient's left (image right), y toward posterior (image down), origin at the
centre of the abdominal-wall ellipse. Everything here is parameters and geometry; `render` paints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator

from sarcoscope.phantom.habitus import Exam, Habitus

#: Vertebra ids of `vertebra_labels`: TotalSegmentator (v2) ids where that tool has the class; L6 (a
#: transitional sixth lumbar vertebra, absent from TotalSegmentator) gets 60. S2..coccyx are one "sacrum".
VERTEBRA_IDS: dict[str, int] = {
    "sacrum": 25,
    "S1": 26,
    "L5": 27,
    "L4": 28,
    "L3": 29,
    "L2": 30,
    "L1": 31,
    **{f"T{k}": 32 + (12 - k) for k in range(12, 0, -1)},
    "L6": 60,
}

VARIANTS = (
    "normal",
    "six-lumbar",
    "sacralised-L5",
    "11-ribs",
    "13-ribs",
    "long-steep-12th-ribs",
    "one-sided-12th-rib",
)


@dataclass
class Vertebra:
    """One vertebral body along the column; z_lo/z_hi are its endplates at the column axis (mm)."""

    name: str
    vid: int
    kind: str  # "T" | "L" | "S" (sacral)
    z_lo: float
    z_hi: float
    width: float  # transverse diameter of the body (mm)
    depth: float  # antero-posterior diameter of the body (mm)
    rib: bool = False
    fused_below: bool = False  # the disc below is bone (sacrum, sacralised L5)
    #: Sides carrying a rib (-1 = patient right, +1 = left, as x points left); empty when `rib` is False.
    rib_sides: tuple[int, ...] = ()
    #: Rib length as a fraction of half the body's circumference, and its descent (mm per mm of arc).
    rib_length: float = 0.0
    rib_slope: float = 0.0
    #: Lumbar transverse process: how far its tip reaches beyond the body's side (mm); L3's are the longest.
    tp_length: float = 22.0

    @property
    def z_mid(self) -> float:
        return 0.5 * (self.z_lo + self.z_hi)

    @property
    def height(self) -> float:
        return self.z_hi - self.z_lo


@dataclass
class Blob:
    """A bowel (or stomach) segment: an ellipsoid-ish tube piece with a wall and contents."""

    x: float
    y: float
    z: float
    a: float  # in-plane half axes (mm)
    b: float
    hz: float  # half length along z (mm)
    ang: float
    kind: str  # "sb" | "colon" | "stomach"
    content: str  # "fluid" | "contrast" | "gas" | "stool" | "collapsed"
    wall: float
    lobes: np.ndarray  # (k, 2): amplitude, phase of lobulation harmonics 2..k+1
    level: float  # air-fluid level as a fraction of the lumen height (0 = no gas)
    path: np.ndarray | None = None  # (k, 2) in-plane centreline offsets (mm): a loop lying in the slice


def _ranged(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


@dataclass
class Anatomy:
    """All geometric parameters of one patient (drawn once from the seed)."""

    habitus: Habitus
    exam: Exam
    variant: str
    vertebrae: list[Vertebra]
    ms: float  # muscle size scale
    fw: float  # half width of the abdominal wall ellipse at L3 (mm)
    fda: float  # anterior half depth at L3
    sat: tuple[float, float, float]  # SAT thickness anterior, lateral, posterior at L3 (mm)
    sat_harm: np.ndarray  # Fourier perturbation of SAT thickness (k, 2)
    wall_harm: np.ndarray  # Fourier perturbation of the wall outline (k, 2)
    wall_p: float  # superellipse exponent of the wall outline
    rectus_t: float
    rectus_w: float
    oblique_t: float
    linea_alba: float
    fat_plane: float
    skin: float
    spine_y: PchipInterpolator  # column centre y(z)
    vat_amount: float
    y_table: float  # posterior body surface flattened on the table (body frame y)
    table: tuple[float, float, float, float]  # gap below body, arc radius, second-arc offset, thickness
    kidney: dict[str, tuple[float, float, float, float, float]]  # side -> (x, y, z, half-length, size)
    liver_bottom: float
    aorta_r: float
    aorta_x: float
    iliac_crest: float
    es_size: tuple[float, float]  # erector spinae half axes at L3 (mm)
    superficial_fascia: float  # depth of Scarpa's fascia as a fraction of the SAT thickness
    # psoas below L1: forward shift of its centre (fraction of its AP half axis) and AP elongation; real
    # psoas at L3 ranges from round, beside the vertebral body, to a teardrop reaching the body's front edge
    # (varied by make_slice; volumes keep the round default)
    psoas_shape: tuple[float, float] = (0.0, 1.0)
    liver_wall: bool = False  # the liver tip lies against the right wall, with no fat plane between
    blobs: list[Blob] = field(default_factory=list)
    seed: int = 0

    # ----- landmarks ---------------------------------------------------------------------------------
    def vertebra(self, name: str) -> Vertebra:
        for v in self.vertebrae:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def l3(self) -> Vertebra:
        return self.vertebra("L3")

    def spine_slope(self, z: float) -> float:
        return float(self.spine_y.derivative()(z))

    # ----- body outline along z ----------------------------------------------------------------------
    def body_scale(self, z: float) -> tuple[float, float, float]:
        """(width, anterior depth, SAT) factors relative to L3, smooth in z."""
        zl3 = self.l3.z_mid
        t12 = self.vertebra("T12").z_mid
        female = self.habitus.sex == "F"
        hip = 1.16 if female else 1.08
        zs = [-260.0, -150.0, -60.0, 0.0, zl3, t12, t12 + 120, t12 + 400]
        w = [0.62, hip, hip * 1.02, 1.03, 1.0, 1.02, 1.08, 1.02]
        d = [0.75, 0.9, 0.92, 0.97, 1.0, 0.95, 0.92, 0.85]
        s = [0.8, 1.25 if female else 1.0, 1.2 if female else 1.0, 1.05, 1.0, 0.85, 0.6, 0.5]
        zq = float(np.clip(z, zs[0], zs[-1]))
        return (
            float(np.interp(zq, zs, w)),
            float(np.interp(zq, zs, d)),
            float(np.interp(zq, zs, s)),
        )


def _build_spine(hab: Habitus, variant: str, rng: np.random.Generator) -> list[Vertebra]:
    """Vertebral bodies from S1 upward with realistic heights and discs (scaled by body height)."""
    k = (hab.height_m / 1.72) * float(rng.normal(1.0, 0.03))
    sex_w = 1.0 if hab.sex == "M" else 0.9
    verts: list[Vertebra] = []
    s1_h = 27.0 * k
    verts.append(Vertebra("sacrum", VERTEBRA_IDS["sacrum"], "S", -s1_h - 80 * k, -s1_h - 2.0, 36 * sex_w,
                          24 * sex_w, fused_below=True))  # fmt: skip
    verts.append(
        Vertebra("S1", VERTEBRA_IDS["S1"], "S", -s1_h, 0.0, 50 * sex_w, 34 * sex_w, fused_below=True)
    )
    lumbar = ["L5", "L4", "L3", "L2", "L1"]
    if variant == "six-lumbar":
        lumbar = ["L6", *lumbar]
    heights = {"L6": 26.5, "L5": 27.0, "L4": 28.0, "L3": 28.0, "L2": 27.0, "L1": 25.5}
    discs = {"L6": 10.5, "L5": 10.5, "L4": 11.5, "L3": 11.0, "L2": 10.0, "L1": 9.0}
    widths = {"L6": 51, "L5": 51, "L4": 50, "L3": 48, "L2": 45, "L1": 43}
    depths = {"L6": 34, "L5": 34, "L4": 34, "L3": 33, "L2": 32, "L1": 30}
    tps = {"L6": 17.0, "L5": 17.0, "L4": 19.0, "L3": 22.0, "L2": 18.0, "L1": 13.0}
    z = 0.0
    for name in lumbar:
        fused = variant == "sacralised-L5" and name == "L5"
        gap = (2.5 if fused else discs[name]) * k
        h = heights[name] * k * float(rng.normal(1.0, 0.03))
        verts.append(
            Vertebra(
                name, VERTEBRA_IDS[name], "L", z + gap, z + gap + h,
                widths[name] * sex_w * float(rng.normal(1, 0.03)), depths[name] * sex_w,
                rib=(variant == "13-ribs" and name == "L1"), fused_below=fused, tp_length=tps[name],
            )
        )  # fmt: skip
        z = z + gap + h
    for t in range(12, 0, -1):
        gap = (3.5 + 0.33 * t) * k
        h = (13.5 + 0.85 * t) * k * float(rng.normal(1.0, 0.03))
        rib = not (variant == "11-ribs" and t == 12)
        verts.append(
            Vertebra(
                f"T{t}", VERTEBRA_IDS[f"T{t}"], "T", z + gap, z + gap + h,
                (26 + 1.6 * t) * sex_w, (15 + 1.25 * t) * sex_w, rib=rib,
            )
        )  # fmt: skip
        z = z + gap + h
    _shape_ribs(verts, variant)
    return verts


def _shape_ribs(verts: list[Vertebra], variant: str) -> None:
    """Length, descent and sides of every rib: floating ribs are short and flat unless the variant says
    otherwise (a long steeply descending lowest pair, or a lowest rib on one side only)."""
    for v in verts:
        if not v.rib:
            continue
        t = int(v.name[1:]) if v.kind == "T" else 13
        v.rib_sides = (-1, 1)
        v.rib_length = {11: 0.42, 12: 0.28, 13: 0.2}.get(t, 1.0 if t <= 7 else 0.78)
        v.rib_slope = 0.28 + 0.012 * t
        if v.name == "T12" and variant == "long-steep-12th-ribs":
            v.rib_length, v.rib_slope = 0.4, 0.65
        if v.name == "T12" and variant == "one-sided-12th-rib":
            v.rib_sides = (-1,)


def build_anatomy(seed: int, habitus: Habitus | None, exam: Exam, variant: str) -> Anatomy:
    """Draw every anatomical parameter of one patient from `seed` (bowel loops are added separately)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng([seed, 1])
    hab = habitus if habitus is not None else Habitus.sample(np.random.default_rng([seed, 0]))
    verts = _build_spine(hab, variant, rng)
    by = {v.name: v for v in verts}
    male = hab.sex == "M"
    hk = (hab.height_m / 1.72) ** 0.5
    ms = (0.5 + 0.75 * hab.muscularity + (0.12 if male else 0.0)) * hk
    vat = 2.0 * hab.adiposity * hab.visceral_share
    sat_total = hab.adiposity * (1.0 - hab.visceral_share) * 2.0
    fw = (100.0 + 22.0 * ms + 48.0 * vat + 10.0 * sat_total) * hk * (1.0 if male else 0.95)
    fda = (72.0 + 10.0 * ms + 80.0 * vat) * hk
    base_sat = 3.0 + 45.0 * sat_total**1.25
    sat = (
        base_sat * _ranged(rng, 0.8, 1.25),
        base_sat * _ranged(rng, 0.7, 1.1) * (1.15 if not male else 1.0),
        base_sat * _ranged(rng, 0.8, 1.3) * (1.2 if not male else 1.0),
    )
    l3 = by["L3"]
    # Column centre y (posterior +) at landmarks: sacrum far back, lumbar lordosis forward, thoracic back.
    lord = _ranged(rng, -6, 8)
    zs = [
        -150.0, by["S1"].z_lo - 60, by["S1"].z_mid, by["L5"].z_mid, l3.z_mid, by["L1"].z_mid,
        by["T12"].z_mid, by["T8"].z_mid, by["T4"].z_mid, by["T1"].z_hi + 40,
    ]  # fmt: skip
    ys = [85.0, 72.0, 30.0, 12.0 - lord * 0.5, 4.0 - lord, 10.0 - lord * 0.5, 20.0, 42.0, 46.0, 38.0]
    spine_y = PchipInterpolator(np.array(zs), np.array(ys) + _ranged(rng, -4, 4))
    es_size = (21.0 * ms + 12.0, 15.0 * ms + 11.0)
    post = float(spine_y(l3.z_mid)) + l3.depth / 2 + 4 + 2 * es_size[1]
    y_table = post + sat[2] * _ranged(rng, 0.5, 0.75)
    kidney = {}
    for side, dz in (("R", -12.0), ("L", 0.0)):
        zc = by["L1"].z_lo - 18 + dz + _ranged(rng, -20, 15)
        kidney[side] = (
            (-1 if side == "R" else 1) * _ranged(rng, 62, 76),
            float(spine_y(zc)) + _ranged(rng, 10, 28),
            zc,
            _ranged(rng, 48, 60),
            _ranged(rng, 0.85, 1.15) * (0 if rng.random() < 0.03 else 1),
        )
    anat = Anatomy(
        habitus=hab,
        exam=exam,
        variant=variant,
        vertebrae=verts,
        ms=ms,
        fw=fw,
        fda=fda,
        sat=sat,
        sat_harm=rng.normal(0, 0.07, (4, 2)),
        wall_harm=rng.normal(0, 0.018, (3, 2)),
        wall_p=_ranged(rng, 2.0, 2.5),
        rectus_t=(7.0 + 6.0 * ms) * _ranged(rng, 0.85, 1.15),
        rectus_w=_ranged(rng, 55, 80) * hk,
        oblique_t=(6.0 + 9.0 * ms) * _ranged(rng, 0.85, 1.15),
        linea_alba=_ranged(rng, 1.2, 3.0) + 8.0 * vat * rng.random(),
        fat_plane=0.3 + 1.8 * hab.adiposity * rng.random(),
        skin=_ranged(rng, 1.4, 2.6),
        spine_y=spine_y,
        vat_amount=vat,
        y_table=y_table,
        table=(_ranged(rng, 0.5, 8), _ranged(rng, 500, 1200), _ranged(rng, 25, 50), _ranged(rng, 1.1, 2.2)),
        kidney=kidney,
        liver_bottom=by["L3"].z_mid + _ranged(rng, -25, 45),
        aorta_r=_ranged(rng, 8.5, 11.5) + 0.03 * (hab.age_years - 50),
        aorta_x=_ranged(rng, 4, 16),
        iliac_crest=by["L4"].z_lo + _ranged(rng, -8, 12),
        es_size=es_size,
        superficial_fascia=_ranged(rng, 0.35, 0.65),
        seed=seed,
    )
    # drawn from their own stream, so every other parameter of a seed stays what it was
    extra = np.random.default_rng([seed, 6])
    anat.liver_wall = bool(extra.random() < 0.5)
    return anat


def add_bowel(anat: Anatomy, z_lo: float, z_hi: float, rng: np.random.Generator) -> None:
    """Pack bowel loops into the peritoneal cavity between z_lo and z_hi (denser when there is little VAT)."""
    vat = anat.vat_amount
    sep = 0.72 + 0.5 * min(vat, 1.2)
    grow = 1.0 + 0.35 * max(0.0, 0.4 - vat) / 0.4  # lean: larger, crowded loops
    l1 = anat.vertebra("L1")
    zs_lo, zs_hi = max(z_lo, -120.0), min(z_hi, l1.z_hi)
    blobs: list[Blob] = []
    oral = anat.exam.oral_contrast

    def lobes(n: int, amp: float) -> np.ndarray:
        return np.column_stack([rng.normal(0, amp, n), rng.uniform(0, 2 * np.pi, n)])

    # Colon: ascending (right), descending (left) as stacks of overlapping segments; transverse near L2-L3.
    colon_content = [str(rng.choice(["stool", "gas", "fluid"], p=[0.5, 0.38, 0.12])) for _ in range(3)]
    for side, (zc_lo, zc_hi) in ((-1, (-40.0, l1.z_lo)), (1, (-20.0, anat.vertebra("T12").z_mid))):
        r = _ranged(rng, 14, 26) if side < 0 else _ranged(rng, 11, 19)
        x0 = side * anat.fw * _ranged(rng, 0.55, 0.72)
        y0 = _ranged(rng, -15, 15) if side < 0 else _ranged(rng, 0, 25)
        content = colon_content[0 if side < 0 else 1]
        for zc in np.arange(max(zc_lo, z_lo - 30), min(zc_hi, z_hi + 30), 18.0):
            blobs.append(
                Blob(x0 + rng.normal(0, 5), y0 + rng.normal(0, 5), float(zc), r * _ranged(rng, 0.8, 1.15),
                     r * _ranged(rng, 0.8, 1.15), 16.0, _ranged(rng, 0, np.pi), "colon", content,
                     _ranged(rng, 1.5, 2.6), lobes(4, 0.06), _ranged(rng, 0.3, 0.8))
            )  # fmt: skip
    z_tc = anat.vertebra("L2").z_mid + _ranged(rng, -40, 20)
    if z_lo - 40 < z_tc < z_hi + 40:
        r = _ranged(rng, 13, 24)
        y_tc = -anat.fda * _ranged(rng, 0.45, 0.75)
        for xc in np.arange(-anat.fw * 0.55, anat.fw * 0.6, r * 1.5):
            blobs.append(
                Blob(float(xc), y_tc + rng.normal(0, 6), z_tc + rng.normal(0, 8), r * 1.2, r, r * 1.3,
                     rng.normal(0, 0.2), "colon", colon_content[2], _ranged(rng, 1.5, 2.5), lobes(4, 0.07),
                     _ranged(rng, 0.3, 0.9))
            )  # fmt: skip
    # Stomach (left upper quadrant).
    t11 = anat.vertebra("T11")
    if z_hi > t11.z_lo - 40:
        blobs.append(
            Blob(anat.fw * 0.35, -anat.fda * 0.35, t11.z_lo - 10, anat.fw * 0.3, anat.fda * 0.35, 55.0, 0.4,
                 "stomach", "gas" if rng.random() < 0.6 else "fluid", 3.0, lobes(3, 0.05),
                 _ranged(rng, 0.3, 0.6))
        )  # fmt: skip
    # Small bowel: rejection-sampled packing, spaced further apart with more visceral fat.
    if zs_hi > zs_lo:
        vol_z = zs_hi - zs_lo
        n_try = int(60 + 4.0 * vol_z)
        cx = rng.uniform(-anat.fw * 0.72, anat.fw * 0.72, n_try)
        cy = rng.uniform(-anat.fda * 0.95, 10.0, n_try)
        cz = rng.uniform(zs_lo, zs_hi, n_try)
        r = rng.uniform(8.0, 15.5, n_try) * (0.9 + 0.1 * anat.ms) * grow
        hz = rng.uniform(14.0, 35.0, n_try)
        keep: list[int] = []
        px, py, pz, pr = (
            [b.x for b in blobs],
            [b.y for b in blobs],
            [b.z for b in blobs],
            [b.a for b in blobs],
        )
        for i in range(n_try):
            if (cx[i] / (anat.fw * 0.8)) ** 2 + ((cy[i] + 10) / (anat.fda * 0.95)) ** 2 > 1.0:
                continue
            if abs(cx[i]) < 45 and cy[i] > -25:  # retroperitoneum in front of the spine
                continue
            if px:
                d = np.sqrt(
                    (np.array(px) - cx[i]) ** 2
                    + (np.array(py) - cy[i]) ** 2
                    + ((np.array(pz) - cz[i]) * 0.6) ** 2
                )
                if np.any(d < sep * (np.array(pr) + r[i])):
                    continue
            keep.append(i)
            px.append(cx[i])
            py.append(cy[i])
            pz.append(cz[i])
            pr.append(r[i])
        choices = ["contrast", "fluid", "collapsed", "gas"]
        p = [0.55, 0.2, 0.2, 0.05] if oral else [0.0, 0.5, 0.4, 0.1]
        for i in keep:
            path = None
            if rng.random() < 0.35:  # a loop running in the axial plane: a curved tube
                steps = int(rng.integers(3, 6))
                ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.6, steps))
                seg = rng.uniform(6, 12)
                path = np.vstack(
                    [[0.0, 0.0], np.cumsum(np.column_stack([np.cos(ang), np.sin(ang)]) * seg, axis=0)]
                )
                path -= path.mean(axis=0)
            blobs.append(
                Blob(float(cx[i]), float(cy[i]), float(cz[i]), float(r[i]) * _ranged(rng, 0.9, 1.6),
                     float(r[i]) * _ranged(rng, 0.55, 1.0), float(hz[i]), _ranged(rng, 0, np.pi), "sb",
                     str(rng.choice(choices, p=p)), _ranged(rng, 1.4, 2.6), lobes(4, 0.08),
                     _ranged(rng, 0.5, 0.9), path)
            )  # fmt: skip
    # Duodenum (third part) crossing in front of the IVC and aorta near L3.
    l3 = anat.vertebra("L3")
    z_d = l3.z_hi + _ranged(rng, -20, 5)
    if z_lo - 15 < z_d < z_hi + 15 and rng.random() < 0.7:
        yd = float(anat.spine_y(z_d)) - l3.depth / 2 - 2 * anat.aorta_r - _ranged(rng, 10, 16)
        xs = np.linspace(-anat.fw * 0.35, anat.fw * 0.12, 5)
        path = np.column_stack([xs, rng.normal(0, 3, 5)])
        content = str(rng.choice(["collapsed", "fluid", "contrast" if oral else "gas"]))
        blobs.append(
            Blob(0.0, yd, z_d, 9.0, 9.0, 12.0, 0.0, "sb", content, 2.2, lobes(2, 0.0), 0.7, path)
        )  # fmt: skip
    anat.blobs.extend(blobs)
