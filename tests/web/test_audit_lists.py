"""Who was shown the study list, a search's results or a study's patient facts: these name patients, so they
are in the audit log like a study's images, as often as an access audit needs (not at every refresh), and
a search's criteria (patient identifiers) are never written there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_synth import multipart

from sarcoscope.store import Store
from sarcoscope.web import WebSettings, context, create_app
from sarcoscope.web.accounts import add_user

PASSWORD = "a-password-of-theirs"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    store = Store(tmp_path / "data")
    store.migrate()
    add_user(store, "alice", PASSWORD, "admin")
    add_user(store, "vera", PASSWORD, "viewer")
    store.close()
    app = create_app(WebSettings(data_dir=tmp_path / "data", prerender=False))
    yield app
    app.state.ctx.store.close()


def _signed_in(app: Any, user: str) -> TestClient:
    c = TestClient(app)
    assert c.post("/api/session", json={"user": user, "password": PASSWORD}).status_code == 200
    return c


def _shown(app: Any, action: str) -> list[tuple[str, str | None, dict[str, Any] | None]]:
    """The events `action`, oldest first: who, from where, with what."""
    events = app.state.ctx.store.audit_events(None, 5000)
    return [(e.actor, e.client, e.details) for e in reversed(events) if e.action == action]


def test_the_study_list_is_in_the_audit_log_once_per_sitting_and_half_hour(
    app: Any, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/studies lists every patient's ID, date and series and was not audited. It is now
    `view-studies` with how many were listed: once per session, not at each of the page's reloads of the
    list, again after half an hour without a look, in another session and for another user."""
    with _signed_in(app, "alice") as c:
        assert c.post("/api/studies", files=multipart(series)).status_code == 201
        assert _shown(app, "view-studies") == []  # the upload lists nothing
        for _ in range(5):  # the page goes back to the list, again and again
            assert len(c.get("/api/studies").json()) == 1
        assert _shown(app, "view-studies") == [("alice", "testclient", {"count": 1})]
        with _signed_in(app, "vera") as other:  # a viewer at another workstation
            assert other.get("/api/studies").status_code == 200
            assert other.get("/api/studies").status_code == 200
        assert _shown(app, "view-studies")[1:] == [("vera", "testclient", {"count": 1})]
        monkeypatch.setattr(context, "VIEW_AGAIN_AFTER", 0)  # half an hour later
        assert c.get("/api/studies").status_code == 200
        monkeypatch.undo()
        assert len(_shown(app, "view-studies")) == 3
        assert c.delete("/api/session").status_code == 200
    with _signed_in(app, "alice") as c:  # a new session
        assert c.get("/api/studies").status_code == 200
        assert c.get("/api/studies").status_code == 200
    assert [who for who, _, _ in _shown(app, "view-studies")] == ["alice", "vera", "alice", "alice"]
    with TestClient(app) as stranger:  # refused: nothing was shown, nothing recorded
        assert stranger.get("/api/studies").status_code == 401
    assert len(_shown(app, "view-studies")) == 4


def test_a_search_is_in_the_audit_log_once_without_its_criteria(app: Any, series: list[Path]) -> None:
    """POST /api/studies/search (and a script's GET /api/studies?q=) shows the studies a patient's name or
    ID finds: `search-studies`, with how many were found, once per search in a session (the page repeats
    the search in its box as it goes back to the list), never with the criteria."""
    with _signed_in(app, "vera") as c:
        with _signed_in(app, "alice") as uploader:
            sid = uploader.post("/api/studies", files=multipart(series)).json()["id"]
        assert c.get("/api/studies").status_code == 200
        assert [s["id"] for s in c.post("/api/studies/search", json={"q": "PAT-001"}).json()] == [sid]
        assert _shown(app, "search-studies") == [("vera", "testclient", {"count": 1})]
        for same in ("PAT-001", " pat-001 "):  # the same search again: the store trims it, any case
            assert len(c.post("/api/studies/search", json={"q": same}).json()) == 1
        assert len(_shown(app, "search-studies")) == 1
        assert c.post("/api/studies/search", json={"q": "PAT-002"}).json() == []  # another search
        assert c.get("/api/studies", params={"q": "PAT-00"}).status_code == 200  # a script's
        assert [details for _, _, details in _shown(app, "search-studies")] == [
            {"count": 1},
            {"count": 0},
            {"count": 1},
        ]
        assert c.post("/api/studies/search", json={"q": ""}).status_code == 200  # no criteria: the list
        assert c.post("/api/studies/search", json={"q": "x" * 129}).status_code == 422
        assert len(_shown(app, "search-studies")) == 3 and len(_shown(app, "view-studies")) == 1
    log = json.dumps([[e.action, e.details] for e in app.state.ctx.store.audit_events(None, 5000)])
    assert "PAT-00" not in log and "pat-00" not in log
    assert "pat-00" not in repr(app.state.ctx._views).lower()  # nor kept in the server's memory


