"""A DICOMweb server that stays busy (503 Service Unavailable, a proxy's 504, 429 Too Many Requests) through
every attempt at a retrieval or a store: one clear error naming the server and its status, on the command
line and in the web app (502), not "internal error: RetryError" (dicomweb-client's retries give up with an
exception of the retrying package). Orthanc does not answer 503 on demand, so a small HTTP server does:
it lists one CT series (and no results stored before), and answers every retrieval and store with
`status`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from local_http import serve

from sarcoscope.errors import InputError
from sarcoscope.pacs.dicomweb import DICOMwebServer, DICOMwebServerError, fetch_series
from sarcoscope.web import WebSettings, create_app


@contextmanager
def _busy(files: list[Path], status: int) -> Iterator[str]:
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == f"/studies/{study}/series":
                listing = [
                    {
                        "0020000E": {"vr": "UI", "Value": [series]},
                        "00080060": {"vr": "CS", "Value": ["CT"]},
                        "00201209": {"vr": "IS", "Value": [len(files)]},
                    }
                ]
                self._answer(200, json.dumps(listing).encode())
            elif self.path.split("?", 1)[0] in (f"/studies/{study}/instances", "/studies"):
                # results stored before: none; whose study it is (asked before storing): not said
                self._answer(200, b"[]")
            else:
                self._answer(status)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(status)

    with serve(Handler) as url:
        yield url


@pytest.mark.parametrize("status", [503, 504])
def test_a_busy_server_is_a_clear_error_on_the_command_line(
    series: list[Path], tmp_path: Path, status: int
) -> None:
    head = pydicom.dcmread(series[0])
    with _busy(series, status) as url:
        with pytest.raises(InputError, match=f"refused the retrieval of series .*HTTP {status}"):
            fetch_series(f"dicomweb+{url}/studies/{head.StudyInstanceUID}", tmp_path / "got")
        with pytest.raises(DICOMwebServerError, match=f"refused storing .*HTTP {status}") as refused:
            DICOMwebServer(url).store(str(head.StudyInstanceUID), [head])
        assert refused.value.status == status


def test_a_busy_server_is_a_502_in_the_web_app(series: list[Path], tmp_path: Path) -> None:
    study = str(pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    with _busy(series, 503) as url:
        app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=url))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                (listed,) = client.get(f"/api/pacs/studies/{study}/series").json()
                got = client.post(f"/api/pacs/studies/{study}/series/{listed['series_uid']}/import")
                assert got.status_code == 502 and "HTTP 503" in got.json()["detail"]
        finally:
            app.state.ctx.store.close()
