"""L3 localization validation: predicted vs reference L3 slice per case, error in slices and millimetres.

CSV columns (header required, one row per case): ``case_id``, ``l3_slice`` (0-based axial index into the
CT as sarcoscope reads it, z ascending) and either ``z_mm`` (slice position along the slice normal) or
``slice_spacing_mm``. The error in mm is the difference of ``z_mm`` when both files give it, otherwise
|Δ slice| × slice spacing (taken from either file; they must agree).

A blank ``l3_slice`` in the prediction file means the localizer found no L3 for that case: it is reported
as "not found" and counts as a miss in the within-5/10-mm fractions (which are over all cases), while the
error statistics are over the cases where L3 was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarcoscope.errors import ValidationInputError
from sarcoscope.validation.inputs import read_table
from sarcoscope.validation.io import match_cases

WITHIN_MM: tuple[float, ...] = (5.0, 10.0)


@dataclass(frozen=True)
class L3Row:
    slice: int | None  # None: the localizer found no L3 (allowed in predictions only)
    z_mm: float | None
    spacing_mm: float | None


def _float(value: str | None, where: str, column: str) -> float | None:
    """A finite number, or None for a blank cell; 'nan'/'inf' parse as floats but measure nothing."""
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValidationInputError(f"{where}: {column} '{value}' is not a number.") from None
    if not math.isfinite(number):
        raise ValidationInputError(f"{where}: {column} '{value}' is not a finite number.")
    return number


def _spacing(value: str | None, where: str) -> float | None:
    spacing = _float(value, where, "slice_spacing_mm")
    if spacing is not None and spacing <= 0:
        raise ValidationInputError(f"{where}: slice_spacing_mm {value} must be positive.")
    return spacing


def read_l3_csv(path: Path, *, allow_missing: bool = False) -> dict[str, L3Row]:
    """case id -> L3 row, with clear errors for missing columns, bad numbers and duplicate cases.

    `allow_missing`: a blank l3_slice is "not found" (prediction files) instead of an error. Values that
    are not finite, a negative or fractional slice index and a non-positive spacing are refused: they
    would crash the comparison or silently count a found case as a miss.
    """
    path = Path(path)
    rows = read_table(path, ("case_id", "l3_slice"), "L3")
    out: dict[str, L3Row] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path} line {i}"
        case = (row.get("case_id") or "").strip()
        if not case:
            raise ValidationInputError(f"{where}: empty case_id.")
        if case in out:
            raise ValidationInputError(f"{where}: case {case} appears twice.")
        s = _float(row.get("l3_slice"), where, "l3_slice")
        if s is None and allow_missing:
            out[case] = L3Row(None, None, _spacing(row.get("slice_spacing_mm"), where))
            continue
        if s is None or s != int(s) or s < 0:
            raise ValidationInputError(
                f"{where}: l3_slice must be a whole, non-negative slice index (0 = first slice)."
            )
        z_mm = _float(row.get("z_mm"), where, "z_mm")
        out[case] = L3Row(int(s), z_mm, _spacing(row.get("slice_spacing_mm"), where))
    return out


def compare_l3(
    pred: dict[str, L3Row], ref: dict[str, L3Row], *, allow_unmatched: bool = False
) -> list[dict[str, Any]]:
    """Per case: reference and predicted slice, signed error in slices and in mm (predicted − reference)."""
    cases = match_cases(
        {c: Path(c) for c in pred}, {c: Path(c) for c in ref}, allow_unmatched=allow_unmatched
    )
    out: list[dict[str, Any]] = []
    for case in cases:
        p, r = pred[case], ref[case]
        if p.slice is None or r.slice is None:
            out.append(
                {
                    "case_id": case,
                    "ref_slice": r.slice if r.slice is not None else math.nan,
                    "pred_slice": math.nan,
                    "error_slices": math.nan,
                    "error_mm": math.nan,
                    "found": False,
                }
            )
            continue
        if p.z_mm is not None and r.z_mm is not None:
            err_mm = p.z_mm - r.z_mm
        else:
            spacings = {s for s in (p.spacing_mm, r.spacing_mm) if s is not None}
            if not spacings:
                raise ValidationInputError(
                    f"L3 case {case}: no z_mm in both files and no slice_spacing_mm; "
                    "cannot give the error in mm."
                )
            if len(spacings) > 1:
                raise ValidationInputError(f"L3 case {case}: slice spacings differ ({sorted(spacings)} mm).")
            err_mm = (p.slice - r.slice) * spacings.pop()
        out.append(
            {
                "case_id": case,
                "ref_slice": r.slice,
                "pred_slice": p.slice,
                "error_slices": p.slice - r.slice,
                "error_mm": float(err_mm),
                "found": True,
            }
        )
    return out


def summarize_l3(rows: list[dict[str, Any]]) -> dict[str, float]:
    """n, not found, mean ± SD / median / max |error| (mm, slices) over found cases; fraction of ALL cases
    within 5 and 10 mm (a case without L3 is a miss)."""
    found = [r for r in rows if r["found"]]
    mm = np.abs(np.array([float(r["error_mm"]) for r in found]))
    sl = np.abs(np.array([float(r["error_slices"]) for r in found]))
    n = len(rows)
    out: dict[str, float] = {"n": float(n), "not_found": float(n - len(found))}
    if not found:
        return out
    out.update(
        {
            "mean_abs_error_mm": float(mm.mean()),
            "sd_abs_error_mm": float(mm.std(ddof=1)) if mm.size > 1 else math.nan,
            "median_abs_error_mm": float(np.median(mm)),
            "max_abs_error_mm": float(mm.max()),
            "mean_abs_error_slices": float(sl.mean()),
            "median_abs_error_slices": float(np.median(sl)),
            "exact_slice": float(np.sum(sl == 0) / n),
        }
    )
    for limit in WITHIN_MM:
        out[f"within_{limit:g}mm"] = float(np.sum(mm <= limit) / n)
    return out
