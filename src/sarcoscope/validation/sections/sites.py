"""Per-site comparison: flag a site whose Dice or area bias differs from the others (labelling convention)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from sarcoscope.conventions import TISSUES
from sarcoscope.validation import document as d
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import ScoredCase
from sarcoscope.validation.stats import compare_sites

#: Smallest median difference that may flag a site (besides significance): Dice points, area-error points.
SITE_MIN_EFFECT = {"dice": 0.02, "area_err_pct": 5.0}


def add_site_comparison(
    out: ReportFolder, cases: list[ScoredCase], tissues: tuple[str, ...], alpha: float
) -> dict[str, list[str]]:
    """Flag sites whose Dice or area bias differs from the other sites (possible labelling difference)."""
    sites = [c.site for c in cases]
    values: dict[str, list[float]] = {}
    effect: dict[str, float] = {}
    for t in tissues:
        values[f"{t}_dice"] = [c.metrics[f"{t}_dice"] for c in cases]
        values[f"{t}_area_err_pct"] = [c.metrics[f"{t}_area_err_pct"] for c in cases]
        effect[f"{t}_dice"] = SITE_MIN_EFFECT["dice"]
        effect[f"{t}_area_err_pct"] = SITE_MIN_EFFECT["area_err_pct"]
    tests, pairs = compare_sites(values, sites, min_effect=effect, alpha=alpha)
    out.write_csv(
        "site_comparison.csv", [{**asdict(t), "differs_from": ";".join(t.differs_from)} for t in tests]
    )
    out.write_csv("site_pairs.csv", [asdict(q) for q in pairs])
    counts = {s: sites.count(s) for s in set(sites)}
    small = sorted(s for s, n in counts.items() if n < 3)
    if small:
        out.warnings.append(
            f"Site(s) {', '.join(small)} have fewer than 3 cases and were not compared with the others."
        )
    flagged: dict[str, list[str]] = {}
    for t in tests:
        if t.flagged:
            unit = "" if t.metric.endswith("dice") else " %"
            flagged.setdefault(t.site, []).append(
                f"{t.metric} median {t.median_site:.3f}{unit} vs {t.median_others:.3f}{unit} at the other "
                f"sites (differs from {', '.join(t.differs_from)})"
            )
    out.doc.add(d.Heading("Per-site comparison"))
    out.doc.add(
        d.Paragraph(
            "Every pair of sites is compared on per-case Dice and signed area error per tissue (two-sided "
            f"Mann–Whitney U, Holm-adjusted over all tests, alpha {alpha}); a pair differs when the "
            f"difference is significant and at least {SITE_MIN_EFFECT['dice']} Dice or "
            f"{SITE_MIN_EFFECT['area_err_pct']:g} area-% points between medians. A site is flagged when it "
            "differs from more than half of the other sites: a systematic difference at one site is the "
            "signature of a different labelling convention (as in the paper's first external attempt), to "
            "be checked on the gallery before blaming the model."
        )
    )
    med = {(t.site, t.metric): t.median_site for t in tests}
    out.doc.add(
        d.Table(
            ["site", "n", *[f"{t} Dice" for t in tissues], *[f"{t} area err %" for t in tissues], "flagged"],
            [
                [
                    s,
                    sum(x == s for x in sites),
                    *[med[(s, f"{t}_dice")] for t in tissues],
                    *[med[(s, f"{t}_area_err_pct")] for t in tissues],
                    "YES" if s in flagged else "no",
                ]
                for s in sorted(set(sites))
            ],
            "medians per site",
        )
    )
    if flagged:
        for site, reasons in flagged.items():
            extra = site_confusion_note(cases, site)
            out.doc.add(d.Paragraph(f"**Site {site} flagged:** " + "; ".join(reasons) + "." + extra))
            out.warnings.append(
                f"Site {site} differs systematically from the others (possible labelling difference)."
            )
    else:
        out.doc.add(d.Paragraph("No site differs significantly from the others."))
    return flagged


def site_confusion_note(cases: list[ScoredCase], site: str) -> str:
    """The reference -> predicted confusion most over-represented at the site, in words."""
    names = ["other", *TISSUES]

    def fractions(group: list[ScoredCase]) -> np.ndarray:
        cm = np.sum([c.confusion for c in group], axis=0).astype(float)
        rows = cm.sum(axis=1, keepdims=True)
        return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)

    fs = fractions([c for c in cases if c.site == site])
    fr = fractions([c for c in cases if c.site != site])
    excess = fs - fr
    np.fill_diagonal(excess, -np.inf)
    i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[i, j] <= 0.02:
        return ""
    return (
        f" At this site {100 * fs[i, j]:.1f} % of the reference {names[i]} pixels are predicted as "
        f"{names[j]} (elsewhere {100 * fr[i, j]:.1f} %)."
    )
