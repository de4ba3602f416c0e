"""A DICOMweb server behind HTTP basic auth (a real Orthanc with a registered user): the credentials in the
address log in for search, retrieve and store, and never appear in a message. Skips without Orthanc."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from orthanc_server import ct_files, start_orthanc
from sarcoscope.pacs.dicomweb import DICOMwebServer, DICOMwebServerError


def test_basic_auth_from_the_address(tmp_path: Path, shared_data: Path) -> None:
    files = ct_files(shared_data)
    source = pydicom.dcmread(files[0])
    with start_orthanc(tmp_path / "orthanc", users={"radiology": "s3cret-pass"}) as orthanc:
        host = orthanc.dicomweb.removeprefix("http://")
        server = DICOMwebServer(f"http://radiology:s3cret-pass@{host}")
        assert server.shown == orthanc.dicomweb  # no password in what messages show
        assert server.store(str(source.StudyInstanceUID), [source]) == 1  # STOW-RS
        (study,) = server.search_studies({"PatientID": str(source.PatientID)})  # QIDO-RS
        assert study.study_uid == source.StudyInstanceUID
        assert server.retrieve_series(study.study_uid, str(source.SeriesInstanceUID), tmp_path / "got") == 1
        with pytest.raises(DICOMwebServerError, match="HTTP 401") as refused:
            DICOMwebServer(f"http://radiology:wrong@{host}").search_studies({"PatientID": "x"})
        assert "wrong" not in str(refused.value) and refused.value.status == 401
