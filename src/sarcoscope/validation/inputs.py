"""Reading the side inputs of a validation: the sites file and the patients' heights."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from sarcoscope.errors import ValidationInputError


def read_table(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV file that must have the `required` columns (`what` names the file in messages)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ValidationInputError(f"Cannot read {what} file {path}: {exc}") from None
    if not rows or not set(required) <= set(rows[0]):
        raise ValidationInputError(f"{what} file {path}: needs a header with columns {', '.join(required)}.")
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
    """case id -> height in metres, from a `height_m` or `height_cm` column (blank = unknown)."""
    rows = read_table(path, ("case_id",), "Patients")
    col = "height_m" if "height_m" in rows[0] else "height_cm" if "height_cm" in rows[0] else None
    if col is None:
        raise ValidationInputError(f"Patients file {path}: needs a height_m or height_cm column.")
    out: dict[str, float] = {}
    for i, row in enumerate(rows, start=2):
        text = (row.get(col) or "").strip()
        if not text:
            continue
        try:
            h = float(text) / (100.0 if col == "height_cm" else 1.0)
        except ValueError:
            raise ValidationInputError(f"{path} line {i}: height '{text}' is not a number.") from None
        if not 0.5 <= h <= 2.5:
            raise ValidationInputError(f"{path} line {i}: height {h:.2f} m is implausible (check the unit).")
        out[(row["case_id"] or "").strip()] = h
    return out
