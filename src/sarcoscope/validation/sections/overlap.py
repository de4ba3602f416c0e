"""Overlap sections: what was compared, the per-case CSV, the Dice and area-error summaries and the tissue
confusion."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from sarcoscope import __version__
from sarcoscope.conventions import TISSUES
from sarcoscope.imaging.labelmaps import LabelMapping
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.validation import document as d
from sarcoscope.validation import plots
from sarcoscope.validation.metrics import N_LABELS
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import ScoredCase, column_titles
from sarcoscope.validation.stats import (
    AREA_ERROR_BAR_PCT,
    AreaErrorSummary,
    Summary,
    summarize,
    summarize_area_error,
)


def add_overview(
    out: ReportFolder,
    cases: list[ScoredCase],
    tissues: tuple[str, ...],
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    engine: SegmentationEngine | None,
) -> None:
    """What was compared with what, and the definitions every later table uses."""
    source = f"engine `{engine.name}` (model `{engine.model_id}`)" if engine else "the prediction folder"
    out.doc.add(
        d.Paragraph(
            f"{len(cases)} cases; predictions from {source}; reference labels read with mapping "
            f"`{ref_map.name}`, predictions with `{pred_map.name}`; tissues evaluated: "
            f"{', '.join(tissues)}. Software version {__version__}."
        )
    )
    out.doc.add(
        d.Paragraph(
            "Definitions: Dice = 2|P∩R|/(|P|+|R|), IoU = |P∩R|/|P∪R|; when both prediction and reference "
            "lack a tissue the case scores 1 (correct absence), when only one has it, 0. M+S+V (union) "
            "scores muscle, SAT and VAT as one foreground; M+S+V (mean of 3) averages the three tissue "
            "scores. IoU bins: [0.9, 1.0], [0.8, 0.9), [0.7, 0.8), < 0.7. Areas are per slice."
        )
    )


def add_per_case_csv(out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...]) -> None:
    """per_case.csv: the files, spacing and height of every case, then its metrics in a fixed order."""
    present = {k for c in cases for k in c.metrics}
    order = [f"{col}_{m}" for col in ("msv", "msv_mean") for m in ("dice", "iou")]
    for t in tissues:
        order += [f"{t}_{m}" for m in ("dice", "iou", "pixels_pred", "pixels_ref", "area_pred_cm2")]
        order += [f"{t}_{m}" for m in ("area_ref_cm2", "area_err_cm2", "area_err_pct", "hu_pred", "hu_ref")]
        order.append(f"{t}_hu_diff")
    metric_keys = [k for k in [*order, "smi_pred", "smi_ref"] if k in present]
    per_case = [
        {
            "case_id": c.case_id,
            "site": c.site,
            "ref_file": c.ref_path.name,
            "pred_file": c.pred_path.name,
            "n_slices": c.n_slices,
            "pixel_spacing_y_mm": c.spacing[0] if c.spacing else math.nan,
            "pixel_spacing_x_mm": c.spacing[1] if c.spacing else math.nan,
            "height_m": c.height_m if c.height_m is not None else math.nan,
            **c.metrics,
        }
        for c in cases
    ]
    out.write_csv("per_case.csv", per_case, [*per_case[0].keys()][:8] + metric_keys)


def add_dice_summary(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...]
) -> dict[str, Summary]:
    """Dice per column over all cases (and per site in the CSV), with a box plot."""
    ids = [c.case_id for c in cases]
    sites = [c.site for c in cases]
    has_sites = any(sites)
    titles = column_titles(tissues)
    out.doc.add(d.Heading("Dice summary"))
    dice_summary: dict[str, Summary] = {}
    summary_rows = []
    for col in titles:
        s = summarize([c.metrics[f"{col}_dice"] for c in cases], ids)
        dice_summary[col] = s
        summary_rows.append({"group": "all", "column": col, **asdict(s)})
        if has_sites:
            for site in sorted(set(sites)):
                sub = [c for c in cases if c.site == site]
                ss = summarize([c.metrics[f"{col}_dice"] for c in sub], [c.case_id for c in sub])
                summary_rows.append({"group": site, "column": col, **asdict(ss)})
    out.doc.add(
        d.Table(
            ["tissue", "n", "mean", "SD", "median", "IQR", "worst", "worst case"],
            [
                [titles[col], s.n, s.mean, s.sd, s.median, f"{s.q1:.3f}–{s.q3:.3f}", s.worst, s.worst_case]
                for col, s in dice_summary.items()
            ],
        )
    )
    out.write_csv("dice_summary.csv", summary_rows)
    dice_values = {titles[c]: np.array([k.metrics[f"{c}_dice"] for k in cases]) for c in titles}
    fig = plots.dice_boxplot(dice_values, sites if has_sites else None, out.figdir / "dice_boxplot.png")
    out.doc.add(d.Figure(fig, "Dice per tissue" + (" and site" if has_sites else "")))
    return dice_summary


def add_area_error_summary(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...]
) -> dict[str, AreaErrorSummary]:
    """Area error per tissue over all cases: the number SMI and the fat areas inherit, which Dice hides (a
    slice can overlap well and still be several % too small all round)."""
    ids = [c.case_id for c in cases]
    summary = {t: summarize_area_error([c.metrics[f"{t}_area_err_pct"] for c in cases], ids) for t in tissues}
    out.doc.add(d.Heading("Area error"))
    out.doc.add(
        d.Table(
            [
                "tissue",
                "n",
                "mean %",
                "mean |error| %",
                "largest %",
                "largest case",
                f"beyond ±{AREA_ERROR_BAR_PCT:g} %",
            ],
            [
                [t, s.n, s.mean_pct, s.mean_abs_pct, s.worst_pct, s.worst_case, s.beyond_bar]
                for t, s in summary.items()
            ],
            "100·(predicted − reference)/reference per case, from pixel counts (no pixel spacing needed); "
            "the mean is the bias, the mean |error| the accuracy.",
        )
    )
    out.write_csv("area_error_summary.csv", [{"tissue": t, **asdict(s)} for t, s in summary.items()])
    return summary


def add_confusion(out: ReportFolder, cases: list[ScoredCase]) -> None:
    """Pixels of each reference label by predicted label, all cases pooled."""
    out.doc.add(d.Heading("Which tissue is mistaken for which"))
    names = ["other", *TISSUES]
    total_cm = np.sum([c.confusion for c in cases], axis=0)
    rows_sum = total_cm.sum(axis=1)
    cm_rows = []
    for i, n in enumerate(names):
        for j, m in enumerate(names):
            frac = total_cm[i, j] / rows_sum[i] if rows_sum[i] else math.nan
            cm_rows.append(
                {"reference": n, "predicted": m, "pixels": int(total_cm[i, j]), "fraction_of_reference": frac}
            )
    out.write_csv("confusion_matrix.csv", cm_rows)
    out.doc.add(
        d.Table(
            ["reference \\ predicted", *names],
            [
                [
                    n,
                    *[
                        f"{100 * total_cm[i, j] / rows_sum[i]:.1f} %" if rows_sum[i] else "–"
                        for j in range(N_LABELS)
                    ],
                ]
                for i, n in enumerate(names)
            ],
            "Pixels of each reference label (rows, all cases pooled), by predicted label.",
        )
    )
    out.doc.add(
        d.Figure(plots.confusion_plot(total_cm, out.figdir / "confusion.png"), "Confusion between tissues")
    )
