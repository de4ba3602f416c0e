"""DICOM SR (TID 1500): reads back with highdicom, holds report.json's numbers, references the SEG's segments
and the CT images, and parses with DCMTK when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from sarcoscope.composition import PatientInfo, assess
from sarcoscope.conventions import TISSUE_TITLES, TISSUES, Label
from sarcoscope.export import build_report
from sarcoscope.export.seg import build_dicom_seg
from sarcoscope.export.sr import PRIVATE_CODES, build_dicom_sr, write_dicom_sr


def _values(group) -> dict[str, tuple[float, str]]:
    """Measurement name -> (value, unit code) of one measurement group."""
    return {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}


def _written_sr(result, tmp_path):
    seg, _ = build_dicom_seg(result)
    path = tmp_path / "report.sr.dcm"
    assert write_dicom_sr(result, seg, path) is None
    return seg, hd.sr.srread(path), path


def test_sr_holds_report_numbers_per_slice_and_average(make_result, tmp_path) -> None:
    result = make_result((4, 5, 6), dicom=True, patient=PatientInfo(height_m=1.7, weight_kg=70.0, sex="M"))
    seg, sr, _ = _written_sr(result, tmp_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    report = build_report(result)
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    planar = content.get_planar_roi_measurement_groups()
    assert len(planar) == 4 * 3  # every tissue is drawn in every slice
    headers = result.volume.dicom_headers
    segment_of = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    for name in TISSUES:
        groups = [g for g in planar if g.tracking_identifier.startswith(TISSUE_TITLES[name])]
        assert len(groups) == 3
        for group, entry in zip(groups, report["slices"], strict=True):
            expected = entry["composition"]["tissues"][name]
            values = _values(group)
            assert values["Area"] == (pytest.approx(expected["area_cm2"], rel=1e-9), "cm2")
            assert values["Mean"] == (pytest.approx(expected["mean_hu"], rel=1e-9), "[hnsf'U]")
            assert values["Standard Deviation"][0] == pytest.approx(expected["sd_hu"], rel=1e-9)
            ref = group.referenced_segmentation_frame
            assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
            assert ref.referenced_segment_numbers == [segment_of[TISSUE_TITLES[name]]]
            src = ref.source_image_for_segmentation.referenced_sop_instance_uid
            assert src == headers[entry["slice_index"]].SOPInstanceUID
            (frame,) = ref.referenced_frame_numbers  # the SEG frame of this segment on this image
            item = seg.PerFrameFunctionalGroupsSequence[frame - 1]
            assert (
                item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
                == segment_of[TISSUE_TITLES[name]]
            )
            assert item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == src
            assert group.finding_type.value == ("127954009" if name == "muscle" else "55603005")
    volumetric = content.get_volumetric_roi_measurement_groups()
    assert len(volumetric) == 4
    for group in volumetric:
        name = next(n for n in TISSUES if group.tracking_identifier.startswith(TISSUE_TITLES[n]))
        expected = report["average"]["tissues"][name]
        area = next(m for m in group.get_measurements() if m.name.meaning == "Area")
        assert area.value == pytest.approx(expected["area_cm2"], rel=1e-9)
        assert area.derivation.value == codes.SCT.Mean.value
        assert _values(group)["Mean"][0] == pytest.approx(expected["mean_hu"], rel=1e-9)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert {s.referenced_sop_instance_uid for s in segment.source_images_for_segmentation} == {
            headers[i].SOPInstanceUID for i in (4, 5, 6)
        }
    (summary,) = content.get_image_measurement_groups()
    values = _values(summary)
    smi = report["assessment"]["smi"]["value"]
    assert values[PRIVATE_CODES["smi"].meaning] == (pytest.approx(smi, rel=1e-9), "cm2/m2")
    assert values["Body height"] == (pytest.approx(1.7), "m")
    selected = next(c for c in report["assessment"]["sarcopenia"] if c["selected"])
    assert values[PRIVATE_CODES["smi_cutoff"].meaning][0] == pytest.approx(selected["cutoff"])
    (evaluation,) = summary.get_qualitative_evaluations()
    assert evaluation.value.value == (codes.SCT.Present if selected["flagged"] else codes.SCT.Absent).value
    assert summary.finding_sites[0].value.value == codes.SCT.L3Vertebra.value
    assert summary.method.meaning == codes.SCT.Manual.meaning
    assert sr.PatientID == "P1" and sr.StudyInstanceUID == headers[4].StudyInstanceUID
    evidence = {
        sop.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == {seg.SOPInstanceUID, *(headers[i].SOPInstanceUID for i in (4, 5, 6))}


def test_sr_classification_follows_the_cutoff(make_result, tmp_path) -> None:
    """A tall patient (low SMI) is flagged, a short one (high SMI) is not; unknown height leaves both out."""
    flags = []
    for height in (2.4, 1.0):  # muscle ~80 cm²: SMI ~14 and ~80 cm²/m², either side of every cutoff
        result = make_result((5,), dicom=True, shape=(8, 256, 320))
        result.assessment = assess(result.average, PatientInfo(height_m=height, weight_kg=80.0, sex="M"))
        _, sr, _ = _written_sr(result, tmp_path)
        (summary,) = sr.content.get_image_measurement_groups()
        flags.append(summary.get_qualitative_evaluations()[0].value.value)
        assert not sr.content.get_volumetric_roi_measurement_groups()  # one slice: no average groups
    assert flags == [codes.SCT.Present.value, codes.SCT.Absent.value]
    result = make_result((5,), dicom=True, patient=PatientInfo(sex="M"))
    _, sr, _ = _written_sr(result, tmp_path)
    (summary,) = sr.content.get_image_measurement_groups()
    names = set(_values(summary))
    assert PRIVATE_CODES["smi"].meaning not in names and "Body height" not in names
    assert not summary.get_qualitative_evaluations()


def test_sr_carries_l3_confidence_and_method(make_result, tmp_path) -> None:
    result = make_result((5,), dicom=True)
    result.selection.method = "spine localizer"
    result.selection.confidence = 0.83
    _, sr, _ = _written_sr(result, tmp_path)
    (summary,) = sr.content.get_image_measurement_groups()
    assert _values(summary)[PRIVATE_CODES["l3_confidence"].meaning][0] == pytest.approx(0.83)
    assert summary.method.meaning == "L3 selection: spine localizer"


def test_sr_needs_the_seg(make_result) -> None:
    sr, reason = build_dicom_sr(make_result((5,), dicom=True), None)
    assert sr is None and "references the DICOM SEG" in reason


@pytest.mark.skipif(shutil.which("dsr2html") is None, reason="DCMTK (dsr2html, dcmdump) is not installed")
def test_dcmtk_parses_the_sr(make_result, tmp_path) -> None:
    result = make_result((4, 5), dicom=True)
    _, _, path = _written_sr(result, tmp_path)
    html = subprocess.run(["dsr2html", str(path)], capture_output=True, text=True)
    assert html.returncode == 0, html.stderr
    assert "Imaging Measurement Report" in html.stdout and "Skeletal muscle" in html.stdout
    assert "L3 vertebra" in html.stdout and "average of 2 slices" in html.stdout
    assert not [line for line in html.stderr.splitlines() if line.startswith(("E:", "F:"))]
    dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True)
    assert "Comprehensive3DSRStorage" in dump.stdout and "E:" not in dump.stderr


def test_sr_on_real_three_slice_series(shared_data, tmp_path, dicom_volume, result_for) -> None:
    folder = shared_data / "real/dicom_series/dcmqi_ct3slice"
    volume = dicom_volume(sorted(folder.glob("*.dcm")))
    hu = volume.hu
    labels = np.where((hu > -29) & (hu < 150), Label.MUSCLE, np.where((hu > -190) & (hu < -30), Label.SAT, 0))
    result = result_for(volume, [0, 2], labels.astype(np.uint8)[[0, 2]])
    _, sr, _ = _written_sr(result, tmp_path)
    muscle = [g for g in sr.content.get_planar_roi_measurement_groups() if "muscle" in g.tracking_identifier]
    assert [_values(g)["Area"][0] for g in muscle] == pytest.approx(
        [c.tissues["muscle"].area_cm2 for c in result.slices], rel=1e-9
    )
    assert sr.PatientID == volume.dicom_headers[0].PatientID
