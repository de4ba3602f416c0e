"""SMI, BMI and the sarcopenia / myosteatosis classification of one analysis under every shipped cutoff set.

Missing patient facts never become guesses: every value that needs them is "not computed" with the reason
and what the user can do about it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from sarcoscope.composition.cutoffs import CutoffSet, default_cutoff_set, is_below, load_cutoffs
from sarcoscope.composition.measure import Quantity, SliceComposition
from sarcoscope.errors import CompositionError

#: Plausible ranges; values outside are rejected as typos or wrong units rather than silently used.
HEIGHT_RANGE_M = (1.0, 2.5)
WEIGHT_RANGE_KG = (20.0, 400.0)
AGE_RANGE_YEARS = (0.0, 130.0)

UNKNOWN_REASONS = {
    "height_m": "height unknown: pass --height-cm or PatientSize in DICOM",
    "weight_kg": "weight unknown: pass --weight-kg or PatientWeight in DICOM",
    "sex": "sex unknown: pass --sex M|F or PatientSex in DICOM",
}


def reason_parts(reason: str) -> list[str]:
    """The single missing facts in a joined reason ("sex unknown: …; BMI unknown (height unknown: …)"), so
    that a report can state each once however many values it stops."""
    flat = re.sub(r"BMI unknown \((.*)\)", r"\1", reason)
    return [part for part in flat.split("; ") if part]


def _check_range(name: str, value: float | None, lo: float, hi: float, unit: str, hint: str = "") -> None:
    if value is None:
        return
    if not math.isfinite(value) or not lo <= value <= hi:
        raise CompositionError(
            f"{name} {value:g} {unit} is outside the plausible range {lo:g}-{hi:g} {unit}{hint}."
        )


def height_m_from_cm(height_cm: float | None) -> float | None:
    """A height the user gave in centimetres (--height-cm, a manifest's height_cm) in metres, refused outside
    HEIGHT_RANGE_M in the user's unit: a height in metres (1.75) said "0.0175 m is outside 1-2.5 m"."""
    if height_cm is None:
        return None
    lo, hi = (100 * v for v in HEIGHT_RANGE_M)
    if not math.isfinite(height_cm) or not lo <= height_cm <= hi:
        metres = HEIGHT_RANGE_M[0] <= height_cm <= HEIGHT_RANGE_M[1]
        raise CompositionError(
            f"Height {height_cm:g} cm is outside the plausible range {lo:g}-{hi:g} cm; the height is in "
            f"centimetres{f' ({height_cm:g} m is {100 * height_cm:g} cm)' if metres else ''}."
        )
    return height_cm / 100.0


#: What a cohort table or a user may write for the sexes the cutoffs are published for.
SEX_WORDS = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}


def parse_sex(sex: str | None) -> str | None:
    """ "M" or "F" from M, F, male or female in any case (cohort tables write either); None when empty."""
    if sex is None or not sex.strip():
        return None
    if (s := SEX_WORDS.get(sex.strip().upper())) is not None:
        return s
    raise CompositionError(f"Sex must be M or F (male or female; empty when unknown), got '{sex}'.")


