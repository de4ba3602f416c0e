"""A patient's identifiers followed end to end: a phantom series whose identifying headers, folder, zip and
file names carry distinctive markers goes through every user path (`analyze` with and without
`--deidentify`, `deidentify`, `batch` with failing cases and a bug, the web app's uploads, errors and
downloads, the DICOM node, a PACS on DICOMweb), and every byte each emits (console, log records at every
level and Python warnings, written files and their names, HTTP answers) is searched for the markers.

Where a marker may be is decided per output: the SEG, SR and QC capture are DICOM objects of the patient's
study and carry the patient module; report.json names its input (a path the user gave) and series; the
user's console and a plain cohort's tables name the inputs and case ids the user gave; the web app's study
list, plain downloads and the data folder's database are the logged-in user's own. Nowhere else: not in a
log record (logs are collected into shared systems), nor in anything de-identified, nor in the label maps,
metrics.csv or overlay.png, nor in an error answer of the web app beyond the file names its client sent,
nor in the names of the files a run or the server writes. Each search is shown to find what it looks for
(the markers are in the input; the SEG carries the PatientID), so that none passes vacuously."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orthanc_server import free_port, start_orthanc
from phi_dicom import readable_bytes, written_bytes
from sarcoscope.cli import app
from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.phantom import make_slice
from sarcoscope.web import WebSettings, create_app
from sarcoscope.web.analysis import EXPORTS

#: Header attribute -> (its value, the marker searched for). No marker is a substring of another, of a
#: UID or of anything the software writes by itself.
HEADER_MARKERS: dict[str, tuple[str, str]] = {
    "PatientName": ("Kanarievogel^Quirijn", "Kanarievogel"),
    "PatientID": ("CNRY4417X", "CNRY4417X"),
    "PatientBirthDate": ("19380417", "19380417"),
    "AccessionNumber": ("ACQ55821Z", "ACQ55821Z"),
    "InstitutionName": ("Tjilpstad Ziekenhuis", "Tjilpstad"),
    "ReferringPhysicianName": ("Finchley^Dokter", "Finchley"),
    "StudyDescription": ("Abdomen Plumage", "Plumage"),
    "SeriesDescription": ("Portal Featherlight", "Featherlight"),
    "OtherPatientIDs": ("OPID7731W", "OPID7731W"),
    "private tag": ("Tweetypriv secret", "Tweetypriv"),
}
#: The folder, zip and file names of the input (batch case folders and uploads are often named after the
#: patient).
NAME_MARKER = "Aviarius"
FOLDER = f"{NAME_MARKER} Jansen CT"
MARKERS = {keyword: marker for keyword, (_, marker) in HEADER_MARKERS.items()} | {"file names": NAME_MARKER}
#: What the patient module of a DICOM result must carry (the SEG, SR and QC capture of a plain analysis).
PATIENT_MODULE = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")


def found(data: bytes | str, markers: dict[str, str] = MARKERS) -> set[str]:
    """The markers (by what carried them) that `data` holds."""
    raw = data.encode() if isinstance(data, str) else data
    return {what for what, marker in markers.items() if marker.encode() in raw}


def found_in(outputs: dict[str, bytes], markers: dict[str, str] = MARKERS) -> dict[str, set[str]]:
    return {where: hits for where, data in outputs.items() if (hits := found(data, markers))}


def canary_series(folder: Path, n: int = 3, seed: int = 1) -> list[Path]:
    """`n` copies of a 128² phantom L3 slice as one CT series in `folder`, its identifying headers carrying
    the markers, its files named after the patient."""
    sl = make_slice(seed, size=128)
    meta = CTMetadata(patient_id=HEADER_MARKERS["PatientID"][0], patient_sex="F", study_date="20240131")
    paths = write_dicom_series(
        np.stack([sl.hu] * n), (3.0, *sl.pixel_spacing), folder, metadata=meta, seed=seed
    )
    named = []
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        for keyword, (value, _) in HEADER_MARKERS.items():
            if keyword != "private tag":
                setattr(ds, keyword, value)
        block = ds.private_block(0x0029, "CANARY PRIVATE", create=True)
        block.add_new(0x10, "LO", HEADER_MARKERS["private tag"][0])
        ds.BurnedInAnnotation = "NO"
        target = folder / f"{NAME_MARKER}_Jansen_{k:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        path.unlink()
        named.append(target)
    return named


def zip_of(folder: Path) -> bytes:
    """`folder`'s files in a zip, under the folder's name (as a PACS export or a user's zip holds them)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
    return buf.getvalue()


def damaged(path: Path) -> Path:
    """`path` cut in the middle of its pixel data (a copy interrupted): a damaged DICOM file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4000])
    return path


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The marker-named folder of the canary series, beside its zip (also marker-named)."""
    root = tmp_path_factory.mktemp("canary")
    folder = root / FOLDER
    canary_series(folder)
    (root / f"{NAME_MARKER}_Jansen.zip").write_bytes(zip_of(folder))
    # the markers are in the input, headers and names alike: a search that finds nothing finds them there
    assert found(b"".join(p.read_bytes() for p in folder.iterdir()) + str(folder).encode()) == set(MARKERS)
    return folder


class Records(logging.Handler):
    """Every log record of every logger, at every level, as it would be formatted (message and traceback),
    and every Python warning (pydicom's quote header values), shown or not."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.warned: list[warnings.WarningMessage] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))

    @property
    def text(self) -> str:
        return "\n".join([*self.lines, *(str(w.message) for w in self.warned)])


@pytest.fixture
def records() -> Iterator[Records]:
    """Records of every logger at DEBUG, highdicom's too, as in an `analyze` process (an import of the DICOM
    node, which quiets it at WARNING, may have come before)."""
    handler, root, dicom_writer = Records(), logging.getLogger(), logging.getLogger("highdicom")
    levels = root.level, dicom_writer.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    dicom_writer.setLevel(logging.NOTSET)
    try:
        with warnings.catch_warnings(record=True) as handler.warned:
            warnings.simplefilter("always")
            yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        dicom_writer.setLevel(levels[1])


def _analyze(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["analyze", *map(str, args)])
    return result.exit_code, result.output


ANALYSIS = ("--slice", "1", "--engine", "threshold")
#: The outputs of a plain analysis that identify nobody: label maps, their tables, the metrics, the picture.
ANONYMOUS_OUTPUTS = ("metrics.csv", "overlay.png", "labels.nii.gz", "labels.ctbl", "labels.itksnap.txt")


def test_a_plain_analysis_names_the_patient_only_in_its_dicom_results_and_report(
    canary: Path, tmp_path: Path, records: Records
) -> None:
    out = tmp_path / "out"
    code, console = _analyze(canary, "-o", out, *ANALYSIS)
    assert code == 0, console
    written = {Path(where).name: data for where, data in written_bytes(out).items()}
    for name in ("labels.seg.dcm", "report.sr.dcm", "report.qc.dcm"):  # the patient's study, as DICOM
        ds = pydicom.dcmread(out / name)
        assert {k: str(ds[k].value) for k in PATIENT_MODULE} == {
            k: HEADER_MARKERS[k][0] for k in PATIENT_MODULE
        }
        assert not found(written[name]) & {"private tag", "OtherPatientIDs", "file names"}, name
    for name in ANONYMOUS_OUTPUTS:
        assert not found(written[name]), name
    # report.json names its input, the path the user gave, and the series it read
    assert found(written["report.json"]) == {"file names", "SeriesDescription"}
    assert found(console) <= {"file names"}  # the user's own path, as they typed it
    assert not found(records.text), records.text
    assert "highdicom" in records.text  # the records of the DICOM writers are in the search


@pytest.mark.parametrize("given", ["folder", "zip"])
def test_a_de_identified_analysis_names_the_patient_nowhere(
    canary: Path, tmp_path: Path, records: Records, given: str
) -> None:
    source = canary if given == "folder" else canary.parent / f"{NAME_MARKER}_Jansen.zip"
    out = tmp_path / "out"
    code, console = _analyze(source, "-o", out, *ANALYSIS, "--deidentify", "--secret-file", tmp_path / "key")
    assert code == 0, console
    assert found_in(written_bytes(out)) == {}
    assert not found(console), console
    assert not found(records.text), records.text
    seg = pydicom.dcmread(out / "labels.seg.dcm")
    assert seg.PatientIdentityRemoved == "YES" and seg.PatientID.startswith("ANON-")


def test_a_damaged_file_in_the_patients_folder_is_named_only_to_its_user(
    canary: Path, tmp_path: Path, records: Records
) -> None:
    folder = tmp_path / FOLDER
    shutil.copytree(canary, folder)
    damaged(sorted(folder.iterdir())[1])
    code, console = _analyze(folder, "-o", tmp_path / "out", *ANALYSIS)
    assert code == 1 and "damaged" in console, console
    assert found(console) == {"file names"}  # the file to look at, by the path the user gave
    code, console = _analyze(
        folder, "-o", tmp_path / "deid", *ANALYSIS, "--deidentify", "--secret-file", tmp_path / "key"
    )
    assert code == 1 and "damaged" in console, console
    assert not found(console), console
    assert not found(records.text), records.text
    assert not (tmp_path / "out").exists() and not (tmp_path / "deid").exists()


def test_the_deidentify_command_names_the_patient_nowhere(
    canary: Path, tmp_path: Path, records: Records
) -> None:
    """Its copy, and its refusals: an image with burned-in annotation left out (and listed), a damaged file in
    the patient's zip (the run stopped, naming the file)."""
    key = ("--secret-file", str(tmp_path / "key"))
    result = CliRunner().invoke(app, ["deidentify", str(canary), str(tmp_path / "deid"), *key])
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "deid").rglob("*.dcm"))
    assert len(files) == 3
    assert found_in(written_bytes(tmp_path / "deid")) == {}
    assert not found(result.output) and not found(records.text)

    burned = tmp_path / FOLDER
    shutil.copytree(canary, burned)
    ds = pydicom.dcmread(sorted(burned.iterdir())[1])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(sorted(burned.iterdir())[1])
    result = CliRunner().invoke(app, ["deidentify", str(burned), str(tmp_path / "burned"), *key])
    assert result.exit_code == 0 and "burned-in annotation left out" in result.output, result.output
    assert len(list((tmp_path / "burned").rglob("*.dcm"))) == 2
    assert found_in(written_bytes(tmp_path / "burned")) == {}
    damaged(sorted(burned.iterdir())[1])
    (tmp_path / f"{NAME_MARKER}_Jansen.zip").write_bytes(zip_of(burned))
    result = CliRunner().invoke(
        app, ["deidentify", str(tmp_path / f"{NAME_MARKER}_Jansen.zip"), str(tmp_path / "damaged"), *key]
    )
    assert result.exit_code == 1 and "damaged DICOM file" in result.output, result.output
    assert not (tmp_path / "damaged").exists()
    assert not found(result.output) and not found(records.text)


