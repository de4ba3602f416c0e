"""From painted classes to an image: per-class HU and texture, blur (partial volume), correlated noise, and
the reference-protocol labels read off the final HU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.conventions import DEFAULT_HU_RANGES, Label
from sarcoscope.phantom.anatomy import Anatomy
from sarcoscope.phantom.habitus import Exam
from sarcoscope.phantom.render.classes import (
    AIR,
    AORTA,
    BLOOD,
    BWALL,
    CALC,
    CANAL,
    CANC,
    COLLAPSED,
    CORT,
    DISC,
    EDGE_TO_FAT,
    EPIDURAL,
    FASC,
    FAT_LABEL,
    FLUID,
    GAS,
    IMAT,
    IVC,
    KCOR,
    KMED,
    LIVER,
    LUNG,
    MUS,
    MUS_ES,
    MUS_PS,
    MUSCLE_COMPARTMENT,
    N_CLASSES,
    OCON,
    OVER_MUSCLE,
    SAT,
    SFAT,
    SKIN,
    SPLEEN,
    STOOL,
    TABLE,
    URINE,
    VAT,
    VESSEL,
)


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
    # Between patients, enhanced blood and kidney vary with the bolus (the draws' 10-15 HU), unenhanced ones
    # only with the haematocrit: blood 35-50 HU (New & Aronow, Radiology 1976;121:635), renal parenchyma
    # 29.6 +- 3.0 HU (controls, Eur J Radiol 2011), cortex and medulla alike. Unenhanced, the same draws
    # are scaled to a 5 HU spread (the aorta drew 15 to 68 HU and the kidney -4 to 64 HU before).
    spread, vein_spread = (1.0, 1.0) if enh else (1.0 / 3.0, 0.5)
    vals = {
        AIR: -1000, SAT: sat, SKIN: rng.uniform(15, 55), MUS: mu, MUS_PS: mu + rng.uniform(0, 7),
        MUS_ES: mu - rng.uniform(0, 8) * (0.3 + h.myosteatosis), IMAT: sat + rng.uniform(3, 12),
        VAT: sat + rng.uniform(3, 12), FASC: rng.uniform(10, 45), BWALL: 40 + 45 * enh + rng.normal(0, 8),
        GAS: -1000, FLUID: rng.uniform(2, 20), OCON: rng.uniform(150, 450), STOOL: rng.uniform(5, 45),
        SFAT: rng.uniform(-110, -60), COLLAPSED: 45 + 35 * enh + rng.normal(0, 6),
        KCOR: 32 + (190 if art else 140) * enh + rng.normal(0, 15) * spread,
        KMED: 30 + (60 if art else 140) * enh + rng.normal(0, 15) * spread, URINE: rng.uniform(3, 15),
        LIVER: 58 + 50 * enh * (0.4 if art else 1.0) + rng.normal(0, 6),
        SPLEEN: 48 + 70 * enh + rng.normal(0, 6),
        AORTA: 42 + (280 if art else 130) * enh + rng.normal(0, 15) * spread,
        IVC: 40 + (40 if art else 110) * enh + rng.normal(0, 10) * vein_spread, VESSEL: 40 + 140 * enh,
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
