"""Cutoff sets (loaded from cutoffs.yaml, the single source of the numbers) and the rule that applies them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

import yaml

from sarcoscope.errors import CompositionError

CUTOFFS_FILE = "cutoffs.yaml"


@dataclass(frozen=True)
class CutoffRule:
    """One threshold: applies to `sex` ("M", "F" or "any") and BMI in [bmi_from, bmi_below)."""

    sex: str
    cutoff: float
    bmi_from: float | None = None
    bmi_below: float | None = None

    @property
    def needs_bmi(self) -> bool:
        return self.bmi_from is not None or self.bmi_below is not None

    def matches(self, sex: str | None, bmi: float | None) -> bool:
        if self.sex != "any" and sex != self.sex:
            return False
        if self.bmi_from is not None and (bmi is None or bmi < self.bmi_from):
            return False
        return not (self.bmi_below is not None and (bmi is None or bmi >= self.bmi_below))

    def describe(self) -> str:
        who = {"M": "men", "F": "women", "any": "both sexes"}[self.sex]
        if self.bmi_from is not None and self.bmi_below is not None:
            return f"{who}, {self.bmi_from:g} ≤ BMI < {self.bmi_below:g}"
        if self.bmi_from is not None:
            return f"{who}, BMI ≥ {self.bmi_from:g}"
        if self.bmi_below is not None:
            return f"{who}, BMI < {self.bmi_below:g}"
        return who


@dataclass(frozen=True)
class CutoffSet:
    """A published set of thresholds with its provenance."""

    id: str
    kind: str  # "sarcopenia" | "myosteatosis"
    title: str
    metric: str  # "smi" | "muscle_mean_hu"
    unit: str
    citation: str
    doi: str | None
    population: str
    l3_convention: str
    definition: str
    rules: tuple[CutoffRule, ...]

    @property
    def needs_sex(self) -> bool:
        return any(r.sex != "any" for r in self.rules)

    @property
    def needs_sex_or_bmi(self) -> bool:
        """Whether its classification (the rule, the cutoff, the flag, or why it was not computed) depends on
        the patient's sex or BMI, and so tells them back: "men, BMI ≥ 25", 52.4 (Prado's cutoff for men), or
        a flag with an SMI between the women's and the men's cutoff."""
        return self.needs_sex or any(r.needs_bmi for r in self.rules)

    def provenance(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "citation": self.citation,
            "doi": self.doi,
            "population": self.population,
            "l3_convention": self.l3_convention,
            "definition": self.definition,
            "rules": [
                {"applies_to": r.describe(), "flagged_when": f"{self.metric} < {r.cutoff:g} {self.unit}"}
                for r in self.rules
            ],
        }


@dataclass(frozen=True)
class CutoffTable:
    default_sarcopenia: str
    sarcopenia: dict[str, CutoffSet]
    myosteatosis: dict[str, CutoffSet]


def _parse_set(set_id: str, kind: str, raw: dict[str, Any]) -> CutoffSet:
    try:
        rules = tuple(
            CutoffRule(
                sex=str(r["sex"]),
                cutoff=float(r["cutoff"]),
                bmi_from=None if r.get("bmi_from") is None else float(r["bmi_from"]),
                bmi_below=None if r.get("bmi_below") is None else float(r["bmi_below"]),
            )
            for r in raw["rules"]
        )
        if not rules or any(r.sex not in ("M", "F", "any") for r in rules):
            raise ValueError("rules must be a non-empty list with sex M, F or any")
        return CutoffSet(
            id=set_id,
            kind=kind,
            title=str(raw["title"]),
            metric=str(raw["metric"]),
            unit=str(raw["unit"]),
            citation=" ".join(str(raw["citation"]).split()),
            doi=raw.get("doi"),
            population=str(raw["population"]),
            l3_convention=str(raw["l3_convention"]),
            definition=str(raw["definition"]),
            rules=rules,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CompositionError(f"{CUTOFFS_FILE}: cutoff set '{set_id}' is malformed ({exc}).") from exc


@lru_cache(maxsize=1)
def load_cutoffs() -> CutoffTable:
    """Read the shipped cutoffs.yaml (once per process)."""
    raw = yaml.safe_load(files("sarcoscope.composition").joinpath(CUTOFFS_FILE).read_text(encoding="utf-8"))
    table = CutoffTable(
        default_sarcopenia=str(raw["default_sarcopenia"]),
        sarcopenia={k: _parse_set(k, "sarcopenia", v) for k, v in raw["sarcopenia"].items()},
        myosteatosis={k: _parse_set(k, "myosteatosis", v) for k, v in raw["myosteatosis"].items()},
    )
    if table.default_sarcopenia not in table.sarcopenia:
        raise CompositionError(f"{CUTOFFS_FILE}: default set '{table.default_sarcopenia}' is not defined.")
    return table


def available_cutoff_sets() -> list[str]:
    """Ids of the shipped sarcopenia (SMI) cutoff sets, in file order; valid values of `cutoff_set`."""
    return list(load_cutoffs().sarcopenia)


def default_cutoff_set() -> str:
    return load_cutoffs().default_sarcopenia


#: Values this close to a cutoff count as equal to it (floating-point noise of area / height², not biology).
EQUAL_TOLERANCE = 1e-9


def is_below(value: float, cutoff: float) -> bool:
    """The flagging rule of every set: strictly below. A value equal to the cutoff is not flagged.

    "Equal" allows for floating-point noise (|value − cutoff| ≤ 1e-9), so an SMI that is exactly the
    cutoff on paper (e.g. 52.4) is never flagged because it came out as 52.39999999999999.
    """
    return value < cutoff and not math.isclose(
        value, cutoff, rel_tol=EQUAL_TOLERANCE, abs_tol=EQUAL_TOLERANCE
    )
