"""What a WADO-RS retrieval takes for the series it asked for. A server (or a proxy in front of it) that
sends an instance twice made a short series pass the count check (11 distinct of 12 counted as 12), and the
reader then dropped the repeat and analysed a series with a slice missing, taken as complete; one that sends
an instance of another series had it taken into the case's folder. And a server that does not list a
series' instance count (NumberOfSeriesRelatedInstances is returned only "if available") left nothing to
compare with: a response cut between two instances (no closing boundary) was taken for the whole series.
Small HTTP servers misbehave where Orthanc would not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from local_http import series_server

from sarcoscope.errors import InputError
from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.pacs.dicomweb import fetch_series


@contextmanager
def _pacs(
    study: str, series: str, listed: int | None, blobs: list[bytes], closed: bool = True
) -> Iterator[str]:
    """A DICOMweb server listing `listed` instances of the series (None: no count) whose retrieval sends
    `blobs`, closed or not (local_http.series_server)."""
    with series_server(study, series, listed, [(blobs, closed)]) as url:
        yield url


def _uids(files: list[Path]) -> tuple[str, str]:
    head = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(head.StudyInstanceUID), str(head.SeriesInstanceUID)


def test_a_repeated_instance_does_not_make_a_short_series_pass(series: list[Path], tmp_path: Path) -> None:
    study, uid = _uids(series)
    blobs = [f.read_bytes() for f in series]
    sent = [*blobs[:6], blobs[5], *blobs[7:]]  # the 7th instance missing, the 6th sent twice: 12 parts
    with (
        _pacs(study, uid, len(series), sent) as url,
        pytest.raises(InputError, match=f"sent 11 of the {len(series)} instances") as caught,
    ):
        fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "short")
    assert "1 instance sent twice" in str(caught.value)
    with _pacs(study, uid, len(series), [*blobs, blobs[0]]) as url:  # whole, one repeated: one file each
        got = fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "whole")
    assert len(list(got.glob("*.dcm"))) == len(series)


def test_an_instance_of_another_series_is_refused(series: list[Path], tmp_path: Path) -> None:
    study, uid = _uids(series)
    hu = np.full((3, 64, 64), -1000, np.int16)
    meta = CTMetadata(patient_id="P-1", study_instance_uid=study)  # the same study, another series
    scout = write_dicom_series(hu, (3.0, 4.0, 4.0), tmp_path / "scout", metadata=meta)
    assert _uids(scout) == (study, _uids(scout)[1]) and _uids(scout)[1] != uid
    blobs = [f.read_bytes() for f in series] + [scout[0].read_bytes()]
    with (
        _pacs(study, uid, len(series), blobs) as url,
        pytest.raises(InputError, match=f"an instance of another series .* series {uid}"),
    ):
        fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "mixed")


def test_a_cut_retrieval_from_a_server_that_lists_no_count_is_refused(
    series: list[Path], tmp_path: Path
) -> None:
    study, uid = _uids(series)
    blobs = [f.read_bytes() for f in series]
    with (
        _pacs(study, uid, None, blobs[:5], closed=False) as url,
        pytest.raises(InputError, match=f"ended the retrieval of series {uid} before its end") as caught,
    ):
        fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "cut")
    assert "5 instances arrived" in str(caught.value)
    with _pacs(study, uid, None, blobs) as url:  # the whole series, closed: taken
        got = fetch_series(f"dicomweb+{url}/studies/{study}", tmp_path / "whole")
    assert len(list(got.glob("*.dcm"))) == len(series)
