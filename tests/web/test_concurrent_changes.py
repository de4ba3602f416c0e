"""Two people (or two tabs, or a person and the localizer) changing one study: what one saved is never
silently replaced by the other, and what the app shows follows what is stored."""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from test_api import delete_study, get_labels, segmented, upload
from web_synth import multipart, write_series

import sarcoscope.level.localization as localization
from sarcoscope.web import volumes
from sarcoscope.web.auth import ANONYMOUS


class _Localized:
    """What the localizer returns, as the web app reads it: L3 on slices 8-10, L4 on 3-7."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "l3_mid": 9,
            "confidence": 0.9,
            "flags": [],
            "vertebrae": {"L4": {"first": 3, "last": 7}, "L3": {"first": 8, "last": 10}},
        }


def test_a_selection_saved_while_the_localizer_runs_is_kept(
    client: TestClient, series: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_locate(volume: Any) -> _Localized:  # a real localizer takes seconds on a real CT
        started.set()
        assert release.wait(10)
        return _Localized()

    monkeypatch.setattr(localization, "locate_l3", slow_locate)
    sid = upload(client, series)["id"]
    answer: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: answer.update(r=client.post(f"/api/studies/{sid}/localize", json={}))
    )
    worker.start()  # the UI posts this when it opens a new study's L3 view
    assert started.wait(10)
    mine = {"mode": "range", "first": 2, "last": 4}
    assert client.put(f"/api/studies/{sid}/selection", json=mine).json()["selection"] == mine
    release.set()
    worker.join(10)
    assert answer["r"].status_code == 200 and answer["r"].json()["localization"]["l3_mid"] == 9
    assert client.get(f"/api/studies/{sid}").json()["selection"] == mine
    # a study nobody selected on takes the localizer's proposal
    other = upload(client, write_series(tmp_path / "other", seed=7, patient_id="PAT-7"))["id"]
    monkeypatch.setattr(localization, "locate_l3", lambda volume: _Localized())
    client.post(f"/api/studies/{other}/localize", json={})
    assert client.get(f"/api/studies/{other}").json()["selection"]["first"] >= 8


def test_a_selection_changed_by_a_colleague_since_is_not_overwritten(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two users moved the L3 lines of one study: the later save silently replaced the earlier, and the
    labels then made were for slices the first user had not chosen. A change names the selection it
    started from (`base_version`); one started from a selection a colleague changed since is refused (409,
    naming who and when, their selection in the answer), nothing changed; one started from theirs goes."""
    monkeypatch.setattr(localization, "locate_l3", lambda volume: _Localized())
    sid = upload(client, series)["id"]
    proposed = client.post(f"/api/studies/{sid}/localize", json={})  # the localizer's proposal: nobody's
    assert proposed.json()["selection"]["first"] >= 8 and proposed.json()["selection_by"] is None
    shown = proposed.json()["selection_version"]
    bob = TestClient(client.app)  # another user, signed in at another workstation (open mode)
    assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
    theirs = {"mode": "range", "first": 3, "last": 5}
    r = bob.put(f"/api/studies/{sid}/selection", json={**theirs, "base_version": shown})
    assert r.status_code == 200, r.text
    assert r.json()["selection_by"] == "bob" and r.json()["selection_version"] == shown + 1

    mine = {"mode": "slice", "first": 7, "last": 7}
    r = client.put(f"/api/studies/{sid}/selection", json={**mine, "base_version": shown, "editor": "tab-1"})
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith("Not saved: the L3 selection was changed to slices 3–5 by bob at ")
    assert r.json()["study"]["selection"] == theirs and r.json()["study"]["selection_by"] == "bob"
    assert client.get(f"/api/studies/{sid}").json()["selection"] == theirs
    assert client.post(f"/api/studies/{sid}/segment", json={"first": 7}).status_code == 409

    # started from bob's: saved; the page's next change, sent before this answer came, is no conflict
    fresh = {**mine, "base_version": shown + 1, "editor": "tab-1"}
    assert client.put(f"/api/studies/{sid}/selection", json=fresh).status_code == 200
    r = client.put(f"/api/studies/{sid}/selection", json={**fresh, "first": 8, "last": 8})
    assert r.status_code == 200, r.text
    assert r.json()["selection"]["first"] == 8 and r.json()["selection_version"] == shown + 3
    # ... but a change from another tab started from the same selection is
    r = client.put(f"/api/studies/{sid}/selection", json={**fresh, "editor": "tab-2"})
    assert r.status_code == 409 and f"to slice 8 by {ANONYMOUS} at " in r.json()["detail"]
    assert client.get(f"/api/studies/{sid}").json()["selection"]["first"] == 8