def _batch(*args: object) -> tuple[int, str]:
    """`sarcoscope batch` as a user runs it, its workers' log records as they print them (stderr)."""
    run = subprocess.run(
        [sys.executable, "-m", "sarcoscope", "batch", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    return run.returncode, run.stdout + run.stderr


@pytest.fixture(scope="module")
def cohort(canary: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four cases named after the patient: one slice (analysed as given), the same in a zip, the canary
    series (too short to count vertebrae: fails) and a series with a damaged file (fails)."""
    root = tmp_path_factory.mktemp("cohort")
    canary_series(root / f"{NAME_MARKER} Jansen 1", n=1)
    (root / f"{NAME_MARKER} Jansen 0.zip").write_bytes(zip_of(root / f"{NAME_MARKER} Jansen 1"))
    shutil.copytree(canary, root / f"{NAME_MARKER} Jansen 2")
    shutil.copytree(canary, root / f"{NAME_MARKER} Jansen 3")
    damaged(sorted((root / f"{NAME_MARKER} Jansen 3").iterdir())[1])
    return root


def test_a_plain_cohort_names_only_what_its_user_gave(cohort: Path, tmp_path: Path) -> None:
    code, console = _batch(cohort, "-o", tmp_path / "runs", "--engine", "threshold")
    assert code == 3, console  # some cases failed
    assert "2 analysed" in console and "2 failed" in console, console
    written = written_bytes(tmp_path / "runs")
    failures = (tmp_path / "runs" / "failures.csv").read_text()
    assert "truncated pixel data" in failures and "vertebrae" in failures, failures
    # the case ids are the folder names the user gave, and the paths its failures name; nothing of a header
    for name in ("cohort.csv", "failures.csv"):
        assert found(written[str(tmp_path / "runs" / name)]) == {"file names"}, name
    assert found(console) == {"file names"}
    case = tmp_path / "runs" / "cases" / f"{NAME_MARKER}_Jansen_1"
    assert pydicom.dcmread(case / "labels.seg.dcm").PatientID == HEADER_MARKERS["PatientID"][0]
    assert not found(written[str(case / "metrics.csv")])


def test_a_de_identified_cohort_names_the_patient_nowhere(cohort: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, console = _batch(
        cohort, "-o", runs, "--engine", "threshold", "--deidentify", "--secret-file", tmp_path / "key"
    )
    assert code == 3, console
    assert "2 analysed" in console and "2 failed" in console, console
    assert "truncated pixel data" in (runs / "failures.csv").read_text()
    assert found_in(written_bytes(runs)) == {}
    assert not found(console), console
    (cohort / f"{NAME_MARKER} Jansen 1" / f"{NAME_MARKER} notes.txt").write_text("changed since")
    try:  # resumed: the cases done are kept, the changed one analysed again (and the console says why)
        code, console = _batch(
            cohort, "-o", runs, "--engine", "threshold", "--deidentify", "--secret-file", tmp_path / "key"
        )
    finally:
        (cohort / f"{NAME_MARKER} Jansen 1" / f"{NAME_MARKER} notes.txt").unlink()
    assert code == 3 and "1 already done" in console and "analysed again" in console, console
    assert found_in(written_bytes(runs)) == {}
    assert not found(console), console


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
@pytest.mark.parametrize("deidentify", [False, True])
def test_a_bug_in_a_cohorts_case_is_named_by_its_type_not_its_text(
    canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deidentify: bool
) -> None:
    """A bug's exception may quote a header value (pydicom's ValueError for a malformed name does): a
    cohort's failures.csv and console gave its text, in a de-identified run too (its quoted values scrubbed,
    not the rest). Now they name its type, as a de-identified `analyze` does."""
    from sarcoscope import pipeline

    name, patient_id = HEADER_MARKERS["PatientName"][0], HEADER_MARKERS["PatientID"][0]

    def malformed(*_: object, **__: object) -> None:
        raise ValueError(f"Invalid value for VR PN: {name!r} of patient {patient_id}")

    monkeypatch.setattr(pipeline, "analyze", malformed)  # the workers' too (fork)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"case_id,path,slice\nAviarius_Jansen,{canary},1\n")
    key = ["--deidentify", "--secret-file", str(tmp_path / "key")] if deidentify else []
    result = CliRunner().invoke(app, ["batch", str(manifest), "-o", str(tmp_path / "runs"), *key])
    assert result.exit_code == 3, result.output
    failures = (tmp_path / "runs" / "failures.csv").read_text()
    assert "internal error ValueError" in failures and "internal error ValueError" in result.output
    given = {"file names"} if not deidentify else set()  # the case id the user gave
    assert found(failures) == given and found(result.output) == given, (failures, result.output)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    web = create_app(WebSettings(data_dir=tmp_path / "data", max_upload_bytes=8 * 1024**2))
    with TestClient(web) as c:
        yield c
    web.state.ctx.store.close()


def _answer(r: httpx.Response) -> bytes:
    return readable_bytes(r.content) + json.dumps(dict(r.headers)).encode()


def test_the_web_app_names_the_patient_only_to_its_user(
    canary: Path, client: TestClient, records: Records, tmp_path: Path
) -> None:
    files = sorted(canary.iterdir())
    intact = files[0].read_bytes()
    zip_name = f"{NAME_MARKER}_Jansen.zip"
    broken = tmp_path / FOLDER
    shutil.copytree(canary, broken)
    damaged(sorted(broken.iterdir())[1])
    bad_uploads = {
        "damaged file in a zip": [("files", (zip_name, zip_of(broken), "application/zip"))],
        "damaged file": [("files", (files[0].name, intact[:-4000], "application/dicom"))],
        "not a zip": [("files", (zip_name, b"PK\x03\x04 not a zip", "application/zip"))],
        "not DICOM": [("files", (files[0].name, b"not DICOM " * 40, "application/dicom"))],
    }
    errors = {}
    for name, parts in bad_uploads.items():
        r = client.post("/api/studies", files=parts)
        assert r.status_code == 422, (name, r.text)
        errors[name] = _answer(r)
    for url in ("/api/studies/0123456789abcdef0123456789abcdef", "/api/studies/nope/export/json"):
        r = client.get(url)
        assert r.status_code == 404, r.text
        errors[url] = _answer(r)
    # an error answer names at most the files its client sent, as they named them; nothing of the headers
    assert {where: hits - {"file names"} for where, hits in found_in(errors).items()} == {
        where: set() for where in found_in(errors)
    }
    assert found(errors["damaged file in a zip"]) == {"file names"}  # the file to look at, to its sender

    r = client.post("/api/studies", files=[("files", (zip_name, zip_of(canary), "application/zip"))])
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    # the study list is the logged-in user's: it names the patient (not as the files were named)
    listed = client.get("/api/studies")
    assert "PatientID" in found(listed.content) and "file names" not in found(listed.content)
    assert client.put(
        f"/api/studies/{sid}/selection", json={"mode": "range", "first": 0, "last": 1}
    ).is_success
    assert client.post(f"/api/studies/{sid}/segment", json={}).status_code == 200
    labels = client.get(f"/api/studies/{sid}/labels")
    edited = np.frombuffer(labels.content, np.uint8).copy()
    edited[:50] = 1  # a person's correction: the training-data export takes it
    base = labels.headers["x-label-version"]
    assert (
        client.post(
            f"/api/studies/{sid}/labels", params={"base_version": base}, content=edited.tobytes()
        ).status_code
        == 201
    )

    downloads = {f"{fmt}": (f"/api/studies/{sid}/export/{fmt}", {"deidentify": True}) for fmt in EXPORTS} | {
        "dicom": (f"/api/studies/{sid}/dicom", {"deidentify": True}),
        "training data": ("/api/training-data", {}),  # always de-identified
    }
    deidentified = {}
    for name, (url, params) in downloads.items():
        r = client.get(url, params=params)
        assert r.status_code == 200, (name, r.text)
        deidentified[name] = _answer(r)
    assert found_in(deidentified) == {}
    assert b"images/" in deidentified["training data"]
    plain = client.get(f"/api/studies/{sid}/export/dicom-seg")
    assert {"PatientName", "PatientID"} <= found(plain.content)  # the plain SEG is the patient's
    # the server's log, at every level, names nobody; the data folder names no file as its client did
    assert not found(records.text), records.text
    assert "sarcoscope" in records.text
    assert not found(written_bytes(tmp_path / "data")[f"file names in {tmp_path / 'data'}"])


def _send(paths: list[Path], port: int) -> list[int]:
    """C-STORE `paths` to a node on this machine; the statuses."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, str(datasets[0].file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="SARCOSCOPE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_the_dicom_node_logs_no_patient(tmp_path: Path, records: Records) -> None:
    """`sarcoscope listen`'s log goes to the site's log system: it names series by UID, never the patient, for
    a series analysed (one slice) or failed (too short to count vertebrae); its results folder is the
    patient's (SEG, SR and QC capture in their study)."""
    from sarcoscope.pacs.node import ListenSettings, Node

    one = canary_series(tmp_path / "one", n=1, seed=1)
    three = canary_series(tmp_path / "three", n=3, seed=4)
    node = Node(ListenSettings(out=tmp_path / "node", port=free_port(), settle=0.3, engine="threshold"))
    node.start()
    thread = threading.Thread(target=node.run, kwargs={"poll": 0.1}, daemon=True)
    thread.start()
    try:
        assert _send(one + three, node.settings.port) == [0, 0, 0, 0]
        deadline = time.monotonic() + 60
        while len(node.analysed) + len(node.failed) < 2:
            assert time.monotonic() < deadline, "the node did not finish in time"
            time.sleep(0.1)
    finally:
        node.stop()
        thread.join(30)
    assert len(node.analysed) == len(node.failed) == 1
    (failed,) = node.failed
    assert "vertebrae" in (node.results / failed / "error.txt").read_text()
    assert not found(records.text), records.text
    assert "series" in records.text  # the node's own records are in the search
    results = {Path(where).name: hits for where, hits in found_in(written_bytes(node.results)).items()}
    assert "PatientID" in results["labels.seg.dcm"] and "error.txt" not in results


def test_pacs_paths_log_no_patient(tmp_path: Path, records: Records) -> None:
    """A study on a PACS (Orthanc): `analyze` and `batch --query` of it de-identified name the patient
    nowhere; the web app's PACS search by the patient's name and ID, its series list and import answer the
    logged-in user with them, and log none of it (its requests to the PACS carry the search at DEBUG)."""
    files = canary_series(tmp_path / "series", n=1)
    key = ("--deidentify", "--secret-file", str(tmp_path / "key"))
    with start_orthanc(tmp_path / "orthanc") as orthanc:
        study = orthanc.upload(files)
        series = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
        url = f"dicomweb+{orthanc.dicomweb}/studies/{study}"
        code, console = _analyze(url, "-o", tmp_path / "a", "--engine", "threshold", *key)
        assert code == 0, console
        query = ("--query", f"PatientID={HEADER_MARKERS['PatientID'][0]}")
        cohort = ("batch", f"dicomweb+{orthanc.dicomweb}", *query, "-o", str(tmp_path / "b"))
        batch = CliRunner().invoke(app, [*cohort, "--engine", "threshold", *key])
        assert batch.exit_code == 0 and "1 analysed" in batch.output, batch.output
        web = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=orthanc.dicomweb))
        with TestClient(web) as c:
            name, patient_id = HEADER_MARKERS["PatientName"][1], HEADER_MARKERS["PatientID"][0]
            searched = c.post("/api/pacs/search", json={"patient_name": f"{name}*", "patient_id": patient_id})
            assert {"PatientName", "PatientID"} <= found(searched.content)  # the user's own search
            assert "SeriesDescription" in found(c.get(f"/api/pacs/studies/{study}/series").content)
            assert c.post(f"/api/pacs/studies/{study}/series/{series}/import").status_code == 201
        web.state.ctx.store.close()
    assert found_in(written_bytes(tmp_path / "a") | written_bytes(tmp_path / "b")) == {}
    assert not found(console + batch.output)
    assert not found(records.text), records.text
    assert "urllib3" in records.text  # the requests to the PACS are in the search


