"""A printable, self-contained HTML report (overlay picture embedded) made from the export stage's report.

Everything shown comes from `export.build_report` (the same numbers as report.json); like it, the page
leaves out the patient id and study date, and a de-identified report shows the pseudonym instead of the
series description and patient facts. The same report as a PDF: export/report_pdf.py.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from sarcoscope.conventions import TISSUE_TITLES
from sarcoscope.export.report import (
    comparison_text,
    mode_text,
    number_text,
    quality_text,
    quantity_text,
    slice_quality_text,
)
from sarcoscope.imaging.volume import image_text, slices_text

_STYLE = """
body { font: 13px/1.45 system-ui, sans-serif; color: #111; max-width: 900px; margin: 24px auto; }
body { padding: 0 16px; } h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 18px 0 6px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 3px 6px; border-bottom: 1px solid #e3e3e3; }
th { text-align: left; background: #f4f4f4; } .n { text-align: right; font-variant-numeric: tabular-nums; }
.mode { font-size: 15px; font-weight: 600; }
.muted { color: #666; } .flag { color: #b00020; font-weight: 600; } .ok { color: #16703a; font-weight: 600; }
img { max-width: 100%; border: 1px solid #ccc; } .warn { background: #fff6d6; padding: 6px 8px; }
@media print { body { margin: 0; } h2 { break-after: avoid; } img { max-height: 45vh; } }
"""


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _quantity(q: dict[str, Any], digits: int = 1) -> str:
    text = _e(quantity_text(q, digits))
    return text if q.get("status") == "computed" else f'<span class="muted">{text}</span>'


def _classification(c: dict[str, Any]) -> str:
    if c.get("status") != "computed":
        return f'<span class="muted">not computed: {_e(c.get("reason"))}</span>'
    verdict = (
        '<span class="flag">below cutoff</span>' if c["flagged"] else '<span class="ok">not below</span>'
    )
    return f"{verdict} {_e(comparison_text(c))}"


def _verdict(flagged: bool) -> str:
    return '<span class="flag">review</span>' if flagged else '<span class="ok">ok</span>'


def _quality(q: dict[str, Any]) -> str:
    """The quality line as the analysis panel shows it (score of 1, review below the threshold), with the
    signal that decided it and, for a range, each slice's."""
    score, decided = quality_text(q)
    if q.get("status") != "computed" or q["score"] is None:
        return f'<p id="quality">Segmentation quality: <span class="muted">{_e(score)}</span></p>'
    per_slice = ""
    if len(q["slices"]) > 1:
        items = []
        for s in q["slices"]:
            words, signal = slice_quality_text(s)
            items.append(
                f"<li>{_e(words)} {_verdict(s['flagged'])}{f' ({_e(signal)})' if signal else ''}</li>"
            )
        per_slice = f"<ul>{''.join(items)}</ul>"
    verdict = _verdict(q["flagged"])
    return (
        f'<p id="quality">Segmentation quality: <b>{_e(score)}</b> {verdict} · {_e(decided)}</p>{per_slice}'
    )


def _tissue_rows(composition: dict[str, Any]) -> str:
    rows = []
    for name, t in composition["tissues"].items():
        rows.append(
            f"<tr><td>{_e(TISSUE_TITLES.get(name, name))}</td>"
            f"<td class=n>{number_text(t['area_cm2'], 2)}</td>"
            f"<td class=n>{number_text(t['mean_hu'])}</td><td class=n>{number_text(t['sd_hu'])}</td></tr>"
        )
    return "".join(rows)


def report_html(report: dict[str, Any], overlay_png: bytes, title: str) -> str:
    """The page for one analysis: `report` is `export.build_report(result)`, `overlay_png` the QC picture."""
    l3, avg, assessment = report["l3"], report["average"], report["assessment"]
    md = report["input"]["metadata"]
    ratios = "".join(
        f"<tr><td>{_e(r['title'])}</td><td class=n colspan=3>{_quantity(r, 2)}</td></tr>"
        for r in avg["ratios"].values()
    )
    per_slice = ""
    if len(report["slices"]) > 1:
        rows = "".join(
            f"<tr><td>{s['slice_index']}{image_text([s.get('image_number')])}</td>"
            + "".join(
                f"<td class=n>{number_text(s['composition']['tissues'][t]['area_cm2'], 2)}</td>"
                for t in s["composition"]["tissues"]
            )
            + "</tr>"
            for s in report["slices"]
        )
        heads = "".join(f"<th class=n>{_e(TISSUE_TITLES.get(t, t))} (cm²)</th>" for t in avg["tissues"])
        per_slice = f"<h2>Per slice</h2><table><tr><th>Slice</th>{heads}</tr>{rows}</table>"
    sarcopenia = "".join(
        f"<tr><td>{_e(c['title'])}{' (selected)' if c.get('selected') else ''}</td>"
        f"<td>{_classification(c)}</td></tr>"
        for c in assessment["sarcopenia"]
    )
    myosteatosis = "".join(
        f"<tr><td>{_e(c['title'])}</td><td>{_classification(c)}</td></tr>" for c in assessment["myosteatosis"]
    )
    flags = "".join(f"<li>{_e(f['flag'])}: {_e(f['reason'])}</li>" for f in l3["flags"])
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report["warnings"])
    hu = ", ".join(f"{_e(k)} {v[0]:g}..{v[1]:g}" for k, v in report["hu_ranges"].items())
    picture = base64.b64encode(overlay_png).decode()
    confidence = "" if l3["confidence"] is None else f", localization confidence {l3['confidence']:.2f}"
    patient = assessment["patient"]
    sources = patient.get("sources") or {}

    def fact(key: str, value: str) -> str:
        source = sources.get(key)
        return f"{value} ({_e(source)})" if source and value != "—" else value

    height = fact("height_m", "—" if patient["height_m"] is None else f"{patient['height_m'] * 100:.1f} cm")
    weight = fact("weight_kg", "—" if patient["weight_kg"] is None else f"{patient['weight_kg']:.1f} kg")
    sex = fact("sex", _e(patient["sex"]))
    indices = l3["slice_indices"]
    mode = mode_text(indices, l3.get("image_numbers")).capitalize()
    images = image_text(l3.get("image_numbers"))
    deid = report.get("deidentification")
    pseudonym = f"de-identified · patient {_e(deid['patient_pseudonym'])}<br>\n" if deid else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>L3 body composition report</h1>
<p class="muted">{pseudonym}
{_e(md.get("series_description"))} · series {_e(report["input"]["series_instance_uid"])}<br>
sex {sex} · height {height} · weight {weight} · age {_e(patient.get("age_years"))} · kVp {_e(md.get("kvp"))} ·
contrast {_e(md.get("contrast_agent") or "not recorded")} · created {_e(report["created_utc"])}</p>
<h2>Level</h2>
<p class="mode">{mode}</p>
<p>{_e(l3["mode"])} ({_e(l3["convention"])}), {slices_text(indices[0], indices[-1])}{images};
{_e(l3["method"])}{_e(confidence)}</p>{f"<ul>{flags}</ul>" if flags else ""}
<img alt="Segmentation overlay" src="data:image/png;base64,{picture}">
<h2>Body composition{" (mean over the slices)" if avg["n_slices"] > 1 else ""}</h2>
<table><tr><th>Tissue</th><th class=n>Area (cm²)</th><th class=n>Mean HU</th><th class=n>SD HU</th></tr>
{_tissue_rows(avg)}
<tr><td>Total adipose (SAT+VAT+IMAT)</td><td class=n>{number_text(avg["total_adipose_cm2"], 2)}</td>
<td></td><td></td></tr>
{ratios}</table>
{per_slice}
<h2>Assessment</h2>
<p>SMI {_quantity(assessment["smi"])} · BMI {_quantity(assessment["bmi"])} ·
muscle attenuation {_quantity(assessment["muscle_mean_hu"])}</p>
<table><tr><th>Sarcopenia cutoff set</th><th>Result</th></tr>{sarcopenia}</table>
<table><tr><th>Myosteatosis cutoff set</th><th>Result</th></tr>{myosteatosis}</table>
{_quality(report["quality"])}
<h2>Method</h2>
<p>Segmentation: {_e(report["segmentation"]["engine"])} — {_e(report["segmentation"]["model_id"])}<br>
HU ranges: {hu}<br>
Software: sarcoscope {_e(report["software"]["version"])}, report schema {_e(report["schema"])}</p>
{f'<h2>Warnings</h2><ul class="warn">{warnings}</ul>' if warnings else ""}
</body></html>
"""
