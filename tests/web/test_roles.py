"""Roles of the web app's accounts: what a viewer, an editor and an admin may do, enforced by the server for
every route from one table (web.roles), and without accounts the holder of the access is the admin."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api import delete_study, get_labels
from web_synth import multipart

from sarcoscope.store import Store
from sarcoscope.training.data import EXPORT_MANIFEST
from sarcoscope.web import WebSettings, create_app
from sarcoscope.web.accounts import add_user, set_role
from sarcoscope.web.roles import ROUTES

PASSWORD = "a-password-of-theirs"
#: Who signs in as which role.
PEOPLE = {"admin": "ada", "editor": "eddie", "viewer": "vera"}
#: The routes that need no login.
PUBLIC = {
    ("GET", "/api/health"),
    ("GET", "/api/config"),
    ("POST", "/api/session"),
    ("DELETE", "/api/session"),
    ("GET", "/api/pacs"),
}
#: The routes a viewer may not use: every change, the deletion, the audit log and the training-data export.
NOT_FOR_VIEWERS = sorted(key for key, (action, _) in ROUTES.items() if action != "read")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    store = Store(tmp_path / "data")
    store.migrate()
    for role, name in PEOPLE.items():
        add_user(store, name, PASSWORD, role)
    store.close()
    app = create_app(WebSettings(data_dir=tmp_path / "data", default_engine="threshold", prerender=False))
    yield app
    app.state.ctx.store.close()


def _signed_in(app: Any, role: str) -> TestClient:
    c = TestClient(app)
    r = c.post("/api/session", json={"user": PEOPLE[role], "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


@pytest.fixture
def study(app: Any, series: list[Path]) -> str:
    """A study with an L3 selection and one label version, made by the editor."""
    with _signed_in(app, "editor") as c:
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        assert c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5}).status_code == 200
        assert c.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    return sid


def _api_routes(app: Any) -> set[tuple[str, str]]:
    """Every route of the API, as its OpenAPI schema lists it (the PACS routes too)."""
    paths = app.openapi()["paths"]
    return {(m.upper(), p) for p, item in paths.items() for m in item if p.startswith("/api/")}


def test_every_route_is_checked_and_every_change_is_in_the_table(app: Any) -> None:
    """Every route but the public ones asks for a login (whose role is checked); a new route that changes
    data cannot be left out of the table by mistake (it would count as a change, but a reader would not
    know), nor a route of the table be renamed away from its rule."""
    routes = _api_routes(app)
    with TestClient(app) as c:
        unchecked = {(m, p) for m, p in routes if c.request(m, _fill(p, "0" * 32)).status_code != 401}
    assert unchecked == PUBLIC
    assert {(m, p) for m, p in routes if m != "GET" and (m, p) not in ROUTES} <= PUBLIC
    assert set(ROUTES) <= routes


def _fill(path: str, sid: str) -> str:
    """A route's path with its parameters given: the study `sid`, slice or version 1, UIDs, a format."""
    values = {"study_id": sid, "study_uid": "1.2.3", "series_uid": "1.2.3.4", "fmt": "csv", "view": "axial"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], "1"), path)


@pytest.mark.parametrize(("method", "path"), NOT_FOR_VIEWERS)
def test_a_viewer_gets_403_for_every_change_deletion_and_audit(
    app: Any, study: str, method: str, path: str
) -> None:
    store = app.state.ctx.store
    with _signed_in(app, "viewer") as c:
        before = (store.get_study(study).selection, store.latest_version(study), len(store.audit_events()))
        r = c.request(method, _fill(path, study), json={})
    assert r.status_code == 403, r.text
    _, what = ROUTES[(method, path)]
    assert r.json() == {"detail": r.json()["detail"]}  # the API's error format: {"detail": reason}
    assert r.json()["detail"].startswith(f"Not allowed: your role (viewer) may not {what};")
    after = (store.get_study(study).selection, store.latest_version(study), len(store.audit_events()))
    assert after == before  # nothing was done, nothing written (not even a view)


