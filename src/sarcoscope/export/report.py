"""report.json and metrics.csv: the machine-readable record of one analysis.

The report states everything needed to reproduce or question a number: software and model, HU ranges, how
the L3 slice(s) were chosen, the input's geometry and acquisition facts, per-slice and averaged results,
the assessment with every cutoff set, and warnings. Its layout is described by report.schema.json.

A de-identified report (`deidentification` given) names no file path, carries the remapped UIDs (the same as
the de-identified DICOM and SEG, in its warnings too), no series description (nor any quoted text in a
warning) or contrast agent name, the patient's sex, age, height and weight (nor a warning about them, nor
a classification that applies the sex or BMI) only under the Retain Patient Characteristics option, no
date (`created_utc` is null: the time of an analysis, often the day of the scan, would bound the study date
the de-identification removes or shifts, and the report holds no study date to shift it with), and a
`deidentification` block with the method and the patient's pseudonym. metrics.csv never identifies the
patient and holds no date.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import numpy as np

from sarcoscope.composition.assessment import UNKNOWN_REASONS
from sarcoscope.composition.cutoffs import CutoffSet, load_cutoffs
from sarcoscope.composition.measure import RATIOS
from sarcoscope.conventions import TISSUES
from sarcoscope.imaging.deidentify.messages import message_scrubber
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.imaging.volume import image_numbers, image_text
from sarcoscope.segmentation.quality import score_text

if TYPE_CHECKING:
    from sarcoscope.composition import SliceComposition
    from sarcoscope.imaging.volume import CTVolume
    from sarcoscope.results import AnalysisResult

REPORT_SCHEMA = "sarcoscope.report/1"
SCHEMA_FILE = "report.schema.json"

#: CTMetadata fields copied into the report. Patient ID and study date are left out on purpose: reports get
#: shared and pooled, and the series/study UIDs already link a report back to its images.
REPORTED_METADATA = (
    "patient_sex",
    "patient_age_years",
    "patient_height_m",
    "patient_weight_kg",
    "contrast_agent",
    "kvp",
    "manufacturer",
    "manufacturer_model",
    "study_instance_uid",
    "series_instance_uid",
    "series_description",
    "frame_of_reference_uid",
    "slice_thickness_mm",
    "convolution_kernel",
)


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every report.json follows."""
    return json.loads(files("sarcoscope.export").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def slice_positions_mm(volume: CTVolume) -> list[float] | None:
    """Position (mm) of every slice along the slice normal; None for bare arrays without real geometry."""
    if volume.slice_positions is not None:
        return [float(p) for p in volume.slice_positions]
    if volume.source_kind not in ("dicom", "nifti"):
        return None
    normal = np.asarray(volume.direction, dtype=float)[:, 2]
    origin = np.asarray(volume.origin, dtype=float)
    return [float(np.dot(origin + normal * volume.spacing[0] * k, normal)) for k in range(volume.n_slices)]


def _jsonable(value: Any) -> Any:
    """JSON default hook: NumPy scalars/arrays and paths as plain values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _input_summary(volume: CTVolume) -> dict[str, Any]:
    md = volume.metadata
    return {
        "source_kind": volume.source_kind,
        "source_path": volume.source_path,
        "shape_zyx": list(volume.shape),
        "spacing_mm_zyx": [float(s) for s in volume.spacing],
        "pixel_spacing_given": volume.pixel_spacing_given,
        "origin_lps_mm": [float(v) for v in volume.origin],
        "direction": np.asarray(volume.direction, dtype=float).tolist(),
        "series_instance_uid": md.series_instance_uid,
        "metadata": {k: getattr(md, k) for k in REPORTED_METADATA},
        "warnings": list(volume.warnings),
    }


#: Reported metadata that identify the study (remapped) or may hold free text (removed when de-identified).
_UID_METADATA = ("study_instance_uid", "series_instance_uid", "frame_of_reference_uid")
_REMOVED_CHARACTERISTIC = "removed by de-identification (--keep-patient-characteristics keeps it)"
_REMOVED_CLASSIFICATION = (
    "removed by de-identification: it applies the sex or BMI (--keep-patient-characteristics keeps it)"
)
_PATIENT_METADATA = {
    "patient_sex": "sex",
    "patient_age_years": "age_years",
    "patient_height_m": "height_m",
    "patient_weight_kg": "weight_kg",
}


def _without_dicom_values(value: dict[str, Any]) -> dict[str, Any]:
    """A value "not computed" for want of a patient fact, its reason in words that carry no patient value
    (an implausible DICOM PatientSize or PatientSex is quoted in it); other values as they are."""
    if value.get("status") != "not computed" or not value.get("reason"):
        return value
    missing = [text for text in UNKNOWN_REASONS.values() if text.split(":")[0] in value["reason"]]
    return {**value, "reason": "; ".join(missing)} if missing else value


def _without_sex_or_bmi(c: dict[str, Any], sets: dict[str, CutoffSet]) -> dict[str, Any]:
    """A report's classification without what tells the sex or BMI de-identification removed (one that was
    not computed anyway keeps saying why, not that de-identification removed it)."""
    if not sets[c["set"]].needs_sex_or_bmi or c.get("status") == "not computed":
        return _without_dicom_values(c)
    kept = {k: c[k] for k in ("set", "title", "selected", "metric", "unit")}
    return {**kept, "status": "not computed", "reason": _REMOVED_CLASSIFICATION}


def _deidentify_report(report: dict[str, Any], volume: CTVolume, policy: DeidentificationPolicy) -> None:
    """Remove or pseudonymise the report's identifying fields in place (see the module docstring)."""
    from sarcoscope.imaging.deidentify.refusals import shows_burned_in  # pydicom: for de-identified runs only
    from sarcoscope.imaging.dicom_reader import patient_key

    md = volume.metadata
    report["created_utc"] = None
    summary = report["input"]
    summary["source_path"] = None
    if summary["series_instance_uid"]:
        summary["series_instance_uid"] = policy.uid(summary["series_instance_uid"])
    reported = summary["metadata"]
    for key in _UID_METADATA:
        if reported[key]:
            reported[key] = policy.uid(reported[key])
    reported["series_description"] = None
    if reported["contrast_agent"]:
        reported["contrast_agent"] = "ANONYMIZED"
    if not policy.keep_patient_characteristics:
        assessment = report["assessment"]
        for key, assessed in _PATIENT_METADATA.items():
            reported[key] = None
            assessment["patient"][assessed] = None
        # BMI and the muscle area's SMI together give the weight: the BMI goes with it (SMI is the result);
        # a BMI never computed (no height or weight given) says so, not that de-identification removed it
        bmi = assessment["bmi"]
        computed = bmi.get("status") != "not computed"
        assessment["bmi"] = (
            {"status": "not computed", "reason": _REMOVED_CHARACTERISTIC}
            if computed
            else _without_dicom_values(bmi)
        )
        assessment["smi"] = _without_dicom_values(assessment["smi"])
        table = load_cutoffs()
        for kind, sets in (("sarcopenia", table.sarcopenia), ("myosteatosis", table.myosteatosis)):
            assessment[kind] = [_without_sex_or_bmi(c, sets) for c in assessment[kind]]
    scrub = message_scrubber(policy, volume.source_path, md.contrast_agent)
    for where in (report, summary):
        kept = (scrub(w) for w in where["warnings"])
        where["warnings"] = [w for w in kept if w is not None]
    key = patient_key(md.patient_id, md.study_instance_uid)
    report["deidentification"] = {
        "method": policy.method_text,
        "codes": policy.method_code_values,
        "patient_pseudonym": policy.pseudonym(key) if key else None,
        # the overlay and QC capture show the series' pixels, accepted with their burned-in text
        "burned_in_annotation_shown": shows_burned_in(volume.dicom_headers or []),
    }


