"""STOW-RS answers a store that failed in part with 202 Accepted and the refused objects in its Failed SOP
Sequence (PS3.18; dcm4chee does so, Orthanc answers 409): the store is an error naming how many were
refused, not a success. Orthanc never answers 202, so a small HTTP server does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pydicom
import pytest
from local_http import serve
from pydicom.uid import generate_uid

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
def _stow(status: int, answer: object) -> Iterator[str]:
    """A STOW-RS endpoint that reads the request and sends `answer` (DICOM JSON) with `status`."""

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
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        yield url


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