#: A UID with a leading zero in a component, as real archives hold them: pydicom warns quoting it.
MALFORMED_UID = "1.2.840.0777.1"


def with_malformed_uid(paths: list[Path]) -> list[Path]:
    """`paths` with their FrameOfReferenceUID MALFORMED_UID (written as it is: pydicom would refuse it)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    raw = MALFORMED_UID.encode() + b"\0"
    for path in paths:
        ds = pydicom.dcmread(path)
        ds[Tag("FrameOfReferenceUID")] = RawDataElement(
            Tag("FrameOfReferenceUID"), "UI", len(raw), raw, 0, False, True
        )
        ds.save_as(path)
    return paths


def test_a_cohorts_workers_quote_no_malformed_header_value(tmp_path: Path) -> None:
    """pydicom's warning about a malformed value quotes it; a plain cohort's workers printed it (on a Dask
    cluster, into its shared logs). Now a worker quiets them as in a de-identified run, which shows none."""
    with_malformed_uid(canary_series(tmp_path / "cohort" / f"{NAME_MARKER} Jansen 1", n=1))
    code, console = _batch(tmp_path / "cohort", "-o", tmp_path / "runs", "--engine", "threshold")
    assert code == 0 and "1 analysed" in console, console
    assert MALFORMED_UID not in console, console


def test_the_dicom_nodes_log_quotes_no_malformed_header_value(tmp_path: Path) -> None:
    """`sarcoscope listen`'s log (standard error, which a site's log system collects) quoted pydicom's
    warnings whole; now, as the web server's, without the value."""
    files = with_malformed_uid(canary_series(tmp_path / "series", n=1))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "sarcoscope",
        "listen",
        "-o",
        str(tmp_path / "node"),
        "--port",
        str(port),
    ]
    node = subprocess.Popen(
        [*command, "--engine", "threshold", "--settle", "0.3"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # listening once it takes an association
            try:
                assert _send(files, port) == [0]
                break
            except AssertionError:
                assert time.monotonic() < deadline and node.poll() is None, "the node did not start"
                time.sleep(0.2)
        series = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
        report = tmp_path / "node" / "results" / series / "report.json"
        while not report.is_file():
            assert time.monotonic() < deadline, "the node did not analyse the series"
            time.sleep(0.2)
    finally:
        node.terminate()
        _, log = node.communicate(timeout=30)
    assert "Invalid value for VR UI" in log and MALFORMED_UID not in log, log
    assert not found(log), log