def build_report(
    result: AnalysisResult,
    *,
    outputs: dict[str, str] | None = None,
    extra_warnings: list[str] | None = None,
    deidentification: DeidentificationPolicy | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict. `outputs` names the files written beside it (kind -> file name);
    `deidentification` removes or pseudonymises what identifies the patient."""
    sel = result.selection
    positions = slice_positions_mm(result.volume)
    numbers = image_numbers(result.volume)
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "software": {"name": "sarcoscope", "version": result.software_version},
        "segmentation": {"engine": result.engine, "model_id": result.model_id},
        "hu_ranges": result.hu_ranges.as_dict(),
        "l3": {
            "mode": sel.mode,
            "convention": sel.convention,
            "method": sel.method,
            "confidence": sel.confidence,
            "flags": [dict(f) for f in sel.flags],
            "slice_indices": [int(i) for i in sel.indices],
            "slice_positions_mm": None if positions is None else [positions[i] for i in sel.indices],
            "image_numbers": None if numbers is None else [numbers[i] for i in sel.indices],
            "details": sel.details,
        },
        "input": _input_summary(result.volume),
        "slices": [
            {
                "slice_index": int(idx),
                "image_number": None if numbers is None else numbers[idx],
                "position_mm": None if positions is None else positions[idx],
                "composition": comp.as_dict(),
            }
            for idx, comp in zip(sel.indices, result.slices, strict=True)
        ],
        "average": result.average.as_dict(),
        "quality": _quality(result),
        "assessment": result.assessment.as_dict(),
        "warnings": [*result.warnings, *(extra_warnings or [])],
        "timings_s": dict(getattr(result, "timings", {}) or {}),
        "outputs": dict(outputs or {}),
    }
    if deidentification is not None:
        _deidentify_report(report, result.volume, deidentification)
    # Round-trip through JSON so the dict holds only plain types (NumPy scalars in `details` etc.).
    return json.loads(report_json(report))


def _quality(result: AnalysisResult) -> dict[str, Any]:
    """The segmentation quality block (segmentation.quality), or why there is none."""
    if result.quality is None:
        return {"status": "not computed", "reason": "the segmentation quality score was not requested"}
    return result.quality.as_dict(result.selection.indices)


def mode_text(indices: list[int], numbers: list[int] | None = None) -> str:
    """How the numbers were made, in words shown beside them (single slice or an average over a range), with
    the slices' image numbers (`numbers`, of `indices`) when known: "single slice 5 · image 7"."""
    if len(indices) == 1:
        return f"single slice {indices[0]}{image_text(numbers)}"
    return f"average of {len(indices)} slices ({indices[0]}–{indices[-1]}){image_text(numbers)}"


def number_text(value: Any, digits: int = 1) -> str:
    """A report number as shown to readers; "—" when unknown."""
    return "—" if value is None else f"{float(value):.{digits}f}"


def quantity_text(q: dict[str, Any], digits: int = 1) -> str:
    """A report quantity ({status, value, unit, reason}) as text: its value and unit, or why it is missing."""
    if q.get("status") != "computed":
        return f"not computed: {q.get('reason')}"
    return f"{number_text(q['value'], digits)} {q.get('unit', '')}"


def comparison_text(c: dict[str, Any]) -> str:
    """A computed classification's measured value against its cutoff and rule, e.g. "(43.6 vs 38.5 ...)"."""
    return f"({number_text(c['value'])} vs {number_text(c['cutoff'])} {c.get('unit')}; {c.get('rule')})"


def quality_text(q: dict[str, Any]) -> tuple[str, str]:
    """A report's quality block as the printable reports say it around its verdict (ok / review): the score
    on its scale as the analysis panel shows it, and the signal that decided it, e.g. ("0.30 of 1 (review
    below 0.5)", "decided by engine_muscle_dice 0.870 on slice 5"); or why there is none (and "")."""
    if q.get("status") != "computed":
        return f"not computed: {q.get('reason')}", ""
    if q["score"] is None:
        return "not computed: no quality signal could be computed", ""
    worst = min((s for s in q["slices"] if s["score"] is not None), key=lambda s: s["score"])
    where = f" on slice {worst['slice_index']}" if len(q["slices"]) > 1 else ""
    return (
        f"{score_text(q['score'])} of 1 (review below {q['threshold']:g})",
        f"decided by {_signal_text(worst)}{where}",
    )


def slice_quality_text(s: dict[str, Any]) -> tuple[str, str]:
    """One slice of a quality block around its verdict, e.g. ("slice 5: 0.30", "engine_muscle_dice 0.870")."""
    if s["score"] is None:
        return f"slice {s['slice_index']}: no score", ""
    return f"slice {s['slice_index']}: {score_text(s['score'])}", _signal_text(s)


def _signal_text(s: dict[str, Any]) -> str:
    """The signal that set a slice's score and its value, as the review warning names it."""
    return f"{s['limiting_signal']} {s['signals'][s['limiting_signal']]:.3f}"


def report_json(report: dict[str, Any]) -> str:
    """Serialise a report; NaN/Infinity are refused because they are not JSON."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False, default=_jsonable) + "\n"


#: Decimals of the tables (metrics.csv, the cohort table): areas to 0.0001 cm², HU to 0.001, ratios to 1e-6;
#: report.json keeps full precision.
AREA_DECIMALS, HU_DECIMALS, RATIO_DECIMALS = 4, 3, 6


def _metrics_row(
    kind: str,
    index: int | None,
    image: int | None,
    position: float | None,
    comp: SliceComposition,
    quality: tuple[float | None, bool] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "row": kind,
        "slice_index": "" if index is None else index,
        "image_number": "" if image is None else image,
        "position_mm": "" if position is None else round(position, 3),
        "n_slices": comp.n_slices,
    }
    for name in TISSUES:
        t = comp.tissues[name]
        row[f"{name}_pixels"] = t.pixels
        row[f"{name}_area_cm2"] = round(t.area_cm2, AREA_DECIMALS)
        row[f"{name}_mean_hu"] = "" if t.mean_hu is None else round(t.mean_hu, HU_DECIMALS)
        row[f"{name}_sd_hu"] = "" if t.sd_hu is None else round(t.sd_hu, HU_DECIMALS)
    row["total_adipose_cm2"] = round(comp.total_adipose_cm2, AREA_DECIMALS)
    for name in RATIOS:
        q = comp.ratios[name]
        row[name] = "" if q.value is None else round(q.value, RATIO_DECIMALS)
    score, flagged = quality if quality is not None else (None, False)
    row["quality"] = "" if score is None else score
    row["quality_flag"] = "" if score is None else ("review" if flagged else "ok")
    return row


def metrics_csv(result: AnalysisResult) -> str:
    """One row per analysed slice plus an "average" row; empty cells mean "not computed" (see report).

    `image_number` is the slice's DICOM Instance Number (empty when not known: NIfTI, a series without them);
    `quality` is the slice's segmentation quality score (the average row: the worst slice's), `quality_flag`
    "review" below the threshold (segmentation.quality.REVIEW_THRESHOLD), else "ok".
    """
    positions = slice_positions_mm(result.volume)
    numbers = image_numbers(result.volume)
    quality = result.quality
    per_slice = [(s.score, s.flagged) for s in quality.slices] if quality else [None] * len(result.slices)
    rows = [
        _metrics_row(
            "slice",
            int(i),
            None if numbers is None else numbers[i],
            None if positions is None else positions[i],
            comp,
            q,
        )
        for i, comp, q in zip(result.selection.indices, result.slices, per_slice, strict=True)
    ]
    overall = (quality.score, quality.flagged) if quality else None
    rows.append(_metrics_row("average", None, None, None, result.average, overall))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
