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

#: Every file and folder a report may write into its folder. A new report replaces these (and removes the
#: ones it does not write, left by an earlier report); every other entry of the folder is the user's and
#: stays. A section writing another name must add it here (`ReportFolder.write_csv` checks).
REPORT_OUTPUTS: frozenset[str] = frozenset(
    {
        "report.md",
        "report.html",
        "settings.json",
        "per_case.csv",
        "dice_summary.csv",
        "area_error_summary.csv",
        "confusion_matrix.csv",
        "table3_iou_bins.csv",
        "table5_sites_iou_bins.csv",
        "table6_pooled_iou_bins.csv",
        "site_comparison.csv",
        "site_pairs.csv",
        "agreement.csv",
        "l3_per_case.csv",
        "l3_summary.csv",
        "figures",
        "predictions",
    }
)
#: Moved into the report folder after every other output, so a report that is there is complete.
PLACED_LAST: tuple[str, ...] = ("settings.json", "report.md", "report.html")


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
        if name not in REPORT_OUTPUTS:  # a programming error: the name would never be replaced or removed
            raise ValueError(f"{name} is not in REPORT_OUTPUTS")
        write_csv(self.root / name, rows, columns)
        self.files.append(name)
