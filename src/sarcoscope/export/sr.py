"""DICOM SR of the measurements (TID 1500 Measurement Report, Comprehensive 3D SR, written with highdicom).

A PACS or research database reads the numbers of report.json from this object without parsing JSON:

- per tissue and analysed slice, a planar ROI group (TID 1410) that references the tissue's segment frame in
  the DICOM SEG (and, through it, the CT image) with its area (cm²), mean and SD (HU);
- with several slices, per tissue a volumetric ROI group (TID 1411) that references the segment across all
  analysed images, with the averaged area (derivation "Mean") and the mean and SD over all its pixels;
- one "L3 body composition" group (TID 1501) at the L3 vertebra that references the analysed images: the
  L3 selection method (the group's method), the localizer's confidence, the height used, the SMI, and the
  cutoff, and "SMI below cutoff" Present/Absent under the selected cutoff set.

Code meanings are plain ASCII (DCMTK refuses other characters in them); the SR is written in the source CT's
character set, in which it copies the patient's name (seg.give_character_set).
Values that were not computed (unknown height...) are left out rather than invented; report.json says why.
Concepts without a standard code (SMI, the cutoff set, the L3 selection method, localizer confidence) use
the private coding scheme `99SARCOSCOPE` (PRIVATE_CODES); everything else is SNOMED CT, LOINC, DCM or UCUM.

The SR is built from the same (de-identified, when asked) source headers as the SEG, so both carry the same
patient, pseudonym and remapped UIDs; its own dates follow the SEG's rule (seg.hide_creation_time).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from sarcoscope.conventions import TISSUE_TITLES, TISSUES
from sarcoscope.export.seg import derived_uid, give_character_set, hide_creation_time, prepared_sources
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.imaging.labelmaps.seg import SEGMENT_CODES

if TYPE_CHECKING:
    from sarcoscope.composition.measure import TissueStats
    from sarcoscope.results import AnalysisResult

SCHEME = "99SARCOSCOPE"

#: Concepts no standard terminology in the DICOM code dictionary covers.
PRIVATE_CODES: dict[str, hd.sr.CodedConcept] = {
    "smi": hd.sr.CodedConcept("SMI", SCHEME, "Skeletal muscle index (L3 muscle area / height squared)"),
    "smi_cutoff": hd.sr.CodedConcept("SMICUTOFF", SCHEME, "Skeletal muscle index cutoff"),
    "low_smi": hd.sr.CodedConcept("LOWSMI", SCHEME, "SMI below cutoff"),
    "l3_confidence": hd.sr.CodedConcept("L3CONF", SCHEME, "L3 localization confidence"),
    "composition": hd.sr.CodedConcept("L3BODYCOMP", SCHEME, "L3 body composition"),
}
BODY_HEIGHT = hd.sr.CodedConcept("8302-2", "LN", "Body height")
UNIT_CM2 = codes.UCUM.SquareCentimeter
UNIT_HU = codes.UCUM.HounsfieldUnit
UNIT_M = hd.sr.CodedConcept("m", "UCUM", "meter")
UNIT_SMI = hd.sr.CodedConcept("cm2/m2", "UCUM", "square centimeter per square meter")
UNIT_ONE = hd.sr.CodedConcept("1", "UCUM", "no units")

SR_SERIES_NUMBER = 9902


def _code_value(text: str) -> str:
    """A code value (SH, 16 characters) from free text, stable for the same text."""
    cleaned = "".join(c for c in text.upper() if c.isalnum() or c in "-_")
    return cleaned[:16] or "UNKNOWN"


def _method_code(method: str) -> hd.sr.CodedConcept:
    """How the L3 slice(s) were chosen, as a coded method (SNOMED "Manual" when they were given)."""
    if method == "manual":
        return hd.sr.CodedConcept.from_code(codes.SCT.Manual)
    return hd.sr.CodedConcept(_code_value(method), SCHEME, f"L3 selection: {method}"[:64])


def _tissue_measurements(stats: TissueStats, averaged: bool) -> list[hd.sr.Measurement]:
    """Area, mean and SD of one tissue; HU statistics only where the tissue has pixels."""
    out = [
        hd.sr.Measurement(
            name=codes.SCT.Area,
            value=stats.area_cm2,
            unit=UNIT_CM2,
            derivation=codes.SCT.Mean if averaged else None,
        )
    ]
    if stats.mean_hu is not None and stats.sd_hu is not None:
        out.append(hd.sr.Measurement(name=codes.SCT.Mean, value=stats.mean_hu, unit=UNIT_HU))
        out.append(hd.sr.Measurement(name=codes.SCT.StandardDeviation, value=stats.sd_hu, unit=UNIT_HU))
    return out


def _segment_frames(seg: Dataset) -> dict[tuple[int, str], int]:
    """(segment number, source SOP instance UID) -> frame number (1-based) in the SEG."""
    frames = {}
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        frames[(segment, str(source))] = number
    return frames


def _tissue_groups(
    result: AnalysisResult, seg: Dataset, sources: list[Dataset]
) -> list[
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
]:
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    frames = _segment_frames(seg)
    l3 = hd.sr.FindingSite(codes.SCT.L3Vertebra)
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ] = []
    for name in TISSUES:
        number = numbers.get(TISSUE_TITLES[name])
        if number is None:  # absent from every analysed slice: the SEG has no segment to reference
            continue
        prop_type, region = SEGMENT_CODES[name]
        sites = [hd.sr.FindingSite(region), l3]
        for index, src, comp in zip(result.selection.indices, sources, result.slices, strict=True):
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=generate_uid(), identifier=f"{TISSUE_TITLES[name]}, slice {int(index)}"
                    ),
                    referenced_segment=hd.sr.ReferencedSegmentationFrame(
                        sop_class_uid=seg.SOPClassUID,
                        sop_instance_uid=seg.SOPInstanceUID,
                        frame_number=frames[(number, str(src.SOPInstanceUID))],
                        segment_number=number,
                        source_image=hd.sr.SourceImageForSegmentation(src.SOPClassUID, src.SOPInstanceUID),
                    ),
                    finding_type=prop_type,
                    finding_sites=sites,
                    measurements=_tissue_measurements(comp.tissues[name], averaged=False),
                )
            )
        if len(sources) > 1:
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=generate_uid(),
                        identifier=f"{TISSUE_TITLES[name]}, average of {len(sources)} slices",
                    ),
                    referenced_segment=hd.sr.ReferencedSegment(
                        sop_class_uid=seg.SOPClassUID,
                        sop_instance_uid=seg.SOPInstanceUID,
                        segment_number=number,
                        source_images=[
                            hd.sr.SourceImageForSegmentation(s.SOPClassUID, s.SOPInstanceUID) for s in sources
                        ],
                    ),
                    finding_type=prop_type,
                    finding_sites=sites,
                    measurements=_tissue_measurements(result.average.tissues[name], averaged=True),
                )
            )
    return groups


def _assessment_group(
    result: AnalysisResult,
    sources: list[Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
    deidentification: DeidentificationPolicy | None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """L3 selection, height used (not when de-identified without patient characteristics: it is one), SMI
    and the selected cutoff set's classification."""
    assessment = result.assessment
    selection = result.selection
    measurements = []
    if selection.confidence is not None:
        measurements.append(
            hd.sr.Measurement(
                name=PRIVATE_CODES["l3_confidence"],
                value=float(selection.confidence),
                unit=UNIT_ONE,
                method=_method_code(selection.method),
            )
        )
    keep_height = deidentification is None or deidentification.keep_patient_characteristics
    if assessment.patient.height_m is not None and keep_height:
        measurements.append(hd.sr.Measurement(BODY_HEIGHT, float(assessment.patient.height_m), UNIT_M))
    if assessment.smi.value is not None:
        measurements.append(hd.sr.Measurement(PRIVATE_CODES["smi"], float(assessment.smi.value), UNIT_SMI))
    chosen = assessment.selected
    cutoff_code = hd.sr.CodedConcept(_code_value(chosen.set.id), SCHEME, chosen.set.title[:64])
    evaluations = []
    # de-identified without the sex and BMI: the cutoff they chose, and the flag beside the SMI, tell them
    if chosen.computed and chosen.cutoff is not None and (keep_height or not chosen.set.needs_sex_or_bmi):
        measurements.append(
            hd.sr.Measurement(PRIVATE_CODES["smi_cutoff"], float(chosen.cutoff), UNIT_SMI, method=cutoff_code)
        )
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                PRIVATE_CODES["low_smi"], codes.SCT.Present if chosen.flagged else codes.SCT.Absent
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="L3 body composition"),
        finding_type=PRIVATE_CODES["composition"],
        method=_method_code(selection.method),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.L3Vertebra)],
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(s.SOPClassUID, s.SOPInstanceUID) for s in sources
        ],
    )