def test_a_viewer_reads_studies_images_results_and_label_versions(app: Any, study: str) -> None:
    with _signed_in(app, "viewer") as c:
        assert [s["id"] for s in c.get("/api/studies").json()] == [study]
        assert [s["id"] for s in c.post("/api/studies/search", json={"q": "PAT"}).json()] == [study]
        assert c.get(f"/api/studies/{study}").json()["selection"]["first"] == 5
        assert c.get(f"/api/studies/{study}/image/axial/5").headers["content-type"] == "image/png"
        assert [v["version"] for v in c.get(f"/api/studies/{study}/versions").json()] == [1]
        assert c.get(f"/api/studies/{study}/labels").headers["x-label-version"] == "1"
        assert c.get(f"/api/studies/{study}/analysis").status_code == 200
        assert c.get(f"/api/studies/{study}/export/csv").status_code == 200
        session = c.get("/api/session").json()
    assert session["user"] == "vera" and session["role"] == "viewer"
    assert set(session["denied"]) == {"export-all", "change", "delete", "audit"}


def test_the_training_data_of_every_study_is_downloaded_by_editors_and_admins_not_viewers(
    app: Any, study: str
) -> None:
    """GET /api/training-data zips every study's corrected slices: a viewer, who reads the studies one at a
    time (each one's images audited with it), took every patient's CT off the server in one download."""
    with _signed_in(app, "editor") as c:  # a person's correction: the study is training data
        labels, version, _ = get_labels(c, study)
        labels[:, 10:20, 10:20] = 1
        r = c.post(f"/api/studies/{study}/labels", params={"base_version": version}, content=labels.tobytes())
        assert r.status_code == 201, r.text
    store = app.state.ctx.store
    with _signed_in(app, "viewer") as c:
        r = c.get("/api/training-data")
        assert r.status_code == 403
        assert r.json() == {
            "detail": "Not allowed: your role (viewer) may not download the training data of every study; "
            "only editors and admins may."
        }
        why = c.get("/api/config").json()["denied"]["export-all"]  # the page's tooltip
        assert why == (
            "Not allowed: your role (viewer) may not download every study at once (the training-data "
            "export); only editors and admins may."
        )
    assert [e for e in store.audit_events() if e.action == "export-training-data"] == []
    for role in ("editor", "admin"):
        with _signed_in(app, role) as c:
            r = c.get("/api/training-data")
            assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
            manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read(EXPORT_MANIFEST))
            assert [case["study_id"] for case in manifest["cases"]] == [study]
    exported = [
        (e.actor, e.study_id) for e in reversed(store.audit_events()) if e.action == "export-training-data"
    ]
    assert exported == [("eddie", None), ("eddie", study), ("ada", None), ("ada", study)]


def test_an_editor_changes_studies_but_may_not_delete_them_or_read_the_audit_log(
    app: Any, study: str, series: list[Path]
) -> None:
    with _signed_in(app, "editor") as c:
        r = c.put(f"/api/studies/{study}/selection", json={"mode": "range", "first": 4, "last": 6})
        assert r.status_code == 200 and r.json()["selection"]["last"] == 6
        for method, path in (
            ("DELETE", f"/api/studies/{study}"),
            ("GET", f"/api/studies/{study}/audit"),
            ("GET", "/api/deleted-studies"),  # the deleted studies (patients) an admin may restore or erase
            ("POST", f"/api/deleted-studies/{study}/restore"),
            ("DELETE", f"/api/deleted-studies/{study}"),
        ):
            r = c.request(method, path)
            assert r.status_code == 403
            assert r.json()["detail"].startswith("Not allowed: your role (editor) may not")
            assert r.json()["detail"].endswith("; only admins may.")
        assert c.get("/api/audit").status_code == 403
        assert c.get("/api/config").json()["denied"].keys() == {"delete", "audit"}
    assert app.state.ctx.store.get_study(study).id == study


