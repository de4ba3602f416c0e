"""The analysis report as a PDF, made on the server with matplotlib's PDF backend (already a dependency).

The same facts as the printable HTML page (export/report_html.py), all taken from `export.build_report`: the
level and how it was chosen, the QC picture, areas and HU per tissue, ratios, per-slice areas, SMI and the
cutoff sets, the segmentation quality score, the method and the warnings. Like the HTML page it leaves out the
patient id and study date, and a de-identified report shows the pseudonym instead of the series description.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from sarcoscope.conventions import TISSUE_TITLES
from sarcoscope.export.report import (
    comparison_text,
    mode_text,
    number_text,
    quality_text,
    quantity_text,
    slice_quality_text,
)
from sarcoscope.imaging.volume import image_text

_A4 = (8.27, 11.69)  # inches
_MARGIN = 0.07  # of the page width and height
_LINE = 0.0165  # line height, as a fraction of the page height


def _classification(c: dict[str, Any]) -> str:
    if c.get("status") != "computed":
        return f"not computed: {c.get('reason')}"
    verdict = "BELOW CUTOFF" if c["flagged"] else "not below"
    return f"{verdict} {comparison_text(c)}"


class _Pages:
    """Lines and tables flowed top to bottom over A4 pages."""

    def __init__(self, pdf: Any) -> None:
        self.pdf = pdf
        self.fig: Any = None
        self.y = 0.0

    def _room(self, height: float) -> None:
        if self.fig is None or self.y - height < _MARGIN:
            self.finish()
            from matplotlib.figure import Figure

            self.fig = Figure(figsize=_A4)
            self.y = 1 - _MARGIN

    def finish(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def text(self, line: str, size: float = 9, weight: str = "normal", color: str = "#111") -> None:
        lines = max(1, int(np.ceil(len(line) / 110)))  # long reasons wrap (about 110 characters a line)
        self._room(_LINE * lines * size / 9)
        self.fig.text(_MARGIN, self.y, line, fontsize=size, weight=weight, color=color, va="top", wrap=True)
        self.y -= _LINE * lines * size / 9

    def heading(self, title: str) -> None:
        self._room(_LINE * 4)  # never a heading alone at the foot of a page
        self.y -= _LINE * 0.6
        self.text(title, size=12, weight="bold")

    def table(self, header: list[str], rows: list[list[str]], widths: list[float]) -> None:
        for k, row in enumerate([header, *rows]):
            self._room(_LINE)
            x = _MARGIN
            for cell, width in zip(row, widths, strict=True):
                weight = "bold" if k == 0 else "normal"
                self.fig.text(x, self.y, cell, fontsize=8.5, weight=weight, va="top", family="DejaVu Sans")
                x += width
            self.y -= _LINE

    def picture(self, png: bytes, max_height: float) -> None:
        from matplotlib import image

        rgb = image.imread(io.BytesIO(png), format="png")
        width = 1 - 2 * _MARGIN
        height = min(max_height, width * rgb.shape[0] / rgb.shape[1] * _A4[0] / _A4[1])
        self._room(height)
        ax = self.fig.add_axes((_MARGIN, self.y - height, width, height))
        ax.imshow(rgb, interpolation="lanczos")
        ax.set_axis_off()
        self.y -= height + _LINE * 0.5


def report_pdf(report: dict[str, Any], overlay_png: bytes) -> bytes:
    """The PDF for one analysis: `report` is `export.build_report(result)`, `overlay_png` its QC picture."""
    from matplotlib.backends.backend_pdf import PdfPages

    l3, avg, assessment = report["l3"], report["average"], report["assessment"]
    md, patient = report["input"]["metadata"], assessment["patient"]
    deid = report.get("deidentification")
    buffer = io.BytesIO()
    metadata: dict[str, Any] = {"Title": "L3 body composition report", "Creator": "sarcoscope"}
    if report["created_utc"] is None:  # de-identified: the time it was made would bound the study date
        metadata["CreationDate"] = None
    with PdfPages(buffer, metadata=metadata) as pdf:
        pages = _Pages(pdf)
        pages.text("L3 body composition report", size=16, weight="bold")
        if deid:
            pages.text(f"de-identified · patient {deid['patient_pseudonym']}", color="#555")
        else:
            pages.text(f"{md.get('series_description') or '—'}", color="#555")
        pages.text(f"series {report['input']['series_instance_uid']}", color="#555")
        height = "—" if patient["height_m"] is None else f"{patient['height_m'] * 100:.1f} cm"
        weight = "—" if patient["weight_kg"] is None else f"{patient['weight_kg']:.1f} kg"
        pages.text(
            f"sex {patient['sex'] or '—'} · height {height} · weight {weight} · age "
            f"{patient.get('age_years') or '—'} · kVp {md.get('kvp') or '—'} · contrast "
            f"{md.get('contrast_agent') or 'not recorded'} · created {report['created_utc'] or '—'}",
            color="#555",
        )

        indices = l3["slice_indices"]
        pages.heading("Level")
        pages.text(mode_text(indices, l3.get("image_numbers")).capitalize(), size=11, weight="bold")
        confidence = "" if l3["confidence"] is None else f", localization confidence {l3['confidence']:.2f}"
        pages.text(f"{l3['mode']} ({l3['convention']}); {l3['method']}{confidence}")
        for flag in l3["flags"]:
            pages.text(f"{flag['flag']}: {flag['reason']}", color="#b00020")
        pages.picture(overlay_png, max_height=0.42)

        pages.heading("Body composition" + (" (mean over the slices)" if avg["n_slices"] > 1 else ""))
        rows = [
            [
                TISSUE_TITLES.get(name, name),
                number_text(t["area_cm2"], 2),
                number_text(t["mean_hu"]),
                number_text(t["sd_hu"]),
            ]
            for name, t in avg["tissues"].items()
        ]
        rows.append(["Total adipose (SAT+VAT+IMAT)", number_text(avg["total_adipose_cm2"], 2), "", ""])
        pages.table(["Tissue", "Area (cm²)", "Mean HU", "SD HU"], rows, [0.36, 0.16, 0.14, 0.14])
        for ratio in avg["ratios"].values():
            pages.text(f"{ratio['title']}: {quantity_text(ratio, 2)}")
        if len(report["slices"]) > 1:
            pages.heading("Per slice")
            tissues = list(avg["tissues"])
            per = [
                [f"{s['slice_index']}{image_text([s.get('image_number')])}"]
                + [number_text(s["composition"]["tissues"][t]["area_cm2"], 2) for t in tissues]
                for s in report["slices"]
            ]
            heads = ["Slice"] + [f"{TISSUE_TITLES.get(t, t)} (cm²)" for t in tissues]
            pages.table(heads, per, [0.16] + [0.185] * len(tissues))  # "12 · image 138"

        pages.heading("Assessment")
        pages.text(
            f"SMI {quantity_text(assessment['smi'])} · BMI {quantity_text(assessment['bmi'])} · "
            f"muscle attenuation {quantity_text(assessment['muscle_mean_hu'])}"
        )
        for c in assessment["sarcopenia"]:
            selected = " (selected)" if c.get("selected") else ""
            pages.text(f"Sarcopenia, {c['title']}{selected}: {_classification(c)}")
        for c in assessment["myosteatosis"]:
            pages.text(f"Myosteatosis, {c['title']}: {_classification(c)}")

        quality = report["quality"]
        score, decided = quality_text(quality)
        if quality.get("status") != "computed" or quality["score"] is None:
            pages.text(f"Segmentation quality: {score}", color="#555")
        else:
            verdict = "REVIEW" if quality["flagged"] else "ok"
            line = f"Segmentation quality: {score} {verdict} · {decided}"
            pages.text(line, color="#b00020" if quality["flagged"] else "#111")
            for s in quality["slices"] if len(quality["slices"]) > 1 else []:
                words, signal = slice_quality_text(s)
                pages.text(f"{words} {'REVIEW' if s['flagged'] else 'ok'}{f' ({signal})' if signal else ''}")

        pages.heading("Method")
        pages.text(f"Segmentation: {report['segmentation']['engine']} — {report['segmentation']['model_id']}")
        hu = ", ".join(f"{k} {v[0]:g}..{v[1]:g}" for k, v in report["hu_ranges"].items())
        pages.text(f"HU ranges: {hu}")
        pages.text(f"Software: sarcoscope {report['software']['version']}, report schema {report['schema']}")
        if report["warnings"]:
            pages.heading("Warnings")
            for warning in report["warnings"]:
                pages.text(warning, color="#8a5a00")
        pages.finish()
    return buffer.getvalue()
