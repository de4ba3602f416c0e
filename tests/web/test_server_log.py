"""The server's log (and its error answers) quote no patient data: pydicom's warnings about a malformed header
value (a UID, a name) and the text of an unexpected exception are logged without the value, the traceback's
frames and the exception's type kept."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from test_api import segmented
from test_e2e import _free_port
from web_synth import write_series

from sarcoscope.store import LabelVersion
from sarcoscope.web import WebSettings, create_app

NAME, PATIENT_ID, UID_ROOT = "SECRET^JANE", "SECRETID7", "1.2.840.0777"


def _series_with_malformed_uids(out: Path) -> list[Path]:
    """A series as real archives hold them: UIDs with a leading zero in a component (not valid DICOM, which
    pydicom warns about, quoting the UID), the patient named NAME, PATIENT_ID."""
    files = write_series(out, patient_id=PATIENT_ID)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.PatientName = NAME
        for keyword, value in (
            ("StudyInstanceUID", f"{UID_ROOT}.1"),
            ("SeriesInstanceUID", f"{UID_ROOT}.2"),
            ("SOPInstanceUID", f"{UID_ROOT}.3.{i + 10}"),
        ):
            raw = value.encode() + b"\0" * (len(value) % 2)
            ds[Tag(keyword)] = RawDataElement(Tag(keyword), "UI", len(raw), raw, 0, False, True)
        ds.save_as(path)
    return files


def test_malformed_header_values_are_not_quoted_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _series_with_malformed_uids(tmp_path / "s")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as shown:
        app = create_app(WebSettings(data_dir=tmp_path / "data"))
        with TestClient(app) as client:
            sid, _ = segmented(client, files)
            for fmt in ("dicom-seg", "dicom-sr", "json"):
                assert client.get(f"/api/studies/{sid}/export/{fmt}").status_code == 200
            assert client.get(f"/api/studies/{sid}/dicom", params={"deidentify": True}).status_code == 200
        app.state.ctx.store.close()
    logged = caplog.text + "\n".join(str(w.message) for w in shown)
    assert "Invalid value for VR UI" in caplog.text  # the reason is kept
    for value in (UID_ROOT, NAME, PATIENT_ID):
        assert value not in logged


def test_an_unexpected_errors_traceback_quotes_no_patient_value(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A bug's exception quoting a header value (as pydicom's ValueError for a malformed value does): the
    client gets a 500 without internals, the log the traceback's frames and the type, not the text."""
    import uvicorn

    app = create_app(WebSettings(data_dir=tmp_path / "data"))

    def broken(*_: object) -> None:
        raise ValueError(f"Invalid value for VR PN: '{NAME}' ({PATIENT_ID})")

    app.state.ctx.store.list_studies = broken  # a bug anywhere below the API
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        r = httpx.get(f"http://127.0.0.1:{server.config.port}/api/studies")
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.ctx.store.close()
    assert r.status_code == 500 and r.json()["detail"].startswith("Internal server error (ValueError)")
    logged = capfd.readouterr().err + caplog.text
    assert "ValueError" in logged and "in broken" in logged  # the type and the frames
    for value in (NAME, PATIENT_ID):
        assert value not in r.text and value not in logged


def _quoting_failure() -> None:
    """A bug whose text quotes a header value, as pydicom's ValueError for a malformed one does."""
    uid = f"{UID_ROOT}.1"
    raise ValueError(f"Invalid value for VR UI: {uid!r} of {NAME}")


def test_background_failures_are_logged_without_their_text(caplog: pytest.LogCaptureFixture) -> None:
    """A failed quality score (ERROR) and a failed background job (DEBUG) logged the exception's text, which
    may quote a header value; the log keeps their type and frames."""
    from sarcoscope.web.analysis import AnalysisCache
    from sarcoscope.web.background import BackgroundJobs

    caplog.set_level(logging.DEBUG, logger="sarcoscope.web")
    row = LabelVersion(study_id="s1", version=2, sha256="0" * 64, source="segment")
    AnalysisCache(store=None, volumes=None).score_later(row, _quoting_failure)()  # type: ignore[arg-type]
    jobs = BackgroundJobs()
    jobs.start("overlay of s1 v2", _quoting_failure)
    jobs.wait()
    for logger in ("sarcoscope.web.analysis", "sarcoscope.web.background"):
        logged = "\n".join(logging.Formatter().format(r) for r in caplog.records if r.name == logger)
        assert "ValueError" in logged and "in _quoting_failure" in logged, logged
        assert UID_ROOT not in logged and NAME not in logged, logged


