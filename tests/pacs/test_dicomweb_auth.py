"""A DICOMweb server behind HTTP basic auth (a real Orthanc with a registered user): the credentials in the
address log in for search, retrieve and store, and never appear in a message. Skips without Orthanc."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from orthanc_server import ct_files, start_orthanc
from sarcoscope.pacs.dicomweb import DICOMwebServer, DICOMwebServerError, Stored


def test_basic_auth_from_the_address(tmp_path: Path, shared_data: Path) -> None:
    files = ct_files(shared_data)
    source = pydicom.dcmread(files[0])
    with start_orthanc(tmp_path / "orthanc", users={"radiology": "s3cret-pass"}) as orthanc:
        host = orthanc.dicomweb.removeprefix("http://")
        server = DICOMwebServer(f"http://radiology:s3cret-pass@{host}")
        assert server.shown == orthanc.dicomweb  # no password in what messages show
        assert server.store(str(source.StudyInstanceUID), [source]) == Stored(1, 0)  # STOW-RS
        (study,) = server.search_studies({"PatientID": str(source.PatientID)})  # QIDO-RS
        assert study.study_uid == source.StudyInstanceUID
        assert server.retrieve_series(study.study_uid, str(source.SeriesInstanceUID), tmp_path / "got") == 1
        with pytest.raises(DICOMwebServerError, match="HTTP 401") as refused:
            DICOMwebServer(f"http://radiology:wrong@{host}").search_studies({"PatientID": "x"})
        assert "wrong" not in str(refused.value) and refused.value.status == 401


def test_a_mistyped_address_is_shown_without_its_password(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sarcoscope.cli import app

    runner = CliRunner()
    for typo in ("study/1.2.3", "studies/1.2.3/serie/4.5"):  # not an address analyze or batch can read
        url = f"dicomweb+http://radiology:s3cret-pass@127.0.0.1:9/dicom-web/{typo}"
        result = runner.invoke(app, ["analyze", url, "-o", str(tmp_path / "out"), "--engine", "threshold"])
        assert result.exit_code == 1 and "Cannot read the DICOMweb address" in result.output
        assert "s3cret" not in result.output and "radiology:***@127.0.0.1:9" in result.output
        # a batch manifest: the failed case's error is written into failures.csv
        (tmp_path / "manifest.csv").write_text(f"case_id,path\nc1,{url}\n")
        result = runner.invoke(app, ["batch", str(tmp_path / "manifest.csv"), "-o", str(tmp_path / "run")])
        failures = (tmp_path / "run" / "failures.csv").read_text()
        assert "Cannot read the DICOMweb address" in failures and "s3cret" not in failures + result.output
    # a port that is not a number is an address that cannot be read, not an internal error
    url = "dicomweb+http://radiology:s3cret-pass@127.0.0.1:80x42/dicom-web/studies/1.2.3"
    result = runner.invoke(app, ["analyze", url, "-o", str(tmp_path / "out"), "--engine", "threshold"])
    assert result.exit_code == 1 and "internal error" not in result.output and "s3cret" not in result.output