def test_the_analysis_follows_a_new_localization(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The analysis names the analysed slices' levels ("Not L3 …"): localizing after segmenting changes it."""
    sid, _ = segmented(client, series, first=4, last=6)
    before = client.get(f"/api/studies/{sid}/analysis").json()
    assert not any("Not L3" in w for w in before["warnings"])
    monkeypatch.setattr(localization, "locate_l3", lambda volume: _Localized())
    assert client.post(f"/api/studies/{sid}/localize", json={}).status_code == 200
    after = client.get(f"/api/studies/{sid}/analysis").json()
    assert set(after["levels"].values()) == {"L4"}
    assert any("Not L3" in w for w in after["warnings"])


def test_patient_facts_saved_from_a_stale_form_are_refused(client: TestClient, series: list[Path]) -> None:
    """Tab A loaded the study, tab B saved height, weight and sex; tab A's save, based on the facts it
    loaded, is refused (409) instead of erasing them. A save based on the current facts goes through."""
    sid, _ = segmented(client, series)
    loaded = client.get(f"/api/studies/{sid}").json()["patient"] or {}
    empty = {key: loaded.get(key) for key in ("height_cm", "weight_kg", "sex", "cutoff_set")}
    tab_b = {"height_cm": 172.0, "weight_kg": 81.0, "sex": "M", "cutoff_set": None}
    assert client.put(f"/api/studies/{sid}/patient", json={**tab_b, "previous": empty}).status_code == 200
    tab_a = {**empty, "cutoff_set": "martin2013", "previous": empty}
    r = client.put(f"/api/studies/{sid}/patient", json=tab_a)
    assert r.status_code == 409 and "reload the study" in r.json()["detail"]
    assert client.get(f"/api/studies/{sid}").json()["patient"] == tab_b
    r = client.put(
        f"/api/studies/{sid}/patient", json={**tab_b, "cutoff_set": "martin2013", "previous": tab_b}
    )
    assert r.status_code == 200 and r.json()["patient"]["cutoff_set"] == "martin2013"


def test_two_saves_of_the_facts_racing_from_the_same_form_do_not_both_pass_the_check(
    client: TestClient, series: list[Path]
) -> None:
    """Tabs A and B loaded the same facts and save different ones at the same moment: both read the stored
    facts before either writes (a barrier holds each save at its UPDATE). On SQLite the row lock is
    ignored, so both passed the check and the later write silently replaced the earlier: one is refused
    (409) now, and the stored facts are the accepted save's."""
    sid = upload(client, series)["id"]
    loaded = client.get(f"/api/studies/{sid}").json()["patient"] or {}
    empty = {key: loaded.get(key) for key in ("height_cm", "weight_kg", "sex", "cutoff_set")}
    tabs = {
        "a": {**empty, "height_cm": 172.0, "weight_kg": 81.0},
        "b": {**empty, "height_cm": 158.0, "weight_kg": 55.0},
    }
    store = client.app.state.ctx.store
    both_checked = threading.Barrier(2, timeout=5)

    def at_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE STUDIES"):
            with contextlib.suppress(threading.BrokenBarrierError):  # PostgreSQL: the row lock waits
                both_checked.wait()

    answers: dict[str, Any] = {}

    def save(tab: str) -> None:
        answers[tab] = client.put(f"/api/studies/{sid}/patient", json={**tabs[tab], "previous": empty})

    event.listen(store.engine, "before_cursor_execute", at_update)
    try:
        threads = [threading.Thread(target=save, args=(tab,)) for tab in tabs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        event.remove(store.engine, "before_cursor_execute", at_update)
    codes = {tab: r.status_code for tab, r in answers.items()}
    assert sorted(codes.values()) == [200, 409], {tab: r.text for tab, r in answers.items()}
    loser = next(tab for tab, code in codes.items() if code == 409)
    assert "reload the study" in answers[loser].json()["detail"]
    winner = next(tab for tab, code in codes.items() if code == 200)
    assert client.get(f"/api/studies/{sid}").json()["patient"] == tabs[winner]


def test_a_label_save_racing_the_deletion_of_its_study_answers_not_found(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study is deleted after the save found it and before its version is written: the insert fails
    on the deleted study (foreign key), which was taken for another save of the same version: 409 "now at
    version None". It is 404 (the study is gone), and nothing of it is left."""
    sid, _ = segmented(client, series)
    labels, _version, _indices = get_labels(client, sid)
    store = client.app.state.ctx.store
    audit = store._audit
    deleted: dict[str, Any] = {}

    def deleted_meanwhile(session: Any, actor: str, action: str, *args: Any, **kwargs: Any) -> None:
        if action.startswith("labels-") and not deleted:  # the save found the study and adds its version
            deletion = threading.Thread(target=lambda: deleted.update(r=delete_study(client, sid)))
            deletion.start()
            deletion.join(30)
        audit(session, actor, action, *args, **kwargs)

    monkeypatch.setattr(store, "_audit", deleted_meanwhile)
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": 1}, content=labels.tobytes())
    assert deleted["r"].status_code == 200, deleted["r"].text
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == f"No study with id '{sid}'."
    assert client.get(f"/api/studies/{sid}").status_code == 404
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM label_versions")).scalar() == 0


def test_a_study_is_not_deleted_with_labels_saved_after_the_list_the_deletion_came_from(
    client: TestClient, series: list[Path]
) -> None:
    """The study list shows a study's latest label version; a colleague then saves a correction. Delete,
    pressed on that list, deleted the study with the correction nobody deleting had seen (every label
    version goes with it, for good). The page sends the version its list showed: a deletion based on an
    older one is refused (409, naming who saved what), and one based on the latest goes ahead."""
    sid, _ = segmented(client, series)
    shown = next(s for s in client.get("/api/studies").json() if s["id"] == sid)
    assert shown["latest_version"] == 1
    bob = TestClient(client.app)  # another user, signed in at another workstation (open mode)
    assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
    labels, _version, _indices = get_labels(bob, sid)
    labels[0, :10, :10] = 1
    r = bob.post(f"/api/studies/{sid}/labels", params={"base_version": 1}, content=labels.tobytes())
    assert r.status_code == 201, r.text

    r = client.delete(f"/api/studies/{sid}", params={"latest_version": shown["latest_version"]})
    assert r.status_code == 409, r.text
    assert r.json()["latest_version"] == 2 and "version 2 was saved by bob" in r.json()["detail"]
    assert r.json()["detail"].startswith("Not deleted: you were shown label version 1")
    r = client.delete(f"/api/studies/{sid}", params={"latest_version": 0})  # a list that showed no labels
    assert r.status_code == 409 and "shown no labels" in r.json()["detail"]
    assert [v["version"] for v in client.get(f"/api/studies/{sid}/versions").json()] == [2, 1]
    assert "delete-study" not in {e["action"] for e in client.get(f"/api/studies/{sid}/audit").json()}

    r = client.delete(f"/api/studies/{sid}", params={"latest_version": 2})  # seen: deleted
    assert r.status_code == 200, r.text
    assert client.get(f"/api/studies/{sid}").status_code == 404
    unlabelled = upload(client, write_series(client.app.state.ctx.store.data_dir.parent / "b", 1, "PAT-B"))
    assert client.delete(f"/api/studies/{unlabelled['id']}", params={"latest_version": 0}).status_code == 200


def test_a_deletion_that_does_not_say_which_label_version_it_was_shown_is_refused(
    client: TestClient, series: list[Path]
) -> None:
    """The check above held only when the deletion named the version it was shown: one without it (a script,
    an old page) deleted the study with whatever had been saved a second before. It is refused (428), and
    nothing is deleted."""
    sid, _ = segmented(client, series)
    r = client.delete(f"/api/studies/{sid}")
    assert r.status_code == 428, r.text
    assert r.json()["detail"] == (
        "Not deleted: say which label version of the study you were shown (latest_version: the study's "
        "latest_version, 0 for none), so that no label version saved since is deleted unseen."
    )
    assert client.get(f"/api/studies/{sid}").status_code == 200
    assert [v["version"] for v in client.get(f"/api/studies/{sid}/versions").json()] == [1]
    assert client.delete(f"/api/studies/{sid}", params={"latest_version": 1}).status_code == 200


def test_a_failed_statement_does_not_carry_its_values_into_the_log(client: TestClient) -> None:
    """SQLAlchemy puts a failed statement's parameters into its error text, which the server logs: the
    store's engine hides them (they can be a patient's facts or a series UID)."""
    store = client.app.state.ctx.store
    with store.engine.connect() as conn, pytest.raises(DBAPIError) as failed:
        conn.execute(
            text("SELECT no_such_column FROM studies WHERE patient_id = :pid"), {"pid": "Jansen^Piet"}
        )
    assert "Jansen" not in str(failed.value)


def _stored_files(client: TestClient, study: dict) -> list[Path]:
    store = client.app.state.ctx.store
    folder = store.series_dir(store.get_study(study["id"]))
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_failed_upload_leaves_the_files_of_the_same_series_uploaded_meanwhile(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both uploads found the series new and moved its files into ct/<study>/<series>/; the second then
    failed (a full disk while caching its images) and removed that folder, the first one's files in it, just
    before the first one's study was added: a study without its CT files."""
    store = client.app.state.ctx.store
    add, write_cache = store.add_study, volumes._write_cache
    first_adds, second_done = threading.Event(), threading.Event()
    caches: list[str] = []

    def add_late(*args: Any, **kwargs: Any) -> Any:
        first_adds.set()
        second_done.wait(2)  # (unless the second waits for this one)
        return add(*args, **kwargs)

    def cache(*args: Any) -> None:
        caches.append(args[1])
        if len(caches) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_cache(*args)

    monkeypatch.setattr(store, "add_study", add_late)
    monkeypatch.setattr(volumes, "_write_cache", cache)
    answer: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: answer.update(r=client.post("/api/studies", files=multipart(series)))
    )
    first.start()
    assert first_adds.wait(10)
    second = TestClient(client.app, raise_server_exceptions=False).post(
        "/api/studies", files=multipart(series)
    )
    second_done.set()
    first.join(10)
    assert answer["r"].status_code == 201, answer["r"].text
    assert second.status_code == 409 and "already uploaded" in second.json()["detail"]
    study = answer["r"].json()
    assert len(_stored_files(client, study)) == len(series)
    assert client.get(f"/api/studies/{study['id']}/dicom", params={"first": 0, "last": 11}).status_code == 200


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "erased"])
def test_a_series_uploaded_while_its_study_is_deleted_is_not_left_without_files(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    """The deletion removes the study's rows, then its files (erased, or moved to the trash): an upload of
    the same series in between found no study, moved its files into the folder being removed and was added
    with them gone. It is refused until they are removed."""
    from sarcoscope.store import trash

    store = client.app.state.ctx.store
    client.app.state.ctx.settings.keep_deleted_days = 30 if kept else 0
    old = upload(client, series)
    deleted = store.get_study(old["id"])
    remove, finish, uploaded = store.remove_study_files, trash.finish, threading.Event()

    def remove_late(study: Any) -> None:  # after the rows, as a deletion waiting for a download does
        uploaded.wait(5)
        remove(study)

    def finish_late(store_: Any, study: Any, pending: Path) -> None:
        uploaded.wait(5)
        finish(store_, study, pending)

    monkeypatch.setattr(store, "remove_study_files", remove_late)
    monkeypatch.setattr(trash, "finish", finish_late)
    deletion = threading.Thread(target=lambda: delete_study(client, old["id"]))
    deletion.start()
    for _ in range(500):  # until the rows are gone (at most 5 s)
        if client.get(f"/api/studies/{old['id']}").status_code == 404:
            break
        time.sleep(0.01)
    refused = client.post("/api/studies", files=multipart(series))
    uploaded.set()
    deletion.join(10)
    assert refused.status_code == 409 and "still being removed" in refused.json()["detail"]
    again = client.post("/api/studies", files=multipart(series))  # once they are
    assert again.status_code == 201, again.text
    remove(deleted)  # removing the deleted study's files again, late, leaves the new study's
    assert len(_stored_files(client, again.json())) == len(series)
    assert [s["id"] for s in client.get("/api/studies").json()] == [again.json()["id"]]


def test_a_study_deleted_while_its_results_are_pushed_keeps_no_pushed_uids_in_the_audit(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion removes from the study's audit events what they say about the patient; a push to the PACS
    (seconds over the network) that ended after the deletion then recorded the SOP Instance UIDs it stored
    under the deleted study, where they stayed."""
    from sarcoscope.pacs.dicomweb import Stored
    from sarcoscope.web import WebSettings, create_app, dicomweb

    app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url="http://127.0.0.1:9/dicom-web"))
    store = app.state.ctx.store

    class DeletedDuringTheStore:
        def series(self, _study_uid: str) -> list[object]:
            return [object()]

        def store(self, _study_uid: str, datasets: list[Any]) -> Stored:
            store.delete_study(sid, "another user")  # while the objects travel to the PACS
            return Stored(sent=len(datasets), held=0)

    monkeypatch.setattr(dicomweb, "server_of", lambda _ctx: DeletedDuringTheStore())
    with TestClient(app) as client:
        sid, _ = segmented(client, series)
        pushed = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
        assert pushed.status_code == 200, pushed.text
        uids = [o["sop_instance_uid"] for o in pushed.json()["objects"]]
        events = {e.action: e.details for e in store.audit_events(sid)}
    store.close()
    assert "delete-study" in events and events["pacs-push"] == {"version": 1}
    assert not any(uid in str(events) for uid in uids)


def test_saving_the_selection_stored_already_leaves_who_chose_it(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Segment selected" saves the lines shown before segmenting: pressed on a colleague's selection (shown
    after a conflict), that save stamped it as the page user's choice and counted a change nobody made.
    The same selection saved again changes nothing; the localizer's proposal saved becomes the user's."""
    monkeypatch.setattr(localization, "locate_l3", lambda volume: _Localized())
    sid = upload(client, series)["id"]
    proposed = client.post(f"/api/studies/{sid}/localize", json={}).json()
    version = proposed["selection_version"]
    same = {**proposed["selection"], "base_version": version}
    r = client.put(f"/api/studies/{sid}/selection", json=same)  # the proposal accepted: now chosen
    assert r.json()["selection_by"] == ANONYMOUS and r.json()["selection_version"] == version + 1
    bob = TestClient(client.app)
    assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
    theirs = {"mode": "range", "first": 3, "last": 5}
    assert bob.put(f"/api/studies/{sid}/selection", json={**theirs, "base_version": version + 1}).is_success
    r = client.put(f"/api/studies/{sid}/selection", json={**theirs, "base_version": version + 2})
    assert r.status_code == 200, r.text
    assert r.json()["selection_by"] == "bob" and r.json()["selection_version"] == version + 2
    assert r.json()["selection"] == theirs


def test_a_change_without_base_version_does_not_replace_a_colleagues_selection(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change that names no `base_version` (an API client or script that read nothing) silently replaced
    the selection a colleague had chosen. It is refused (409 naming who, their selection in `study`) and goes
    with their selection_version as base_version; the localizer's proposal and the user's own selection
    are changed without one, as scripts do; the same selection sent changes nothing."""
    monkeypatch.setattr(localization, "locate_l3", lambda volume: _Localized())
    sid = upload(client, series)["id"]
    client.post(f"/api/studies/{sid}/localize", json={})
    bob = TestClient(client.app)
    assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
    theirs = {"mode": "range", "first": 3, "last": 5}
    r = bob.put(f"/api/studies/{sid}/selection", json=theirs)  # the proposal: nobody's
    assert r.status_code == 200 and r.json()["selection_by"] == "bob"
    version = r.json()["selection_version"]
    r = bob.put(f"/api/studies/{sid}/selection", json={**theirs, "first": 4})  # his own
    assert r.status_code == 200 and r.json()["selection_version"] == version + 1
    theirs["first"] = 4

    mine = {"mode": "slice", "first": 7}
    r = client.put(f"/api/studies/{sid}/selection", json=mine)
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith("Not saved: the L3 selection (slices 4–5) was chosen by bob at ")
    assert r.json()["detail"].endswith(f"send base_version {version + 1} (its selection_version) with yours.")
    assert r.json()["study"]["selection"] == theirs
    assert client.get(f"/api/studies/{sid}").json()["selection"] == theirs
    assert client.put(f"/api/studies/{sid}/selection", json=theirs).json()["selection_by"] == "bob"
    r = client.put(f"/api/studies/{sid}/selection", json={**mine, "base_version": version + 1})
    assert r.status_code == 200 and r.json()["selection"] == {**mine, "last": 7}
    assert r.json()["selection_by"] == ANONYMOUS


def test_patient_facts_not_sent_are_kept_not_erased(client: TestClient, series: list[Path]) -> None:
    """PUT /patient of one fact (an API client setting the height) erased the others a colleague had saved:
    the weight, sex and cutoff set became unknown and SMI's classification changed without a word. A fact
    not sent stays as stored; one sent as null is cleared."""
    sid, _ = segmented(client, series)
    loaded = client.get(f"/api/studies/{sid}").json()["patient"] or {}
    was = {key: loaded.get(key) for key in ("height_cm", "weight_kg", "sex", "cutoff_set")}
    theirs = {"height_cm": 172.0, "weight_kg": 81.0, "sex": "M", "cutoff_set": "martin2013"}
    assert client.put(f"/api/studies/{sid}/patient", json={**theirs, "previous": was}).status_code == 200
    r = client.put(f"/api/studies/{sid}/patient", json={"height_cm": 170, "previous": {"height_cm": 172.0}})
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == {**theirs, "height_cm": 170.0}
    r = client.put(f"/api/studies/{sid}/patient", json={"sex": None, "previous": {"sex": "M"}})
    assert r.json()["patient"] == {**theirs, "height_cm": 170.0, "sex": None}
    previous = {**theirs, "height_cm": 170.0, "sex": None}
    r = client.put(f"/api/studies/{sid}/patient", json={"weight_kg": 80, "previous": previous})
    assert r.json()["patient"] == {**previous, "weight_kg": 80.0}


def test_an_edit_is_not_saved_as_other_slices_labels(client: TestClient, series: list[Path]) -> None:
    """A new version's slices are its base version's: an edit of slices 4-6 sent on top of a colleague's
    version of slices 7-9 (the page's "save on top" after a 409) was stored as slices 7-9's labels. The
    stale answer names the latest version's slices, and an edit naming its own (`first`, `last`) is refused
    on a base of others."""
    sid, _ = segmented(client, series, first=4, last=6)
    mine, version, indices = get_labels(client, sid)
    base = client.get(f"/api/studies/{sid}").json()["selection_version"]
    client.put(
        f"/api/studies/{sid}/selection", json={"mode": "range", "first": 7, "last": 9, "base_version": base}
    )
    r = client.post(f"/api/studies/{sid}/segment", json={"base_version": version, "first": 7, "last": 9})
    assert r.status_code == 200, r.text
    mine[:, 10:20, 10:20] = 1
    edit = {"content": mine.tobytes(), "headers": {"Content-Type": "application/octet-stream"}}
    r = client.post(
        f"/api/studies/{sid}/labels", params={"base_version": version, "first": 4, "last": 6}, **edit
    )
    assert (
        r.status_code == 409 and r.json()["latest_version"] == 2 and r.json()["latest_indices"] == [7, 8, 9]
    )
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": 2, "first": 4, "last": 6}, **edit)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (
        "Not saved: version 2 is of slices 7–9, your edit of slices 4–6: saved on top of it, your labels "
        "would be stored as those slices'."
    )
    assert [v["version"] for v in client.get(f"/api/studies/{sid}/versions").json()] == [2, 1]
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": 2, "first": 7, "last": 9}, **edit)
    assert r.status_code == 201 and r.json()["indices"] == [7, 8, 9]
    assert indices == [4, 5, 6]


def test_patient_facts_changed_without_saying_what_they_were_are_refused(
    client: TestClient, series: list[Path]
) -> None:
    """A PUT /patient without `previous` (a script setting the height) replaced the height a colleague had
    saved a moment before, which its sender never saw: the SMI and its classification changed unseen. Each
    fact changed must come with the value its sender saw (428 otherwise, nothing saved); one that changed
    since is refused (409), and the facts not sent stay as stored."""
    sid, _ = segmented(client, series)
    loaded = client.get(f"/api/studies/{sid}").json()["patient"] or {}
    theirs = {"height_cm": 172.0, "weight_kg": 81.0, "sex": "M", "cutoff_set": None}
    was = {key: loaded.get(key) for key in theirs}
    assert client.put(f"/api/studies/{sid}/patient", json={**theirs, "previous": was}).status_code == 200
    for body in ({"height_cm": 160}, {"height_cm": 160, "previous": {"weight_kg": 81.0}}):
        r = client.put(f"/api/studies/{sid}/patient", json=body)
        assert r.status_code == 428, r.text
        assert r.json()["detail"] == (
            "Not saved: say in `previous` what you were shown for each fact you change (height_cm), so "
            "that no fact a colleague saved since is replaced unseen."
        )
    r = client.put(f"/api/studies/{sid}/patient", json={"height_cm": 160, "previous": {"height_cm": None}})
    assert r.status_code == 409 and "reload the study" in r.json()["detail"]
    assert client.get(f"/api/studies/{sid}").json()["patient"] == theirs
    r = client.put(f"/api/studies/{sid}/patient", json={"height_cm": 160, "previous": {"height_cm": 172.0}})
    assert r.status_code == 200 and r.json()["patient"] == {**theirs, "height_cm": 160.0}


def test_a_push_to_the_pacs_that_does_not_say_which_version_is_refused(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /pacs/push without `version` pushed the latest label version, whatever it was: one a colleague
    saved a second before, which the person pushing had never seen, went into the hospital's PACS, where
    clinicians read it. The push must name the version (the page sends the one it shows): 428 without it,
    nothing sent."""
    from sarcoscope.pacs.dicomweb import Stored
    from sarcoscope.web import WebSettings, create_app, dicomweb

    sent: list[int] = []

    class Pacs:
        def series(self, _study_uid: str) -> list[object]:
            return [object()]

        def store(self, _study_uid: str, datasets: list[Any]) -> Stored:
            sent.append(len(datasets))
            return Stored(sent=len(datasets), held=0)

    monkeypatch.setattr(dicomweb, "server_of", lambda _ctx: Pacs())
    app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url="http://127.0.0.1:9/dicom-web"))
    with TestClient(app) as client:
        # the page shows "Push refused: " and the reason: plain words, saying what to do next
        other = write_series(tmp_path / "other", seed=1, patient_id="PAT-002")
        unlabelled = upload(client, other)["id"]  # the page has no version to send: none was saved
        r = client.post(f"/api/studies/{unlabelled}/pacs/push")
        assert r.status_code == 409, r.text
        assert r.json()["detail"] == (
            "This study has no saved labels to push yet: segment the L3 selection (and save any correction) "
            "first, then push."
        )
        sid, _ = segmented(client, series)
        r = client.post(f"/api/studies/{sid}/pacs/push")
        assert r.status_code == 428, r.text
        assert r.json()["detail"] == (
            "The push did not say which label version it is for, so it could have sent one a colleague saved "
            "since, unchecked. Reload the study, look at its labels, then push again (a script: send the "
            "version it was shown)."
        )
        assert sent == [] and "pacs-push" not in {e.action for e in app.state.ctx.store.audit_events(sid)}
        pushed = client.post(f"/api/studies/{sid}/pacs/push", params={"version": 1})
        assert pushed.status_code == 200 and pushed.json()["version"] == 1 and sent == [3]
    app.state.ctx.store.close()