def test_a_study_s_patient_facts_are_in_the_audit_log_once_per_sitting(app: Any, series: list[Path]) -> None:
    """GET /api/studies/{id} shows the study's patient ID and facts: `view-study`, once per session and
    study as `view-images`."""
    with _signed_in(app, "alice") as c:
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        for _ in range(3):
            assert c.get(f"/api/studies/{sid}").json()["patient_id"] == "PAT-001"
        assert c.get("/api/studies/" + "0" * 32).status_code == 404
    assert _shown(app, "view-study") == [("alice", "testclient", None)]
    assert [e.study_id for e in app.state.ctx.store.audit_events() if e.action == "view-study"] == [sid]


def test_a_study_s_series_list_is_in_the_audit_log_once_per_sitting(app: Any, tmp_path: Path) -> None:
    """GET /api/studies/{id}/series lists the other series of the patient's exam (descriptions, contrast
    phase, slices, the studies they were opened as) and was the one study read left out of the audit log:
    `view-series`, once per session and study like `view-study`; a refused read records nothing."""
    from web_synth import write_exam

    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    with _signed_in(app, "alice") as uploader:
        sid = uploader.post("/api/studies", files=multipart(files)).json()["id"]
    with TestClient(app) as stranger:
        assert stranger.get(f"/api/studies/{sid}/series").status_code == 401
    with _signed_in(app, "vera") as c:
        for _ in range(3):  # the page reads it again as it goes back to the study
            assert len(c.get(f"/api/studies/{sid}/series").json()) == 3  # the exam's three CT series
        assert c.get("/api/studies/" + "0" * 32 + "/series").status_code == 404
    assert _shown(app, "view-series") == [("vera", "testclient", None)]
    assert [e.study_id for e in app.state.ctx.store.audit_events() if e.action == "view-series"] == [sid]


def _server(tmp_path: Path, name: str, database: Path) -> Any:
    """A server with its own data folder on a database another server shares (a second worker)."""
    return create_app(
        WebSettings(data_dir=tmp_path / name, database_url=f"sqlite:///{database}", prerender=False)
    )


def test_a_server_restart_does_not_audit_a_sitting_s_views_again(
    app: Any, series: list[Path], tmp_path: Path
) -> None:
    """Which sitting was shown what lately was kept in the server's memory only: after a restart (an
    update, a crash) every open page's next look was a new `view-study`, `view-images`, `view-studies` and
    `search-studies` event within the half hour, and a search's digest, keyed for the process, matched no
    earlier one. The audit log itself now says when the sitting was last shown it."""
    with _signed_in(app, "alice") as c:
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        cookies = dict(c.cookies)

        def look(client: TestClient) -> None:
            assert client.get("/api/studies").status_code == 200
            assert client.post("/api/studies/search", json={"q": "PAT-001"}).status_code == 200
            assert client.get(f"/api/studies/{sid}").status_code == 200
            assert client.get(f"/api/studies/{sid}/image/axial/3").status_code == 200

        look(c)
    app.state.ctx.store.close()  # the server stops; the session (in the database) goes on
    restarted = create_app(WebSettings(data_dir=tmp_path / "data", prerender=False))
    with TestClient(restarted, cookies=cookies) as c:
        look(c)
    events = [e.action for e in reversed(restarted.state.ctx.store.audit_events(None, 5000))]
    restarted.state.ctx.store.close()
    assert [a for a in events if a.startswith(("view-", "search-"))] == [
        "view-studies",
        "search-studies",
        "view-study",
        "view-images",
    ]


