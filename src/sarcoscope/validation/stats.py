"""Summary and agreement statistics: the paper's IoU bins, Dice summaries, Bland–Altman, ICC, site outliers.

IoU bins (the paper's Table 3 rows) are half-open so every value has exactly one bin:
``[0.9, 1.0]``, ``[0.8, 0.9)``, ``[0.7, 0.8)``, ``[0, 0.7)``; an IoU of exactly 0.9 is in the top bin,
0.8999… in the second. NaN values (not evaluated) are not counted.

ICC is ICC(2,1) of Shrout & Fleiss (1979): two-way random effects, absolute agreement, single measurement
(McGraw & Wong's ICC(A,1)) — the model reader-agreement studies use, because a systematic offset between
prediction and reference must lower agreement. ICC(3,1) (consistency) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: (label as printed in the paper, lower bound inclusive, upper bound exclusive; the top bin includes 1.0)
IOU_BINS: tuple[tuple[str, float, float], ...] = (
    ("0.9–1.0", 0.9, math.inf),
    ("0.8–0.89", 0.8, 0.9),
    ("0.7–0.79", 0.7, 0.8),
    ("< 0.7", -math.inf, 0.7),
)


def iou_bin(value: float) -> str | None:
    """The paper's bin of one IoU (None for NaN)."""
    if math.isnan(value):
        return None
    for name, lo, hi in IOU_BINS:
        if lo <= value < hi:
            return name
    raise AssertionError(f"unreachable: {value}")


def iou_bin_counts(values: Sequence[float]) -> dict[str, tuple[int, float]]:
    """Bin name -> (count, ratio of the evaluated values); ratios are NaN when nothing was evaluated."""
    bins = [iou_bin(float(v)) for v in values]
    n = sum(b is not None for b in bins)
    return {name: (bins.count(name), bins.count(name) / n if n else math.nan) for name, _, _ in IOU_BINS}