@dataclass
class PatientInfo:
    """The patient facts the cutoffs need. None = unknown; `reasons` can explain a specific unknown."""

    height_m: float | None = None
    weight_kg: float | None = None
    sex: str | None = None  # "M" | "F" | None
    age_years: float | None = None
    #: Where each known value came from ("user", "DICOM"), for the report.
    sources: dict[str, str] = field(default_factory=dict)
    #: Why a value is unknown, when more specific than UNKNOWN_REASONS (e.g. an implausible DICOM value).
    reasons: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hint = ""
        if self.height_m is not None and 100.0 <= self.height_m <= 250.0:
            hint = " (this looks like centimetres; height_m is in metres)"
        _check_range("Height", self.height_m, *HEIGHT_RANGE_M, "m", hint)
        _check_range("Weight", self.weight_kg, *WEIGHT_RANGE_KG, "kg")
        _check_range("Age", self.age_years, *AGE_RANGE_YEARS, "years")
        self.sex = parse_sex(self.sex)

    def reason(self, name: str) -> str:
        return self.reasons.get(name, UNKNOWN_REASONS[name])

    @property
    def bmi(self) -> float | None:
        if self.height_m is None or self.weight_kg is None:
            return None
        return self.weight_kg / self.height_m**2

    @classmethod
    def from_metadata(
        cls,
        metadata: Any,
        *,
        height_cm: float | None = None,
        weight_kg: float | None = None,
        sex: str | None = None,
        age_years: float | None = None,
    ) -> PatientInfo:
        """Combine the user's values (which win, and are checked strictly) with a CTMetadata's.

        A DICOM value that is 0 (a common "not recorded" placeholder), implausible or not M/F is treated as
        unknown with a reason naming the tag, so one bad header does not stop a batch run.
        """
        sources: dict[str, str] = {}
        reasons: dict[str, str] = {}
        values: dict[str, Any] = {}
        user = {
            "height_m": height_m_from_cm(height_cm),
            "weight_kg": weight_kg,
            "sex": sex,
            "age_years": age_years,
        }
        dicom = {
            "height_m": ("PatientSize", getattr(metadata, "patient_height_m", None), HEIGHT_RANGE_M, "m"),
            "weight_kg": (
                "PatientWeight",
                getattr(metadata, "patient_weight_kg", None),
                WEIGHT_RANGE_KG,
                "kg",
            ),
            "age_years": (
                "PatientAge",
                getattr(metadata, "patient_age_years", None),
                AGE_RANGE_YEARS,
                "years",
            ),
        }
        for name, given in user.items():
            if given is not None:
                values[name], sources[name] = given, "user"
            elif name == "sex":
                dicom_sex = getattr(metadata, "patient_sex", None)
                if dicom_sex is not None and str(dicom_sex).strip().upper() in ("M", "F"):
                    values[name], sources[name] = str(dicom_sex).strip().upper(), "DICOM"
                elif dicom_sex:
                    reasons[name] = f"sex unknown: DICOM PatientSex is '{dicom_sex}'; pass --sex M|F"
            else:
                tag, found, (lo, hi), unit = dicom[name]
                if found is None or float(found) == 0.0:
                    continue
                if math.isfinite(float(found)) and lo <= float(found) <= hi:
                    values[name], sources[name] = float(found), "DICOM"
                elif name in UNKNOWN_REASONS:
                    reasons[name] = (
                        f"{name.split('_')[0]} unknown: DICOM {tag} {float(found):g} is outside "
                        f"{lo:g}-{hi:g} {unit}; pass --{'height-cm' if name == 'height_m' else 'weight-kg'}"
                    )
        return cls(**values, sources=sources, reasons=reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "height_m": self.height_m,
            "weight_kg": self.weight_kg,
            "sex": self.sex,
            "age_years": self.age_years,
            "sources": dict(self.sources),
        }


@dataclass(frozen=True)
class Classification:
    """One cutoff set applied to one patient: flagged or not, or "not computed" with the reason."""

    set: CutoffSet
    selected: bool  # the set the user chose (or the default) for the headline result
    value: float | None  # the compared metric (SMI or mean muscle HU); None when unknown
    cutoff: float | None
    rule: str | None  # which rule applied ("men, BMI < 25")
    flagged: bool | None  # value < cutoff; None when not computed
    reason: str | None = None  # why not computed

    @property
    def computed(self) -> bool:
        return self.flagged is not None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "set": self.set.id,
            "title": self.set.title,
            "selected": self.selected,
            "metric": self.set.metric,
            "unit": self.set.unit,
        }
        if not self.computed:
            return {**out, "status": "not computed", "reason": self.reason}
        return {
            **out,
            "status": "computed",
            "value": self.value,
            "cutoff": self.cutoff,
            "rule": self.rule,
            "flagged": self.flagged,
            "comparison": "value < cutoff",
        }


