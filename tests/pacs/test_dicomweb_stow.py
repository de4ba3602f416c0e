"""STOW-RS answers a store that failed in part with 202 Accepted and the refused objects in its Failed SOP
Sequence (PS3.18; dcm4chee does so, Orthanc answers 409): the store is an error naming how many were
refused, not a success. Orthanc never answers 202, so a small HTTP server does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pydicom
import pytest
from local_http import serve
from pydicom.uid import generate_uid

from orthanc_server import free_port
from sarcoscope.pacs.dicomweb import DICOMwebServer, DICOMwebServerError, Stored

STUDY = generate_uid(entropy_srcs=["sarcoscope-test-stow", "study"])


def _dataset(n: int) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sarcoscope-test-stow", str(n)])
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["sarcoscope-test-stow", "series"])
    ds.Modality = "SR"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds


def _reference(ds: pydicom.Dataset, failure: int | None = None) -> dict:
    item = {
        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
        "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
    }
    if failure is not None:
        item["00081197"] = {"vr": "US", "Value": [failure]}
    return item


@contextmanager
def _stow(status: int, answer: object, *, silent: bool = False) -> Iterator[str]:
    """A STOW-RS endpoint that reads the request and sends `answer` (DICOM JSON) with `status` (`silent`:
    never answers it)."""
    ended = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # the search for objects stored before: none
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if silent:
                ended.wait(30)
                return
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        try:
            yield url
        finally:
            ended.set()


def test_a_store_accepted_in_part_is_an_error() -> None:
    seg, sr = _dataset(1), _dataset(2)
    answer = {
        "00081198": {"vr": "SQ", "Value": [_reference(sr, 0xA700)]},
        "00081199": {"vr": "SQ", "Value": [_reference(seg)]},
    }
    with _stow(202, answer) as url, pytest.raises(DICOMwebServerError, match="refused 1 of 2 obj") as refused:
        DICOMwebServer(url).store(STUDY, [seg, sr])
    assert refused.value.status == 409


def test_a_store_accepted_whole_counts_every_object() -> None:
    seg, sr = _dataset(1), _dataset(2)
    with _stow(200, {"00081199": {"vr": "SQ", "Value": [_reference(seg), _reference(sr)]}}) as url:
        assert DICOMwebServer(url).store(STUDY, [seg, sr]) == Stored(2, 0)


@pytest.mark.parametrize("answer", [[], {"00081198": {"vr": "SQ", "Value": "none"}}, {"stored": 2}])
def test_an_answer_that_is_not_dicom_json_is_a_clear_error(answer: object) -> None:
    with _stow(200, answer) as url, pytest.raises(DICOMwebServerError, match="unreadable answer to storing"):
        DICOMwebServer(url).store(STUDY, [_dataset(1)])


@pytest.fixture
def silent_store() -> Iterator[str]:
    """Answers the search for objects stored before (none); takes a store and never answers it."""
    with _stow(200, {}, silent=True) as url:
        yield url


def _unanswered(url: str, **timeouts: float) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(DICOMwebServerError) as refused:
        DICOMwebServer(url, **timeouts).store(STUDY, [_dataset(1)])
    return " ".join(str(refused.value).split()), time.monotonic() - start


# A push waited with one 60 s timeout for the connection and for every answer (a host dropping the
# connection request held it a minute per attempt, unlike the C-STORE path's 10 s), and its error said only
# "Cannot reach the DICOMweb server: ConnectTimeout" (or ReadTimeout, ConnectionError): which wait ran out?


def test_a_store_never_answered_is_given_up_after_the_read_timeout(silent_store: str) -> None:
    message, took = _unanswered(silent_store, timeout=0.5, connect_timeout=5.0)
    assert took < 15  # three attempts of 0.5 s, 1 s and 2 s apart
    assert message == (
        f"The DICOMweb server {silent_store} took the connection but did not answer storing the results into "
        f"study {STUDY} within 0.5 s."
    )


@pytest.mark.parametrize(
    ("server", "said"),
    [
        (
            "dropping",
            (
                "did not take the connection within 0.5 s (a wrong host or port, a firewall, or the host is "
                "down)"
            ),
        ),
        ("closed", "refused the connection or cannot be reached (is it running, on this port?)"),
    ],
    ids=["connect-timeout", "refused"],
)
def test_a_server_that_does_not_take_the_connection_says_why(
    server: str, said: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue("dropping").port if server == "dropping" else free_port()
    url = f"http://127.0.0.1:{port}"
    message, took = _unanswered(url, timeout=30.0, connect_timeout=0.5 if server == "dropping" else 30.0)
    assert took < 15 and message == f"Cannot reach the DICOMweb server {url}: it {said}."
