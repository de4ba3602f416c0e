"""The web app's PACS routes against a real Orthanc (DICOMweb plugin) on 127.0.0.1: a real CT series is
stored in Orthanc, found by patient, ID, accession and date, imported, segmented, and its SEG, SR and QC
capture pushed back and read from Orthanc again (same patient and study, the SR's numbers those the app
shows). Skips without Orthanc or without the shared data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from web_synth import multipart

from orthanc_server import Orthanc, ct_files, free_port, start_orthanc
from sarcoscope.conventions import TISSUE_TITLES
from sarcoscope.web import WebSettings, create_app


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def source(orthanc: Orthanc, shared_data: Path) -> pydicom.Dataset:
    """The real CT series stored in Orthanc; returns the header of its first file."""
    files = ct_files(shared_data)
    orthanc.upload(files)
    return pydicom.dcmread(files[0], stop_before_pixels=True)


def _client(tmp_path: Path, dicomweb_url: str | None) -> TestClient:
    return TestClient(create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=dicomweb_url)))


@pytest.fixture
def client(tmp_path: Path, orthanc: Orthanc) -> Iterator[TestClient]:
    with _client(tmp_path, orthanc.dicomweb) as c:
        yield c
        c.app.state.ctx.store.close()  # type: ignore[attr-defined]


def _uids(response_json: dict) -> list[str]:
    return [s["study_uid"] for s in response_json["studies"]]


def test_search_by_patient_id_accession_and_date(client: TestClient, source: pydicom.Dataset) -> None:
    study = str(source.StudyInstanceUID)
    assert client.get("/api/pacs").json() == {"configured": True}
    # a wildcard in any case (Orthanc matches a percent-encoded * literally, so it is sent as it is)
    found = client.get(
        "/api/pacs/studies", params={"patient_name": str(source.PatientName)[:3].lower() + "*"}
    )
    assert found.status_code == 200, found.text
    (hit,) = found.json()["studies"]
    assert hit["study_uid"] == study and hit["patient_id"] == source.PatientID
    assert hit["modalities"] == ["CT"] and hit["study_date"] == source.StudyDate
    assert _uids(client.get("/api/pacs/studies", params={"patient_id": source.PatientID}).json()) == [study]
    by_accession = client.get("/api/pacs/studies", params={"accession_number": source.AccessionNumber})
    assert _uids(by_accession.json()) == [study]
    day = f"{source.StudyDate[:4]}-{source.StudyDate[4:6]}-{source.StudyDate[6:]}"
    assert _uids(client.get("/api/pacs/studies", params={"date_from": day, "date_to": day}).json()) == [study]
    assert _uids(client.get("/api/pacs/studies", params={"date_to": day}).json()) == [study]
    later = client.get("/api/pacs/studies", params={"date_from": "2099-01-01"}).json()
    assert later["studies"] == [] and later["more"] is False
    assert client.get("/api/pacs/studies", params={"patient_id": "no-such-patient"}).json()["studies"] == []
    audit = [e for e in client.get("/api/audit").json() if e["action"] == "pacs-search"]
    assert audit[-1]["details"] == {"criteria": ["PatientName"], "results": 1}  # criteria, never values


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "at least one search criterion"),
        ({"date_from": "17.04.2003"}, "must be a date"),
        ({"date_from": "2004-01-01", "date_to": "2003-01-01"}, "ends before it starts"),
        ({"patient_name": "a\\b"}, "one value"),
        ({"limit": "0", "patient_id": "1"}, "limit"),
    ],
)
def test_bad_searches_are_422(client: TestClient, params: dict, reason: str) -> None:
    response = client.get("/api/pacs/studies", params=params)
    assert response.status_code == 422 and reason in response.json()["detail"]


def test_import_segment_push_and_read_back(
    client: TestClient, orthanc: Orthanc, source: pydicom.Dataset, shared_data: Path
) -> None:
    study_uid, series_uid = str(source.StudyInstanceUID), str(source.SeriesInstanceUID)
    (series,) = client.get(f"/api/pacs/studies/{study_uid}/series").json()
    assert series["series_uid"] == series_uid and series["modality"] == "CT" and series["n_instances"] == 3
    assert series["imported_as"] is None
    imported = client.post(f"/api/pacs/studies/{study_uid}/series/{series_uid}/import")
    assert imported.status_code == 201, imported.text
    study = imported.json()
    assert (study["series_uid"], study["n_slices"], study["patient_id"]) == (series_uid, 3, source.PatientID)
    again = client.post(f"/api/pacs/studies/{study_uid}/series/{series_uid}/import")
    assert again.status_code == 409 and study["id"] in again.json()["detail"]
    assert client.get(f"/api/pacs/studies/{study_uid}/series").json()[0]["imported_as"] == study["id"]

    sid = study["id"]
    assert client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 1}).status_code == 200
    segmented = client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"})
    assert segmented.status_code == 200, segmented.text
    shown = client.get(f"/api/studies/{sid}/analysis").json()["average"]["tissues"]["muscle"]["area_cm2"]
    pushed = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
    assert pushed.status_code == 200, pushed.text
    body = pushed.json()
    assert body["stored"] == 3 and body["study_uid"] == study_uid and body["warnings"] == []
    kinds = {o["modality"]: o for o in body["objects"]}
    assert set(kinds) == {"SEG", "SR", "OT"}

    back = {
        m: orthanc.instances_of(study_uid, o["series_instance_uid"]) for m, o in kinds.items()
    }  # read through Orthanc's own REST API, not through the client under test
    for modality, (ds,) in back.items():
        assert ds.SOPInstanceUID == kinds[modality]["sop_instance_uid"]
        assert (ds.StudyInstanceUID, ds.PatientID, str(ds.PatientName)) == (
            study_uid,
            source.PatientID,
            str(source.PatientName),
        )
        assert ds.SeriesInstanceUID != series_uid  # a new series in the source study
    seg = hd.seg.Segmentation.from_dataset(back["SEG"][0])
    assert seg.SegmentationType == "BINARY" and len(seg.SegmentSequence) == 4
    assert {
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    } <= {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in ct_files(shared_data)}
    sr = hd.sr.Comprehensive3DSR.from_dataset(back["SR"][0])
    groups = sr.content.get_planar_roi_measurement_groups()
    assert {g.referenced_segmentation_frame.referenced_sop_instance_uid for g in groups} == {
        kinds["SEG"]["sop_instance_uid"]
    }
    muscle = next(
        g
        for g in groups  # one slice: one planar group per tissue
        if g.tracking_identifier.startswith(TISSUE_TITLES["muscle"])
    )
    area = next(m for m in muscle.get_measurements() if m.name.meaning == "Area")
    assert area.value == pytest.approx(shown, rel=1e-9)
    not_ct = client.post(f"/api/pacs/studies/{study_uid}/series/{kinds['SEG']['series_instance_uid']}/import")
    assert not_ct.status_code == 422 and "is SEG" in not_ct.json()["detail"]
    capture = back["OT"][0]
    assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and capture.Rows > 0
    twice = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
    assert twice.status_code == 409 and "pushed to the PACS before" in twice.json()["detail"]
    assert len(orthanc.series_of(study_uid)) == 4  # nothing more was stored
    # pushed again on purpose, the same result: the same objects, which the study holds already
    again = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1, "repeat": True}).json()
    assert (again["stored"], again["already_stored"]) == (0, 3)
    assert again["objects"] == body["objects"]
    assert len(orthanc.series_of(study_uid)) == 4
    events = [e for e in client.get(f"/api/studies/{sid}/audit").json() if e["action"] == "pacs-push"]
    assert events and events[0]["details"]["sop_instance_uids"] == [
        o["sop_instance_uid"] for o in body["objects"]
    ]


def test_a_push_says_what_a_malformed_source_value_left_empty(
    client: TestClient, orthanc: Orthanc, shared_data: Path, tmp_path: Path
) -> None:
    """Archives hold birth dates such as 19XX0101: the SEG, SR and capture are pushed with it left empty, and
    the answer says so (the web export's X-Sarcoscope-Warning, here in `warnings`)."""
    study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    copies = []
    for i, f in enumerate(ct_files(shared_data)):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.PatientBirthDate = "19XX0101"
        copies.append(tmp_path / f"{i}.dcm")
        ds.save_as(copies[-1])
    orthanc.upload(copies)
    sid = client.post(f"/api/pacs/studies/{study_uid}/series/{series_uid}/import").json()["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 1})
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    pushed = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
    assert pushed.status_code == 200, pushed.text
    body = pushed.json()
    assert body["stored"] == 3
    (warning,) = body["warnings"]  # one note for the three objects
    assert "PatientBirthDate" in warning and "19XX" not in warning
    seg = next(o for o in body["objects"] if o["modality"] == "SEG")
    (ds,) = orthanc.instances_of(study_uid, seg["series_instance_uid"])
    assert ds.PatientBirthDate == "" and ds.PatientID


def test_a_pacs_study_s_series_list_is_in_the_audit_log(client: TestClient, source: pydicom.Dataset) -> None:
    """GET /api/pacs/studies/{uid}/series lists a PACS study's series (descriptions, sizes, whether imported)
    for anyone who has its UID, with no search before it: it left no audit event. It is `pacs-view-series`
    with the study's UID and how many series were listed, once per session and study; a study the PACS
    does not have shows nothing and records nothing."""
    study_uid = str(source.StudyInstanceUID)
    listed = [client.get(f"/api/pacs/studies/{study_uid}/series").json() for _ in range(3)]
    assert str(source.SeriesInstanceUID) in {s["series_uid"] for s in listed[0]}  # (and what others pushed)
    assert client.get("/api/pacs/studies/1.2.3.4/series").status_code == 404
    events = client.app.state.ctx.store.audit_events()  # type: ignore[attr-defined]
    shown = [(e.actor, e.study_id, e.details) for e in events if e.action == "pacs-view-series"]
    assert shown == [("local", None, {"study_uid": study_uid, "series": len(listed[0])})]


def test_an_erased_study_s_pacs_uid_leaves_the_audit_log(client: TestClient, source: pydicom.Dataset) -> None:
    """A PACS study's series listed before its import is `pacs-view-series`, with the StudyInstanceUID and no
    study id. Deleting and erasing the imported study scrubbed the study's own events, not that one: the
    audit log still named the patient's exam at the hospital. The deletion now leaves of it what a deleted
    study's events keep (who, what, when), and so does the erasure of one listed again while it was kept."""
    study_uid, series_uid = str(source.StudyInstanceUID), str(source.SeriesInstanceUID)
    assert client.get(f"/api/pacs/studies/{study_uid}/series").status_code == 200
    imported = client.post(f"/api/pacs/studies/{study_uid}/series/{series_uid}/import")
    assert imported.status_code == 201, imported.text
    store = client.app.state.ctx.store  # type: ignore[attr-defined]
    assert client.delete(f"/api/studies/{imported.json()['id']}", params={"latest_version": 0}).is_success
    assert [e.details for e in store.audit_events() if e.action == "pacs-view-series"] == [{}]
    store.audit("bob", "pacs-view-series", None, {"study_uid": study_uid, "series": 1})  # while it is kept
    [kept] = client.get("/api/deleted-studies").json()
    erased = client.delete(f"/api/deleted-studies/{kept['id']}", params={"deleted_at": kept["deleted_at"]})
    assert erased.status_code == 200, erased.text
    events = store.audit_events()
    assert [e.actor for e in events if e.action == "pacs-view-series"] == ["bob", "local"]
    assert [e.id for e in events if study_uid in json.dumps(e.details)] == []


def test_unknown_ids_not_ct_and_study_not_on_the_pacs(
    client: TestClient, orthanc: Orthanc, source: pydicom.Dataset, series: list[Path]
) -> None:
    study_uid = str(source.StudyInstanceUID)
    assert client.get("/api/pacs/studies/1.2.3.4/series").status_code == 404
    assert client.get("/api/pacs/studies/not-a-uid/series").status_code == 422
    missing = client.post(f"/api/pacs/studies/{study_uid}/series/1.2.3.4/import")
    assert missing.status_code == 404 and "no series 1.2.3.4" in missing.json()["detail"]
    # a study uploaded from elsewhere is not pushed into the PACS (it would make a study there)
    uploaded = client.post("/api/studies", files=multipart(series)).json()
    sid = uploaded["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 2})
    client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"})
    refused = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
    assert refused.status_code == 409 and "pushed only into the study" in refused.json()["detail"]
    unknown = "/api/studies/0123456789abcdef0123456789abcdef/pacs/push"
    assert client.post(unknown, params={"version": 1}).status_code == 404


def test_an_import_beyond_the_upload_limit_is_413(
    tmp_path: Path, orthanc: Orthanc, source: pydicom.Dataset
) -> None:
    settings = WebSettings(
        data_dir=tmp_path / "data", dicomweb_url=orthanc.dicomweb, max_upload_bytes=100_000
    )
    with TestClient(create_app(settings)) as c:
        path = f"/api/pacs/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}/import"
        response = c.post(path)  # three slices of about 0.5 MB each
        assert response.status_code == 413 and "--max-upload-mb" in response.json()["detail"]
        assert c.get("/api/studies").json() == []
        assert not any((tmp_path / "data" / "tmp").iterdir())  # the partial retrieval is gone
        c.app.state.ctx.store.close()  # type: ignore[attr-defined]


def test_no_server_is_409_and_a_failing_server_is_502(tmp_path: Path) -> None:
    with _client(tmp_path / "a", None) as c:
        assert c.get("/api/pacs").json() == {"configured": False}
        response = c.get("/api/pacs/studies", params={"patient_id": "1"})
        assert response.status_code == 409 and "--dicomweb-url" in response.json()["detail"]
        assert c.post("/api/pacs/search", json={"patient_id": "1"}).status_code == 409
        c.app.state.ctx.store.close()  # type: ignore[attr-defined]
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    with _client(tmp_path / "b", closed) as c:
        response = c.get("/api/pacs/studies", params={"patient_id": "1"})
        assert response.status_code == 502 and "Cannot reach the DICOMweb server" in response.json()["detail"]
        # the criteria in the body (the browser's way): checked the same, then the same failure
        searched = c.post("/api/pacs/search", json={"patient_name": "DOE*", "date_from": "2003-01-01"})
        assert searched.status_code == 502 and "Cannot reach the DICOMweb server" in searched.json()["detail"]
        for bad, reason in (({}, "at least one"), ({"date_from": "17.04.2003"}, "must be a date")):
            refused = c.post("/api/pacs/search", json=bad)
            assert refused.status_code == 422 and reason in refused.json()["detail"]
        assert c.post("/api/pacs/search", json={"patient_id": "1", "limit": 0}).status_code == 422
        assert c.post("/api/pacs/search", json={"patient": "1"}).status_code == 422  # unknown field
        assert c.post("/api/pacs/studies/1.2.3/series/4.5/import").status_code == 502
        c.app.state.ctx.store.close()  # type: ignore[attr-defined]


def test_public_host_is_the_address_printed() -> None:
    from sarcoscope.errors import SarcoscopeError
    from sarcoscope.web.app import browser_urls

    assert browser_urls("127.0.0.1", 8000, "sarcoscope.example.org") == ["https://sarcoscope.example.org/"]
    assert browser_urls("0.0.0.0", 8000, "http://ct.lan:8080/sarco/") == ["http://ct.lan:8080/sarco/"]
    with pytest.raises(SarcoscopeError, match="--public-host"):
        browser_urls("127.0.0.1", 8000, "ftp://x")
