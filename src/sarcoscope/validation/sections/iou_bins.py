"""The paper's IoU-bin tables: Table 3 (per tissue), Table 5 (per site), Table 6 (external sites pooled)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sarcoscope.validation import document as d
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import MSV_COLUMNS, ScoredCase, column_titles
from sarcoscope.validation.stats import IOU_BINS, iou_bin_counts


def bins_row_block(values: dict[str, list[float]]) -> tuple[list[list[object]], list[dict[str, Any]]]:
    """Table 3 layout: one row per IoU bin, count (ratio) per column; plus long-format CSV rows."""
    counts = {col: iou_bin_counts(v) for col, v in values.items()}
    rows, csv_rows = [], []
    for name, _, _ in IOU_BINS:
        row: list[object] = [name]
        for col in values:
            c, r = counts[col][name]
            row.append(f"{c} ({100 * r:.1f} %)" if not math.isnan(r) else "–")
            csv_rows.append({"column": col, "iou_bin": name, "count": c, "ratio": r})
        rows.append(row)
    rows.append(["n", *[sum(c for c, _ in counts[col].values()) for col in values]])
    return rows, csv_rows


def iou_values(cases: Sequence[ScoredCase], tissues: Sequence[str]) -> dict[str, list[float]]:
    """Per-case IoU of every scored column."""
    cols = [*tissues, *MSV_COLUMNS]
    return {c: [k.metrics[f"{c}_iou"] for k in cases] for c in cols}


def add_table3(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...], internal_sites: set[str]
) -> None:
    """Table 3 layout over the internal cases (all cases when no site is marked internal)."""
    titles = column_titles(tissues)
    internal = [c for c in cases if c.site in internal_sites] if internal_sites else cases
    label = "internal cases" if internal_sites else "all cases"
    out.doc.add(d.Heading(f"Table 3 layout: IoU bins per tissue ({label})"))
    rows, csv_rows = bins_row_block(iou_values(internal, tissues))
    out.doc.add(d.Table(["IoU", *titles.values()], rows, "count (ratio) of cases per IoU bin"))
    out.write_csv("table3_iou_bins.csv", csv_rows)


def add_site_tables(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...], internal_sites: set[str]
) -> None:
    """Table 5 layout (M+S+V bins per site) and, when some site is internal, Table 6 (external pooled)."""
    titles = column_titles(tissues)
    site_list = sorted({c.site for c in cases})
    out.doc.add(d.Heading("Table 5 layout: IoU bins of M+S+V (union) per site"))
    rows, csv_rows = [], []
    for site in site_list:
        sub = [c for c in cases if c.site == site]
        values = iou_values(sub, tissues)
        counts = iou_bin_counts(values["msv"])
        rows.append([site, len(sub), *[f"{n} ({100 * r:.1f} %)" for n, r in counts.values()]])
        for col, v in values.items():
            for name, (n, r) in iou_bin_counts(v).items():
                csv_rows.append(
                    {"site": site, "n": len(sub), "column": col, "iou_bin": name, "count": n, "ratio": r}
                )
    out.doc.add(d.Table(["site", "n", *[name for name, _, _ in IOU_BINS]], rows))
    out.write_csv("table5_sites_iou_bins.csv", csv_rows)
    if not internal_sites:
        out.doc.add(
            d.Paragraph(
                "Table 6 layout (pooled external sites) is Table 3 above, as no site is marked internal "
                "(sites file column `internal`)."
            )
        )
        return
    external = [c for c in cases if c.site not in internal_sites]
    ext_sites = sorted({c.site for c in external})
    out.doc.add(
        d.Heading(f"Table 6 layout: IoU bins pooled over the external sites ({', '.join(ext_sites)})")
    )
    rows6, csv6 = bins_row_block(iou_values(external, tissues))
    out.doc.add(d.Table(["IoU", *titles.values()], rows6, "count (ratio) of cases per IoU bin, sites pooled"))
    out.write_csv("table6_pooled_iou_bins.csv", csv6)