def test_an_admin_reads_the_audit_log_and_deletes_studies(app: Any, study: str) -> None:
    with _signed_in(app, "admin") as c:
        assert c.get("/api/config").json()["role"] == "admin" and c.get("/api/config").json()["denied"] == {}
        events = c.get(f"/api/studies/{study}/audit").json()
        assert [(e["actor"], e["action"]) for e in reversed(events)][:3] == [
            ("eddie", "upload"),
            ("eddie", "select-l3"),
            ("eddie", "labels-segment"),
        ]
        assert c.get("/api/audit").status_code == 200
        assert delete_study(c, study).json() == {
            "status": "deleted",
            "id": study,
            "kept_days": 30.0,
        }
        assert c.get("/api/studies").json() == []


def test_a_role_change_applies_to_an_open_session_at_its_next_request(app: Any, study: str) -> None:
    """Nothing of the role is kept in the session: `sarcoscope users role` takes effect at once."""
    store = app.state.ctx.store
    # moved from the editor's selection, as the page does (without base_version it is refused as theirs)
    selection = {"mode": "slice", "first": 6, "base_version": store.get_study(study).selection_version}
    with _signed_in(app, "viewer") as c:
        assert c.put(f"/api/studies/{study}/selection", json=selection).status_code == 403
        assert set_role(store, "vera", "editor") == "viewer"
        assert c.get("/api/session").json()["role"] == "editor"
        assert c.put(f"/api/studies/{study}/selection", json=selection).status_code == 200
        set_role(store, "vera", "viewer")
        assert c.put(f"/api/studies/{study}/selection", json=selection).status_code == 403
        assert c.get("/api/config").json()["role"] == "viewer"
    event = store.audit_events()[0]  # the refused request wrote nothing
    assert (event.action, event.details) == ("user-role", {"user": "vera", "role": "viewer", "was": "editor"})


def test_a_server_whose_accounts_have_no_admin_says_so_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Accounts made before roles existed are editors: nobody may delete or read the audit log until one
    is made admin, which the server's start says."""
    store = Store(tmp_path / "data")
    store.migrate()
    add_user(store, "eddie", PASSWORD)
    store.close()
    with caplog.at_level("WARNING", logger="sarcoscope"):
        create_app(WebSettings(data_dir=tmp_path / "data")).state.ctx.store.close()
    assert "No account is an admin" in caplog.text and "users role NAME admin" in caplog.text
    caplog.clear()
    store = Store(tmp_path / "data")
    set_role(store, "eddie", "admin")
    store.close()
    with caplog.at_level("WARNING", logger="sarcoscope"):
        create_app(WebSettings(data_dir=tmp_path / "data")).state.ctx.store.close()
    assert "admin" not in caplog.text


@pytest.mark.parametrize("mode", ["token", "open"])
def test_without_accounts_the_holder_of_the_access_is_the_admin(
    tmp_path: Path, series: list[Path], mode: str
) -> None:
    token = "the-access-token-1" if mode == "token" else None
    app = create_app(WebSettings(data_dir=tmp_path / "data", token=token, token_user="dr.solo"))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app, headers=headers) as c:
        if token:
            assert c.post("/api/session", json={"token": token}).status_code == 200
        else:
            assert c.get("/api/config").json()["user"] == "local"
        assert c.get("/api/config").json()["role"] == "admin"
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        assert c.get(f"/api/studies/{sid}/audit").json()[0]["action"] == "upload"
        assert delete_study(c, sid).status_code == 200
    app.state.ctx.store.close()


def test_the_roles_hold_behind_a_proxy_that_serves_the_app_under_a_path(app: Any, study: str) -> None:
    """A reverse proxy serving the app at https://host/sarcoscope/ (root_path): the request's URL path then
    starts with the prefix, which the table's paths do not, and an editor's DELETE counted as an unlisted
    change (allowed) instead of a deletion (admins only)."""
    c = TestClient(app, root_path="/sarcoscope")
    r = c.post("/sarcoscope/api/session", json={"user": PEOPLE["editor"], "password": PASSWORD})
    assert r.status_code == 200, r.text
    refused = c.delete(f"/sarcoscope/api/studies/{study}")
    assert refused.status_code == 403 and "(editor) may not delete studies" in refused.json()["detail"]
    assert c.get(f"/sarcoscope/api/studies/{study}").status_code == 200