def test_servers_sharing_a_database_audit_a_sitting_s_view_once(tmp_path: Path, series: list[Path]) -> None:
    """Two server processes on one database (workers behind a balancer, one PostgreSQL) each kept their own
    memory of what a sitting was shown: a page whose requests went to both was audited by each. Looks at
    the same moment on both are one event."""
    import threading

    database = tmp_path / "shared.db"
    first, second = _server(tmp_path, "one", database), _server(tmp_path, "two", database)
    add_user(first.state.ctx.store, "alice", PASSWORD, "admin")
    try:
        with _signed_in(first, "alice") as a, TestClient(second, cookies=dict(a.cookies)) as b:
            sid = a.post("/api/studies", files=multipart(series)).json()["id"]
            start = threading.Barrier(8)

            def look(client: TestClient) -> None:
                start.wait()
                assert client.get(f"/api/studies/{sid}").status_code == 200

            threads = [threading.Thread(target=look, args=(a if i % 2 else b,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert b.get("/api/studies").status_code == 200 and a.get("/api/studies").status_code == 200
        events = [e.action for e in first.state.ctx.store.audit_events(None, 5000)]
        assert events.count("view-study") == 1 and events.count("view-studies") == 1
    finally:
        first.state.ctx.store.close()
        second.state.ctx.store.close()


def test_a_study_s_label_versions_are_in_the_audit_log_as_its_results(app: Any, series: list[Path]) -> None:
    """GET /api/studies/{id}/versions lists who corrected the study's labels, when, which slices, and the
    notes naming the files imported: read without an audit event, where the label maps themselves are
    `view-results`. It is `view-results` too, once per session and study."""
    with _signed_in(app, "alice") as uploader:
        sid = uploader.post("/api/studies", files=multipart(series)).json()["id"]
        selection = {"mode": "slice", "first": 3}
        assert uploader.put(f"/api/studies/{sid}/selection", json=selection).status_code == 200
        assert uploader.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    with _signed_in(app, "vera") as c:
        for _ in range(3):
            assert [v["version"] for v in c.get(f"/api/studies/{sid}/versions").json()] == [1]
        assert c.get("/api/studies/" + "0" * 32 + "/versions").status_code == 404
    assert _shown(app, "view-results") == [("vera", "testclient", None)]


def test_a_series_opened_before_is_audited_as_its_study_shown(app: Any, tmp_path: Path) -> None:
    """POST /api/studies/{id}/series for a series of the upload opened as a study before answers that study
    (its patient's ID and facts, the upload's series) without reading anything new, and left no audit
    event: another user learnt a study's facts unrecorded. The answer is `view-study` and `view-series` of
    that study, once per session like GET /api/studies/{id} and its series."""
    from web_synth import write_exam

    add_user(app.state.ctx.store, "eddie", PASSWORD, "editor")
    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    with _signed_in(app, "alice") as uploader:
        study = uploader.post("/api/studies", files=multipart(files)).json()
        arterial = {"series_uid": study["series"][1]["series_uid"]}
        opened = uploader.post(f"/api/studies/{study['id']}/series", json=arterial)
        assert opened.status_code == 201
    with _signed_in(app, "eddie") as c:
        for _ in range(2):
            again = c.post(f"/api/studies/{study['id']}/series", json=arterial)
            assert again.status_code == 200 and again.json()["patient_id"] == "PAT-EXAM"
    other = opened.json()["id"]
    events = [(e.actor, e.action, e.study_id) for e in reversed(app.state.ctx.store.audit_events())]
    assert [e for e in events if e[0] == "eddie" and e[1] != "login"] == [
        ("eddie", "view-study", other),
        ("eddie", "view-series", other),
    ]


def test_reading_the_audit_log_is_in_the_audit_log(app: Any, series: list[Path]) -> None:
    """The audit log names every study's patient facts as they were saved (height, weight, sex), series and
    PACS study UIDs: an admin read it (GET /api/audit, a study's GET /api/studies/{id}/audit) unrecorded.
    It is `view-audit`, with how many events were shown (and the study's id), once per session and
    subject like the study list; a viewer's refused read records nothing."""
    with _signed_in(app, "alice") as c:
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        shown = [c.get("/api/audit").json(), c.get(f"/api/studies/{sid}/audit").json()]
        assert [e["action"] for e in shown[1]] == ["upload"]
        for _ in range(2):
            assert c.get("/api/audit").status_code == 200
            assert c.get(f"/api/studies/{sid}/audit").status_code == 200
    with _signed_in(app, "vera") as v:
        assert v.get("/api/audit").status_code == 403
    events = [e for e in reversed(app.state.ctx.store.audit_events()) if e.action == "view-audit"]
    assert [(e.actor, e.study_id, e.details) for e in events] == [
        ("alice", None, {"count": len(shown[0])}),
        ("alice", sid, {"count": 1}),
    ]


def test_a_de_identified_download_s_event_says_what_it_kept(app: Any, series: list[Path]) -> None:
    """A de-identified download may keep the patient's sex, age, height and weight, or the dates shifted:
    its audit event said only `deidentified: true`, the same as one that removed them, so nobody could tell
    from the log which downloads carried them. The event says what was kept (`kept`), and keeps saying it
    after the study's deletion (a technical detail, no patient's)."""
    with _signed_in(app, "alice") as c:
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        assert c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 3}).status_code == 200
        assert c.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
        both = {"deidentify": True, "keep_patient_characteristics": True, "keep_dates_shifted": True}
        for params in ({"deidentify": True}, both, {}):
            assert c.get(f"/api/studies/{sid}/export/json", params=params).status_code == 200
        kept = {"deidentify": True, "keep_patient_characteristics": True}
        assert c.get(f"/api/studies/{sid}/dicom", params=kept).status_code == 200

        def downloads() -> list[tuple[str, dict[str, Any]]]:
            events = reversed(app.state.ctx.store.audit_events(sid))
            return [(e.action, e.details) for e in events if e.action in ("export", "download-dicom")]

        assert [(action, d["deidentified"], d.get("kept")) for action, d in downloads()] == [
            ("export", True, []),
            ("export", True, ["dates-shifted", "patient-characteristics"]),
            ("export", False, None),
            ("download-dicom", True, ["patient-characteristics"]),
        ]
        assert c.delete(f"/api/studies/{sid}", params={"latest_version": 1}).status_code == 200
    assert [d.get("kept") for _, d in downloads()] == [
        [],
        ["dates-shifted", "patient-characteristics"],
        None,
        ["patient-characteristics"],
    ]


def test_the_open_modes_search_key_cannot_be_recomputed_from_what_the_database_holds(
    tmp_path: Path, series: list[Path]
) -> None:
    """Without accounts or a token (the open loopback mode) a view's key was keyed by the user's name and
    the client's address, both in the audit event beside it: from a copy of the database, a search's
    criteria (a patient's name or ID) could be tried against its key. It is keyed by a secret of the
    server's run too, which no file holds; its searches are still audited once."""
    import hashlib
    import hmac

    keys = []
    for run in ("first", "second"):  # a restart: another secret
        app = create_app(WebSettings(data_dir=tmp_path / "data", prerender=False))
        with TestClient(app) as c:
            assert c.post("/api/studies/search", json={"q": "PAT-001"}).status_code == 200
            assert c.post("/api/studies/search", json={"q": "pat-001"}).status_code == 200
        events = [e for e in app.state.ctx.store.audit_events(None, 5000) if e.action == "search-studies"]
        app.state.ctx.store.close()
        assert len(events) == len(keys) + 1, run  # once per search in the run
        keys.append(events[0].view_key)
        event = events[0]
        guessed = hmac.new(
            f"user:{event.actor}@{event.client}".encode(),
            "\0".join((event.actor, "search-studies", "pat-001")).encode(),
            hashlib.sha256,
        ).hexdigest()
        assert event.view_key != guessed
    assert keys[0] != keys[1]
