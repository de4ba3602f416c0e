"""Reading the side inputs of a validation: the sites file and the patients' heights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sarcoscope.composition.assessment import HEIGHT_RANGE_M
from sarcoscope.errors import ValidationInputError
from sarcoscope.fileio import read_csv


def read_table(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV file with the `required` columns and at least one row (`what` names the file)."""
    header, rows = read_csv(path, what, ValidationInputError)
    if not set(required) <= set(header):
        raise ValidationInputError(
            f"{what} file {path}: needs a header with the column{'s' * (len(required) > 1)} "
            f"{' and '.join(required)}."
        )
    if not rows:
        raise ValidationInputError(f"{what} file {path}: has a header but no rows.")
    return rows


def read_sites(path: Path) -> tuple[dict[str, str], set[str]]:
    """case id -> site, and the sites marked internal (optional column `internal`: yes/true/1)."""
    sites: dict[str, str] = {}
    internal: set[str] = set()
    marks: dict[str, set[bool]] = {}
    for i, row in enumerate(read_table(path, ("case_id", "site"), "Sites"), start=2):
        case, site = (row["case_id"] or "").strip(), (row["site"] or "").strip()
        if not case or not site:
            raise ValidationInputError(f"{path} line {i}: empty case_id or site.")
        if case in sites:
            raise ValidationInputError(f"{path} line {i}: case {case} appears twice.")
        sites[case] = site
        flag = (row.get("internal") or "").strip().lower() in ("1", "yes", "true", "y")
        if flag:
            internal.add(site)
        marks.setdefault(site, set()).add(flag)
    mixed = sorted(s for s, m in marks.items() if len(m) > 1)
    if mixed:
        raise ValidationInputError(
            f"{path}: site(s) {', '.join(mixed)} are marked internal on some rows only."
        )
    return sites, internal


def read_heights(path: Path) -> dict[str, float]:
    """case id -> height in metres, from a `height_m` or `height_cm` column (blank = unknown).

    A case listed twice is refused (as in the sites file): which of two heights is right is not ours to
    guess, and the SMI of that case depends on it.
    """
    rows = read_table(path, ("case_id",), "Patients")
    col = "height_m" if "height_m" in rows[0] else "height_cm" if "height_cm" in rows[0] else None
    if col is None:
        raise ValidationInputError(f"Patients file {path}: needs a height_m or height_cm column.")
    out: dict[str, float] = {}
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):
        case = (row["case_id"] or "").strip()
        text = (row.get(col) or "").strip()
        if not case:
            if text:
                raise ValidationInputError(f"{path} line {i}: empty case_id.")
            continue
        if case in seen:
            raise ValidationInputError(f"{path} line {i}: case {case} appears twice.")
        seen.add(case)
        if not text:
            continue
        try:
            h = float(text) / (100.0 if col == "height_cm" else 1.0)
        except ValueError:
            raise ValidationInputError(f"{path} line {i}: height '{text}' is not a number.") from None
        if not HEIGHT_RANGE_M[0] <= h <= HEIGHT_RANGE_M[1]:
            raise ValidationInputError(
                f"{path} line {i}: height {text} {'cm' if col == 'height_cm' else 'm'} is outside the "
                f"plausible range {HEIGHT_RANGE_M[0]:g}-{HEIGHT_RANGE_M[1]:g} m (check the unit)."
            )
        out[case] = h
    return out
