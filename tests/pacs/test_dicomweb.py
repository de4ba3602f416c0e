"""`sarcoscope analyze dicomweb+http://…`: a real series uploaded to a real Orthanc (DICOMweb plugin) on
127.0.0.1 is retrieved, analysed, and its DICOM outputs stay in the source study. Skips without Orthanc."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
import requests
from typer.testing import CliRunner

from orthanc_server import ct_files, free_port, start_orthanc
from sarcoscope.cli import app
from sarcoscope.errors import InputError
from sarcoscope.pacs.dicomweb import fetch_series
from sarcoscope.pacs.dicomweb_query import parse_dicomweb_url

runner = CliRunner()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away Orthanc with DICOMweb on 127.0.0.1; yields its REST root URL."""
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server.base


@pytest.fixture(scope="module")
def uploaded(orthanc: str, shared_data: Path) -> tuple[str, list[Path]]:
    """The real three-slice CT series stored in Orthanc; returns its StudyInstanceUID and files."""
    files = ct_files(shared_data)
    for f in files:
        requests.post(f"{orthanc}/instances", data=f.read_bytes(), timeout=30).raise_for_status()
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


def test_parse_dicomweb_url() -> None:
    target = parse_dicomweb_url("dicomweb+https://pacs.example.org:8042/dicom-web/studies/1.2.3/series/4.5")
    assert (target.base_url, target.study_uid, target.series_uid) == (
        "https://pacs.example.org:8042/dicom-web",
        "1.2.3",
        "4.5",
    )
    assert parse_dicomweb_url("dicomweb+http://h/studies/1.2").base_url == "http://h"
    with pytest.raises(InputError, match="expected dicomweb"):
        parse_dicomweb_url("dicomweb+http://h/patients/7")


