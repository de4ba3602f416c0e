"""Areas, HU statistics and ratios of the tissues in one labelled axial slice, and their average over a range.

Statistics conventions (written here once because every report depends on them):

- area = pixel count × pixel area (pixel spacing y × x, mm²) / 100, in cm²;
- mean HU and SD HU are taken over the pixels carrying the tissue's label, in float64;
- SD is the *population* SD (ddof = 0): the labelled pixels are the whole tissue in the slice, not a sample
  of it. This keeps one-pixel tissues defined (SD 0) and makes the pooled SD of a range exact;
- mean and SD are None when the tissue has no pixels;
- a ratio whose denominator area is 0 is "not computed", with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarcoscope.conventions import TISSUES, Label
from sarcoscope.errors import CompositionError

#: Ratio name -> (numerator tissues, denominator tissues, title). Areas of listed tissues are summed.
RATIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "vat_sat": (("vat",), ("sat",), "VAT / SAT"),
    "muscle_vat": (("muscle",), ("vat",), "muscle / VAT"),
    "muscle_sat": (("muscle",), ("sat",), "muscle / SAT"),
    "muscle_total_fat": (("muscle",), ("sat", "vat", "imat"), "muscle / total adipose (SAT+VAT+IMAT)"),
}

#: The tissues summed into "total adipose".
ADIPOSE_TISSUES: tuple[str, ...] = ("sat", "vat", "imat")


@dataclass(frozen=True)
class Quantity:
    """A derived number, or the reason it could not be computed (never a guess)."""

    value: float | None
    unit: str = ""
    reason: str | None = None

    @property
    def computed(self) -> bool:
        return self.value is not None

    @classmethod
    def not_computed(cls, reason: str, unit: str = "") -> Quantity:
        return cls(value=None, unit=unit, reason=reason)

    def as_dict(self) -> dict[str, Any]:
        if self.value is None:
            return {"status": "not computed", "reason": self.reason}
        return {"status": "computed", "value": self.value, "unit": self.unit}


@dataclass(frozen=True)
class TissueStats:
    """One tissue in one slice (or pooled over a range: see `average_compositions`)."""

    pixels: int
    area_cm2: float
    mean_hu: float | None  # None when pixels == 0
    sd_hu: float | None  # population SD (ddof=0); None when pixels == 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SliceComposition:
    """Body composition of one slice, or the average over the slices of an L3 range (`n_slices` > 1).

    For an average, `pixels` and the HU statistics are pooled over all slices' pixels while `area_cm2` is
    the mean of the per-slice areas.
    """

    tissues: dict[str, TissueStats]  # keyed by conventions.TISSUES names, in that order
    total_adipose_cm2: float  # SAT + VAT + IMAT
    ratios: dict[str, Quantity]  # keyed by RATIOS names
    pixel_spacing: tuple[float, float]  # (y, x) mm
    n_slices: int = 1

    def area(self, tissue: str) -> float:
        return self.tissues[tissue].area_cm2

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_slices": self.n_slices,
            "pixel_spacing_mm": list(self.pixel_spacing),
            "tissues": {name: stats.as_dict() for name, stats in self.tissues.items()},
            "total_adipose_cm2": self.total_adipose_cm2,
            "ratios": {name: {"title": RATIOS[name][2], **q.as_dict()} for name, q in self.ratios.items()},
        }


def _ratios(areas: dict[str, float]) -> dict[str, Quantity]:
    out: dict[str, Quantity] = {}
    for name, (num, den, title) in RATIOS.items():
        denominator = sum(areas[t] for t in den)
        if denominator <= 0.0:
            names = " + ".join(t.upper() for t in den)
            out[name] = Quantity.not_computed(f"{title}: denominator area ({names}) is 0 cm²")
        else:
            out[name] = Quantity(sum(areas[t] for t in num) / denominator)
    return out


def _build(
    tissues: dict[str, TissueStats], pixel_spacing: tuple[float, float], n_slices: int
) -> SliceComposition:
    areas = {name: stats.area_cm2 for name, stats in tissues.items()}
    return SliceComposition(
        tissues=tissues,
        total_adipose_cm2=sum(areas[t] for t in ADIPOSE_TISSUES),
        ratios=_ratios(areas),
        pixel_spacing=pixel_spacing,
        n_slices=n_slices,
    )


def measure_slice(hu: np.ndarray, labels: np.ndarray, pixel_spacing: tuple[float, float]) -> SliceComposition:
    """Measure every tissue of `labels` (y, x; conventions.Label ids) on the HU slice `hu` (y, x).

    Raises CompositionError when the label map does not match the image or contains unknown label ids.
    """
    if hu.ndim != 2 or labels.shape != hu.shape:
        raise CompositionError(
            f"Label map shape {labels.shape} does not match the CT slice shape {hu.shape} "
            "(both must be 2-D and on the same pixel grid)."
        )
    dy, dx = (float(s) for s in pixel_spacing)
    if not (math.isfinite(dy) and math.isfinite(dx) and dy > 0 and dx > 0):
        raise CompositionError(f"Pixel spacing must be positive millimetres, got {pixel_spacing}.")
    known = {int(v) for v in Label}
    unknown = sorted(set(np.unique(labels).tolist()) - known)
    if unknown:
        raise CompositionError(
            f"Label map contains unknown label ids {unknown}; expected {sorted(known)} "
            "(0 other, 1 muscle, 2 SAT, 3 VAT, 4 IMAT)."
        )
    tissues: dict[str, TissueStats] = {}
    for name, label in TISSUES.items():
        values = hu[labels == label].astype(np.float64)
        n = int(values.size)
        tissues[name] = TissueStats(
            pixels=n,
            area_cm2=n * dy * dx / 100.0,
            mean_hu=float(values.mean()) if n else None,
            sd_hu=float(values.std(ddof=0)) if n else None,
        )
    return _build(tissues, (dy, dx), 1)


def _pooled(stats: list[TissueStats]) -> tuple[int, float | None, float | None]:
    """Pixel-weighted pooled mean and population SD: exactly those of all slices' pixels taken together."""
    present = [s for s in stats if s.pixels > 0]
    n_total = sum(s.pixels for s in present)
    if n_total == 0:
        return 0, None, None
    mean = sum(s.pixels * s.mean_hu for s in present) / n_total  # type: ignore[operator]
    # total sum of squares = within-slice (n·sd²) + between-slice (n·(mean_i − mean)²)
    ss = sum(s.pixels * (s.sd_hu**2 + (s.mean_hu - mean) ** 2) for s in present)  # type: ignore[operator]
    return n_total, float(mean), float(math.sqrt(ss / n_total))


