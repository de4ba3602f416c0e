"""How long `analyze` and `batch` wait for a DICOMweb server, beyond the push: the study search (QIDO-RS)
and the retrieval (WADO-RS) had fixed waits (10 s to connect, 60 s for each answer) while only the push
could be told otherwise. A server that takes a retrieval and stalls half way held each case its fixed 60 s;
a search slower than 60 s on a big archive could not be waited for. `--pacs-connect-timeout` and
`--pacs-timeout` (the push's `--push-connect-timeout` and `--push-timeout` are other names of them) now
bound every request to the server: search, retrieval and push. Small HTTP servers stall where a real one
would."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from local_http import StreamingHandler, answer, ct_series, retrieved, serve, streamed
from typer.testing import CliRunner

from sarcoscope.cli import app

runner = CliRunner()


@pytest.fixture
def two_studies(tmp_path: Path, one_slice_ct: Callable[[Path, str], list[Path]]) -> list[list[Path]]:
    """Two one-slice CT studies (two patients)."""
    return [one_slice_ct(tmp_path / "a", "P-1"), one_slice_ct(tmp_path / "b", "P-2")]


def _uids(files: list[Path]) -> tuple[str, str]:
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(head.StudyInstanceUID), str(head.SeriesInstanceUID)


@contextmanager
def _pacs(
    studies: list[list[Path]], stalled: set[str] = frozenset(), search_delay: float = 0.0
) -> Iterator[str]:
    """A DICOMweb server holding `studies` (one CT series each). The retrieval of a study in `stalled`
    sends its response's first part and then nothing more (until the block ends); the study search answers
    after `search_delay` seconds. Yields the server's URL."""
    by_study = {_uids(files)[0]: files for files in studies}
    released = threading.Event()

    class Handler(StreamingHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            parts = path.strip("/").split("/")
            if path == "/studies":
                time.sleep(search_delay)
                found = [
                    {"0020000D": {"vr": "UI", "Value": [s]}, "00080061": {"vr": "CS", "Value": ["CT"]}}
                    for s in by_study
                ]
                answer(self, json.dumps(found).encode())
            elif len(parts) == 3 and parts[2] == "series" and parts[1] in by_study:
                files = by_study[parts[1]]
                answer(self, ct_series(_uids(files)[1], len(files)))
            elif len(parts) == 4 and parts[1] in stalled:  # a part of an instance, then nothing
                streamed(self, [by_study[parts[1]][0].read_bytes()[:1000]], closed=False)
                released.wait(120)
            elif len(parts) == 4 and parts[1] in by_study:
                retrieved(self, by_study[parts[1]])
            else:
                self.send_error(404)

    with serve(Handler) as url:
        try:
            yield url
        finally:
            released.set()


def test_analyze_from_a_server_that_stalls_mid_retrieval_fails_after_the_timeout(
    two_studies: list[list[Path]], tmp_path: Path
) -> None:
    study, series = _uids(two_studies[0])
    with _pacs(two_studies, stalled={study}) as url:
        args = ["analyze", f"dicomweb+{url}/studies/{study}", "-o", str(tmp_path / "out")]
        args += ["--engine", "threshold", "--no-quality", "--pacs-timeout", "1"]
        start = time.monotonic()
        result = runner.invoke(app, args)
        took = time.monotonic() - start
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert f"the retrieval of series {series}" in output and "1 s" in output, output
    assert "Traceback" not in output and "internal error" not in output
    assert took < 20  # one second's wait, not the fixed 60 s


def test_batch_records_a_stalled_retrieval_and_goes_on_to_the_next_case(
    two_studies: list[list[Path]], tmp_path: Path
) -> None:
    stalled_study, stalled_series = _uids(two_studies[0])
    out = tmp_path / "out"
    with _pacs(two_studies, stalled={stalled_study}) as url:
        args = ["batch", f"dicomweb+{url}", "--query", "StudyDate=20000101-", "-o", str(out)]
        args += ["--engine", "threshold", "--pacs-connect-timeout", "2", "--pacs-timeout", "1"]
        start = time.monotonic()
        result = runner.invoke(app, args)
        took = time.monotonic() - start
    output = " ".join(result.output.split())
    assert result.exit_code == 3, output  # some cases failed
    assert "Traceback" not in output and took < 40
    with (out / "failures.csv").open() as fh:
        (failed,) = list(csv.DictReader(fh))
    assert stalled_series.replace(".", "") in failed["case_id"].replace(".", "").replace("_", "")
    assert f"the retrieval of series {stalled_series}" in failed["error"] and "1 s" in failed["error"]
    with (out / "cohort.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))  # the other study was analysed
    assert row["case_id"] != failed["case_id"] and float(row["muscle_area_cm2"]) > 0


def test_a_slow_study_search_is_waited_for_as_long_as_asked(
    two_studies: list[list[Path]], tmp_path: Path
) -> None:
    with _pacs(two_studies, search_delay=2.5) as url:
        base = ["batch", f"dicomweb+{url}", "--query", "StudyDate=20000101-", "--engine", "threshold"]
        hurried = runner.invoke(app, [*base, "-o", str(tmp_path / "hurried"), "--pacs-timeout", "1"])
        patient = runner.invoke(app, [*base, "-o", str(tmp_path / "patient"), "--pacs-timeout", "10"])
    output = " ".join(hurried.output.split())
    assert hurried.exit_code == 1, output
    assert "did not answer the study search within 1 s" in output, output
    assert patient.exit_code == 0, patient.output
    with (tmp_path / "patient" / "cohort.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_the_push_option_names_still_work_and_zero_is_refused(tmp_path: Path) -> None:
    for command in (
        ["analyze", "dicomweb+http://127.0.0.1:9/studies/1.2.3"],
        ["batch", "dicomweb+http://127.0.0.1:9", "--query", "PatientID=X"],
    ):
        for option in (
            "--pacs-timeout",
            "--pacs-connect-timeout",
            "--push-timeout",
            "--push-connect-timeout",
        ):
            result = runner.invoke(app, [*command, "-o", str(tmp_path / "out"), option, "0"])
            output = " ".join(result.output.split())
            assert result.exit_code == 1 and "must be more than 0 seconds" in output, (option, output)


def test_the_web_apps_pacs_panel_waits_as_long_as_the_server_was_told(
    two_studies: list[list[Path]], tmp_path: Path
) -> None:
    """The web app's PACS panel (search, import, push) waited its fixed 10 s / 60 s whatever the site's PACS
    needed: `serve` now takes the same --pacs-connect-timeout / --pacs-timeout (WebSettings.pacs_waits)."""
    from fastapi.testclient import TestClient

    from sarcoscope.web import WebSettings, create_app

    with _pacs(two_studies, search_delay=2.5) as url:
        for waits, answered in (((2.0, 1.0), False), ((2.0, 10.0), True)):
            data = tmp_path / f"data-{waits[1]:g}"
            app = create_app(WebSettings(data_dir=data, dicomweb_url=url, pacs_waits=waits))
            with TestClient(app) as client:
                found = client.post("/api/pacs/search", json={"date_from": "2000-01-01"})
            app.state.ctx.store.close()
            if answered:
                assert found.status_code == 200 and len(found.json()["studies"]) == 2, found.text
            else:
                assert found.status_code == 502 and "within 1 s" in found.json()["detail"], found.text