def test_analyze_a_study_from_orthanc(orthanc: str, uploaded: tuple[str, list[Path]], tmp_path: Path) -> None:
    study, files = uploaded
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}"
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", url, "-o", str(out), "--slice", "1", "--engine", "threshold"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["source_path"] == url and report["input"]["shape_zyx"][0] == len(files)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert report["input"]["series_instance_uid"] == source.SeriesInstanceUID
    sr = hd.sr.srread(out / "report.sr.dcm")
    assert sr.StudyInstanceUID == study and sr.PatientID == source.PatientID
    referenced = {
        g.referenced_segmentation_frame.source_image_for_segmentation.referenced_sop_instance_uid
        for g in sr.content.get_planar_roi_measurement_groups()
    }
    assert referenced <= {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def test_push_stores_seg_sr_and_capture_in_the_study(
    orthanc: str, uploaded: tuple[str, list[Path]], tmp_path: Path
) -> None:
    study, files = uploaded
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}"
    args = ["analyze", url, "-o", str(tmp_path / "out"), "--slice", "1", "--engine", "threshold", "--push"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    series = requests.get(f"{orthanc}/dicom-web/studies/{study}/series", timeout=30).json()
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CT", "OT", "SEG", "SR"]
    written = {
        pydicom.dcmread(tmp_path / "out" / n).SOPInstanceUID for n in ("labels.seg.dcm", "report.sr.dcm")
    }
    stored = set()
    for s in series:
        uid = s["0020000E"]["Value"][0]
        listing = requests.get(
            f"{orthanc}/dicom-web/studies/{study}/series/{uid}/instances", timeout=30
        ).json()
        stored |= {i["00080018"]["Value"][0] for i in listing}
    assert written <= stored
    refused = runner.invoke(app, [*args[:-1], "--push", "--deidentify", "--secret-file", str(tmp_path / "k")])
    assert refused.exit_code == 1 and "cannot be combined with --deidentify" in " ".join(
        refused.output.split()
    )
    local = runner.invoke(app, ["analyze", str(files[0].parent), "-o", str(tmp_path / "o2"), "--push"])
    assert local.exit_code == 1 and "give a dicomweb+http:// input" in " ".join(local.output.split())


def test_unknown_study_and_unreachable_server_are_clear_errors(orthanc: str, tmp_path: Path) -> None:
    unknown = runner.invoke(
        app, ["analyze", f"dicomweb+{orthanc}/dicom-web/studies/1.2.3.4", "-o", str(tmp_path)]
    )
    text = " ".join(unknown.output.split())
    assert unknown.exit_code == 1 and "no CT series" in text and "Traceback" not in text
    closed = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/1.2.3/series/4.5"
    unreachable = runner.invoke(app, ["analyze", closed, "-o", str(tmp_path / "o")])
    assert unreachable.exit_code == 1 and "Cannot reach the DICOMweb server" in " ".join(
        unreachable.output.split()
    )


def test_a_full_disk_during_the_retrieval_is_a_clear_error(
    orthanc: str,
    uploaded: tuple[str, list[Path]],
    tmp_path: Path,
    small_disk: Path,
    fill_disk: Callable[[Path], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tempfile

    study, _ = uploaded
    monkeypatch.setattr(tempfile, "tempdir", str(small_disk))  # analyze retrieves into a temporary folder
    fill_disk(small_disk)
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}"
    result = runner.invoke(app, ["analyze", url, "-o", str(tmp_path / "out"), "--engine", "threshold"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "internal error" not in text
    assert "Cannot write the series retrieved from the DICOMweb server" in text and "No space left" in text


def test_a_full_disk_during_an_import_in_the_web_app_is_a_clear_error(
    orthanc: str, uploaded: tuple[str, list[Path]], small_disk: Path, fill_disk: Callable[[Path], Path]
) -> None:
    from fastapi.testclient import TestClient

    from sarcoscope.web import WebSettings, create_app

    study, _ = uploaded
    app = create_app(WebSettings(data_dir=small_disk / "data", dicomweb_url=f"{orthanc}/dicom-web"))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            (listed,) = [
                s for s in client.get(f"/api/pacs/studies/{study}/series").json() if s["modality"] == "CT"
            ]
            fill_disk(small_disk)
            got = client.post(f"/api/pacs/studies/{study}/series/{listed['series_uid']}/import")
            assert got.status_code == 507 and "No space left" in got.json()["detail"]
            assert str(small_disk) not in got.json()["detail"]  # not the server's folders
    finally:
        app.state.ctx.store.close()


def test_a_jpeg_2000_series_is_retrieved_as_stored(orthanc: str, shared_data: Path, tmp_path: Path) -> None:
    """Orthanc without its GDCM plugin cannot transcode JPEG 2000: asked for Explicit VR Little Endian, it
    answered the retrieval with HTTP 500. The series is asked for as stored (transfer-syntax=*), and read
    here. The real JPEG 2000 series, with the UIDs its anonymisation removed, stored in Orthanc."""
    from pydicom.uid import JPEG2000Lossless, generate_uid

    study, series = generate_uid(entropy_srcs=["j2k", "study"]), generate_uid(entropy_srcs=["j2k", "series"])
    source = sorted((shared_data / "real" / "dicom_series" / "ts_thoracoabdominal_j2k").iterdir())
    for i, f in enumerate(source):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["j2k", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = pydicom.filebase.DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        requests.post(f"{orthanc}/instances", data=buffer.getvalue(), timeout=30).raise_for_status()
    got = tmp_path / "got"
    fetch_series(f"dicomweb+{orthanc}/dicom-web/studies/{study}/series/{series}", got)
    retrieved = [pydicom.dcmread(f) for f in sorted(got.glob("*.dcm"))]
    assert len(retrieved) == len(source)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in retrieved} == {JPEG2000Lossless}
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}"
    args = ["analyze", url, "-o", str(tmp_path / "out"), "--slice", "10", "--engine", "threshold"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_results_are_not_pushed_into_a_study_the_pacs_now_files_under_another_patient(
    orthanc: str, shared_data: Path, tmp_path: Path
) -> None:
    """A study filed under the wrong patient is moved to the right one on the PACS (a reconciliation) after
    its images were analysed: the results carry the first patient's ID, and storing them into the study
    would file that patient's results (and, on Orthanc, a study of that patient again) under the study's
    UID. They are refused, naming no patient ID, and nothing is stored."""
    from pydicom.uid import generate_uid

    from sarcoscope.export.writer import dicom_result_files
    from sarcoscope.pacs.dicomweb import store_results

    seed = "sarcoscope-test-moved-study"
    study, series = generate_uid(entropy_srcs=[seed, "study"]), generate_uid(entropy_srcs=[seed, "series"])

    def upload(patient_id: str) -> None:
        for k, f in enumerate(ct_files(shared_data)):
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, patient_id
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, str(k)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            requests.post(f"{orthanc}/instances", data=buffer.getvalue(), timeout=30).raise_for_status()

    upload("SARC-FILED-WRONG")
    url = f"dicomweb+{orthanc}/dicom-web/studies/{study}"
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", url, "-o", str(out), "--slice", "1", "--engine", "threshold"])
    assert result.exit_code == 0, result.output
    for found in requests.post(f"{orthanc}/tools/lookup", data=study, timeout=30).json():
        requests.delete(f"{orthanc}/studies/{found['ID']}", timeout=30).raise_for_status()
    upload("SARC-RIGHT-PATIENT")  # the study, moved to its patient
    with pytest.raises(InputError, match="under another patient ID") as refused:
        store_results(url, dicom_result_files(out))
    assert "SARC-" not in str(refused.value)
    series_now = requests.get(f"{orthanc}/dicom-web/studies/{study}/series", timeout=30).json()
    assert [s["00080060"]["Value"][0] for s in series_now] == ["CT"]