def classify(cutoff_set: CutoffSet, value: Quantity, patient: PatientInfo, selected: bool) -> Classification:
    """Apply one set; every missing input (the value, sex, BMI) is named in the reason."""
    reasons: list[str] = []
    if value.value is None:
        reasons.append(str(value.reason))
    sex = patient.sex
    if cutoff_set.needs_sex and sex is None:
        reasons.append(patient.reason("sex"))
    candidates = [r for r in cutoff_set.rules if r.sex in ("any", sex)] if sex else list(cutoff_set.rules)
    bmi = patient.bmi
    if bmi is None and any(r.needs_bmi for r in candidates):
        missing = [patient.reason(n) for n in ("height_m", "weight_kg") if getattr(patient, n) is None]
        reasons.append(f"BMI unknown ({'; '.join(missing)})")
    if reasons:
        return Classification(cutoff_set, selected, value.value, None, None, None, "; ".join(reasons))
    rule = next((r for r in candidates if r.matches(sex, bmi)), None)
    if rule is None or value.value is None:
        raise CompositionError(f"Cutoff set '{cutoff_set.id}' has no rule for sex {sex}, BMI {bmi}.")
    return Classification(
        cutoff_set, selected, value.value, rule.cutoff, rule.describe(), is_below(value.value, rule.cutoff)
    )


@dataclass(frozen=True)
class Assessment:
    """SMI, BMI and every classification for one analysis (see `assess`)."""

    patient: PatientInfo
    smi: Quantity  # cm²/m²
    bmi: Quantity  # kg/m²
    muscle_mean_hu: Quantity
    cutoff_set: str  # the selected sarcopenia set
    sarcopenia: dict[str, Classification]  # every shipped set
    myosteatosis: dict[str, Classification]

    @property
    def selected(self) -> Classification:
        return self.sarcopenia[self.cutoff_set]

    def as_dict(self) -> dict[str, Any]:
        table = load_cutoffs()
        used = {
            **{f"sarcopenia/{k}": v for k, v in table.sarcopenia.items()},
            **{f"myosteatosis/{k}": v for k, v in table.myosteatosis.items()},
        }
        return {
            "patient": self.patient.as_dict(),
            "smi": self.smi.as_dict(),
            "bmi": self.bmi.as_dict(),
            "muscle_mean_hu": self.muscle_mean_hu.as_dict(),
            "cutoff_set": self.cutoff_set,
            "sarcopenia": [c.as_dict() for c in self.sarcopenia.values()],
            "myosteatosis": [c.as_dict() for c in self.myosteatosis.values()],
            "cutoff_sources": {k: v.provenance() for k, v in used.items()},
        }


def assess(composition: SliceComposition, patient: PatientInfo, cutoff_set: str | None = None) -> Assessment:
    """SMI (muscle area / height², cm²/m²), BMI and classifications under every shipped cutoff set.

    `composition` is the slice result, or the range average. `cutoff_set` (default: the file's default,
    see `available_cutoff_sets()`) only marks which sarcopenia set is the headline one; all are computed.
    Flagging is strictly below the cutoff: SMI equal to the cutoff is not sarcopenic.
    """
    table = load_cutoffs()
    chosen = cutoff_set or default_cutoff_set()
    if chosen not in table.sarcopenia:
        raise CompositionError(f"Unknown cutoff set '{chosen}'. Available: {', '.join(table.sarcopenia)}.")
    muscle = composition.tissues["muscle"]
    if patient.height_m is None:
        smi = Quantity.not_computed(patient.reason("height_m"), "cm²/m²")
    else:
        smi = Quantity(muscle.area_cm2 / patient.height_m**2, "cm²/m²")
    bmi_value = patient.bmi
    if bmi_value is None:
        missing = [patient.reason(n) for n in ("height_m", "weight_kg") if getattr(patient, n) is None]
        bmi = Quantity.not_computed("; ".join(missing), "kg/m²")
    else:
        bmi = Quantity(bmi_value, "kg/m²")
    if muscle.mean_hu is None:
        mean_hu = Quantity.not_computed("no skeletal muscle pixels in the analysed slice(s)", "HU")
    else:
        mean_hu = Quantity(muscle.mean_hu, "HU")
    return Assessment(
        patient=patient,
        smi=smi,
        bmi=bmi,
        muscle_mean_hu=mean_hu,
        cutoff_set=chosen,
        sarcopenia={k: classify(s, smi, patient, k == chosen) for k, s in table.sarcopenia.items()},
        myosteatosis={k: classify(s, mean_hu, patient, False) for k, s in table.myosteatosis.items()},
    )
