"""Agreement of areas, attenuation and SMI: Bland–Altman and ICC per quantity."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from sarcoscope.validation import document as d
from sarcoscope.validation import plots
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import ScoredCase
from sarcoscope.validation.stats import bland_altman, icc


def add_agreement(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...], sites: list[str] | None
) -> None:
    """Areas (cm² when every case has a spacing, else pixels), mean HU and SMI; `sites` colours the plots."""
    out.doc.add(d.Heading("Agreement of areas, attenuation and SMI"))
    have_cm2 = all(c.spacing is not None for c in cases)
    quantities: list[tuple[str, str, str]] = []  # (title, pred key, ref key)
    for t in tissues:
        if have_cm2:
            quantities.append((f"{t} area (cm²)", f"{t}_area_pred_cm2", f"{t}_area_ref_cm2"))
        else:
            quantities.append((f"{t} area (pixels)", f"{t}_pixels_pred", f"{t}_pixels_ref"))
    for t in tissues:
        if f"{t}_hu_pred" in cases[0].metrics:
            quantities.append((f"{t} mean HU", f"{t}_hu_pred", f"{t}_hu_ref"))
    smi_cases = [c for c in cases if "smi_ref" in c.metrics]
    rows, panels, csv_rows = [], [], []
    for title, kp, kr in quantities:
        p = np.array([c.metrics[kp] for c in cases])
        r = np.array([c.metrics[kr] for c in cases])
        rows.append(agreement_row(title, p, r, csv_rows))
        panels.append((title, p, r, bland_altman(p, r)))
    if smi_cases:
        p = np.array([c.metrics["smi_pred"] for c in smi_cases])
        r = np.array([c.metrics["smi_ref"] for c in smi_cases])
        rows.append(agreement_row("SMI (cm²/m²)", p, r, csv_rows))
        ba_sites = [c.site for c in smi_cases] if sites else None
        fig = plots.bland_altman_plot(
            [("SMI (cm²/m²)", p, r, bland_altman(p, r))], ba_sites, out.figdir / "bland_altman_smi.png"
        )
    out.doc.add(
        d.Table(
            [
                "quantity",
                "n",
                "mean ref",
                "mean pred",
                "mean |error|",
                "bias",
                "95 % LoA",
                "ICC(2,1)",
                "ICC(3,1)",
            ],
            rows,
            "Bias = mean(prediction − reference); LoA = bias ± 1.96 SD; ICC(2,1) absolute agreement "
            "(two-way random, single measurement), ICC(3,1) consistency.",
        )
    )
    out.write_csv("agreement.csv", csv_rows)
    out.doc.add(
        d.Figure(
            plots.bland_altman_plot(panels, sites, out.figdir / "bland_altman.png"), "Bland–Altman plots"
        )
    )
    if smi_cases:
        out.doc.add(d.Figure(fig, "Bland–Altman plot of SMI"))
    else:
        reason = (
            "no pixel spacing"
            if not have_cm2
            else "no heights (give --patients with a height_m or height_cm column)"
        )
        out.doc.add(d.Paragraph(f"SMI agreement: not computed ({reason})."))


def agreement_row(title: str, p: np.ndarray, r: np.ndarray, csv_rows: list[dict[str, Any]]) -> list[object]:
    """One table row (and one CSV row appended to `csv_rows`) for prediction `p` against reference `r`."""
    ba = bland_altman(p, r)
    ic = icc(np.column_stack([p, r]))
    ok = ~(np.isnan(p) | np.isnan(r))
    mae = float(np.abs(p[ok] - r[ok]).mean()) if ok.any() else math.nan
    csv_rows.append(
        {
            "quantity": title,
            "mean_ref": float(np.nanmean(r)) if ok.any() else math.nan,
            "mean_pred": float(np.nanmean(p)) if ok.any() else math.nan,
            "mean_abs_error": mae,
            **asdict(ba),
            "icc2_1": ic["icc2_1"],
            "icc3_1": ic["icc3_1"],
        }
    )
    row = csv_rows[-1]
    return [
        title,
        ba.n,
        row["mean_ref"],
        row["mean_pred"],
        mae,
        ba.bias,
        f"{ba.loa_low:.2f} to {ba.loa_high:.2f}",
        ic["icc2_1"],
        ic["icc3_1"],
    ]
