"""overlay.png: the picture a reader checks before trusting the numbers.

Left: the analysed axial slice in a soft-tissue window with the tissues coloured (conventions.LABEL_COLORS)
and their areas in the legend. Right (volumes only): a sagittal reconstruction through the spine with the
L3 line(s) (a range is shaded) and, when the localizer reported them, the vertebra labels. Both panels are
drawn in millimetres, so anatomy keeps its physical proportions whatever the voxel spacing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sarcoscope.conventions import LABEL_COLORS, TISSUE_TITLES, TISSUES
from sarcoscope.imaging.views import body_centre, display_extent, sagittal, window

if TYPE_CHECKING:
    from sarcoscope.pipeline import AnalysisResult

OVERLAY_ALPHA = 0.45


def _area_text(area_cm2: float) -> str:
    return f"{area_cm2:.1f} cm²" if area_cm2 >= 1.0 or area_cm2 == 0.0 else f"{area_cm2:.2f} cm²"


def _label_rgba(labels: np.ndarray) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for label, (r, g, b) in LABEL_COLORS.items():
        rgba[labels == label] = (r / 255.0, g / 255.0, b / 255.0, OVERLAY_ALPHA)
    return rgba


def _vertebra_marks(details: dict[str, Any]) -> list[tuple[str, float]]:
    raw = details.get("vertebrae")
    if not isinstance(raw, dict):
        return []
    return [
        (str(k), float(v)) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def render_overlay(result: AnalysisResult, path: Path) -> Path:
    """Draw the QC picture of `result` into `path` (PNG)."""
    vol = result.volume
    indices = list(result.selection.indices)
    shown = len(indices) // 2  # middle slice of a range
    z_shown = indices[shown]
    dz, dy, dx = (float(s) for s in vol.spacing)
    nz, ny, nx = vol.shape
    comp = result.slices[shown]
    has_sagittal = nz > 1

    # Equal panel heights: widths follow each panel's physical aspect (axial x/y, sagittal y/z).
    axial_aspect = (nx * dx) / (ny * dy)
    sagittal_aspect = (ny * dy) / (nz * dz)
    width_ratios = [1.0, float(np.clip(sagittal_aspect / axial_aspect, 0.3, 1.5))] if has_sagittal else [1.0]
    fig = Figure(figsize=(6.0 * sum(width_ratios) + 0.6, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(width_ratios), gridspec_kw={"width_ratios": width_ratios}, squeeze=False)[0]

    ax = axes[0]
    extent = (0.0, nx * dx, ny * dy, 0.0)  # mm, row 0 at the top (anterior)
    ax.imshow(
        window(vol.hu[z_shown], "soft_tissue"),
        cmap="gray",
        vmin=0,
        vmax=255,
        extent=extent,
        interpolation="nearest",
    )
    ax.imshow(_label_rgba(result.labels[shown]), extent=extent, interpolation="nearest")
    ax.set_aspect("equal")
    ax.set_axis_off()
    where = f"slice {z_shown}"
    if len(indices) > 1:
        where += f" (middle of {indices[0]}–{indices[-1]}; report gives the average)"
    ax.set_title(f"{where} · {result.engine}", fontsize=9)
    handles = [
        Patch(
            facecolor=np.array(LABEL_COLORS[label]) / 255.0,
            alpha=0.8,
            label=f"{TISSUE_TITLES[name]}: {_area_text(comp.tissues[name].area_cm2)}",
        )
        for name, label in TISSUES.items()
    ]
    ax.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False
    )

    if has_sagittal:
        _draw_sagittal(axes[1], result)
    fig.suptitle(
        f"sarcoscope {result.software_version} · convention {result.selection.convention} "
        f"({result.selection.method})",
        fontsize=10,
    )
    fig.savefig(path, format="png")
    return path


def _draw_sagittal(ax: Any, result: AnalysisResult) -> None:
    vol = result.volume
    dz = float(vol.spacing[0])
    nz = vol.shape[0]
    x_index = body_centre(vol)[1]
    extent = display_extent(vol, "sagittal")  # mm; row 0 (most superior slice) at the top
    top = extent[3]
    superior_up = float(np.asarray(vol.direction)[2, 2]) > 0.0  # as imaging.views decides the flip

    def z_mm(index: float) -> float:
        """Vertical plot position (mm) of the centre of slice `index`."""
        row = nz - 1 - index if superior_up else index
        return top - (row + 0.5) * dz

    ax.imshow(
        window(sagittal(vol, x_index), "soft_tissue"),
        cmap="gray",
        vmin=0,
        vmax=255,
        extent=extent,
        origin="upper",
        interpolation="bilinear",
    )
    ax.set_aspect("equal")
    indices = list(result.selection.indices)
    lines = sorted({z_mm(indices[0]), z_mm(indices[-1])})
    if len(indices) > 1:
        ax.axhspan(lines[0], lines[-1], color="#ffd23c", alpha=0.25, lw=0)
    for z in lines:
        ax.axhline(z, color="#ffd23c", lw=1.2)
    for name, z_index in _vertebra_marks(result.selection.details):
        ax.text(
            extent[1] * 0.97,
            z_mm(z_index),
            name,
            color="white",
            fontsize=7,
            ha="right",
            va="center",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0},
        )
    ax.set_title(f"sagittal (x = {x_index})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
