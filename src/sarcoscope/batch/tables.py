"""The run's tables: cohort.csv (one row per analysed case) and failures.csv (each failed case and why),
kept in the output folder as the run goes."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarcoscope.batch.cases import Case
from sarcoscope.export.report import AREA_DECIMALS, HU_DECIMALS
from sarcoscope.fileio import atomic_write


@dataclass
class CaseOutcome:
    """What happened to one case: "done", "skipped" (already analysed) or "failed" (with the reason)."""

    case_id: str
    status: str
    seconds: float = 0.0
    row: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: Why the case's earlier results were not kept (it was analysed again), for the run's own log.
    reanalysed: str | None = None


@dataclass
class BatchSummary:
    outcomes: list[CaseOutcome]
    cohort_csv: Path
    failures_csv: Path
    #: The tables' rows when the run started (kept in them until this run has an outcome for their case).
    kept_rows: list[dict[str, Any]] = field(default_factory=list)
    kept_failures: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def keep_earlier_rows(self) -> None:
        """Keep the tables' rows until this run has an outcome for their case: analysing a second cohort (or
        a part of one) into the same folder adds to its tables instead of dropping what is there, and a run
        stopped midway keeps the rows of the cases it did not reach."""
        self.kept_rows = read_table(self.cohort_csv)
        self.kept_failures = read_table(self.failures_csv)

    def write(self) -> None:
        """(Re)write cohort.csv and failures.csv from the outcomes so far and the kept rows, sorted by case
        id, atomically.

        Called after every case: O(cases) each time, negligible beside a case's analysis even for
        thousands of cases, and a run killed at any moment leaves complete tables of what it finished."""
        outcomes = sorted(self.outcomes, key=lambda o: o.case_id)
        seen = {o.case_id for o in outcomes}
        kept_rows = [r for r in self.kept_rows if r.get("case_id") not in seen]
        rows = sorted([*kept_rows, *(o.row for o in outcomes if o.row)], key=lambda r: r["case_id"])
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        write_csv_atomic(self.cohort_csv, rows, columns or ["case_id"])
        failed = [{"case_id": o.case_id, "error": o.error} for o in outcomes if o.status == "failed"]
        kept_failures = [r for r in self.kept_failures if r.get("case_id") not in seen]
        failed = sorted([*kept_failures, *failed], key=lambda r: r["case_id"])
        write_csv_atomic(self.failures_csv, failed, ["case_id", "error"])


def read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summary_row(case: Case, report: dict[str, Any]) -> dict[str, Any]:
    """The cohort table's row for one case, read from its report.json, to metrics.csv's precision."""
    avg = report["average"]["tissues"]
    assessment = report["assessment"]
    row: dict[str, Any] = {
        "case_id": case.case_id,
        "site": case.site or "",
        "l3_mode": report["l3"]["mode"],
        "l3_slices": " ".join(str(i) for i in report["l3"]["slice_indices"]),
        "l3_confidence": report["l3"].get("confidence"),
        "engine": report["segmentation"]["model_id"],
    }
    for tissue in ("muscle", "sat", "vat", "imat"):
        row[f"{tissue}_area_cm2"] = round(avg[tissue]["area_cm2"], AREA_DECIMALS)
        mean_hu = avg[tissue]["mean_hu"]
        row[f"{tissue}_mean_hu"] = None if mean_hu is None else round(mean_hu, HU_DECIMALS)
    smi = assessment["smi"].get("value")
    row["smi_cm2_m2"] = None if smi is None else round(smi, AREA_DECIMALS)
    (chosen,) = [c for c in assessment["sarcopenia"] if c["selected"]]
    row["sarcopenia_cutoff_set"] = chosen["set"]
    row["sarcopenia"] = chosen["flagged"] if chosen["status"] == "computed" else "not computed"
    quality = report.get("quality", {})
    computed = quality.get("status") == "computed" and quality["score"] is not None
    row["quality"] = quality["score"] if computed else ""
    row["quality_flag"] = ("review" if quality["flagged"] else "ok") if computed else ""
    row["warnings"] = len(report.get("warnings", []))
    if "deidentification" in report:
        row["patient"] = report["deidentification"]["patient_pseudonym"]
    row.update(case.extra)
    return row


def write_csv_atomic(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write the table beside `path` and move it over; a write stopped midway (Ctrl-C, a full disk) leaves
    no partial copy of the cohort's rows behind, and the table gets the permissions the run's other outputs
    get (a folder shared with a group stays readable to it)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
