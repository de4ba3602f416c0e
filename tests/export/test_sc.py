"""QC secondary capture: lands in the source patient's study as a new series, with the picture's pixels,
today's dates, and never a made-up patient."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from sarcoscope.export.sc import build_qc_capture, write_qc_capture


@pytest.fixture
def picture(tmp_path):
    """A small RGB PNG with a distinct colour per quadrant, standing in for overlay.png."""
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:15, :20] = (220, 50, 50)
    rgb[15:, 20:] = (60, 200, 90)
    rgb[:15, 20:] = (10, 20, 30)
    path = tmp_path / "overlay.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def test_capture_is_in_the_source_study(make_result, picture, tmp_path) -> None:
    result = make_result((4, 5, 6), dicom=True)
    path = tmp_path / "report.qc.dcm"
    assert write_qc_capture(result, picture[0], path) is None
    sc = pydicom.dcmread(path)
    src = result.volume.dicom_headers[5]  # the middle slice, the one the picture shows
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        assert sc.get(keyword) == src.get(keyword), keyword
    assert sc.AccessionNumber == "A1" and sc.StudyDate == "20240101" and sc.StudyID == "1"
    all_uids = {h.SeriesInstanceUID for h in result.volume.dicom_headers}
    all_uids |= {h.SOPInstanceUID for h in result.volume.dicom_headers}
    assert sc.SeriesInstanceUID not in all_uids and sc.SOPInstanceUID not in all_uids
    assert sc.SeriesInstanceUID != sc.SOPInstanceUID
    today = _dt.date.today().strftime("%Y%m%d")
    assert sc.ContentDate == sc.SeriesDate == sc.DateOfSecondaryCapture == today
    assert sc.ConversionType == "WSD" and sc.Modality == "OT" and sc.BurnedInAnnotation == "YES"
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    np.testing.assert_array_equal(sc.pixel_array, picture[1])
    again, _ = build_qc_capture(result, picture[0])
    assert again.SeriesInstanceUID != sc.SeriesInstanceUID  # every capture is a new series


def test_no_capture_without_a_patient(make_result, picture) -> None:
    result = make_result((5,), dicom=True)
    del result.volume.dicom_headers[5].PatientID
    sc, reason = build_qc_capture(result, picture[0])
    assert sc is None and "lacks PatientID" in reason


def test_no_capture_for_non_dicom_input(make_result, picture) -> None:
    sc, reason = build_qc_capture(make_result((5,)), picture[0])
    assert sc is None and "not DICOM" in reason
