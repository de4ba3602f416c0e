"""`analyze --push` and `batch --push` against a PACS that takes the store and never answers it: without
`--push-timeout` (which only `listen` had) the run waited the client's fixed 60 s per store, whatever the
site needed. Both now take `--push-connect-timeout` and `--push-timeout` (the same options as `listen`):
the push fails after the timeout with one clear message, and a batch records the case as analysed but not
stored (its row in cohort.csv, the reason in failures.csv; a rerun pushes without analysing again). A small
HTTP server answers the search and the retrieval and holds every store unanswered."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pydicom
import pytest
from local_http import answer, ct_series, retrieved, serve
from typer.testing import CliRunner

from sarcoscope.cli import app

runner = CliRunner()


@pytest.fixture
def one_slice(tmp_path: Path, one_slice_ct: Callable[[Path, str], list[Path]]) -> list[Path]:
    return one_slice_ct(tmp_path / "ct", "P-1")


@contextmanager
def _silent_on_store(files: list[Path]) -> Iterator[tuple[str, str]]:
    """A DICOMweb server holding `files` as one CT series that never answers a store (STOW-RS); yields its
    URL and the study UID."""
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
    released = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/studies":
                found = [
                    {"0020000D": {"vr": "UI", "Value": [study]}, "00080061": {"vr": "CS", "Value": ["CT"]}}
                ]
                answer(self, json.dumps(found).encode())
            elif path == f"/studies/{study}/series":
                answer(self, ct_series(series, len(files)))
            elif path == f"/studies/{study}/series/{series}":
                retrieved(self, files)
            elif path == f"/studies/{study}/instances":  # results stored before: none
                answer(self, b"[]")
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # the store: taken, read, and never answered (the client has gone
            # by the time the server is released: an answer then would only raise BrokenPipeError)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            released.wait(60)

    with serve(Handler) as url:
        try:
            yield url, study
        finally:
            released.set()


def test_analyze_push_to_a_pacs_that_never_answers_fails_after_the_push_timeout(
    one_slice: list[Path], tmp_path: Path
) -> None:
    with _silent_on_store(one_slice) as (url, study):
        args = ["analyze", f"dicomweb+{url}/studies/{study}", "-o", str(tmp_path / "out")]
        args += ["--engine", "threshold", "--no-quality", "--push", "--push-timeout", "1"]
        start = time.monotonic()
        result = runner.invoke(app, args)
        took = time.monotonic() - start
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "did not answer storing the results" in output and "within 1 s" in output
    assert "Traceback" not in output and "internal error" not in output
    assert took < 30  # the analysis and one second, not the client's 60 s
    assert (tmp_path / "out" / "report.json").is_file()  # the analysis is kept


def test_batch_push_to_a_pacs_that_never_answers_records_the_case_analysed_but_not_stored(
    one_slice: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with _silent_on_store(one_slice) as (url, _):
        args = ["batch", f"dicomweb+{url}", "--query", "PatientID=P-1", "-o", str(out)]
        args += ["--engine", "threshold", "--push", "--push-connect-timeout", "2", "--push-timeout", "1"]
        start = time.monotonic()
        result = runner.invoke(app, args)
        took = time.monotonic() - start
    output = " ".join(result.output.split())
    assert result.exit_code == 3, output
    assert "Traceback" not in output and took < 60
    with (out / "failures.csv").open() as fh:
        (failed,) = list(csv.DictReader(fh))
    assert failed["error"].startswith("analysed, but the results were not stored:")
    assert "did not answer storing the results" in failed["error"] and "within 1 s" in failed["error"]
    with (out / "cohort.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))  # the analysis is in the table, not lost with the push
    assert row["case_id"] == failed["case_id"] and float(row["muscle_area_cm2"]) > 0
    case = out / "cases" / failed["case_id"]
    assert (case / "report.json").is_file() and not (case / "pushed.json").exists()


def test_a_push_timeout_of_zero_is_refused_before_any_work(tmp_path: Path) -> None:
    for command in (
        ["analyze", "dicomweb+http://127.0.0.1:9/studies/1.2.3"],
        ["batch", "dicomweb+http://127.0.0.1:9"],
    ):
        result = runner.invoke(app, [*command, "-o", str(tmp_path / "out"), "--push", "--push-timeout", "0"])
        output = " ".join(result.output.split())
        assert result.exit_code == 1 and "must be more than 0 seconds" in output, output
