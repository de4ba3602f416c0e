"""A WADO-RS response that ends early (a dropped proxy connection, a crashed PACS worker) holds whole
instances that would pass for the complete series: the retrieval compares what arrived with the count the
server reports and refuses a short series, on the command line and in the web app (nothing imported, so
the complete series can be imported later). Orthanc cannot drop a response half way, so a small HTTP
server does, without the closing multipart boundary and without Content-Length."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from local_http import series_server

from sarcoscope.errors import InputError
from sarcoscope.pacs.dicomweb import fetch_series
from sarcoscope.web import WebSettings, create_app


@contextmanager
def _pacs(files: list[Path], send: list[int]) -> Iterator[str]:
    """A DICOMweb server with one CT series of `files`; its n-th retrieval sends `send[n]` instances (the
    last value from then on) and ends without the closing boundary unless all were sent. Yields its URL."""
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    blobs = [f.read_bytes() for f in files]
    answers = [(blobs[:n], n == len(blobs)) for n in send]
    with series_server(str(head.StudyInstanceUID), str(head.SeriesInstanceUID), len(blobs), answers) as url:
        yield url


def test_a_short_retrieval_is_refused_on_the_command_line(series: list[Path], tmp_path: Path) -> None:
    study = str(pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    with _pacs(series, send=[8, len(series)]) as url:
        with pytest.raises(InputError, match=f"sent 8 of the {len(series)} instances"):
            fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "short")
        assert len(
            list(fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "whole").glob("*.dcm"))
        ) == len(series)


def test_a_short_retrieval_is_not_imported_and_the_whole_one_is(series: list[Path], tmp_path: Path) -> None:
    study = str(pydicom.dcmread(series[0], stop_before_pixels=True).StudyInstanceUID)
    with _pacs(series, send=[8, len(series)]) as url:
        app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=url))
        try:
            with TestClient(app) as client:
                (listed,) = client.get(f"/api/pacs/studies/{study}/series").json()
                route = f"/api/pacs/studies/{study}/series/{listed['series_uid']}/import"
                short = client.post(route)
                assert short.status_code == 502 and "ended early" in short.json()["detail"]
                assert client.get("/api/studies").json() == []
                whole = client.post(route)
                assert whole.status_code == 201 and whole.json()["n_slices"] == len(series)
        finally:
            app.state.ctx.store.close()
