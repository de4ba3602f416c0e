"""Defects a new user hit in the web app (issue #15), at the API level: each test failed before its fix."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from fastapi.testclient import TestClient
from web_synth import multipart

from sarcoscope.store import is_dicom_uid


def _blank_uids(files: list[Path]) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = ""
        ds.SeriesInstanceUID = ""
        ds.save_as(f)


def test_series_with_empty_uids_is_accepted_with_stable_generated_uids(
    client: TestClient, series: list[Path]
) -> None:
    _blank_uids(series)
    r = client.post("/api/studies", files=multipart(series))
    assert r.status_code == 201, r.text
    study = r.json()
    assert is_dicom_uid(study["series_uid"])
    assert any("generated UIDs" in w and study["series_uid"] in w for w in study["warnings"])
    again = client.post("/api/studies", files=multipart(series))
    assert again.status_code == 409 and study["series_uid"] in again.json()["detail"]  # same UID again
    sid = study["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    analysis = client.get(f"/api/studies/{sid}/analysis").json()
    assert any("generated UIDs" in w for w in analysis["warnings"])
    seg = client.get(f"/api/studies/{sid}/export/dicom-seg")
    assert seg.status_code == 200, seg.text
    ds = pydicom.dcmread(io.BytesIO(seg.content))
    assert is_dicom_uid(ds.StudyInstanceUID) and ds.StudyInstanceUID in " ".join(study["warnings"])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == study["series_uid"]
