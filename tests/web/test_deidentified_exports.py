"""Every de-identified exit of the web app searched byte by byte for the values the uploaded headers
carried (tests/phi_dicom.py's sentinel series: the whole table three levels deep, a name outside ASCII in the
series' character set, private blocks, UIDs, dates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import get_labels, segmented
from web_synth import SPACING, synthetic_hu

from phi_dicom import (
    NON_ASCII_NAMES,
    SENTINEL_PATIENT_ID,
    SURNAME,
    header_sentinels,
    leaks,
    readable_bytes,
    write_sentinel_series,
)
from sarcoscope.web.analysis import EXPORTS


@pytest.mark.parametrize("charset", list(NON_ASCII_NAMES))
def test_no_sentinel_of_the_headers_is_in_any_de_identified_download(
    client: TestClient, tmp_path: Path, charset: str
) -> None:
    """Each export format (with dates removed and with them shifted), the DICOM download and the
    training-data export, their bodies (zips, gzip, PNG chunks, PDF text searched inside) and headers."""
    files = write_sentinel_series(tmp_path / "series", charset, synthetic_hu(0), SPACING)
    sentinels = header_sentinels(files)
    sid, _ = segmented(client, files, 4, 6)
    labels, version, _ = get_labels(client, sid)
    labels[:, 10:20, 10:20] = 1  # a person's correction: the training-data export takes it
    saved = client.post(
        f"/api/studies/{sid}/labels", params={"base_version": version}, content=labels.tobytes()
    )
    assert saved.status_code == 201, saved.text
    downloads = {
        f"{fmt} {shifted}": (
            f"/api/studies/{sid}/export/{fmt}",
            {"deidentify": True, "keep_dates_shifted": shifted},
        )
        for fmt in EXPORTS
        for shifted in (False, True)
    }
    downloads["dicom"] = (f"/api/studies/{sid}/dicom", {"deidentify": True, "first": 3, "last": 7})
    downloads["training data"] = ("/api/training-data", {})  # always de-identified
    outputs = {}
    for name, (url, params) in downloads.items():
        r = client.get(url, params=params)
        assert r.status_code == 200, (name, r.text)
        outputs[name] = readable_bytes(r.content) + json.dumps(dict(r.headers)).encode()
    assert b"images/" in outputs["training data"]  # the slices are in it
    assert leaks(outputs, sentinels) == []
    # the search finds them in what the server keeps and in the downloads made without de-identification
    assert {
        leak.split(": ", 1)[1]
        for leak in leaks({"series": b"".join(f.read_bytes() for f in files)}, sentinels)
    } == {
        *map(repr, sentinels),
        "a table value",
    }
    plain = {fmt: readable_bytes(client.get(f"/api/studies/{sid}/export/{fmt}").content) for fmt in EXPORTS}
    found = {leak.split(": ", 1)[1] for leak in leaks(plain, sentinels)}
    name = NON_ASCII_NAMES[charset].split("^")[0]
    assert {repr(SENTINEL_PATIENT_ID), repr(name), repr(SURNAME), "a table value"} <= found