def build_dicom_sr(
    result: AnalysisResult,
    seg: Dataset | None,
    deidentification: DeidentificationPolicy | None = None,
    uid_seed: str | None = None,
) -> tuple[hd.sr.Comprehensive3DSR | None, str | None]:
    """The measurement report for `result` whose segments are in `seg` (built with the same
    `deidentification`) and None, or a note on what it left empty (see seg.prepared_sources); (None,
    reason) when there is no SEG to reference or highdicom refuses. `uid_seed`: see seg.derived_uid."""
    if seg is None:
        return None, "DICOM SR not written: it references the DICOM SEG, which was not written"
    headers = result.volume.dicom_headers or []
    sources, message = prepared_sources(headers, result.selection.indices, deidentification)
    if sources is None:
        return None, f"DICOM SR not written: {message}"
    algorithm = hd.sr.AlgorithmIdentification(
        name=f"sarcoscope {result.engine}",
        version=result.software_version[:64],
        parameters=[result.model_id[:1024]],
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["sarcoscope-device"]),
        name="sarcoscope",
        manufacturer_name="sarcoscope",
        model_name=f"sarcoscope {result.engine}"[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device),
    )
    try:
        report = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=codes.LN.CTAbdomenReport,
            imaging_measurements=[
                *_tissue_groups(result, seg, sources),
                _assessment_group(result, sources, algorithm, deidentification),
            ],
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
            sr = hd.sr.Comprehensive3DSR(
                evidence=[*sources, seg],
                content=report,
                series_instance_uid=derived_uid(uid_seed, "sr-series"),
                series_number=SR_SERIES_NUMBER,
                sop_instance_uid=derived_uid(uid_seed, "sr-instance"),
                instance_number=1,
                manufacturer="sarcoscope",
                is_complete=True,
                series_description=f"sarcoscope L3 body composition measurements ({result.engine})",
            )
    except Exception as exc:  # an optional output: any refusal becomes a report warning, never a failed run
        return None, f"DICOM SR not written: highdicom refused it ({type(exc).__name__}: {exc})"
    give_character_set(sr, headers[int(result.selection.indices[0])])
    if deidentification is not None:
        hide_creation_time(sr, sources[0], deidentification)
    return sr, message


def write_dicom_sr(
    result: AnalysisResult,
    seg: Dataset | None,
    path: Path,
    deidentification: DeidentificationPolicy | None = None,
    uid_seed: str | None = None,
) -> str | None:
    """Write the SR to `path` when it can be made; return a warning: why not, or what it left empty."""
    sr, message = build_dicom_sr(result, seg, deidentification, uid_seed)
    if sr is not None:
        sr.save_as(path)
    return message
