"""Validation figures (matplotlib object API, no global pyplot state, safe in threads and servers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sarcoscope.conventions import LABEL_COLORS, TISSUE_TITLES, TISSUES, Label
from sarcoscope.validation.stats import BlandAltman

_LABEL_NAMES = ["other", "muscle", "SAT", "VAT", "IMAT"]


def _rgb(label: int) -> tuple[float, float, float]:
    r, g, b = LABEL_COLORS[Label(label)]
    return (r / 255, g / 255, b / 255)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    return path


def bland_altman_plot(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, BlandAltman]],
    sites: Sequence[str] | None,
    path: Path,
) -> Path:
    """One Bland–Altman panel per quantity: difference (pred − ref) against the mean, bias and 95 % limits."""
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.6 * nrows), layout="constrained")
    site_list = sorted(set(sites)) if sites else []
    palette = [f"C{i % 10}" for i in range(len(site_list))]
    for i, (title, pred, ref, ba) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        mean, diff = (pred + ref) / 2, pred - ref
        if site_list and sites is not None:
            site_arr = np.asarray(sites)
            for s, colour in zip(site_list, palette, strict=True):
                m = site_arr == s
                ax.scatter(mean[m], diff[m], s=14, color=colour, label=s)
            ax.legend(fontsize=7, loc="best")
        else:
            ax.scatter(mean, diff, s=14, color="C0")
        for y, style in ((ba.bias, "-"), (ba.loa_low, "--"), (ba.loa_high, "--")):
            if np.isfinite(y):
                ax.axhline(y, color="k", linestyle=style, linewidth=1)
        ax.axhline(0, color="0.6", linewidth=0.8)
        ax.set_title(f"{title}\nbias {ba.bias:.2f}, LoA [{ba.loa_low:.2f}, {ba.loa_high:.2f}]", fontsize=9)
        ax.set_xlabel("mean of prediction and reference", fontsize=8)
        ax.set_ylabel("prediction − reference", fontsize=8)
    return _save(fig, path)


def confusion_plot(matrix: np.ndarray, path: Path) -> Path:
    """Row-normalised confusion (reference rows, predicted columns), annotated with percentages."""
    rows = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    fig = Figure(figsize=(5.2, 4.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    n = matrix.shape[0]
    ax.set_xticks(range(n), _LABEL_NAMES[:n])
    ax.set_yticks(range(n), _LABEL_NAMES[:n])
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n):
            if rows[i, 0]:
                ax.text(
                    j,
                    i,
                    f"{100 * frac[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Pixels of each reference tissue, % by predicted label", fontsize=9)
    return _save(fig, path)


def dice_boxplot(values: dict[str, np.ndarray], groups: Sequence[str] | None, path: Path) -> Path:
    """Dice per tissue (and per site when sites are given)."""
    names = list(values)
    group_list = sorted(set(groups)) if groups else ["all"]
    garr = np.asarray(groups) if groups else None
    fig = Figure(figsize=(max(5.0, 1.3 * len(names) * len(group_list) ** 0.5), 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(group_list)
    for gi, g in enumerate(group_list):
        data, pos = [], []
        for ti, t in enumerate(names):
            v = values[t] if garr is None else values[t][garr == g]
            data.append(v[~np.isnan(v)])
            pos.append(ti + (gi - (len(group_list) - 1) / 2) * width)
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True)
        for box in bp["boxes"]:
            box.set_facecolor(f"C{gi % 10}")
            box.set_alpha(0.6)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("Dice")
    if groups:
        handles = [Line2D([], [], color=f"C{i % 10}", linewidth=6, alpha=0.6) for i in range(len(group_list))]
        ax.legend(handles, group_list, fontsize=7, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _crop_box(*maps: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    fg = np.zeros(maps[0].shape, bool)
    for m in maps:
        fg |= m > 0
    if not fg.any():
        return slice(None), slice(None)
    ys, xs = np.nonzero(fg)
    h, w = fg.shape
    return (
        slice(max(0, ys.min() - margin), min(h, ys.max() + margin + 1)),
        slice(max(0, xs.min() - margin), min(w, xs.max() + margin + 1)),
    )


def gallery_figure(
    case_id: str,
    pred: np.ndarray,
    ref: np.ndarray,
    image: np.ndarray | None,
    scores: dict[str, float],
    path: Path,
) -> Path:
    """Reference, prediction, and both contours on the image (reference solid, prediction dashed)."""
    box = _crop_box(pred, ref)
    p, r = pred[box], ref[box]
    bg = np.clip((image[box].astype(float) + 160) / 400, 0, 1) if image is not None else np.zeros(p.shape)
    cmap = ListedColormap([(0, 0, 0, 0)] + [(*_rgb(i), 0.55) for i in range(1, 5)])
    aspect = p.shape[0] / max(p.shape[1], 1)
    fig = Figure(figsize=(13, 13 / 3 * aspect + 1.0), layout="constrained")
    titles = ("reference", "prediction", "contours: reference solid, prediction dashed")
    for k, title in enumerate(titles):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(bg, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if k < 2:
            ax.imshow(r if k == 0 else p, cmap=cmap, vmin=0, vmax=4, interpolation="nearest")
        else:
            for lab in range(1, 5):
                colour = _rgb(lab)
                for m, style in ((r, "solid"), (p, "dashed")):
                    mask = (m == lab).astype(float)
                    if mask.any() and not mask.all():
                        ax.contour(mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=0.9)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    text = ", ".join(
        f"{t} {scores[f'{t}_dice']:.3f}"
        for t in TISSUES
        if f"{t}_dice" in scores and np.isfinite(scores[f"{t}_dice"])
    )
    fig.suptitle(f"{case_id} — Dice: {text}", fontsize=10)
    handles = [Line2D([], [], color=_rgb(int(lab)), linewidth=4) for lab in TISSUES.values()]
    fig.legend(
        handles,
        [TISSUE_TITLES[t] for t in TISSUES],
        loc="lower center",
        ncol=4,
        fontsize=8,
        bbox_to_anchor=(0.5, 0.02),
    )
    return _save(fig, path)


def l3_error_plot(errors_mm: np.ndarray, path: Path) -> Path:
    """Histogram of signed L3 errors with the ±5 and ±10 mm bands."""
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    lim = max(15.0, float(np.abs(errors_mm).max(initial=0)) + 2)
    ax.hist(errors_mm, bins=np.linspace(-lim, lim, 31), color="C0")
    for x in (-10, -5, 5, 10):
        ax.axvline(x, color="k", linestyle="--" if abs(x) == 5 else ":", linewidth=1)
    ax.set_xlabel("predicted − reference L3 (mm)")
    ax.set_ylabel("cases")
    return _save(fig, path)