def average_compositions(compositions: list[SliceComposition]) -> SliceComposition:
    """Average the per-slice results of an L3 range into one composition.

    - area_cm2: arithmetic mean of the per-slice areas (a slice where the tissue is absent counts as 0);
    - pixels: total over all slices (the pixels the HU statistics pool);
    - mean_hu / sd_hu: pixel-weighted pooled mean and pooled population SD, i.e. the statistics of all the
      tissue's pixels in the range taken together, so large slices weigh more than small ones;
    - total adipose and ratios: recomputed from the averaged areas (ratio of means, not mean of ratios, so
      the average ratio stays consistent with the averaged areas).
    One composition is returned unchanged.
    """
    if not compositions:
        raise CompositionError("No slice results to average (the L3 selection is empty).")
    if len(compositions) == 1:
        return compositions[0]
    n = len(compositions)
    tissues: dict[str, TissueStats] = {}
    for name in TISSUES:
        per = [c.tissues[name] for c in compositions]
        pixels, mean, sd = _pooled(per)
        tissues[name] = TissueStats(
            pixels=pixels, area_cm2=sum(s.area_cm2 for s in per) / n, mean_hu=mean, sd_hu=sd
        )
    return _build(tissues, compositions[0].pixel_spacing, sum(c.n_slices for c in compositions))
