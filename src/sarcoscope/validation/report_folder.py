"""The report folder being built: its document, the CSV files written beside it and the warnings found.

Every section of `run_validation` adds to one `ReportFolder`, so each number it shows is written to a CSV
file listed at the end of the report.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarcoscope.validation import document as d


def write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as CSV; NaN becomes an empty cell (a number that could not be computed)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


@dataclass
class ReportFolder:
    """Where the sections write: `root` (the staging folder), `figures/` in it, the document, the files."""

    root: Path
    doc: d.Document
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def figdir(self) -> Path:
        return self.root / "figures"

    def write_csv(self, name: str, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        """Write `name` in the folder and list it among the report's files."""
        write_csv(self.root / name, rows, columns)
        self.files.append(name)
