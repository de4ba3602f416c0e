"""L3 localization section: error of the chosen L3 slice against the reference, per case and summarized."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sarcoscope.validation import document as d
from sarcoscope.validation import plots
from sarcoscope.validation.l3 import compare_l3, read_l3_csv, summarize_l3
from sarcoscope.validation.report_folder import ReportFolder

L3_TABLE_ROWS = 20


def add_l3(
    out: ReportFolder, ref_csv: str | Path, pred_csv: str | Path, allow_unmatched: bool
) -> dict[str, float]:
    """Compare the predicted L3 slices with the reference ones; the summary is returned and written."""
    rows = compare_l3(
        read_l3_csv(Path(pred_csv), allow_missing=True),
        read_l3_csv(Path(ref_csv)),
        allow_unmatched=allow_unmatched,
    )
    summary = summarize_l3(rows)
    out.write_csv("l3_per_case.csv", rows)
    out.write_csv("l3_summary.csv", [summary])
    out.doc.add(d.Heading("L3 localization"))
    out.doc.add(
        d.Table(
            [
                "n",
                "not found",
                "mean |error| mm",
                "SD",
                "median mm",
                "max mm",
                "exact slice",
                "within 5 mm",
                "within 10 mm",
            ],
            [
                [
                    int(summary["n"]),
                    int(summary["not_found"]),
                    summary.get("mean_abs_error_mm"),
                    summary.get("sd_abs_error_mm"),
                    summary.get("median_abs_error_mm"),
                    summary.get("max_abs_error_mm"),
                    summary.get("exact_slice"),
                    summary.get("within_5mm"),
                    summary.get("within_10mm"),
                ]
            ],
            "Error = predicted − reference L3 position, over the cases where L3 was found; exact/within: "
            "fractions of all cases (not found = miss).",
        )
    )
    worst = sorted(rows, key=lambda r: -abs(r["error_mm"]) if r["found"] else -math.inf)[:L3_TABLE_ROWS]
    out.doc.add(
        d.Table(
            ["case", "reference slice", "predicted slice", "error (slices)", "error (mm)"],
            [
                [
                    r["case_id"],
                    r["ref_slice"],
                    r["pred_slice"] if r["found"] else "not found",
                    r["error_slices"],
                    r["error_mm"],
                ]
                for r in worst
            ],
            f"Cases by decreasing |error| (not found first; at most {L3_TABLE_ROWS}; all in "
            "l3_per_case.csv).",
        )
    )
    errs = np.array([float(r["error_mm"]) for r in rows if r["found"]])
    out.doc.add(d.Figure(plots.l3_error_plot(errs, out.figdir / "l3_errors.png"), "L3 localization errors"))
    return summary
