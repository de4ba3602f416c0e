"""report.json content, its JSON Schema, and metrics.csv."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from sarcoscope.composition import PatientInfo
from sarcoscope.export import REPORT_SCHEMA, build_report, metrics_csv, report_schema
from sarcoscope.export.report import report_json


def _validate(report: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(report_schema())
    jsonschema.Draft202012Validator(report_schema()).validate(report)


def test_single_slice_report_contents(make_result) -> None:
    result = make_result((5,), dicom=True)
    report = build_report(result, outputs={"metrics": "metrics.csv"}, extra_warnings=["seg skipped"])
    _validate(report)
    assert report["schema"] == REPORT_SCHEMA == "sarcoscope.report/1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report["created_utc"])
    assert report["software"] == {"name": "sarcoscope", "version": "0.1.0"}
    assert report["segmentation"] == {"engine": "threshold", "model_id": "threshold-test"}
    assert report["hu_ranges"]["muscle"] == [-29.0, 150.0]
    l3 = report["l3"]
    assert (l3["mode"], l3["convention"], l3["slice_indices"]) == ("slice", "mid-L3", [5])
    assert l3["slice_positions_mm"] == [pytest.approx(-300.0 + 5 * 2.5)]
    inp = report["input"]
    assert inp["shape_zyx"] == [12, 64, 80] and inp["spacing_mm_zyx"] == [2.5, 0.8, 0.7]
    assert inp["metadata"]["kvp"] == 120.0 and "patient_id" not in inp["metadata"]
    muscle = report["slices"][0]["composition"]["tissues"]["muscle"]
    expected = result.slices[0].tissues["muscle"]
    assert muscle["area_cm2"] == pytest.approx(expected.area_cm2) and muscle["pixels"] == expected.pixels
    assert report["average"] == report["slices"][0]["composition"]
    assert report["warnings"] == ["test warning", "seg skipped"]
    assess = report["assessment"]
    assert assess["smi"]["status"] == "computed"
    assert assess["smi"]["value"] == pytest.approx(expected.area_cm2 / 1.7**2)
    martin = next(c for c in assess["sarcopenia"] if c["set"] == "martin2013")
    assert martin["selected"] and martin["status"] == "not computed" and "weight unknown" in martin["reason"]
    assert "prado2008" in assess["cutoff_sources"]["sarcopenia/prado2008"]["id"]


def test_range_report_and_numpy_details_serialise(make_result) -> None:
    details = {"vertebrae": {"L3": np.int64(6), "L2": 9}, "score": np.float32(0.5)}
    result = make_result((4, 5, 6), patient=PatientInfo(), details=details)
    report = build_report(result)
    _validate(report)
    assert report["l3"]["slice_positions_mm"] is None  # bare array input: no patient geometry
    assert [s["slice_index"] for s in report["slices"]] == [4, 5, 6]
    assert report["average"]["n_slices"] == 3
    assert report["l3"]["details"] == {"vertebrae": {"L3": 6, "L2": 9}, "score": 0.5}
    assert report["assessment"]["smi"] == {
        "status": "not computed",
        "reason": "height unknown: pass --height-cm or PatientSize in DICOM",
    }
    json.loads(report_json(report))


def test_schema_rejects_a_broken_report(make_result) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    report = build_report(make_result())
    report["assessment"]["smi"] = {"status": "not computed"}  # a not-computed value needs its reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, report_schema())
    with pytest.raises(ValueError):
        report_json({"x": float("nan")})


def test_metrics_csv_rows(make_result) -> None:
    result = make_result((4, 5, 6), dicom=True)
    rows = list(csv.DictReader(io.StringIO(metrics_csv(result))))
    assert [r["row"] for r in rows] == ["slice", "slice", "slice", "average"]
    assert [r["slice_index"] for r in rows] == ["4", "5", "6", ""]
    assert float(rows[0]["position_mm"]) == pytest.approx(-290.0)
    for row, comp in zip(rows, [*result.slices, result.average], strict=True):
        assert int(row["muscle_pixels"]) == comp.tissues["muscle"].pixels
        assert float(row["vat_area_cm2"]) == pytest.approx(comp.tissues["vat"].area_cm2, abs=1e-4)
        assert float(row["muscle_mean_hu"]) == pytest.approx(comp.tissues["muscle"].mean_hu, abs=1e-3)
        assert float(row["vat_sat"]) == pytest.approx(comp.ratios["vat_sat"].value, abs=1e-6)
    assert rows[-1]["n_slices"] == "3"
    expected_cols = {
        f"{t}_{m}"
        for t in ("muscle", "sat", "vat", "imat")
        for m in ("pixels", "area_cm2", "mean_hu", "sd_hu")
    }
    assert expected_cols <= set(rows[0])


def test_quality_in_report_and_metrics(make_result) -> None:
    from sarcoscope.segmentation.quality import QualityAssessment, SliceQuality

    result = make_result((4, 5, 6), dicom=True)
    assert build_report(result)["quality"]["status"] == "not computed"
    assert {r["quality"] for r in csv.DictReader(io.StringIO(metrics_csv(result)))} == {""}
    signals = [
        {"engine_muscle_dice": 0.95, "engine_muscle_area_diff": 0.02},
        {"engine_muscle_dice": 0.87, "engine_muscle_area_diff": 0.02},  # score 0.3: review
        {"engine_muscle_dice": 0.915, "engine_muscle_area_diff": 0.0},  # score 0.75
    ]
    result.quality = QualityAssessment(
        [SliceQuality(s) for s in signals],
        unavailable={"mirror_muscle_dice": "no network"},
        second_opinion="u1",
    )
    report = build_report(result)
    _validate(report)
    q = report["quality"]
    assert (q["score"], q["flagged"], q["threshold"], q["second_opinion"]) == (0.3, True, 0.5, "u1")
    assert [s["slice_index"] for s in q["slices"]] == [4, 5, 6]
    assert [s["score"] for s in q["slices"]] == [0.9, 0.3, 0.75]  # slice 4: area difference 0.02 -> 0.9
    assert q["slices"][1]["limiting_signal"] == "engine_muscle_dice"
    rows = list(csv.DictReader(io.StringIO(metrics_csv(result))))
    assert [r["quality"] for r in rows] == ["0.9", "0.3", "0.75", "0.3"]
    assert [r["quality_flag"] for r in rows] == ["ok", "review", "ok", "review"]


@pytest.mark.parametrize(("indices", "words"), [((5,), "slice 5;"), ((4, 5, 6), "slices 4–6;")])
def test_the_html_report_names_its_slices_as_the_app_does(make_result, indices, words) -> None:
    # it said "slices 5" for one slice and listed a range's every slice; slices_text's words now
    from sarcoscope.export.report_html import report_html

    page = report_html(build_report(make_result(indices)), b"", "t")
    assert f"({'mid-L3' if len(indices) == 1 else 'L3-range'}), {words}" in page, page


def test_the_printable_reports_say_the_quality_score_as_the_panel_does(make_result) -> None:
    """The printable report (HTML, PDF) left out the segmentation quality score the analysis panel shows:
    it says the score on its scale, the review flag below 0.5, the signal that decided it and each slice's."""
    from PIL import Image
    from pypdf import PdfReader

    from sarcoscope.export.report_html import report_html
    from sarcoscope.export.report_pdf import report_pdf
    from sarcoscope.segmentation.quality import QualityAssessment, SliceQuality

    result = make_result((4, 5, 6), dicom=True)
    page = report_html(build_report(result), b"", "t")
    assert 'Segmentation quality: <span class="muted">not computed: the segmentation quality score' in page
    signals = [
        {"engine_muscle_dice": 0.95, "engine_muscle_area_diff": 0.02},
        {"engine_muscle_dice": 0.87, "engine_muscle_area_diff": 0.02},  # score 0.3: review
        {"engine_muscle_dice": 0.915, "engine_muscle_area_diff": 0.0},  # score 0.75
    ]
    result.quality = QualityAssessment([SliceQuality(s) for s in signals], second_opinion="u1")
    report = build_report(result)
    page = report_html(report, b"", "t")
    assert (
        'Segmentation quality: <b>0.30 of 1 (review below 0.5)</b> <span class="flag">review</span> · '
        "decided by engine_muscle_dice 0.870 on slice 5</p>"
    ) in page
    assert 'slice 4: 0.90 <span class="ok">ok</span> (engine_muscle_area_diff 0.020)' in page
    assert 'slice 5: 0.30 <span class="flag">review</span> (engine_muscle_dice 0.870)' in page
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    pdf = report_pdf(report, png.getvalue())
    text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert (
        "Segmentation quality: 0.30 of 1 (review below 0.5) REVIEW · "
        "decided by engine_muscle_dice 0.870 on slice 5"
    ) in text, text
    assert "slice 6: 0.75 ok (engine_muscle_dice 0.915)" in text, text