def test_a_damaged_file_of_a_zip_is_logged_without_its_folders(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom logs a file cut short inside its compressed pixel data as "End of file reached before
    delimiter ... in file <path>": for a zip's file that path is below the upload's folder, in the zip's
    folders, which PACS exports name by the patient. The reason is logged, the path left out."""
    import io
    import zipfile

    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(write_series(tmp_path / "s")[5])
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Jansen Piet 12345678/CT abdomen/IM0001", buffer.getvalue()[:-500])
    with caplog.at_level(logging.DEBUG):
        client.post("/api/studies", files=[("files", ("export.zip", archive.getvalue(), "application/zip"))])
    assert "End of file reached before delimiter" in caplog.text  # the reason is kept
    assert "Jansen" not in caplog.text and "12345678" not in caplog.text


def test_an_imported_label_files_name_is_not_logged(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A label file's name is the client's, often the patient's ("Jansen Piet 12345678.nii"): the server
    saved the import under it, and nibabel's fix of its header (zero voxel sizes set to 1) was logged with
    it. The fix is logged with a name the server chose; the user's messages and the version's note keep
    the file's own name."""
    import gzip

    import nibabel as nib

    sid, _ = segmented(client, write_series(tmp_path / "s"))
    exported = nib.Nifti1Image.from_bytes(
        gzip.decompress(client.get(f"/api/studies/{sid}/export/nifti").content)
    )
    exported.header["pixdim"][1:4] = 0  # its sform still places the voxels: imported, with the fix noted
    name = f"Jansen Piet {PATIENT_ID}.nii"

    def imported(content: bytes, version: int) -> httpx.Response:
        parts = [("files", (name, content, "application/octet-stream"))]
        return client.post(f"/api/studies/{sid}/labels/import", files=parts, params={"base_version": version})

    with caplog.at_level(logging.DEBUG):
        done = imported(exported.to_bytes(), 1)
        refused = imported(b"\x5c\x01" + b"not a NIfTI file" * 30, 2)
    assert done.status_code == 201 and done.json()["note"] == f"imported from {name}, mapping sarcoscope"
    assert refused.status_code == 422 and refused.json()["detail"].startswith(
        f"Cannot read NIfTI file {name}:"
    )
    assert "nibabel fixed its header: pixdim[1,2,3] should be non-zero" in caplog.text  # the reason is kept
    assert "Jansen" not in caplog.text and PATIENT_ID not in caplog.text


def test_pacs_searches_and_series_lists_are_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The PACS panel asks its DICOMweb server with the criteria and the study's UID in the request's URL,
    which urllib3 logs: at DEBUG every request ('"GET /dicom-web/studies?PatientName=Jansen*&PatientID=..."
    200'), and at WARNING, which the server's log shows, one whose answer has a malformed header line ("Failed
    to parse headers (url=...)"). The records stay, without the query and the UIDs."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    series_uid = {
        "0020000E": {"vr": "UI", "Value": [f"{UID_ROOT}.2"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
    }

    class Pacs(BaseHTTPRequestHandler):
        """QIDO-RS: no study found (with a header line that is not one); one CT series in any study."""

        def do_GET(self) -> None:
            body = json.dumps([series_uid] if "/series" in self.path else []).encode()
            broken = b"" if "/series" in self.path else b"X-Vendor note without a colon\r\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
            self.wfile.write(head + b"Content-Length: %d\r\n" % len(body) + broken + b"\r\n" + body)

        def log_message(self, *args: object) -> None:  # the fake server's own log is not the app's
            pass

    pacs = ThreadingHTTPServer(("127.0.0.1", 0), Pacs)
    threading.Thread(target=pacs.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{pacs.server_address[1]}/dicom-web"
    criteria = {"patient_name": "Jansen*", "patient_id": PATIENT_ID, "accession_number": "ACCX5521"}
    app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=url))
    try:
        with TestClient(app) as client, caplog.at_level(logging.DEBUG):
            assert client.post("/api/pacs/search", json=criteria).json()["studies"] == []
            series = client.get(f"/api/pacs/studies/{UID_ROOT}.1/series")
            assert series.status_code == 200 and series.json()[0]["series_uid"] == f"{UID_ROOT}.2"
    finally:
        app.state.ctx.store.close()
        pacs.shutdown()
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("httpx")
    )  # not TestClient's
    assert (
        "Failed to parse headers (url=" in logged and '"GET /dicom-web/studies/<uid>/series?<query>' in logged
    )
    for value in ("Jansen", PATIENT_ID, "ACCX5521", UID_ROOT):
        assert value not in logged, logged
