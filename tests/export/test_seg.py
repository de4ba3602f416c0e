"""DICOM SEG: reads back with highdicom, references and aligns with its source images, degrades gracefully."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from phi_dicom import POLICY
from sarcoscope.conventions import TISSUES, Label
from sarcoscope.export import build_dicom_seg
from sarcoscope.export.overlay import render_overlay
from sarcoscope.export.sc import write_qc_capture
from sarcoscope.export.seg import write_dicom_seg
from sarcoscope.imaging.labelmaps import LabelGrid, load_mapping, read_label_map


def _read_back_labels(path, result) -> np.ndarray:
    """Label map (n, y, x) in project ids, rebuilt from the SEG frame by frame via the source SOP UIDs."""
    seg = hd.seg.segread(path)
    headers = [result.volume.dicom_headers[i] for i in result.selection.indices]
    uids = [h.SOPInstanceUID for h in headers]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == set(uids)
    label_of_segment = {}
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        tissue = desc.tracking_id.removeprefix("sarcoscope-")
        label_of_segment[number] = int(TISSUES[tissue])
    numbers = sorted(label_of_segment)
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers)
    out = np.zeros(masks.shape[:3], np.uint8)
    for k, number in enumerate(numbers):
        out[masks[..., k] > 0] = label_of_segment[number]
    return out


def test_seg_round_trip_on_synthetic_series(make_result, tmp_path) -> None:
    result = make_result((4, 5, 6), dicom=True)
    path = tmp_path / "labels.seg.dcm"
    assert write_dicom_seg(result, path) is None
    np.testing.assert_array_equal(_read_back_labels(path, result), result.labels)
    seg = hd.seg.segread(path)
    src = result.volume.dicom_headers[4]
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.PatientID == "P1"
    muscle = seg.get_segment_description(1)
    assert muscle.segmented_property_type.value == "127954009"  # SNOMED skeletal muscle
    assert muscle.segmented_property_category.value == "85756007"  # tissue
    algo = muscle.algorithm_identification[0]
    assert "sarcoscope" in algo.AlgorithmName and algo.AlgorithmVersion == "0.1.0"
    assert "threshold-test" in algo.AlgorithmParameters
    # frames sit where the source slices are
    positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    expected = [[float(v) for v in result.volume.dicom_headers[i].ImagePositionPatient] for i in (4, 5, 6)]
    assert sorted(map(tuple, positions)) == sorted(map(tuple, expected * len(seg.segment_numbers)))


def test_deidentified_headers_still_give_a_seg(make_result, tmp_path) -> None:
    result = make_result((5,), dicom=True, deidentified=True)
    assert "PatientBirthDate" not in result.volume.dicom_headers[5]
    path = tmp_path / "seg.dcm"
    assert write_dicom_seg(result, path) is None
    assert "PatientBirthDate" not in result.volume.dicom_headers[5]  # the source headers are not modified
    seg = hd.seg.segread(path)
    assert seg.PatientBirthDate == "" and seg.PatientID == ""
    np.testing.assert_array_equal(_read_back_labels(path, result), result.labels)


@pytest.mark.parametrize(
    ("keyword", "value", "form"),
    [
        ("PatientBirthDate", "19XX0101", "a date, YYYYMMDD"),  # as real archives hold them
        ("PatientBirthDate", "1950-01-01", "a date, YYYYMMDD"),
        ("StudyTime", "12:00:00", "a time, HHMMSS"),
        ("PatientSex", "U", "M, F or O"),
    ],
)
def test_an_unreadable_type2_value_is_left_empty_and_said(
    make_result, tmp_path, keyword, value, form
) -> None:
    """highdicom reads these values and refused the source headers: no SEG, SR or QC capture at all for an
    identified export, for a value DICOM lets be empty."""
    from sarcoscope.export.sr import write_dicom_sr

    result = make_result((4, 5), dicom=True)
    for header in result.volume.dicom_headers:
        setattr(header, keyword, value)
    seg, note = build_dicom_seg(result)
    assert seg is not None, note
    assert note == (
        f"The DICOM SEG, SR and QC capture leave the source CT's {keyword} empty: its value is not valid "
        f"DICOM ({form})."
    )  # not the value: a birth date is the patient's
    assert seg.get(keyword) == "" and seg.PatientName == "Test^Case" and seg.PatientID == "P1"
    assert result.volume.dicom_headers[5].get(keyword) == value  # the source headers are not modified
    assert write_dicom_sr(result, seg, tmp_path / "sr.dcm") == note
    render_overlay(result, tmp_path / "overlay.png")
    assert write_qc_capture(result, tmp_path / "overlay.png", tmp_path / "qc.dcm") == note
    for name in ("sr.dcm", "qc.dcm"):
        written = pydicom.dcmread(tmp_path / name)
        assert written.get(keyword) == "" and written.PatientName == "Test^Case", name


def test_seg_skipped_with_reason(make_result) -> None:
    seg, reason = build_dicom_seg(make_result((5,)))
    assert seg is None and "not DICOM" in reason
    result = make_result((5,), dicom=True)
    del result.volume.dicom_headers[5].FrameOfReferenceUID
    seg, reason = build_dicom_seg(result)
    assert seg is None and "lacks FrameOfReferenceUID" in reason
    result = make_result((5,), dicom=True)
    result.labels[:] = 0
    seg, reason = build_dicom_seg(result)
    assert seg is None and "no tissue" in reason


def test_slices_sharing_a_sop_instance_uid_get_no_dicom_objects(make_result, tmp_path: Path) -> None:
    # two images of one series with one SOPInstanceUID (a broken export): the SEG's frames referenced the
    # same image at two positions, which a reader cannot place (highdicom warned of duplicate references)
    result = make_result((4, 5, 6), dicom=True)
    headers = result.volume.dicom_headers
    headers[5].SOPInstanceUID = headers[4].SOPInstanceUID
    seg, reason = build_dicom_seg(result)
    assert seg is None and "share the SOPInstanceUID" in reason and headers[4].SOPInstanceUID in reason
    seg, reason = build_dicom_seg(result, POLICY)
    assert seg is None and POLICY.uid(headers[4].SOPInstanceUID) in reason
    assert headers[4].SOPInstanceUID not in reason
    render_overlay(result, tmp_path / "overlay.png")
    assert "share the SOPInstanceUID" in write_qc_capture(
        result, tmp_path / "overlay.png", tmp_path / "qc.dcm"
    )
    assert build_dicom_seg(make_result((4, 6), dicom=True))[0] is not None


def test_seg_on_real_deidentified_l3_slice(shared_data, tmp_path, dicom_volume, result_for) -> None:
    volume = dicom_volume([shared_data / "real/l3_slices/images/L3_EMC101.dcm"])
    header = volume.dicom_headers[0]
    assert (
        "PatientBirthDate" not in header and "AccessionNumber" not in header
    )  # what de-identification removed
    labels = np.load(shared_data / "real/l3_slices/labels/EMC101.npy")[None]
    result = result_for(volume, [0], labels)
    path = tmp_path / "seg.dcm"
    assert write_dicom_seg(result, path) is None
    back = _read_back_labels(path, result)
    np.testing.assert_array_equal(back, labels)
    assert set(np.unique(back)) == {0, *[int(v) for v in Label if v]}


def test_seg_on_real_three_slice_series(shared_data, tmp_path, dicom_volume, result_for) -> None:
    folder = shared_data / "real/dicom_series/dcmqi_ct3slice"
    volume = dicom_volume(sorted(folder.glob("*.dcm")))
    hu = volume.hu
    labels = np.where((hu > -29) & (hu < 150), Label.MUSCLE, np.where((hu > -190) & (hu < -30), Label.SAT, 0))
    labels = labels.astype(np.uint8)[[0, 2]]  # two of the three slices
    result = result_for(volume, [0, 2], labels)
    path = tmp_path / "seg.dcm"
    assert write_dicom_seg(result, path) is None
    np.testing.assert_array_equal(_read_back_labels(path, result), labels)
    seg = hd.seg.segread(path)
    assert seg.FrameOfReferenceUID == volume.dicom_headers[0].FrameOfReferenceUID


@pytest.mark.parametrize("missing", ["ImagePositionPatient", "PixelSpacing"])
def test_seg_needs_geometry(make_result, missing) -> None:
    result = make_result((5,), dicom=True)
    delattr(result.volume.dicom_headers[5], missing)
    seg, reason = build_dicom_seg(result)
    assert seg is None and missing in reason


def test_highdicom_refusal_becomes_a_reason(make_result) -> None:
    result = make_result((4, 5), dicom=True)
    result.volume.dicom_headers[5].SeriesInstanceUID = "1.2.3.4"  # slices of two series cannot share a SEG
    seg, reason = build_dicom_seg(result)
    assert seg is None and reason.startswith("DICOM SEG not written: highdicom refused the source headers")


def test_edited_labels_make_a_semiautomatic_seg_naming_the_editor(make_result) -> None:
    from phi_dicom import POLICY

    result = make_result((4, 5), dicom=True)
    seg, _ = build_dicom_seg(result)
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    result.editor = "Doe^Jane"
    seg, _ = build_dicom_seg(result)
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert str(seg.ContentCreatorName) == "Doe^Jane"
    assert seg.ContentDescription == "L3 tissues; edited by Doe^Jane; model threshold-test"
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == "0.1.0" and "threshold-test" in algorithm.AlgorithmParameters
    anonymous, _ = build_dicom_seg(result, POLICY)
    assert {s.SegmentAlgorithmType for s in anonymous.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert "Jane" not in str(anonymous.get("ContentCreatorName", "")) + anonymous.ContentDescription


def test_seeded_seg_uids_repeat(make_result) -> None:
    result = make_result((5,), dicom=True)
    one, _ = build_dicom_seg(result, uid_seed="study-1/v2")
    two, _ = build_dicom_seg(result, uid_seed="study-1/v2")
    other, _ = build_dicom_seg(result, uid_seed="study-1/v3")
    assert (one.SOPInstanceUID, one.SeriesInstanceUID) == (two.SOPInstanceUID, two.SeriesInstanceUID)
    assert other.SOPInstanceUID != one.SOPInstanceUID and other.SeriesInstanceUID != one.SeriesInstanceUID


def test_seg_frames_keep_the_files_layout_of_turned_images(make_result, tmp_path) -> None:
    """Images read turned (a prone patient's, CTVolume.stored_flip) get SEG frames laid out as their files
    are, which a PACS viewer overlays on them; reading the SEG back for that volume turns them again."""
    result = make_result((4, 5), dicom=True)
    result.volume.stored_flip = (True, True)
    path = tmp_path / "seg.dcm"
    assert write_dicom_seg(result, path) is None
    np.testing.assert_array_equal(_read_back_labels(path, result), result.labels[:, ::-1, ::-1])
    grid = LabelGrid.of_volume(result.volume)
    back = read_label_map(path, load_mapping(None), grid, result.selection.indices).labels
    np.testing.assert_array_equal(back, result.labels)


@pytest.mark.parametrize(
    ("charset", "name", "written"),
    [
        # one value with code extensions, as some scanners write
        ("ISO 2022 IR 100", "Müllerström^Jürgen", "ISO 2022 IR 100"),
        # Greek switched in after Latin-1
        (["ISO 2022 IR 100", "ISO 2022 IR 126"], "Müller^Ξανθή", ["ISO 2022 IR 100", "ISO 2022 IR 126"]),
        # Simplified Chinese after the default repertoire: pydicom writes GB2312 without its escape
        # sequence, read back as Latin-1, so in UTF-8
        (["", "ISO 2022 IR 58"], "王^小明", "ISO_IR 192"),
    ],
)
def test_standard_character_sets_highdicom_refuses_still_give_the_dicom_objects(
    make_result, tmp_path: Path, charset, name: str, written
) -> None:
    """highdicom refuses these standard SpecificCharacterSet values (one value with code extensions; IR 58
    among code extensions): no SEG, SR or capture was made. They are written, in the source's character set
    or, where pydicom would write its name as '?', in UTF-8, and read back with its name."""
    from sarcoscope.export.sr import build_dicom_sr

    result = make_result((4, 5), dicom=True)
    for header in result.volume.dicom_headers:
        header.SpecificCharacterSet, header.PatientName = charset, name
    seg, note = build_dicom_seg(result)
    assert seg is not None, note
    sr, note = build_dicom_sr(result, seg)
    assert sr is not None, note
    for ds, file in ((seg, "seg.dcm"), (sr, "sr.dcm")):
        ds.save_as(tmp_path / file)
        back = pydicom.dcmread(tmp_path / file)
        assert (back.SpecificCharacterSet, str(back.PatientName)) == (written, name)
