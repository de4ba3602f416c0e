"""`sarcoscope batch dicomweb+http://… --query …`: a cohort found on a real Orthanc (QIDO-RS), analysed, its
results pushed back into each study, and resumed; paging that survives servers that ignore `offset` or
cap their pages.

The cohort: each slice of the real three-slice CT series as its own single-slice study (new UIDs, its own
patient ID and date), plus an MR study that the CT query must not pick up. Skips without Orthanc."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from orthanc_server import Orthanc, ct_files, start_orthanc
from sarcoscope.batch import dicomweb_cases
from sarcoscope.cli import app
from sarcoscope.errors import InputError
from sarcoscope.pacs.dicomweb import DICOMwebServer

runner = CliRunner()


def _study(source: Path, n: int, modality: str = "CT") -> pydicom.Dataset:
    ds = pydicom.dcmread(source)
    seed = f"sarcoscope-test-batch-{n}-{modality}"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID, ds.StudyDate, ds.Modality = f"SARC{n}", f"2024010{n}", modality
    return ds


@pytest.fixture(scope="module")
def cohort(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> Iterator[tuple[Orthanc, list[str]]]:
    """Orthanc holding three single-slice CT studies and one MR study; yields it and the CT study UIDs."""
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as orthanc:
        files = ct_files(shared_data)
        studies = [_study(f, n) for n, f in enumerate(files, start=1)] + [_study(files[0], 9, "MR")]
        for ds in studies:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            requests.post(f"{orthanc.base}/instances", data=buffer.getvalue(), timeout=30).raise_for_status()
        yield orthanc, [str(ds.StudyInstanceUID) for ds in studies[:3]]


def test_query_pages_and_keeps_only_ct(cohort: tuple[Orthanc, list[str]]) -> None:
    orthanc, ct_studies = cohort
    url = f"dicomweb+{orthanc.dicomweb}"
    cases = dicomweb_cases(url, {"StudyDate": "20240101-20241231"}, page=2)  # two pages of two
    assert sorted(str(c.path).split("/studies/")[1].split("/")[0] for c in cases) == sorted(ct_studies)
    assert all(str(c.path).startswith(f"{url}/studies/") for c in cases)
    (one,) = dicomweb_cases(orthanc.dicomweb, {"PatientID": "SARC2"})
    assert f"/studies/{ct_studies[1]}/series/" in str(one.path)
    with pytest.raises(InputError, match="at least one --query"):
        dicomweb_cases(url, {})
    with pytest.raises(InputError, match="No CT series"):
        dicomweb_cases(url, {"PatientID": "SARC9"})  # the MR study


def test_batch_pushes_and_resumes(cohort: tuple[Orthanc, list[str]], tmp_path: Path) -> None:
    orthanc, ct_studies = cohort
    out = tmp_path / "run"
    args = ["batch", f"dicomweb+{orthanc.dicomweb}", "--query", "StudyDate=20240101-20241231", "-o", str(out)]
    args += ["--engine", "threshold", "--push"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    with (out / "cohort.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(float(r["muscle_area_cm2"]) > 20 for r in rows)
    for study in ct_studies:
        modalities = sorted(s["00080060"]["Value"][0] for s in orthanc.series_of(study))
        assert modalities == ["CT", "OT", "SEG", "SR"]
    for row in rows:
        report = json.loads((out / "cases" / row["case_id"] / "report.json").read_text())
        assert report["input"]["source_path"].startswith("dicomweb+http://127.0.0.1:")
        assert report["input"]["series_instance_uid"] == row["case_id"]
    # a rerun skips every case; a case whose push was lost is pushed again, not analysed again
    lost = out / "cases" / rows[0]["case_id"] / "pushed.json"
    lost.unlink()
    report_before = (lost.parent / "report.json").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "1 analysed, 2 already done, 0 failed" in " ".join(again.output.split())
    assert lost.is_file() and (lost.parent / "report.json").stat().st_mtime_ns == report_before


def test_one_case_per_study_its_series_with_the_most_images(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A study with a one-image scout and a two-image CT series is one case, the latter (analysed alone,
    its results pushed once); --every-series gives both."""
    files = ct_files(shared_data)
    study_uid = generate_uid(entropy_srcs=["sarcoscope-test-batch-series", "study"])
    series = {}
    for name, members in (("scout", files[:1]), ("axial", files[1:])):
        uid = generate_uid(entropy_srcs=["sarcoscope-test-batch-series", name])
        series[name] = str(uid)
        for k, f in enumerate(members):
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, uid, 1 + len(series)
            ds.SOPInstanceUID = generate_uid(entropy_srcs=["sarcoscope-test-batch-series", name, str(k)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID, ds.StudyDate = "SARC-SERIES", "20240301"
            series.setdefault(f"{name}-files", []).append(ds)
    with start_orthanc(tmp_path_factory.mktemp("orthanc-series")) as orthanc:
        for name in ("scout", "axial"):
            for ds in series[f"{name}-files"]:
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                requests.post(
                    f"{orthanc.base}/instances", data=buffer.getvalue(), timeout=30
                ).raise_for_status()
        with caplog.at_level("WARNING", logger="sarcoscope.batch"):
            (case,) = dicomweb_cases(orthanc.dicomweb, {"PatientID": "SARC-SERIES"})
        assert case.case_id == series["axial"]
        assert "1 other CT series" in caplog.text  # said, not silently left out
        every = dicomweb_cases(orthanc.dicomweb, {"PatientID": "SARC-SERIES"}, every_series=True)
        assert sorted(c.case_id for c in every) == sorted([series["scout"], series["axial"]])


def test_bad_batch_queries_are_clear_errors(cohort: tuple[Orthanc, list[str]], tmp_path: Path) -> None:
    orthanc, _ = cohort
    base = ["batch", f"dicomweb+{orthanc.dicomweb}", "-o", str(tmp_path / "o")]
    for extra, message in (
        ([], "at least one --query"),
        (["--query", "Color=red"], "Cannot search by 'Color'"),
        (["--query", "StudyDate=yesterday"], "is not a date or range"),
        (["--query", "PatientID"], "is not KEY=VALUE"),
    ):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 1 and message in " ".join(result.output.split()), result.output
    local = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "o2"), "--push"])
    assert local.exit_code == 1 and "need a DICOMweb cohort" in " ".join(local.output.split())
    local = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "o3"), "--every-series"])
    assert local.exit_code == 1 and "need a DICOMweb cohort" in " ".join(local.output.split())


