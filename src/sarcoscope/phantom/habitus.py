"""Who the synthetic patient is and how they were scanned: the random draws behind one phantom."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

CONTRAST_PHASES = ("none", "arterial", "portal")


@dataclass(frozen=True)
class Habitus:
    """Body build of a synthetic patient; every shape and HU parameter of a phantom derives from it.

    The 0..1 scores are relative: adiposity 0 is cachectic and 1 morbidly obese, muscularity 0 severely
    sarcopenic and 1 athletic, myosteatosis 0 lean muscle (~50 HU) and 1 fatty muscle (~20 HU, much IMAT).
    """

    sex: str  # "M" | "F"
    height_m: float
    adiposity: float
    visceral_share: float  # share of the fat that is visceral (men more than women)
    muscularity: float
    myosteatosis: float
    age_years: float

    @property
    def bmi(self) -> float:
        """BMI implied by the build (fat dominates, muscle adds a little)."""
        return float(16.5 + 20.0 * self.adiposity + 5.0 * (self.muscularity - 0.5))

    @property
    def weight_kg(self) -> float:
        return round(self.bmi * self.height_m**2, 1)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(bmi=round(self.bmi, 2), weight_kg=self.weight_kg)
        return d

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Habitus:
        """A random adult: thin to obese, sarcopenic to muscular, male or female, 25-90 years."""
        sex = "M" if rng.random() < 0.55 else "F"
        height = rng.normal(1.76, 0.07) if sex == "M" else rng.normal(1.63, 0.065)
        age = float(rng.uniform(25, 90))
        adiposity = float(np.clip(rng.beta(2.0, 2.6), 0.02, 0.98))
        visceral = float(np.clip(rng.normal(0.55 if sex == "M" else 0.35, 0.12), 0.08, 0.85))
        muscularity = float(np.clip(rng.beta(2.2, 2.2) - 0.003 * (age - 50), 0.02, 0.98))
        myo = float(np.clip(rng.beta(2, 3.5) + 0.005 * (age - 50) + 0.2 * (adiposity - 0.4), 0.0, 1.0))
        return cls(
            sex=sex,
            height_m=round(float(np.clip(height, 1.45, 2.02)), 3),
            adiposity=round(adiposity, 4),
            visceral_share=round(visceral, 4),
            muscularity=round(muscularity, 4),
            myosteatosis=round(myo, 4),
            age_years=round(age, 1),
        )


@dataclass(frozen=True)
class Exam:
    """Acquisition facts that change the image but not the anatomy."""

    contrast: str  # "none" | "arterial" | "portal"
    oral_contrast: bool
    noise_hu: float  # standard deviation of the (spatially correlated) noise
    noise_grain_px: float  # correlation length of the noise
    blur_px: float  # Gaussian sigma of the partial-volume blur
    kvp: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_contrast(self, contrast: str | None) -> Exam:
        """The same exam in another contrast phase (None keeps it)."""
        if contrast is None:
            return self
        if contrast not in CONTRAST_PHASES:
            raise ValueError(f"contrast must be one of {', '.join(CONTRAST_PHASES)}, got {contrast!r}")
        return replace(self, contrast=contrast)

    @classmethod
    def sample(cls, rng: np.random.Generator, *, noise_hu: float | None = None) -> Exam:
        """Mostly contrast-enhanced portal-venous scans, like the clinical L3 cohorts."""
        contrast = str(rng.choice(CONTRAST_PHASES, p=[0.22, 0.1, 0.68]))
        if noise_hu is not None and not noise_hu >= 0:
            raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
        return cls(
            contrast=contrast,
            oral_contrast=bool(rng.random() < 0.3),
            noise_hu=float(noise_hu)
            if noise_hu is not None
            else round(float(rng.triangular(8.0, 13.0, 20.0)), 2),
            noise_grain_px=round(float(rng.uniform(0.55, 0.95)), 3),
            blur_px=round(float(rng.uniform(0.55, 0.9)), 3),
            kvp=float(rng.choice([80.0, 100.0, 120.0], p=[0.15, 0.5, 0.35])),
        )
