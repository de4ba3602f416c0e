"""Bad API requests: each one gets a 4xx with a JSON reason (never a 500), and nothing is written.

The cases run against one server holding a study with an L3 selection and one label version (3 slices of
96x96); every case compares the database rows and the data folder's files before and after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_api import put_patient
from web_synth import multipart, write_series

from sarcoscope.store.models import AuditEvent, LabelVersion, LoginFailure, LoginSession, Study, User
from sarcoscope.web import WebSettings, create_app

HUGE = 10**30
LABEL_BYTES = 3 * 96 * 96


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str | None
) -> Iterator[tuple[TestClient, str]]:
    root = tmp_path_factory.mktemp("bad-requests")
    app = create_app(
        WebSettings(data_dir=root / "data", database_url=module_database_url, max_upload_bytes=8 * 1024**2)
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        sid = c.post("/api/studies", files=multipart(write_series(root / "series"))).json()["id"]
        c.put(f"/api/studies/{sid}/selection", json={"mode": "range", "first": 4, "last": 6})
        assert c.post(f"/api/studies/{sid}/segment", json={}).status_code == 200
        yield c, sid
    app.state.ctx.store.close()


def _state(c: TestClient) -> tuple[Any, ...]:
    """Everything a request could have written: database rows and the data folder's files."""
    c.app.state.ctx.jobs.wait()  # renders left by the set-up's requests (e.g. a segmentation's QC picture)
    store = c.app.state.ctx.store
    with store.session() as s:
        studies = [(x.id, x.status, x.selection, x.patient, x.localization) for x in s.scalars(select(Study))]
        counts = tuple(
            len(list(s.scalars(select(model))))
            for model in (LabelVersion, AuditEvent, User, LoginSession, LoginFailure)
        )
    files = sorted(
        (str(p.relative_to(store.data_dir)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in store.data_dir.rglob("*")
        if p.is_file() and not p.name.startswith("sarcoscope.db")
    )
    return studies, counts, files


def _labels(value: int = 1, size: int = LABEL_BYTES) -> bytes:
    return np.full(size, value, np.uint8).tobytes()


JSON = {"content-type": "application/json"}
OCTETS = {"content-type": "application/octet-stream"}
SID = "{sid}"  # replaced by the study's id
#: (case id, method, path, request arguments)
CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    # L3 selection
    ("selection-empty-object", "PUT", f"/api/studies/{SID}/selection", {"json": {}}),
    ("selection-missing-first", "PUT", f"/api/studies/{SID}/selection", {"json": {"mode": "range"}}),
    (
        "selection-first-text",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "slice", "first": "5"}},
    ),
    (
        "selection-first-fraction",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "slice", "first": 5.5}},
    ),
    ("selection-negative", "PUT", f"/api/studies/{SID}/selection", {"json": {"mode": "slice", "first": -1}}),
    (
        "selection-huge",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "range", "first": 0, "last": HUGE}},
    ),
    (
        "selection-past-volume",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "range", "first": 0, "last": 12}},
    ),
    (
        "selection-unknown-mode",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "both", "first": 1}},
    ),
    (
        "selection-extra-field",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"json": {"mode": "slice", "first": 1, "x": 1}},
    ),
    ("selection-list", "PUT", f"/api/studies/{SID}/selection", {"json": [1, 2]}),
    (
        "selection-nan",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"content": b'{"mode": "slice", "first": NaN}', "headers": JSON},
    ),
    (
        "selection-not-json",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"content": b"mode=slice&first=3", "headers": JSON},
    ),
    (
        "selection-truncated-json",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"content": b'{"mode": "sli', "headers": JSON},
    ),
    ("selection-empty-body", "PUT", f"/api/studies/{SID}/selection", {"content": b"", "headers": JSON}),
    (
        "selection-form-encoded",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"data": {"mode": "slice", "first": "3"}},
    ),
    (
        "selection-oversize",
        "PUT",
        f"/api/studies/{SID}/selection",
        {"content": b" " * 100_000 + b"{}", "headers": JSON},
    ),
    (
        "selection-unknown-study",
        "PUT",
        "/api/studies/" + "0" * 32 + "/selection",
        {"json": {"mode": "slice", "first": 1}},
    ),
    (
        "selection-bad-study-id",
        "PUT",
        "/api/studies/..%2F..%2Fetc/selection",
        {"json": {"mode": "slice", "first": 1}},
    ),
    # patient facts
    (
        "patient-nan",
        "PUT",
        f"/api/studies/{SID}/patient",
        {"content": b'{"height_cm": NaN}', "headers": JSON},
    ),
    (
        "patient-infinity",
        "PUT",
        f"/api/studies/{SID}/patient",
        {"content": b'{"height_cm": Infinity}', "headers": JSON},
    ),
    (
        "patient-minus-infinity",
        "PUT",
        f"/api/studies/{SID}/patient",
        {"content": b'{"weight_kg": -Infinity}', "headers": JSON},
    ),
    (
        "patient-huge-number",
        "PUT",
        f"/api/studies/{SID}/patient",
        {"content": b'{"height_cm": 1e308}', "headers": JSON},
    ),
    (
        "patient-overflowing-number",
        "PUT",
        f"/api/studies/{SID}/patient",
        {"content": b'{"weight_kg": 1e999}', "headers": JSON},
    ),
    ("patient-height-in-metres", "PUT", f"/api/studies/{SID}/patient", {"json": {"height_cm": 1.7}}),
    ("patient-height-text", "PUT", f"/api/studies/{SID}/patient", {"json": {"height_cm": "tall"}}),
    ("patient-sex-unknown", "PUT", f"/api/studies/{SID}/patient", {"json": {"sex": "X"}}),
    ("patient-cutoff-unknown", "PUT", f"/api/studies/{SID}/patient", {"json": {"cutoff_set": "made-up"}}),
    ("patient-cutoff-long", "PUT", f"/api/studies/{SID}/patient", {"json": {"cutoff_set": "x" * 100}}),
    ("patient-extra-field", "PUT", f"/api/studies/{SID}/patient", {"json": {"name": "Jane Doe"}}),
    # segmentation
    ("segment-engine-path", "POST", f"/api/studies/{SID}/segment", {"json": {"engine": "unet:/etc"}}),
    ("segment-engine-number", "POST", f"/api/studies/{SID}/segment", {"json": {"engine": 5}}),
    ("segment-base-zero", "POST", f"/api/studies/{SID}/segment", {"json": {"base_version": 0}}),
    ("segment-base-huge", "POST", f"/api/studies/{SID}/segment", {"json": {"base_version": HUGE}}),
    ("segment-base-text", "POST", f"/api/studies/{SID}/segment", {"json": {"base_version": "one"}}),
    ("segment-base-stale", "POST", f"/api/studies/{SID}/segment", {"json": {"base_version": None}}),
    ("segment-base-future", "POST", f"/api/studies/{SID}/segment", {"json": {"base_version": 99}}),
    # restoring versions
    ("restore-missing-base", "POST", f"/api/studies/{SID}/versions/1/restore", {"json": {}}),
    ("restore-version-zero", "POST", f"/api/studies/{SID}/versions/0/restore", {"json": {"base_version": 1}}),
    (
        "restore-version-huge",
        "POST",
        f"/api/studies/{SID}/versions/{HUGE}/restore",
        {"json": {"base_version": 1}},
    ),
    (
        "restore-version-text",
        "POST",
        f"/api/studies/{SID}/versions/abc/restore",
        {"json": {"base_version": 1}},
    ),
    (
        "restore-version-missing",
        "POST",
        f"/api/studies/{SID}/versions/7/restore",
        {"json": {"base_version": 1}},
    ),
    (
        "restore-base-negative",
        "POST",
        f"/api/studies/{SID}/versions/1/restore",
        {"json": {"base_version": -1}},
    ),
    ("restore-base-stale", "POST", f"/api/studies/{SID}/versions/1/restore", {"json": {"base_version": 2}}),
    # label saves (raw uint8 bodies)
    ("labels-no-base", "POST", f"/api/studies/{SID}/labels", {"content": _labels(), "headers": OCTETS}),
    (
        "labels-base-zero",
        "POST",
        f"/api/studies/{SID}/labels?base_version=0",
        {"content": _labels(), "headers": OCTETS},
    ),
    (
        "labels-base-huge",
        "POST",
        f"/api/studies/{SID}/labels?base_version={HUGE}",
        {"content": _labels(), "headers": OCTETS},
    ),
    (
        "labels-base-text",
        "POST",
        f"/api/studies/{SID}/labels?base_version=abc",
        {"content": _labels(), "headers": OCTETS},
    ),
    (
        "labels-base-missing",
        "POST",
        f"/api/studies/{SID}/labels?base_version=5",
        {"content": _labels(), "headers": OCTETS},
    ),
    (
        "labels-too-short",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": b"123", "headers": OCTETS},
    ),
    (
        "labels-empty",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": b"", "headers": OCTETS},
    ),
    (
        "labels-one-byte-long",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(size=LABEL_BYTES + 1), "headers": OCTETS},
    ),
    (
        "labels-unknown-id",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(9), "headers": OCTETS},
    ),
    (
        "labels-as-json",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(), "headers": JSON},
    ),
    (
        "labels-as-text",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(), "headers": {"content-type": "text/plain"}},
    ),
    (
        "labels-note-too-long",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(), "headers": {**OCTETS, "X-Label-Note": "n" * 501}},
    ),
    (
        "labels-note-in-the-url",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1&note=n",
        {"content": _labels(), "headers": OCTETS},
    ),
    (
        "labels-bad-content-length",
        "POST",
        f"/api/studies/{SID}/labels?base_version=1",
        {"content": _labels(), "headers": {**OCTETS, "content-length": "12abc"}},
    ),
    # uploads
    ("upload-json", "POST", "/api/studies", {"json": {"files": []}}),
    ("upload-octets", "POST", "/api/studies", {"content": b"DICM", "headers": OCTETS}),
    (
        "upload-no-files",
        "POST",
        "/api/studies",
        {"data": {"note": "x"}, "files": [("other", ("a.txt", b"a", "text/plain"))]},
    ),
    (
        "upload-files-as-text",
        "POST",
        "/api/studies",
        {"data": {"files": "not a file"}, "files": [("other", ("a", b"a", "text/plain"))]},
    ),
    (
        "upload-bad-multipart",
        "POST",
        "/api/studies",
        {"content": b"--x\r\nnonsense", "headers": {"content-type": "multipart/form-data; boundary=y"}},
    ),
    (
        "upload-not-dicom",
        "POST",
        "/api/studies",
        {"files": [("files", ("x.dcm", b"\0" * 300, "application/dicom"))]},
    ),
    (
        "upload-corrupt-zip",
        "POST",
        "/api/studies",
        {"files": [("files", ("a.zip", b"PK\x03\x04 broken", "application/zip"))]},
    ),
    (
        "upload-corrupt-nifti",
        "POST",
        "/api/studies",
        {"files": [("files", ("a.nii.gz", b"\x1f\x8b broken", "application/gzip"))]},
    ),
    (
        "upload-oversize",
        "POST",
        "/api/studies",
        {"files": [("files", ("big.dcm", b"\0" * (9 * 1024**2), "application/dicom"))]},
    ),
    # login (open mode: a name only)
    ("login-empty-name", "POST", "/api/session", {"json": {"user": ""}}),
    ("login-name-with-slash", "POST", "/api/session", {"json": {"user": "a/b"}}),
    ("login-name-too-long", "POST", "/api/session", {"json": {"user": "x" * 65}}),
    ("login-name-number", "POST", "/api/session", {"json": {"user": 5}}),
    ("login-no-name", "POST", "/api/session", {"json": {}}),
    ("login-password-too-long", "POST", "/api/session", {"json": {"user": "a", "password": "p" * 2000}}),
    ("login-extra-field", "POST", "/api/session", {"json": {"user": "a", "admin": True}}),
    # queries and paths of reads
    ("search-too-long", "GET", "/api/studies?q=" + "x" * 200, {}),
    ("audit-limit-zero", "GET", "/api/audit?limit=0", {}),
    ("audit-limit-huge", "GET", f"/api/audit?limit={HUGE}", {}),
    ("labels-version-huge", "GET", f"/api/studies/{SID}/labels?version={HUGE}", {}),
    ("labels-version-text", "GET", f"/api/studies/{SID}/labels?version=latest", {}),
    ("analysis-version-negative", "GET", f"/api/studies/{SID}/analysis?version=-1", {}),
    ("export-unknown-format", "GET", f"/api/studies/{SID}/export/docx", {}),
    ("export-version-missing", "GET", f"/api/studies/{SID}/export/csv?version=9", {}),
    ("image-past-volume", "GET", f"/api/studies/{SID}/image/axial/12", {}),
    ("image-huge-index", "GET", f"/api/studies/{SID}/image/axial/{HUGE}", {}),
    ("image-unknown-plane", "GET", f"/api/studies/{SID}/image/oblique/1", {}),
    ("image-unknown-preset", "GET", f"/api/studies/{SID}/image/axial/1?preset=nope", {}),
    ("hu-fraction", "GET", f"/api/studies/{SID}/hu/1.5", {}),
    ("dicom-range-past-volume", "GET", f"/api/studies/{SID}/dicom?first=2&last={HUGE}", {}),
    ("delete-bad-study-id", "DELETE", "/api/studies/not-a-study", {}),
    ("unknown-endpoint", "POST", "/api/studies/{sid}/unknown", {"json": {}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_a_4xx_reason_and_writes_nothing(
    server: tuple[TestClient, str], method: str, path: str, kwargs: dict[str, Any]
) -> None:
    c, sid = server
    before = _state(c)
    r = c.request(method, path.replace(SID, sid), **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "Traceback" not in detail
    assert _state(c) == before


def test_the_corpus_is_large_and_the_server_still_works(server: tuple[TestClient, str]) -> None:
    c, sid = server
    assert len(CASES) >= 80 and len({case[0] for case in CASES}) == len(CASES)
    assert put_patient(c, sid, {"height_cm": 170.0}).status_code == 200
    assert c.get(f"/api/studies/{sid}/analysis").status_code == 200


def test_an_unexpected_error_is_a_json_500_without_internals(tmp_path: Path) -> None:
    app = create_app(WebSettings(data_dir=tmp_path / "d"))

    def broken(*_: object) -> None:
        raise RuntimeError("secret internals /srv/data/patient.dcm")

    app.state.ctx.store.list_studies = broken  # a bug anywhere below the API
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/studies")
        assert r.status_code == 500 and r.json()["detail"].startswith("Internal server error (RuntimeError)")
        assert "secret" not in r.text and "Traceback" not in r.text
    app.state.ctx.store.close()