def _evaluated(values: Sequence[float], case_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The values that were evaluated (NaN: not) and their cases."""
    arr = np.asarray(values, dtype=float)
    ok = ~np.isnan(arr)
    return arr[ok], [c for c, k in zip(case_ids, ok, strict=True) if k]


@dataclass(frozen=True)
class Summary:
    """Distribution of one metric over cases (NaN values excluded)."""

    n: int
    mean: float
    sd: float
    median: float
    q1: float
    q3: float
    worst: float
    worst_case: str


def summarize(values: Sequence[float], case_ids: Sequence[str], *, lower_is_worse: bool = True) -> Summary:
    """Mean, SD (n−1), median, IQR and the worst case of a metric."""
    good, ids = _evaluated(values, case_ids)
    if not good.size:
        return Summary(0, *(math.nan,) * 6, "")
    idx = int(np.argmin(good) if lower_is_worse else np.argmax(good))
    return Summary(
        n=int(good.size),
        mean=float(good.mean()),
        sd=float(good.std(ddof=1)) if good.size > 1 else math.nan,
        median=float(np.median(good)),
        q1=float(np.percentile(good, 25)),
        q3=float(np.percentile(good, 75)),
        worst=float(good[idx]),
        worst_case=ids[idx],
    )


#: A slice whose area error is beyond this (%, either way) misses the project's accuracy goal for muscle
#: (README, Accuracy: at most 6 % on every slice): SMI cutoffs sit a few cm²/m² from typical values.
AREA_ERROR_BAR_PCT = 6.0


@dataclass(frozen=True)
class AreaErrorSummary:
    """A tissue's area error over cases, 100·(predicted − reference)/reference in %: its mean (bias), mean
    absolute (accuracy), the largest in magnitude with its case, and how many cases are beyond the bar."""

    n: int
    mean_pct: float
    mean_abs_pct: float
    worst_pct: float
    worst_case: str
    beyond_bar: int


def summarize_area_error(values: Sequence[float], case_ids: Sequence[str]) -> AreaErrorSummary:
    """The area errors (%) of cases; NaN (no reference area) excluded."""
    good, ids = _evaluated(values, case_ids)
    if not good.size:
        return AreaErrorSummary(0, math.nan, math.nan, math.nan, "", 0)
    idx = int(np.argmax(np.abs(good)))
    return AreaErrorSummary(
        n=int(good.size),
        mean_pct=float(good.mean()),
        mean_abs_pct=float(np.abs(good).mean()),
        worst_pct=float(good[idx]),
        worst_case=ids[idx],
        beyond_bar=int(np.sum(np.abs(good) > AREA_ERROR_BAR_PCT)),
    )


@dataclass(frozen=True)
class BlandAltman:
    """Bias (mean of prediction − reference), its 95 % CI, and the 95 % limits of agreement."""

    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float
    bias_ci_low: float
    bias_ci_high: float


def bland_altman(pred: Sequence[float], ref: Sequence[float]) -> BlandAltman:
    """Bland & Altman (1986): limits = bias ± 1.96·SD of the differences; pairs with a NaN are dropped."""
    p, r = np.asarray(pred, float), np.asarray(ref, float)
    ok = ~(np.isnan(p) | np.isnan(r))
    d = p[ok] - r[ok]
    n = int(d.size)
    if n < 2:
        return BlandAltman(n, *(math.nan,) * 6)
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return BlandAltman(n, bias, sd, bias - 1.96 * sd, bias + 1.96 * sd, bias - half, bias + half)


def icc(ratings: np.ndarray) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) of an (n targets × k raters) matrix; rows with a NaN are dropped.

    Mean squares from the two-way ANOVA: rows (targets) MSR, columns (raters) MSC, residual MSE.
    """
    y = np.asarray(ratings, dtype=float)
    y = y[~np.isnan(y).any(axis=1)]
    n, k = y.shape
    if n < 2 or k < 2:
        return {"icc2_1": math.nan, "icc3_1": math.nan, "n": float(n)}
    grand = y.mean()
    rows, cols = y.mean(axis=1), y.mean(axis=0)
    msr = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((cols - grand) ** 2).sum()) / (k - 1)
    mse = float(((y - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((n - 1) * (k - 1))
    den2 = msr + (k - 1) * mse + k * (msc - mse) / n
    den3 = msr + (k - 1) * mse
    return {
        "icc2_1": (msr - mse) / den2 if den2 > 0 else math.nan,
        "icc3_1": (msr - mse) / den3 if den3 > 0 else math.nan,
        "n": float(n),
    }


@dataclass(frozen=True)
class PairTest:
    """Two sites compared on one metric (two-sided Mann–Whitney U)."""

    metric: str
    site_a: str
    site_b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    p_value: float
    p_adjusted: float
    differs: bool  # adjusted p < alpha and |median_a − median_b| >= the metric's minimum effect


@dataclass(frozen=True)
class SiteTest:
    """One site against the others on one metric: flagged when it differs from most of them."""

    site: str
    metric: str
    n_site: int
    median_site: float
    median_others: float
    n_compared: int  # other sites it could be tested against
    differs_from: tuple[str, ...]
    flagged: bool


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, math.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def compare_sites(
    values: Mapping[str, Sequence[float]],
    sites: Sequence[str],
    *,
    min_effect: Mapping[str, float],
    alpha: float = 0.05,
    min_cases: int = 3,
) -> tuple[list[SiteTest], list[PairTest]]:
    """Find the site(s) that differ from the others, per metric.

    Every pair of sites is compared (two-sided Mann–Whitney U, Holm-adjusted over all pair × metric tests);
    a pair differs when the adjusted p < alpha AND the medians differ by at least `min_effect[metric]` (so
    a tiny but consistent difference in a big cohort is not called a labelling difference). A site is
    flagged on a metric when it differs from MORE THAN HALF of the sites it could be compared with: pairwise
    rather than one-against-the-rest, because an odd site would otherwise drag "the rest" and get the good
    sites flagged too. With only two sites both are flagged when they differ (which one is odd is then
    undecidable). Sites with fewer than `min_cases` evaluated cases are not tested.
    """
    site_arr = np.asarray(sites)
    site_list = sorted(set(sites))
    raw: list[tuple[str, str, str, int, int, float, float, float]] = []
    for metric, vals in values.items():
        v = np.asarray(vals, float)
        groups = {s: v[(site_arr == s) & ~np.isnan(v)] for s in site_list}
        for i, sa in enumerate(site_list):
            for sb in site_list[i + 1 :]:
                a, b = groups[sa], groups[sb]
                p = math.nan
                if a.size >= min_cases and b.size >= min_cases:
                    both = np.concatenate([a, b])
                    p = 1.0 if np.ptp(both) == 0 else float(sps.mannwhitneyu(a, b).pvalue)
                med_a = float(np.median(a)) if a.size else math.nan
                med_b = float(np.median(b)) if b.size else math.nan
                raw.append((metric, sa, sb, int(a.size), int(b.size), med_a, med_b, p))
    adjusted = holm([r[7] for r in raw])
    pairs = [
        PairTest(
            m,
            sa,
            sb,
            na,
            nb,
            ma,
            mb,
            p,
            pa,
            not math.isnan(pa) and pa < alpha and abs(ma - mb) >= min_effect.get(m, 0.0),
        )
        for (m, sa, sb, na, nb, ma, mb, p), pa in zip(raw, adjusted, strict=True)
    ]
    out = []
    for metric, vals in values.items():
        v = np.asarray(vals, float)
        for s in site_list:
            mine = [q for q in pairs if q.metric == metric and s in (q.site_a, q.site_b)]
            tested = [q for q in mine if not math.isnan(q.p_value)]
            differs = tuple(q.site_b if q.site_a == s else q.site_a for q in tested if q.differs)
            own = v[(site_arr == s) & ~np.isnan(v)]
            others = v[(site_arr != s) & ~np.isnan(v)]
            out.append(
                SiteTest(
                    site=s,
                    metric=metric,
                    n_site=int(own.size),
                    median_site=float(np.median(own)) if own.size else math.nan,
                    median_others=float(np.median(others)) if others.size else math.nan,
                    n_compared=len(tested),
                    differs_from=differs,
                    flagged=bool(tested) and len(differs) > len(tested) / 2,
                )
            )
    return out, pairs