class _FakeQido(BaseHTTPRequestHandler):
    """A QIDO-RS server of five studies that either ignores `offset` (always its first two studies) or
    honours it but caps every page at two studies, whatever `limit` asks for."""

    ignores_offset = False

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        offset = 0 if self.ignores_offset else int(query.get("offset", ["0"])[0])
        uids = [f"1.2.3.{n}" for n in range(1, 6)][offset : offset + 2]
        body = json.dumps([{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in uids]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _IgnoresOffset(_FakeQido):
    ignores_offset = True


@pytest.mark.parametrize(
    ("handler", "expected"), [(_IgnoresOffset, 2), (_FakeQido, 5)], ids=["ignores-offset", "caps-pages"]
)
def test_paging_ends_on_servers_that_ignore_offset_or_cap_pages(
    handler: type[_FakeQido], expected: int
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = DICOMwebServer(f"http://127.0.0.1:{server.server_address[1]}")
        found = [s.study_uid for s in client.iter_studies({"PatientID": "x"}, page=100)]
    finally:
        server.shutdown()
    assert found == [f"1.2.3.{n}" for n in range(1, expected + 1)]


def test_a_resumed_run_analyses_again_a_series_whose_images_changed_on_the_server(
    cohort: tuple[Orthanc, list[str]], shared_data: Path, tmp_path: Path
) -> None:
    """A DICOMweb case is named by its study and series, whose images may change on the server after it was
    analysed (images sent late, a slice replaced, a misfiled image removed): a resumed run lists the
    series' SOP Instance UIDs and analyses it again when they differ, never keeping results of images the
    series no longer is. A server that cannot be asked fails the case, its earlier row kept and said so."""
    orthanc, _ = cohort
    files = ct_files(shared_data)
    study_uid = generate_uid(entropy_srcs=["sarcoscope-test-batch-changed", "study"])
    series_uid = generate_uid(entropy_srcs=["sarcoscope-test-batch-changed", "series"])

    def send(k: int, f: Path) -> str:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["sarcoscope-test-batch-changed", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.StudyDate = "SARC-CHANGED", "20230301"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        requests.post(f"{orthanc.base}/instances", data=buffer.getvalue(), timeout=30).raise_for_status()
        return str(ds.SOPInstanceUID)

    def run(server: str) -> str:
        manifest = tmp_path / "cases.csv"
        manifest.write_text(
            f"case_id,path,slice\nct,dicomweb+{server}/studies/{study_uid}/series/{series_uid},0\n"
        )
        result = runner.invoke(
            app, ["batch", str(manifest), "-o", str(tmp_path / "run"), "--engine", "threshold"]
        )
        assert result.exit_code in (0, 3), result.output  # 3: a case failed
        return " ".join(result.output.split())

    send(0, files[0])
    send(1, files[1])
    assert "1 analysed, 0 already done, 0 failed" in run(orthanc.dicomweb)
    assert "0 analysed, 1 already done, 0 failed" in run(orthanc.dicomweb)
    late = send(2, files[2])  # an image sent late
    assert "1 analysed, 0 already done, 0 failed" in run(orthanc.dicomweb)
    report = json.loads((tmp_path / "run" / "cases" / "ct" / "report.json").read_text())
    assert report["input"]["shape_zyx"][0] == 3
    (found,) = requests.post(f"{orthanc.base}/tools/lookup", data=late, timeout=30).json()
    requests.delete(f"{orthanc.base}/instances/{found['ID']}", timeout=30).raise_for_status()
    replaced = send(3, files[2])  # replaced: as many images, one of them another
    assert "1 analysed, 0 already done, 0 failed" in run(orthanc.dicomweb)
    assert "0 analysed, 1 already done, 0 failed" in run(orthanc.dicomweb)
    # a folder made before the marker listed the instances is judged by how many images it was made from
    marker = tmp_path / "run" / "cases" / "ct" / ".input-files"
    named = f"dicomweb:studies/{study_uid}/series/{series_uid}"
    marker.write_text(hashlib.sha256(named.encode()).hexdigest() + "\n")
    assert "0 analysed, 1 already done, 0 failed" in run(orthanc.dicomweb)
    assert marker.read_text() != hashlib.sha256(named.encode()).hexdigest() + "\n"  # now with the instances
    marker.write_text(hashlib.sha256(named.encode()).hexdigest() + "\n")
    (found,) = requests.post(f"{orthanc.base}/tools/lookup", data=replaced, timeout=30).json()
    requests.delete(f"{orthanc.base}/instances/{found['ID']}", timeout=30).raise_for_status()
    assert "1 analysed, 0 already done, 0 failed" in run(orthanc.dicomweb)

    with socket.socket() as closed:  # a server that cannot be reached: a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "0 analysed, 0 already done, 1 failed" in run(f"http://127.0.0.1:{port}/dicom-web")
    with (tmp_path / "run" / "cohort.csv").open() as fh:
        assert [r["case_id"] for r in csv.DictReader(fh)] == ["ct"]
    failures = (tmp_path / "run" / "failures.csv").read_text()
    assert "could not be checked" in failures and "Cannot reach" in failures
