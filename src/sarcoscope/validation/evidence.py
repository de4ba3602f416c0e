"""The default engine, chosen from leave-one-patient-out results on real slices, and the tables that show why.

SMI (muscle area / height²) is the number a sarcopenia study stands on, so the rule looks at muscle first:
the default is the engine with the smaller mean absolute muscle-area error *and* the higher mean muscle
Dice. When no engine is better on both, the smaller muscle-area error decides (the area, not the overlap,
enters the SMI) and the decision says that the evidence is split. scripts/train_default_model.py applies
the rule and writes the result next to the shipped model (models/default_engine.json), which
segmentation.base reads; the README table and the model card come from the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sarcoscope.conventions import TISSUES
from sarcoscope.errors import ValidationInputError
from sarcoscope.validation.stats import iou_bin

#: M+S+V IoU at or above which a slice is in the paper's best bin (0.9-1.0).
GOOD_MSV_IOU = 0.9


@dataclass(frozen=True)
class EngineSummary:
    """One engine's leave-one-out results over the real slices: means, and the muscle-area errors."""

    engine: str
    cases: int
    dice: dict[str, float]  # mean Dice per tissue name and "msv"
    msv_iou_good: int  # slices with M+S+V IoU >= GOOD_MSV_IOU
    muscle_area_abs_error_pct: float  # mean |muscle area error| in %
    muscle_area_worst_error_pct: float  # the signed error with the largest magnitude

    def __post_init__(self) -> None:
        if self.cases < 1:
            raise ValidationInputError(f"Engine {self.engine!r} has no scored cases.")


@dataclass(frozen=True)
class EngineChoice:
    """The chosen default engine, the rule that chose it, and every candidate's summary."""

    engine: str
    reason: str
    summaries: dict[str, EngineSummary]

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "reason": self.reason,
            "rule": RULE,
            "evidence": {name: asdict(s) for name, s in self.summaries.items()},
        }


RULE = (
    "leave-one-patient-out on the real L3 slices: the engine with the smaller mean absolute muscle-area "
    "error and the higher mean muscle Dice; if no engine is better on both, the smaller muscle-area error"
)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, EngineSummary]:
    """Per engine, from rows of validation.metrics.case_metrics plus "case" and "engine" keys."""
    out: dict[str, EngineSummary] = {}
    for engine in dict.fromkeys(str(r["engine"]) for r in rows):
        sel = [r for r in rows if r["engine"] == engine]
        errors = np.array([float(r["muscle_area_err_pct"]) for r in sel])
        out[engine] = EngineSummary(
            engine=engine,
            cases=len(sel),
            dice={k: float(np.mean([r[f"{k}_dice"] for r in sel])) for k in (*TISSUES, "msv")},
            msv_iou_good=sum(float(r["msv_iou"]) >= GOOD_MSV_IOU for r in sel),
            muscle_area_abs_error_pct=float(np.mean(np.abs(errors))),
            muscle_area_worst_error_pct=float(errors[np.argmax(np.abs(errors))]),
        )
    return out


def choose_default(summaries: Mapping[str, EngineSummary], candidates: Sequence[str]) -> EngineChoice:
    """Apply RULE to the candidate engines (each must have been scored on the same cases)."""
    missing = [c for c in candidates if c not in summaries]
    if missing:
        raise ValidationInputError(f"No leave-one-out results for engine(s) {', '.join(missing)}.")
    counts = {summaries[c].cases for c in candidates}
    if len(counts) != 1:
        raise ValidationInputError("The candidate engines were scored on different numbers of cases.")
    pool = [summaries[c] for c in candidates]
    by_error = min(pool, key=lambda s: s.muscle_area_abs_error_pct)
    by_dice = max(pool, key=lambda s: s.dice["muscle"])

    def facts(s: EngineSummary) -> str:
        return (
            f"{s.engine}: muscle-area error {s.muscle_area_abs_error_pct:.1f} % mean absolute "
            f"(worst {s.muscle_area_worst_error_pct:+.1f} %), muscle Dice {s.dice['muscle']:.3f}"
        )

    summary = "; ".join(facts(s) for s in pool)
    if by_error is by_dice:
        reason = f"better on both muscle-area error and muscle Dice over {pool[0].cases} slices ({summary})"
    else:
        reason = (
            f"split evidence over {pool[0].cases} slices, the smaller muscle-area error decides ({summary})"
        )
    return EngineChoice(by_error.engine, reason, {s.engine: s for s in pool})


def loo_markdown(rows: Sequence[Mapping[str, Any]], summaries: Mapping[str, EngineSummary]) -> str:
    """Per case and engine: Dice per tissue, M+S+V Dice and IoU (bin), muscle-area error; then the means."""
    head = (
        "| case | engine | muscle | SAT | VAT | IMAT | M+S+V | M+S+V IoU | muscle area error |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    last_case = None
    for r in sorted(rows, key=lambda r: (str(r["case"]), list(summaries).index(str(r["engine"])))):
        case = "" if r["case"] == last_case else str(r["case"])
        last_case = r["case"]
        cells = [f"{r[f'{t}_dice']:.3f}" for t in TISSUES] + [f"{r['msv_dice']:.3f}"]
        bin_name = iou_bin(float(r["msv_iou"])) or "-"
        lines.append(
            f"| {case} | {r['engine']} | "
            + " | ".join(cells)
            + f" | {r['msv_iou']:.3f} ({bin_name}) | {r['muscle_area_err_pct']:+.1f} % |"
        )
    for i, s in enumerate(summaries.values()):
        label = f"**mean of {s.cases}**" if i == 0 else ""
        cells = [f"**{s.dice[t]:.3f}**" for t in (*TISSUES, "msv")]
        lines.append(
            f"| {label} | {s.engine} | "
            + " | ".join(cells)
            + f" | {s.msv_iou_good} of {s.cases} ≥ {GOOD_MSV_IOU} | "
            f"{s.muscle_area_abs_error_pct:.1f} % (worst {s.muscle_area_worst_error_pct:+.1f} %) |"
        )
    return "\n".join(lines)
