"""A deleted study is kept (`trash/`) for the server's --keep-deleted-days and can be restored with its images
and every label version; it is erased when its time is up, on `sarcoscope studies erase`, or at once with
--keep-deleted-days 0. A deletion or restore cut by a kill is finished or undone at the next start."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_api import delete_study, get_labels, segmented, upload
from typer.testing import CliRunner
from web_synth import multipart, write_exam_of_two_studies, zip_bytes

from sarcoscope.cli import app as cli
from sarcoscope.store import ConflictError, NotFoundError, Store, trash
from sarcoscope.store.trash import locks, moves, operations, records
from sarcoscope.web import WebSettings, create_app, volumes
from sarcoscope.web.accounts import cli_actor
from sarcoscope.web.auth import ANONYMOUS

runner = CliRunner()


def _edited(client: TestClient, series: list[Path]) -> tuple[str, np.ndarray]:
    """A segmented study with a second label version (an edit), and that version's labels."""
    sid, _ = segmented(client, series)
    labels, version, _ = get_labels(client, sid)
    labels[:, 10:20, 10:20] = 1
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": version}, content=labels.tobytes())
    assert r.status_code == 201, r.text
    return sid, labels


def _corrected_and_deleted_again(client: TestClient, sid: str) -> None:
    """A colleague's correction saved on the restored study `sid` (a third label version), which is then
    deleted again: another deletion, which an erase of the first must not take with it."""
    labels, version, _ = get_labels(client, sid)
    labels[:, 30:40, 30:40] = 2
    saved = client.post(
        f"/api/studies/{sid}/labels", params={"base_version": version}, content=labels.tobytes()
    )
    assert saved.status_code == 201 and delete_study(client, sid).status_code == 200


def _files_of(data_dir: Path, sid: str) -> list[Path]:
    return [p for p in data_dir.rglob("*") if sid in str(p) and not p.is_relative_to(data_dir / "trash")]


def test_a_deleted_study_is_restored_with_its_images_and_every_label_version(
    client: TestClient, series: list[Path]
) -> None:
    store = client.app.state.ctx.store
    sid, edited = _edited(client, series)
    before = [(v.version, v.author, v.source, v.sha256) for v in store.list_versions(sid)]
    image = client.get(f"/api/studies/{sid}/image/axial/5").content
    assert delete_study(client, sid).json()["kept_days"] == 30

    assert client.get(f"/api/studies/{sid}").status_code == 404
    assert _files_of(store.data_dir, sid) == []  # nothing left where live studies are
    [kept] = trash.deleted_studies(store)
    assert (kept.id, kept.patient_id, kept.n_versions) == (sid, "PAT-001", 2)

    trash.restore(store, sid, "admin")
    assert client.get(f"/api/studies/{sid}").status_code == 200
    assert [(v.version, v.author, v.source, v.sha256) for v in store.list_versions(sid)] == before
    np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
    client.app.state.ctx.volumes.drop(sid)  # the images read again from the restored files
    assert client.get(f"/api/studies/{sid}/image/axial/5").content == image
    assert client.get(f"/api/studies/{sid}/dicom", params={"first": 0, "last": 2}).status_code == 200
    assert trash.deleted_studies(store) == [] and not any((store.data_dir / "trash").iterdir())
    events = store.audit_events(sid)
    changes = [e.action for e in events if e.action.endswith("-study") and not e.action.startswith("view-")]
    assert changes == ["restore-study", "delete-study"]  # newest first


def test_a_restored_study_keeps_its_versions_quality_scores(client: TestClient, series: list[Path]) -> None:
    """The quality score of a segmented version is stored with it (issue 13): the deletion keeps it in the
    trash's record of the version, and the restored study shows it as before."""
    store = client.app.state.ctx.store
    sid, _ = segmented(client, series)
    block = client.get(f"/api/studies/{sid}/analysis").json()["quality"]
    stored = store.get_version(sid, 1).quality
    assert block["status"] == "computed" and stored is not None
    assert delete_study(client, sid).status_code == 200
    trash.restore(store, sid, "admin")
    assert store.get_version(sid, 1).quality == stored
    assert client.get(f"/api/studies/{sid}/analysis").json()["quality"] == block


def test_a_study_deleted_while_its_score_was_computed_is_scored_again_when_restored(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a study deleted while its newest version's quality score was computed lost that score (it
    is written on the version's row, then in the trash), and came back from the trash unscored for good.
    Its restore scores such versions again in the background: the score the version would have had."""
    from test_api import hold_second_opinion

    ctx = client.app.state.ctx
    sid, _ = segmented(client, series)
    expected = client.get(f"/api/studies/{sid}/analysis").json()["quality"]  # version 1's: the same labels
    assert expected["status"] == "computed"
    gate = hold_second_opinion(monkeypatch)
    assert client.post(f"/api/studies/{sid}/segment", json={"base_version": 1}).json()["version"] == 2
    assert delete_study(client, sid).status_code == 200
    gate.set()
    ctx.jobs.wait()
    r = client.post(f"/api/deleted-studies/{sid}/restore")
    assert r.status_code == 200, r.text
    ctx.jobs.wait()
    assert ctx.store.get_version(sid, 2).quality == ctx.store.get_version(sid, 1).quality
    assert client.get(f"/api/studies/{sid}/analysis").json()["quality"] == expected
    [listed] = client.get("/api/studies").json()
    assert listed["quality"]["status"] == "computed" and listed["quality"]["version"] == 2


def test_a_study_is_not_restored_over_its_series_uploaded_again(
    client: TestClient, series: list[Path]
) -> None:
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    again = upload(client, series)["id"]
    with pytest.raises(ConflictError, match=f"uploaded again since it was deleted \\(study {again}\\)"):
        trash.restore(store, sid, "admin")
    assert [d.id for d in trash.deleted_studies(store)] == [sid]  # still kept
    assert client.get(f"/api/studies/{again}/image/axial/5").status_code == 200


def test_erase_erases_a_deleted_study(client: TestClient, series: list[Path]) -> None:
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    delete_study(client, sid)
    trash.erase(store, sid, "admin")
    assert [p for p in store.data_dir.rglob("*") if sid in str(p)] == []
    with pytest.raises(NotFoundError, match="No deleted study"):
        trash.restore(store, sid, "admin")
    assert store.audit_events(sid)[0].action == "erase-study"


def test_without_keeping_a_deletion_erases_at_once(tmp_path: Path, series: list[Path]) -> None:
    app = create_app(WebSettings(data_dir=tmp_path / "data", keep_deleted_days=0))
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).json()["kept_days"] == 0
    store = app.state.ctx.store
    assert [p for p in store.data_dir.rglob("*") if sid in str(p)] == []
    assert trash.deleted_studies(store) == []
    store.close()


def test_deletions_kept_longer_than_the_servers_days_are_erased(tmp_path: Path, series: list[Path]) -> None:
    """At the server's start and at each deletion."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        old, recent = _two_deleted(client, tmp_path, series)
    app.state.ctx.store.close()
    _age(data / "trash" / old, days=31)
    _age(data / "trash" / recent, days=29)
    app = create_app(WebSettings(data_dir=data))
    assert [d.id for d in trash.deleted_studies(app.state.ctx.store)] == [recent]
    assert [p for p in data.rglob("*") if old in str(p)] == []
    app.state.ctx.store.close()


def _two_deleted(client: TestClient, tmp_path: Path, series: list[Path]) -> tuple[str, str]:
    """Two studies (PAT-001's `series`, then PAT-002's), uploaded and deleted in that order."""
    from web_synth import write_series

    ids = []
    for files in (series, write_series(tmp_path / "other", seed=1, patient_id="PAT-002")):
        ids.append(upload(client, files)["id"])
    for sid in ids:
        assert delete_study(client, sid).status_code == 200
    return ids[0], ids[1]


def _age(entry: Path, days: float) -> None:
    record = json.loads((entry / trash.RECORD).read_text())
    record["deleted_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).isoformat()
    (entry / trash.RECORD).write_text(json.dumps(record))


def test_a_deletion_stopped_before_its_files_moved_is_finished_at_the_next_start(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its rows went, before its files were moved into the trash: the next start moves them
    (before it deletes files no study owns), and the study can be restored."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        sid, edited = _edited(client, series)
        monkeypatch.setattr(trash, "finish", lambda *_: None)  # the kill
        delete_study(client, sid)
        monkeypatch.undo()
    app.state.ctx.store.close()
    assert (data / "trash" / f".{sid}.deleting").is_dir() and _files_of(data, sid)

    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    assert [d.id for d in trash.deleted_studies(store)] == [sid] and _files_of(data, sid) == []
    with TestClient(app) as client:
        trash.restore(store, sid, "admin")
        np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    store.close()


def test_a_restore_that_fails_puts_everything_back_in_the_trash(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    delete_study(client, sid)
    entry = sorted(p.relative_to(store.data_dir) for p in (store.data_dir / "trash").rglob("*"))

    def broken(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "restore_rows", broken)
    with pytest.raises(OSError, match="disk full"):
        trash.restore(store, sid, "admin")
    assert sorted(p.relative_to(store.data_dir) for p in (store.data_dir / "trash").rglob("*")) == entry
    assert _files_of(store.data_dir, sid) == []


def test_the_studies_commands_list_restore_and_erase(tmp_path: Path, series: list[Path]) -> None:
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        first, second = _two_deleted(client, tmp_path, series)
        listed = runner.invoke(cli, ["studies", "deleted", "--data-dir", str(data)], env={"COLUMNS": "300"})
        assert listed.exit_code == 0 and first in listed.output and "PAT-002" in listed.output
        [seen] = [e for e in app.state.ctx.store.audit_events() if e.action == "view-deleted-studies"]
        assert seen.actor == cli_actor() and seen.details == {"count": 2, "ids": [second, first]}
        restored = runner.invoke(cli, ["studies", "restore", first, "--data-dir", str(data)])
        assert restored.exit_code == 0, restored.output
        assert client.get(f"/api/studies/{first}").status_code == 200  # the running server shows it
        assert client.post("/api/studies", files=multipart(series)).status_code == 409  # it is stored again
    kept = runner.invoke(cli, ["studies", "erase", second, "--data-dir", str(data)], input="n\n")
    assert kept.exit_code == 1 and "deleted by local" in kept.output and "0 label versions" in kept.output
    assert [d.id for d in trash.deleted_studies(app.state.ctx.store)] == [second]  # answered no: kept
    erased = runner.invoke(cli, ["studies", "erase", second, "--data-dir", str(data)], input="y\n")
    assert erased.exit_code == 0, erased.output
    assert [p for p in data.rglob("*") if second in str(p)] == []
    missing = runner.invoke(cli, ["studies", "restore", second, "--data-dir", str(data)])
    assert missing.exit_code != 0 and "No deleted study" in missing.output
    assert "Traceback" not in missing.output
    app.state.ctx.store.close()


def test_the_erase_command_erases_the_deletion_it_showed_only(
    client: TestClient, series: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sarcoscope studies erase` shows each kept deletion as it is now (when, by whom, how many label
    versions) and erases it when confirmed (--yes: without asking), that deletion only: the study restored,
    corrected and deleted again while the question was open is refused, its correction kept."""
    import typer

    data = client.app.state.ctx.store.data_dir
    sid, _ = _edited(client, series)
    assert delete_study(client, sid).status_code == 200

    def meanwhile(question: str, **_: object) -> bool:
        assert "2 label versions" in question
        assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
        _corrected_and_deleted_again(client, sid)
        return True

    monkeypatch.setattr(typer, "confirm", meanwhile)
    stale = runner.invoke(cli, ["studies", "erase", sid, "--data-dir", str(data)])
    assert stale.exit_code == 1 and "restored and deleted again" in stale.output
    [kept] = trash.deleted_studies(client.app.state.ctx.store)
    assert kept.n_versions == 3
    monkeypatch.undo()
    erased = runner.invoke(cli, ["studies", "erase", sid, "--yes", "--data-dir", str(data)])
    assert erased.exit_code == 0, erased.output
    assert trash.deleted_studies(client.app.state.ctx.store) == []


def test_an_admin_lists_restores_and_erases_deleted_studies_in_the_web_app(
    client: TestClient, series: list[Path], tmp_path: Path
) -> None:
    """The open mode's user is the admin (roles: viewers and editors get 403, tests/web/test_roles.py)."""
    first, second = _two_deleted(client, tmp_path, series)
    kept = client.get("/api/deleted-studies").json()
    assert [d["id"] for d in kept] == [second, first]
    # it names patients: audited as being shown a study is (who, when, which and how many)
    [seen] = [e for e in client.get("/api/audit").json() if e["action"] == "view-deleted-studies"]
    assert seen["actor"] == ANONYMOUS and seen["details"] == {"count": 2, "ids": [second, first]}
    assert seen["client"] == "testclient" and seen["at"]
    assert kept[0]["patient_id"] == "PAT-002" and kept[0]["n_versions"] == 0
    deleted_at, erased_at = (dt.datetime.fromisoformat(kept[0][k]) for k in ("deleted_at", "erased_at"))
    assert erased_at - deleted_at == dt.timedelta(days=30)

    restored = client.post(f"/api/deleted-studies/{first}/restore")
    assert restored.status_code == 200 and restored.json()["patient_id"] == "PAT-001"
    assert [s["id"] for s in client.get("/api/studies").json()] == [first]
    assert client.post(f"/api/deleted-studies/{first}/restore").status_code == 404  # not kept any more
    erased = client.delete(f"/api/deleted-studies/{second}", params={"deleted_at": kept[0]["deleted_at"]})
    assert erased.json() == {"status": "erased", "id": second}
    assert client.get("/api/deleted-studies").json() == []
    store = client.app.state.ctx.store
    assert [p for p in store.data_dir.rglob("*") if second in str(p)] == []
    seen = {"deleted_at": kept[0]["deleted_at"]}
    assert client.delete(f"/api/deleted-studies/{'0' * 32}", params=seen).status_code == 404
    assert client.delete("/api/deleted-studies/..%2f..%2fct", params=seen).status_code == 404


def test_erasing_needs_the_deletion_the_sender_was_shown(client: TestClient, series: list[Path]) -> None:
    """A page (or script) that listed a deletion erases that one only: after the study was restored, a label
    version saved and the study deleted again, its stale erase is refused, and nothing is erased unseen."""
    store = client.app.state.ctx.store
    sid, _ = _edited(client, series)
    assert delete_study(client, sid).status_code == 200
    [listed] = client.get("/api/deleted-studies").json()

    unsaid = client.delete(f"/api/deleted-studies/{sid}")
    assert unsaid.status_code == 428 and "deleted_at" in unsaid.json()["detail"]

    assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
    labels, version, _ = get_labels(client, sid)
    labels[:, 30:40, 30:40] = 2  # a colleague's correction, saved after the page listed the deletion
    saved = client.post(
        f"/api/studies/{sid}/labels", params={"base_version": version}, content=labels.tobytes()
    )
    assert saved.status_code == 201, saved.text
    assert delete_study(client, sid).status_code == 200

    stale = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]})
    assert stale.status_code == 409
    assert "deleted again" in stale.json()["detail"]
    [kept] = trash.deleted_studies(store)
    assert (kept.id, kept.n_versions) == (sid, 3)  # the correction is still there to restore
    assert client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": "yesterday"}).status_code == 422

    [current] = client.get("/api/deleted-studies").json()
    erased = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": current["deleted_at"]})
    assert erased.status_code == 200 and trash.deleted_studies(store) == []


def test_deletion_and_restore_work_when_the_ct_files_are_on_another_file_system(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site that mounts the data folder's `ct/` (or `cache/`) on a larger disk: a rename between it and
    `trash/` fails (EXDEV), which left the deletion half done after its rows went, and made every start of
    the server fail as it tried to finish it. The files are copied across instead."""
    import errno
    import os

    store = client.app.state.ctx.store
    sid, edited = _edited(client, series)
    top = lambda p: Path(p).resolve().relative_to(store.data_dir).parts[0]  # noqa: E731
    rename, replace = os.rename, os.replace

    def across(move: Any) -> Any:
        def moved(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if top(src) != top(dst):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            move(src, dst, *args, **kwargs)

        return moved

    monkeypatch.setattr(os, "rename", across(rename))
    monkeypatch.setattr(os, "replace", across(replace))
    assert delete_study(client, sid).status_code == 200
    assert _files_of(store.data_dir, sid) == [] and [d.id for d in trash.deleted_studies(store)] == [sid]
    trash.restore(store, sid, "admin")
    client.app.state.ctx.volumes.drop(sid)
    np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
    assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200


def test_a_kept_deletion_that_cannot_be_erased_is_logged_without_its_files_names(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The erasure of a deletion kept too long failed on a file (its disk read-only, a permission): the
    warning quoted the system's error, whose path is the entry's image file, named by its SOP Instance UID
    (a patient identifier), into the server log. It says the study and the reason, not the path."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    _age(store.data_dir / "trash" / sid, days=31)
    image = next((store.data_dir / "trash" / sid / "ct").iterdir())

    def refused(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(image))

    monkeypatch.setattr(shutil, "rmtree", refused)
    with caplog.at_level("WARNING", logger="sarcoscope.store.trash"):
        assert trash.erase_expired(store, dt.timedelta(days=30), actor="server") == [sid]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == f"The deleted study {sid}, kept too long, was not erased: Permission denied."
    assert image.stem not in caplog.text


def test_an_erase_and_a_restore_at_the_same_time_never_erase_the_study_restored(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erase checked that the deletion was the one its sender was shown, then removed the entry's
    folder in a separate step: a restore, a colleague's correction and a new deletion in between were
    erased unseen. The erase now takes the entry for itself before it checks: the restore meanwhile is
    refused (409, being erased: a try after it finds none), and what the erase removes is the deletion it
    checked."""
    store = client.app.state.ctx.store
    sid, _ = _edited(client, series)
    assert delete_study(client, sid).status_code == 200
    [listed] = client.get("/api/deleted-studies").json()
    read, meanwhile = records._read, {"restore": 0}

    def read_then_restore(entry: Path, *name: str) -> Any:
        record = read(entry, *name)
        if not meanwhile["restore"]:  # between the erase's check and its removal, once
            meanwhile["restore"] = -1
            meanwhile["restore"] = client.post(f"/api/deleted-studies/{sid}/restore").status_code
            if meanwhile["restore"] == 200:
                _corrected_and_deleted_again(client, sid)
        return record

    monkeypatch.setattr(records, "_read", read_then_restore)
    erased = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]})
    monkeypatch.undo()
    assert (meanwhile["restore"], erased.status_code) == (409, 200)
    assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 404
    assert trash.deleted_studies(store) == [] and client.get(f"/api/studies/{sid}").status_code == 404
    assert [p for p in store.data_dir.rglob("*") if sid in str(p)] == []


def test_a_restore_while_a_refused_erase_checks_is_told_to_try_again(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erase with a stale deleted_at takes the entry out of place while it checks, then puts it back: a
    restore at that instant answered 404 (no deletion kept), though the study was kept all along. It now
    answers 409 (being erased, try again), and the try after restores it."""
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    read, meanwhile = records._read, []

    def read_then_restore(entry: Path, *name: str) -> Any:
        if not meanwhile:  # during the erase's check, once
            meanwhile.append(None)
            meanwhile[0] = client.post(f"/api/deleted-studies/{sid}/restore")
        return read(entry, *name)

    monkeypatch.setattr(records, "_read", read_then_restore)
    stale = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    erased = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": stale})
    monkeypatch.undo()
    [restore] = meanwhile
    assert erased.status_code == 409 and "deleted again" in erased.json()["detail"]
    assert restore.status_code == 409 and "being erased" in restore.json()["detail"]
    assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
    assert client.get(f"/api/studies/{sid}").status_code == 200


def test_an_erase_during_a_restore_erases_nothing(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore took the entry first: the erase answers that the study was restored (409), and the study
    is back with every label version."""
    store = client.app.state.ctx.store
    sid, edited = _edited(client, series)
    assert delete_study(client, sid).status_code == 200
    [listed] = client.get("/api/deleted-studies").json()
    restore_rows, erases = store.restore_rows, []

    def erase_then_restore_rows(*args: Any, **kwargs: Any) -> None:
        erases.append(
            client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]})
        )
        restore_rows(*args, **kwargs)

    monkeypatch.setattr(store, "restore_rows", erase_then_restore_rows)
    assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
    [erase] = erases
    assert erase.status_code == 409 and "restored" in erase.json()["detail"]
    assert [v.version for v in store.list_versions(sid)] == [2, 1]
    np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
    later = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]})
    assert later.status_code == 409 and client.get(f"/api/studies/{sid}").status_code == 200


def test_an_erasure_stopped_half_way_is_undone_before_its_check_and_finished_after(
    tmp_path: Path, series: list[Path]
) -> None:
    """Killed after the erase took the entry, before it was checked: the deletion is kept again; killed
    while its files were removed: the next start removes the rest."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        undecided, decided = _two_deleted(client, tmp_path, series)
    app.state.ctx.store.close()
    (data / "trash" / undecided).rename(data / "trash" / f".{undecided}.erasing")
    (data / "trash" / decided).rename(data / "trash" / f".{decided}.erased")

    app = create_app(WebSettings(data_dir=data))
    assert [d.id for d in trash.deleted_studies(app.state.ctx.store)] == [undecided]
    assert [p for p in data.rglob("*") if decided in str(p)] == []
    app.state.ctx.store.close()


class _Killed(BaseException):
    """The process killed: no handler of the code it stops runs (each os.replace after it fails too)."""


def _erase_killed(store: Any, sid: str, monkeypatch: pytest.MonkeyPatch, *, audited: bool) -> None:
    """trash.erase of `sid` killed at its audit event: after writing it (`audited`) or before; then every
    os.replace fails, as nothing runs after a kill."""
    _killed_at(monkeypatch, store, "audit_erasure", done_first=audited)
    with pytest.raises(_Killed):
        trash.erase(store, sid, "admin")
    monkeypatch.undo()


def _killed_at(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str, *, done_first: bool = False) -> None:
    """A kill at `obj.name` (after it ran, with `done_first`): it raises _Killed, and so does every
    os.replace after it, as nothing runs after a kill."""
    call, replace, killed = getattr(obj, name), os.replace, []

    def kill(*args: Any, **kwargs: Any) -> None:
        if done_first:
            call(*args, **kwargs)
        killed.append(True)
        raise _Killed

    def replace_unless_killed(*args: Any, **kwargs: Any) -> None:
        if killed:
            raise _Killed
        replace(*args, **kwargs)

    monkeypatch.setattr(obj, name, kill)
    monkeypatch.setattr(os, "replace", replace_unless_killed)


@pytest.mark.parametrize("audited", [True, False])
@pytest.mark.parametrize("kept_before_ids", [False, True])
def test_an_erasure_killed_around_its_audit_event_ends_as_the_audit_log_says(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, audited: bool, kept_before_ids: bool
) -> None:
    """Killed after the erase-study event was written, before the entry was renamed to .erased, the next
    start put the deletion back: restorable, while the audit log said it was erased. Now that event decides:
    after it the next start finishes the erasure; killed before it (the event not written), it puts the
    deletion back and the audit log holds no erasure. A deletion kept by a version before deletions had an id
    (`kept_before_ids`) is decided by the clock, as then."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).status_code == 200
    record = json.loads((data / "trash" / sid / trash.RECORD).read_text())
    record_id = record.pop("deletion_id")
    if kept_before_ids:
        (data / "trash" / sid / trash.RECORD).write_text(json.dumps(record))
    _erase_killed(store, sid, monkeypatch, audited=audited)
    store.close()
    assert (data / "trash" / f".{sid}.erasing").is_dir()

    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    erasures = [e.details for e in store.audit_events(sid) if e.action == "erase-study"]
    assert erasures == [None if kept_before_ids else {"deletion_id": record_id}][: int(audited)]
    assert [d.id for d in trash.deleted_studies(store)] == ([] if audited else [sid])
    assert [p.name for p in (data / "trash").iterdir()] == ([] if audited else [sid])
    store.close()


def test_a_restore_refused_over_files_in_its_place_names_no_uid(
    client: TestClient, series: list[Path]
) -> None:
    """A restore refused because files are where the study's go answered with their path, the data folder's
    ct/<StudyInstanceUID>/<SeriesInstanceUID>: the patient's UIDs and the server's folder, to the client."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    study = store.get_study(sid)
    assert delete_study(client, sid).status_code == 200
    store.series_dir(study).mkdir(parents=True)  # a kill left them, or a hand put them there
    refused = client.post(f"/api/deleted-studies/{sid}/restore")
    assert refused.status_code == 409 and "its images are there already" in refused.json()["detail"]
    for value in (study.study_uid, study.series_uid, str(store.data_dir)):
        assert value not in refused.text
    assert [d.id for d in trash.deleted_studies(store)] == [sid]  # still kept


@pytest.mark.parametrize("step", ["back", "forward"])
def test_an_erasure_killed_is_decided_by_its_deletion_not_by_the_clock(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The next start decided an interrupted erasure by the clock: an erase-study event of the study newer
    than the kept deletion's deleted_at. A step of the clock (NTP, a virtual machine restored, another
    host's clock on a shared data folder) made it wrong. "back": deleted while the clock was an hour ahead,
    the erasure audited after the clock was set right and then killed: it was put back, restorable while the
    audit log said erased. "forward": an erase-study event an earlier version left of the study's earlier
    deletion (stamped an hour ahead), and the study deleted again with a colleague's correction; an erase of
    this deletion killed before its event: it was erased unaudited. The event now names the deletion's id."""
    from sarcoscope.store import core

    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    ahead = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # noqa: E731
    with TestClient(app) as client:
        if step == "back":
            sid = upload(client, series)["id"]
            with monkeypatch.context() as clock:
                clock.setattr(operations, "utcnow", ahead)
                assert delete_study(client, sid).status_code == 200
        else:  # the earlier deletion's erasure event, put back by the clock's decision of an earlier version
            sid, _ = _edited(client, series)
            assert delete_study(client, sid).status_code == 200
            with monkeypatch.context() as clock:
                clock.setattr(core, "utcnow", ahead)
                store.audit("admin", "erase-study", sid)
            trash.restore(store, sid, "admin")
            _corrected_and_deleted_again(client, sid)
    _erase_killed(store, sid, monkeypatch, audited=step == "back")
    store.close()

    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    erasures = [e for e in store.audit_events(sid) if e.action == "erase-study"]
    assert len(erasures) == 1
    if step == "back":  # audited: erased
        assert trash.deleted_studies(store) == [] and not any((data / "trash").iterdir())
    else:  # not audited: kept, with the correction
        [kept] = trash.deleted_studies(store)
        assert (kept.id, kept.n_versions) == (sid, 3)
        with TestClient(app) as client:
            assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
    store.close()


def test_a_restore_that_finds_the_entry_gone_while_a_refused_erase_puts_it_back_restores_it(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that found no entry (an erase, to be refused, had it out of place as .<id>.erasing) and
    looked for the .erasing entry only after the erase had put it back answered 404 (no deleted study kept),
    though the study was kept all along. What a restore that finds no entry answers is now decided while no
    entry is put back: here the entry is there again, and the restore takes it."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    read, entry_of, main = records._read, records.kept_entry, threading.current_thread()
    checking, go, erased = threading.Event(), threading.Event(), []

    def read_and_wait(entry: Path, *name: str) -> Any:
        if threading.current_thread() is not main and not checking.is_set():  # the erase's check
            checking.set()
            go.wait(60)
        return read(entry, *name)

    def entry_then_erase_ends(*args: Any) -> Path:
        try:
            return entry_of(*args)
        except NotFoundError:
            if not go.is_set():  # the restore found none: the erase is refused, and puts the entry back
                go.set()
                eraser.join()
            raise

    stale = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    eraser = threading.Thread(
        target=lambda: erased.append(_outcome(lambda: trash.erase(store, sid, "x", deleted_at=stale)))
    )
    monkeypatch.setattr(records, "_read", read_and_wait)
    monkeypatch.setattr(records, "kept_entry", entry_then_erase_ends)
    eraser.start()
    assert checking.wait(60)
    restored = _outcome(lambda: trash.restore(store, sid, "admin"))
    eraser.join()
    assert isinstance(erased[0], ConflictError) and "deleted again" in str(erased[0])
    assert not isinstance(restored, Exception), restored
    assert client.get(f"/api/studies/{sid}").status_code == 200 and trash.deleted_studies(store) == []


def test_an_erase_that_finds_the_entry_gone_while_a_failed_restore_puts_it_back_erases_it(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure request that found no entry (a restore, which then failed, had it as .<id>.restoring) and
    looked for the .restoring entry only after the restore had put it back answered 404 (no deleted study
    kept): the person asking for the erasure was told there was nothing to erase while the study was kept.
    The erase now finds the entry there again and erases it."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    [listed] = trash.deleted_studies(store)
    replace, main = os.replace, threading.current_thread()
    restoring, go, restored = threading.Event(), threading.Event(), []

    def restore_rows_fail(*_: Any, **__: Any) -> None:
        restoring.set()
        go.wait(60)
        raise OSError("disk full")

    def replace_then_restore_ends(src: Any, dst: Any) -> None:
        try:
            replace(src, dst)
        except FileNotFoundError:
            if threading.current_thread() is main and not go.is_set():  # the erase found none
                go.set()
                restorer.join()
            raise

    restorer = threading.Thread(
        target=lambda: restored.append(_outcome(lambda: trash.restore(store, sid, "x")))
    )
    monkeypatch.setattr(store, "restore_rows", restore_rows_fail)
    monkeypatch.setattr(os, "replace", replace_then_restore_ends)
    restorer.start()
    assert restoring.wait(60)
    erased = _outcome(lambda: trash.erase(store, sid, "admin", deleted_at=listed.deleted_at))
    restorer.join()
    assert isinstance(restored[0], OSError)
    assert erased is None, erased
    assert trash.deleted_studies(store) == [] and not [p for p in store.data_dir.rglob("*") if sid in str(p)]
    assert store.audit_events(sid)[0].action == "erase-study"


def _outcome(call: Callable[[], Any]) -> Any:
    """What `call` returned, or the exception it raised (in another thread: to be checked in the test's)."""
    try:
        return call()
    except Exception as exc:
        return exc


def test_a_second_erase_while_a_refused_erase_checks_is_told_to_try_again(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure request (of the deletion as kept) while a stale erase had the entry out of place to check
    it answered 404 (no deleted study kept): the person asking was told there was nothing to erase, and the
    stale erase, refused, put the study back. It now answers 409 (being erased, try again), and the try
    after erases it."""
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    [listed] = client.get("/api/deleted-studies").json()
    read, meanwhile = records._read, []

    def read_then_erase(entry: Path, *name: str) -> Any:
        if not meanwhile:  # during the stale erase's check, once
            meanwhile.append(None)
            meanwhile[0] = client.delete(
                f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]}
            )
        return read(entry, *name)

    monkeypatch.setattr(records, "_read", read_then_erase)
    stale = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    refused = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": stale})
    monkeypatch.undo()
    [meantime] = meanwhile
    assert refused.status_code == 409 and "deleted again" in refused.json()["detail"]
    assert meantime.status_code == 409 and "being erased" in meantime.json()["detail"]
    erased = client.delete(f"/api/deleted-studies/{sid}", params={"deleted_at": listed["deleted_at"]})
    assert erased.status_code == 200 and client.get("/api/deleted-studies").json() == []


def test_a_restore_that_fails_moving_its_files_puts_them_back_in_the_trash(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore whose files could not all be moved out (a full disk as its decoded images are copied to
    cache/ on another disk) left the entry as .<id>.restoring with its images moved out: the study was
    neither in the list nor among the deleted studies (nor restorable) until the server's next start. What
    it moved is now put back, and the deletion is kept as it was."""
    import errno

    store = client.app.state.ctx.store
    sid, edited = _edited(client, series)
    assert delete_study(client, sid).status_code == 200
    entry = sorted(p.relative_to(store.data_dir) for p in (store.data_dir / "trash").rglob("*"))
    move = moves.move_dir

    def disk_full_for_the_cache(src: Path, dst: Path) -> None:
        if dst.parent == store.data_dir / "cache":
            raise OSError(errno.ENOSPC, "No space left on device")
        move(src, dst)

    monkeypatch.setattr(moves, "move_dir", disk_full_for_the_cache)
    with pytest.raises(OSError, match="No space left"):
        trash.restore(store, sid, "admin")
    monkeypatch.undo()
    assert sorted(p.relative_to(store.data_dir) for p in (store.data_dir / "trash").rglob("*")) == entry
    assert _files_of(store.data_dir, sid) == [] and [d.id for d in trash.deleted_studies(store)] == [sid]
    trash.restore(store, sid, "admin")
    np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
    assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200


def test_a_deletions_record_is_on_disk_before_its_rows_go(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, fsynced: list[int]
) -> None:
    """The record of a deleted study's rows (study.json, label_versions.json in .<id>.deleting/) was written
    and renamed without being flushed to disk, and the database's commit (flushed) removed the rows after it:
    power lost then could leave the rows gone and the record empty or missing, the deletion not restorable
    (and an empty study.json stopped the next start). The record's files and the folders naming them are now
    flushed (fsync) before the deletion's transaction commits."""
    store = client.app.state.ctx.store
    sid, _ = _edited(client, series)
    begin, at_commit, needed = trash.begin, [], []

    def begin_then_commit(*args: Any) -> Path:
        pending = begin(*args)
        at_commit.extend(fsynced)  # begin runs inside the deletion's transaction: it commits after
        needed.extend(p.stat().st_ino for p in (pending / trash.RECORD, pending / trash.VERSIONS, pending))
        needed.append(pending.parent.stat().st_ino)  # trash/, which names .<id>.deleting
        needed.append(store.data_dir.stat().st_ino)  # which names trash/
        return pending

    monkeypatch.setattr(trash, "begin", begin_then_commit)
    fsynced.clear()  # what is flushed from here on
    assert delete_study(client, sid).status_code == 200
    assert len(needed) == 5 and set(needed) <= set(at_commit)
    [kept] = trash.deleted_studies(store)
    assert (kept.id, kept.n_versions) == (sid, 2)


def test_files_copied_across_file_systems_are_on_disk_before_their_source_is_removed(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deletion (or restore) between a ct/ on another disk and trash/ copies the files, then removes the
    source: the copies were not flushed to disk first, so power lost after the removal could leave both the
    source gone and the copies empty, the study's images lost. Each copied file and folder is now flushed
    (fsync) before the source is removed."""
    import errno
    import shutil

    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    study = store.get_study(sid)
    top = lambda p: Path(p).resolve().relative_to(store.data_dir).parts[0]  # noqa: E731
    replace, fsync, rmtree, events = os.replace, os.fsync, shutil.rmtree, []

    def across(src: Any, dst: Any) -> None:
        if top(src) != top(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    def recorded_fsync(fd: int) -> None:
        events.append(os.fstat(fd).st_ino)
        fsync(fd)

    def recorded_rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        events.append(Path(path))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", across)
    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(shutil, "rmtree", recorded_rmtree)
    assert delete_study(client, sid).status_code == 200
    monkeypatch.undo()
    copied = store.data_dir / "trash" / sid / "ct"
    flushed = set(events[: events.index(store.series_dir(study))])
    assert {p.stat().st_ino for p in [copied, *copied.iterdir()]} <= flushed
    assert copied.parent.stat().st_ino in flushed  # the folder naming ct/
    assert len(list(copied.iterdir())) == len(series)


def _restore_killed_before_its_entry_goes(store: Any, sid: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """trash.restore of `sid` killed after its commit, before it removes the emptied .<id>.restoring
    (returned)."""
    rmtree, restoring = shutil.rmtree, trash.trash_dir(store) / f".{sid}.restoring"

    def killed_before_the_entry_goes(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == restoring:
            raise _Killed
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_before_the_entry_goes)
    with pytest.raises(_Killed):
        trash.restore(store, sid, "admin")
    monkeypatch.undo()
    return restoring


def test_a_restore_whose_moves_were_lost_is_finished_at_the_next_start(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore moves the files out of .<id>.restoring (renames), then commits the rows, then removes the
    emptied entry. Power lost after the commit can undo renames the disk had not written yet (the database
    flushed, on another disk or server: PostgreSQL), leaving the images in .<id>.restoring beside the
    committed study: the next start removed that entry as emptied, the images with it. It now moves out
    what is left first."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    with TestClient(app) as client:
        sid, edited = _edited(client, series)
        study = store.get_study(sid)
        assert delete_study(client, sid).status_code == 200
    restoring = _restore_killed_before_its_entry_goes(store, sid, monkeypatch)
    store.close()
    for name, place in (("ct", store.series_dir(study)), ("cache", store.cache_dir(sid))):
        place.rename(restoring / name)  # the renames the disk had not written when power was lost

    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        assert not restoring.exists() and trash.deleted_studies(app.state.ctx.store) == []
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
        np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
    app.state.ctx.store.close()


def _flushed_before(store: Any, step: str, monkeypatch: pytest.MonkeyPatch, fsynced: list[int]) -> list[int]:
    """The list that each call of `store.<step>` (the step that relies on them) from here on fills with the
    inodes flushed (fsync) so far."""
    call, flushed = getattr(store, step), []

    def recorded(*args: Any, **kwargs: Any) -> None:
        flushed.extend(fsynced)
        call(*args, **kwargs)

    monkeypatch.setattr(store, step, recorded)
    return flushed


def test_an_erasure_is_out_of_a_restores_reach_on_disk_before_its_audit_event(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, fsynced: list[int]
) -> None:
    """The erase-study event decides an erasure (after a kill the next start finishes it when the event
    names the deletion); it was written while the entry's rename to .<id>.erasing might not be on the disk
    yet. With the audit log in a database elsewhere (PostgreSQL), power lost then left the entry in place as
    a kept deletion, restorable, which the next start does not look at, beside an event saying it was
    erased. The rename is now flushed (fsync of trash/) before the event is written."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    at_audit = _flushed_before(store, "audit_erasure", monkeypatch, fsynced)
    fsynced.clear()  # what is flushed from here on
    trash.erase(store, sid, "admin")
    assert (store.data_dir / "trash").stat().st_ino in at_audit
    assert store.audit_events(sid)[0].action == "erase-study" and trash.deleted_studies(store) == []


def test_a_restores_moves_are_on_disk_before_its_rows_are_committed(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, fsynced: list[int]
) -> None:
    """A restore renamed its entry to .<id>.restoring and moved the files out, then committed the rows, none
    of the renames flushed: with the database flushing elsewhere (PostgreSQL), power lost after the commit
    could leave the whole entry in trash/ (kept, and refused as a restore: its study is there) beside a
    committed study without images. The folders the renames changed are now flushed before the commit."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    study = store.get_study(sid)
    assert delete_study(client, sid).status_code == 200
    at_commit = _flushed_before(store, "restore_rows", monkeypatch, fsynced)
    fsynced.clear()  # what is flushed from here on
    trash.restore(store, sid, "admin")
    changed = [store.data_dir / "trash", store.series_dir(study).parent, store.data_dir / "ct"]
    changed.append(store.data_dir / "cache")
    assert {p.stat().st_ino for p in changed} <= set(at_commit)
    assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200


#: Records as a damaged disk or a hand edit can leave them, by what is wrong.
_DAMAGED = {
    "empty": b"",
    "not JSON": b'{"deletion_id": "',
    "incomplete": b'{"deleted_by": "admin"}',
    "missing": None,
}


def _damage(entry: Path, how: str) -> None:
    if (content := _DAMAGED[how]) is None:
        (entry / trash.RECORD).unlink()
    else:
        (entry / trash.RECORD).write_bytes(content)


@pytest.mark.parametrize("how", list(_DAMAGED))
def test_a_deletion_whose_record_cannot_be_read_is_kept_and_named_beside_the_others(
    client: TestClient, series: list[Path], tmp_path: Path, how: str
) -> None:
    """One unreadable trash/<id>/study.json made the list fail (500; the command's traceback), and a restore
    or erase of it too. The others are listed, the damaged one named by its id (not listed: what it would
    show cannot be read), refused with 409, and never removed, neither by an erase nor as kept too long."""
    store = client.app.state.ctx.store
    first, second = _two_deleted(client, tmp_path, series)
    entry = store.data_dir / "trash" / first
    _damage(entry, how)
    kept = sorted(p.relative_to(entry) for p in entry.rglob("*"))

    listed = client.get("/api/deleted-studies")
    assert listed.status_code == 200 and [d["id"] for d in listed.json()] == [second]
    assert listed.headers["X-Unreadable-Deleted-Studies"] == first
    command = runner.invoke(cli, ["studies", "deleted", "--data-dir", str(store.data_dir)])
    assert command.exit_code == 0 and "Traceback" not in command.output, command.output
    assert (
        f"Deleted study {first}: its record cannot be read" in command.output and "PAT-002" in command.output
    )
    [seen, *_] = [e for e in store.audit_events() if e.action == "view-deleted-studies"]
    assert seen.details == {"count": 1, "ids": [second], "unreadable": [first]}

    restored = client.post(f"/api/deleted-studies/{first}/restore")
    assert (
        restored.status_code == 409 and f"deleted study {first} cannot be read" in restored.json()["detail"]
    )
    seen_at = {"deleted_at": listed.json()[0]["deleted_at"]}
    assert client.delete(f"/api/deleted-studies/{first}", params=seen_at).status_code == 409
    assert trash.erase_expired(store, dt.timedelta(0), actor="server") == [second]
    assert sorted(p.relative_to(entry) for p in entry.rglob("*")) == kept and (entry / "ct").is_dir()


@pytest.mark.parametrize("stopped", ["deleting", "restoring", "erasing"])
def test_a_stopped_change_whose_record_cannot_be_read_is_left_as_it_is_and_the_server_starts(
    tmp_path: Path,
    series: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stopped: str,
) -> None:
    """A deletion stopped before its files moved (.<id>.deleting, the study's images still in ct/), a restore
    stopped after it took its entry (.<id>.restoring) or an erasure before its audit event (.<id>.erasing),
    whose record cannot be read: recover() raised, so the server could not start. The next start now leaves
    it as it is, says so once (by the study's id) and keeps the files no study owns: the record that would
    say which are the study's cannot be read."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        sid, _ = _edited(client, series)
        if stopped == "deleting":
            monkeypatch.setattr(trash, "finish", lambda *_: None)  # the kill
        delete_study(client, sid)
        monkeypatch.undo()
    app.state.ctx.store.close()
    entry = data / "trash" / f".{sid}.{stopped}"
    if stopped != "deleting":
        (data / "trash" / sid).rename(entry)
    _damage(entry, "empty")

    def files() -> list[Path]:
        return sorted(p for folder in ("ct", "cache", "uploads", "trash") for p in (data / folder).rglob("*"))

    before = files()

    with caplog.at_level("WARNING", logger="sarcoscope.store.trash"):
        app = create_app(WebSettings(data_dir=data))
    [warning] = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warning == (
        f"The record of deleted study {sid} cannot be read (study.json: empty): trash/.{sid}.{stopped}/ is "
        "left as it is, and the files no study owns are kept."
    )
    assert files() == before  # nothing moved, nothing removed
    with TestClient(app) as client:
        assert client.get("/api/deleted-studies").status_code == 200
    app.state.ctx.store.close()


def test_a_stopped_restores_entry_beside_a_later_deletion_of_the_study_keeps_both(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`sarcoscope studies restore` killed after its commit, before it removed the emptied .<id>.restoring;
    the study then deleted again (kept as trash/<id>): the next start put the leftover back onto that kept
    entry, which failed, so the server could not start. The leftover is now kept under its own name, said
    once, and the later deletion stays listed and restorable with its label versions and images."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    with TestClient(app) as client:
        sid, edited = _edited(client, series)
        assert delete_study(client, sid).status_code == 200
        restoring = _restore_killed_before_its_entry_goes(store, sid, monkeypatch)
        assert delete_study(client, sid).status_code == 200
    store.close()
    assert restoring.is_dir() and (data / "trash" / sid).is_dir()

    with caplog.at_level("WARNING", logger="sarcoscope.store.trash"):
        app = create_app(WebSettings(data_dir=data))
    [left] = [p for p in (data / "trash").iterdir() if p.name.startswith(f".{sid}.left-")]
    [warning] = [r.getMessage() for r in caplog.records if "stopped restore" in r.getMessage()]
    assert f"trash/{left.name}/" in warning and not restoring.exists()
    with TestClient(app) as client:
        [kept] = client.get("/api/deleted-studies").json()
        assert kept["id"] == sid and kept["n_versions"] == 2
        assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
        np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    assert left.is_dir()
    app.state.ctx.store.close()


def test_a_restore_while_another_restores_the_study_is_told_to_try_again(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that found the study being restored by someone else (.<id>.restoring) answered 404 "No
    deleted study ... is kept": when that restore fails, the study is kept all along. It answers 409, try
    again; after the other restore failed, a restore restores it."""
    store = client.app.state.ctx.store
    sid, edited = _edited(client, series)
    assert delete_study(client, sid).status_code == 200
    meanwhile = []

    def second_restore_then_fail(*_: Any, **__: Any) -> None:
        meanwhile.append(client.post(f"/api/deleted-studies/{sid}/restore"))
        raise OSError("disk full")

    monkeypatch.setattr(store, "restore_rows", second_restore_then_fail)
    with pytest.raises(OSError, match="disk full"):
        trash.restore(store, sid, "admin")
    monkeypatch.undo()
    [second] = meanwhile
    assert second.status_code == 409 and "being restored" in second.json()["detail"], second.text
    assert [d.id for d in trash.deleted_studies(store)] == [sid]
    assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
    np.testing.assert_array_equal(get_labels(client, sid)[0], edited)


def _contended(monkeypatch: pytest.MonkeyPatch, seen: threading.Event) -> None:
    """`seen` is set when a flock has to wait for another holder (here: the other Store's ct lock); not by
    one that never waits (LOCK_NB)."""
    flock = fcntl.flock

    def noticing(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_NB:
            return flock(fd, operation)
        try:
            flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            seen.set()
            flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", noticing)


def test_a_restore_beside_the_server_never_removes_the_deleted_studys_images_for_an_upload_meanwhile(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sarcoscope studies restore` (its own process) checked the series' folder free, then the server's
    upload of the same series (its own ct locks) created it, and the restore's move, finding it there, took
    it for its own cut copy and removed the source: the kept deletion's images. The ct lock now holds across
    processes: the upload waits for the restore, which restores the study; the upload is refused."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    beside = Store(data)
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).status_code == 200
        waited, answers = threading.Event(), []
        _contended(monkeypatch, waited)

        def upload_meanwhile() -> None:
            answers.append(client.post("/api/studies", files=multipart(series)))
            waited.set()

        server = threading.Thread(target=upload_meanwhile)
        move_out = moves.move_out

        def after_the_restores_check(*args: Any) -> None:
            server.start()
            assert waited.wait(60)  # the upload has waited for the lock (or, unlocked, is done)
            move_out(*args)

        monkeypatch.setattr(moves, "move_out", after_the_restores_check)
        try:
            restored: Any = trash.restore(beside, sid, cli_actor())
        except ConflictError as exc:
            restored = exc
        server.join()
        monkeypatch.undo()
        kept = sorted((data / "trash" / sid / "ct").glob("*"))
        assert kept or client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200, "images lost"
        assert getattr(restored, "id", restored) == sid
        [answer] = answers
        assert answer.status_code == 409 and "already" in answer.json()["detail"], answer.text
        assert client.get(f"/api/studies/{sid}/dicom", params={"first": 0, "last": 2}).status_code == 200
        assert client.get("/api/deleted-studies").json() == []
    beside.close()
    app.state.ctx.store.close()


def test_a_restore_beside_the_servers_upload_of_its_series_waits_for_it_and_is_refused(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's upload of a deleted study's series checked the folder free; `sarcoscope studies
    restore` beside it then moved the deleted series there (or, killed, left it half moved) while the upload
    went on. The restore now waits for the upload's ct lock and is refused (its series uploaded again): the
    deletion stays kept with its images, the upload's study has its own."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store, beside = app.state.ctx.store, Store(data)
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).status_code == 200
        dest = store.series_dir(records.study_of(data / "trash" / sid))
        waited, made, outcome = threading.Event(), volumes.private_dir, []
        _contended(monkeypatch, waited)

        def restore_meanwhile() -> None:
            try:
                outcome.append(trash.restore(beside, sid, cli_actor()))
            except ConflictError as exc:
                outcome.append(exc)
            waited.set()

        restoring = threading.Thread(target=restore_meanwhile)

        def after_the_uploads_check(path: Path) -> Path:
            if path == dest:
                restoring.start()
                assert waited.wait(60)  # the restore has waited for the lock (or, unlocked, is done)
            return made(path)

        monkeypatch.setattr(volumes, "private_dir", after_the_uploads_check)
        r = client.post("/api/studies", files=multipart(series))
        restoring.join()
        monkeypatch.undo()
        assert r.status_code == 201, r.text
        live = r.json()["id"]
        [refused] = outcome
        assert isinstance(refused, ConflictError) and "uploaded again" in str(refused), refused
        assert [d["id"] for d in client.get("/api/deleted-studies").json()] == [sid]
        assert client.get(f"/api/studies/{live}/image/axial/5").status_code == 200
        assert sorted((data / "trash" / sid / "ct").glob("*")) and sorted(dest.glob("*"))
    beside.close()
    store.close()


def test_a_move_removes_its_source_only_beside_the_copy_it_made_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moves.move_dir took any folder in its destination's place for its own copy cut before the source's
    removal, and removed the source: a series' folder made there by someone else took the kept deletion's
    images. Only a copy its mark names is finished; another destination leaves the source as it is."""
    src, dst = tmp_path / "entry" / "ct", tmp_path / "ct" / "series"
    for folder, name in ((src, "kept.dcm"), (dst, "live.dcm")):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(name.encode())
    with pytest.raises(FileExistsError):
        moves.move_dir(src, dst)
    assert [p.name for p in src.iterdir()] == ["kept.dcm"] and [p.name for p in dst.iterdir()] == ["live.dcm"]

    replace, rmtree = os.replace, shutil.rmtree

    def across_file_systems(a: Any, b: Any) -> None:
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(a, b)

    def killed(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == src and not kwargs.get("ignore_errors"):
            raise _Killed
        rmtree(path, *args, **kwargs)

    mine = tmp_path / "ct" / "mine"
    monkeypatch.setattr(os, "replace", across_file_systems)
    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(_Killed):  # copied and renamed into place, cut before the source's removal
        moves.move_dir(src, mine)
    monkeypatch.undo()
    moves.move_dir(src, mine)  # finished: the copy is its own
    assert not src.exists() and [p.name for p in mine.iterdir()] == ["kept.dcm"]
    assert sorted(p.name for p in mine.parent.iterdir()) == ["mine", "series"]  # no mark left


def test_a_restore_cut_while_it_removed_its_entrys_copy_is_put_back_with_the_whole_copy(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore moving a study's images out of its entry to a ct/ on another file system copies them into
    place, then removes the entry's copy; killed during that removal, the next start put the entry back
    with what was left of its copy (the whole copy in place was "not its to take") and then removed the
    whole copy as files no study owns: the deletion kept a part of its images. The start finishes the cut
    move first and puts the entry back with the whole copy; the deletion restores with every image."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        images = sorted(p.name for p in store.series_dir(store.get_study(sid)).iterdir())
        assert delete_study(client, sid).status_code == 200
    assert len(images) > 2
    copy = data / "trash" / f".{sid}.restoring" / "ct"
    replace, rmtree, killed = os.replace, shutil.rmtree, []

    def across_file_systems(src: Any, dst: Any) -> None:
        if killed:
            raise _Killed
        if Path(src) == copy:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    def killed_half_way(path: Any, *args: Any, **kwargs: Any) -> None:
        if killed:
            raise _Killed
        if Path(path) == copy and not kwargs.get("ignore_errors"):
            for done in sorted(copy.iterdir())[: len(images) // 2]:
                done.unlink()
            killed.append(True)
            raise _Killed
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "replace", across_file_systems)
    monkeypatch.setattr(shutil, "rmtree", killed_half_way)
    with pytest.raises(_Killed):
        trash.restore(store, sid, "admin")
    monkeypatch.undo()
    store.close()
    study = records.study_of(copy.parent)
    assert 0 < len(list(copy.iterdir())) < len(images) and store.series_dir(study).is_dir()

    app = create_app(WebSettings(data_dir=data))
    assert sorted(p.name for p in (data / "trash" / sid / "ct").iterdir()) == images
    assert not store.series_dir(study).exists() and not list(
        store.series_dir(study).parent.parent.glob("*/.*")
    )
    with TestClient(app) as client:
        assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    assert sorted(p.name for p in store.series_dir(study).iterdir()) == images
    app.state.ctx.store.close()


def test_a_deletion_kept_without_its_images_is_not_restored_without_them(
    client: TestClient, series: list[Path]
) -> None:
    """A deletion kept without its images (a restore beside the server before the ct lock held across
    processes left them with a study of the same series uploaded meanwhile: moves.move_in) was, once that
    study was deleted too, restored (200) as a study whose images are nowhere. The restore is refused (409
    saying its images are not kept); the deletion stays kept, and the other deletion restores the images."""
    store = client.app.state.ctx.store
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    live = upload(client, series)["id"]
    shutil.rmtree(store.data_dir / "trash" / sid / "ct")  # as the put-back of such a restore left it
    assert delete_study(client, live).status_code == 200
    r = client.post(f"/api/deleted-studies/{sid}/restore")
    assert r.status_code == 409 and "images are not kept" in r.json()["detail"], r.text
    assert sorted(d["id"] for d in client.get("/api/deleted-studies").json()) == sorted([sid, live])
    assert sorted((store.data_dir / "trash" / sid).iterdir()) == sorted(
        store.data_dir / "trash" / sid / n for n in ("cache", trash.RECORD, trash.VERSIONS)
    )
    assert client.post(f"/api/deleted-studies/{live}/restore").status_code == 200
    assert client.get(f"/api/studies/{live}/image/axial/5").status_code == 200


def _restore_thread(
    store: Store, study_id: str, outcome: list[Any], done: threading.Event | None = None
) -> threading.Thread:
    """`sarcoscope studies restore` of `study_id` on `store` (the restorer beside the server), to run in a
    thread: the restored study, or the exception it raised, goes into `outcome`; `done` is set at its end."""

    def restore() -> None:
        try:
            outcome.append(trash.restore(store, study_id, cli_actor()))
        except BaseException as exc:  # the test's answer, not the thread's traceback
            outcome.append(exc)
        if done is not None:
            done.set()

    return threading.Thread(target=restore)


def test_a_restore_beside_a_starting_server_keeps_its_images_from_a_stopped_restores_put_back(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore of a deletion kept without its images (test above) was killed before its refusal put the
    entry back: the next start puts it back, taking back the series' folder when no study holds the series.
    It looked without the ct lock, so `sarcoscope studies restore` of the other deletion of that series,
    beside the starting server, could move its images into that folder and commit meanwhile: the start then
    took them into the first deletion's entry, and the study was restored with its images nowhere (erased
    with that deletion). The start holds the ct lock from its look to its put-back: the restore waits, and
    restores the study with its images."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).status_code == 200
        live = upload(client, series)["id"]
        shutil.rmtree(data / "trash" / sid / "ct")  # as the put-back of such a restore left it
        assert delete_study(client, live).status_code == 200
    _killed_at(monkeypatch, locks, "no_put_back")
    with pytest.raises(_Killed):  # taken out of place, found without its images, not put back
        trash.restore(store, sid, "admin")
    monkeypatch.undo()
    store.close()
    assert (data / "trash" / f".{sid}.restoring").is_dir() and (data / "trash" / live / "ct").is_dir()

    beside = Store(data)
    waited, outcome = threading.Event(), []
    _contended(monkeypatch, waited)

    command = _restore_thread(beside, live, outcome, done=waited)
    study_files = moves.study_files

    def after_the_starts_look(on: Store, study: Any) -> dict[str, Path]:
        if study.id == sid:  # move_in of the put-back, after its look at who holds the series
            command.start()
            assert waited.wait(60)  # the restore waits for the ct lock (or, unlocked, is done)
        return study_files(on, study)

    recover = trash.recover

    def recover_then_the_restore_ends(on: Store) -> list[str]:
        left = recover(on)
        assert command.ident is not None
        command.join()  # the start's removal of files no study owns beside a restore: the test below
        return left

    monkeypatch.setattr(moves, "study_files", after_the_starts_look)
    monkeypatch.setattr(trash, "recover", recover_then_the_restore_ends)
    app = _start_then_let_go(monkeypatch, data, command, waited)
    [restored] = outcome
    assert getattr(restored, "id", restored) == live
    with TestClient(app) as client:
        assert [d["id"] for d in client.get("/api/deleted-studies").json()] == [sid]
        shown = client.get(f"/api/studies/{live}/image/axial/5")
        assert shown.status_code == 200, shown.text
    its_files = beside.series_dir(beside.get_study(live))
    assert len(list(its_files.glob("*.dcm"))) == len(series) and not (data / "trash" / sid / "ct").exists()
    beside.close()
    app.state.ctx.store.close()


def _deleted_with_a_store_beside(tmp_path: Path, series: list[Path]) -> tuple[Path, str, Store]:
    """A data folder (tmp_path/data) whose one study, uploaded from `series`, is deleted and kept, its
    server's store closed: (the folder, the study's id, a Store on it as `sarcoscope studies restore`
    opens one)."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        sid = upload(client, series)["id"]
        assert delete_study(client, sid).status_code == 200
    app.state.ctx.store.close()
    return data, sid, Store(data)


def _started_beside(
    monkeypatch: pytest.MonkeyPatch,
    data: Path,
    restore: threading.Thread,
    paused: threading.Event,
    go: threading.Event,
) -> FastAPI:
    """The server started on `data` with `restore` (a _restore_thread) let run right after the start's look
    at the trash (`trash.recover`) until it says it is `paused`; `go` lets it on once the start is done (or
    failed); every monkeypatch of the test undone."""
    recover = trash.recover

    def then_the_restore(on: Store) -> list[str]:
        left = recover(on)
        restore.start()
        assert paused.wait(60)
        return left

    monkeypatch.setattr(trash, "recover", then_the_restore)
    return _start_then_let_go(monkeypatch, data, restore, go)


def _start_then_let_go(
    monkeypatch: pytest.MonkeyPatch, data: Path, restore: threading.Thread, go: threading.Event
) -> FastAPI:
    """The server started on `data`; then (even if the start failed) `go` set and `restore` (if it was
    started) waited for, and every monkeypatch of the test undone."""
    try:
        return create_app(WebSettings(data_dir=data))
    finally:
        go.set()
        if restore.ident is not None:
            restore.join()
        monkeypatch.undo()


@pytest.mark.parametrize("upload_too", [False, True], ids=["its-images", "its-uploads-series"])
def test_a_restore_beside_a_starting_server_keeps_the_files_it_moved_before_its_commit(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, upload_too: bool
) -> None:
    """`sarcoscope studies restore` beside a starting server, taking its entry after the start's recover
    looked at the trash, moved the study's files into place; before it committed its row the start removed
    them as files no study owns: the study was restored without its DICOM files, its decoded images
    (volume.json) and its upload's other series, and its deletion was gone. The start removes an unowned
    folder only when the lock its filler holds is free (never waiting): the restore's are left to it."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        if upload_too:  # B, the upload's last study: its deletion keeps the upload's folder
            a, sid, upload_id = _sibling_deleted(client, tmp_path)
        else:
            sid = upload(client, series)["id"]
        store = app.state.ctx.store
        images = sorted(p.name for p in store.series_dir(store.get_study(sid)).iterdir())
        assert delete_study(client, sid).status_code == 200
    store.close()
    assert upload_too == (data / "trash" / sid / "upload").is_dir()
    beside = Store(data)
    moved, go, outcome = threading.Event(), threading.Event(), []
    restore_rows = beside.restore_rows

    def paused_before_its_commit(*args: Any) -> None:  # its files moved into place
        moved.set()
        assert go.wait(60)
        restore_rows(*args)

    monkeypatch.setattr(beside, "restore_rows", paused_before_its_commit)

    # the trash looked at (the deletion kept, nobody working on it), then the restore moves its files
    app = _started_beside(monkeypatch, data, _restore_thread(beside, sid, outcome), moved, go)
    assert [getattr(r, "id", r) for r in outcome] == [sid]
    restored = beside.get_study(sid)
    assert sorted(p.name for p in beside.series_dir(restored).iterdir()) == images
    assert (beside.cache_dir(sid) / "volume.json").is_file()
    with TestClient(app) as client:
        assert [d["id"] for d in client.get("/api/deleted-studies").json()] == ([a] if upload_too else [])
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
        if upload_too:
            assert restored.upload_id == upload_id
            nine = next(
                s for s in client.get(f"/api/studies/{sid}/series").json() if "9.0" in s["description"]
            )
            r = client.post(f"/api/studies/{sid}/series", json={"series_uid": nine["series_uid"]})
            assert r.status_code == 201, r.text
    beside.close()
    app.state.ctx.store.close()


def test_a_restore_beside_a_starting_server_keeps_the_copy_it_is_making_across_file_systems(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore beside a starting server moving a study's decoded images to a cache/ on another file
    system copies them to `cache/.<id>.part` first: the start took that folder, named for no study, for
    nobody's and removed it mid-move, and the restore failed. A move's working files are locked as the
    folder they are of: the start leaves them to the restore, which restores the study."""
    data, sid, beside = _deleted_with_a_store_beside(tmp_path, series)
    entry, part = data / "trash" / f".{sid}.restoring", data / "cache" / f".{sid}.part"
    replace, copytree = os.replace, shutil.copytree
    copying, go, outcome = threading.Event(), threading.Event(), []

    def across_file_systems(src: Any, dst: Any) -> None:
        if Path(src).parent == entry:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    def paused_in_the_copy(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        copied = copytree(src, dst, *args, **kwargs)
        if Path(dst) == part:
            assert part.is_dir()  # the copy is there, under its working name, while the start runs
            copying.set()
            assert go.wait(60)
        return copied

    monkeypatch.setattr(os, "replace", across_file_systems)
    monkeypatch.setattr(shutil, "copytree", paused_in_the_copy)

    app = _started_beside(monkeypatch, data, _restore_thread(beside, sid, outcome), copying, go)
    assert [getattr(r, "id", r) for r in outcome] == [sid]
    with TestClient(app) as client:
        assert client.get("/api/deleted-studies").json() == []
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    beside.close()
    app.state.ctx.store.close()


def test_a_restore_beside_a_starting_server_that_fails_after_the_starts_look_leaves_it_starting(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's removal found the files of a `sarcoscope studies restore` beside it in place, no study's
    yet; the restore then failed (here its commit) and put them back in its entry before the removal took
    their lock: the start must not fail on folders gone meanwhile, and the deletion stays kept, whole."""
    data, sid, beside = _deleted_with_a_store_beside(tmp_path, series)
    moved, go, outcome = threading.Event(), threading.Event(), []

    def failing_at_its_commit(*args: Any) -> None:  # its files moved into place
        moved.set()
        assert go.wait(60)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(beside, "restore_rows", failing_at_its_commit)

    command = _restore_thread(beside, sid, outcome)
    unowned = Store._unowned

    def the_restore_fails_after_the_look(on: Store) -> list[Path]:
        command.start()
        assert moved.wait(60)
        found = unowned(on)
        go.set()
        command.join()
        return found

    monkeypatch.setattr(Store, "_unowned", the_restore_fails_after_the_look)
    app = _start_then_let_go(monkeypatch, data, command, go)
    [failed] = outcome
    assert isinstance(failed, OSError)
    with TestClient(app) as client:
        assert [d["id"] for d in client.get("/api/deleted-studies").json()] == [sid]
        assert client.post(f"/api/deleted-studies/{sid}/restore").status_code == 200
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    beside.close()
    app.state.ctx.store.close()


def test_a_restore_beside_a_starting_server_is_left_to_finish_by_its_recover(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's start (recover) took every .<id>.restoring for one a killed restore left: it put the
    entry of `sarcoscope studies restore` (its own process, here a second Store), running meanwhile, back
    into the trash, and the restore then committed the study without its images, listed as deleted too. The
    restore holds its study's lock: the start leaves its entry (logged) and the files no study owns (the
    restore's, moved out before its commit), and the restore completes."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        sid, edited = _edited(client, series)
        assert delete_study(client, sid).status_code == 200
    app.state.ctx.store.close()
    beside = Store(data)
    renamed, go, outcome = threading.Event(), threading.Event(), []
    restore_rows = beside.restore_rows

    def paused_before_its_commit(*args: Any) -> None:  # renamed, its files moved out
        renamed.set()
        assert go.wait(60)
        restore_rows(*args)

    monkeypatch.setattr(beside, "restore_rows", paused_before_its_commit)

    command = _restore_thread(beside, sid, outcome)
    command.start()
    try:
        assert renamed.wait(60) and (data / "trash" / f".{sid}.restoring").is_dir()
        with caplog.at_level("WARNING", logger="sarcoscope.store.trash"):
            app = create_app(WebSettings(data_dir=data))
    finally:
        go.set()
        command.join()
    monkeypatch.undo()
    assert [getattr(r, "id", r) for r in outcome] == [sid]
    assert any(f"trash/.{sid}.restoring/ is left" in r.getMessage() for r in caplog.records)
    assert not [p for p in (data / "trash").iterdir() if sid in p.name]
    with TestClient(app) as client:
        assert client.get("/api/deleted-studies").json() == []
        np.testing.assert_array_equal(get_labels(client, sid)[0], edited)
        assert client.get(f"/api/studies/{sid}/image/axial/5").status_code == 200
    beside.close()
    app.state.ctx.store.close()


class _NoticingLock:
    """A thread lock that sets `seen` when it has to wait for another holder (here: another thread's upload
    lock of the same Store)."""

    def __init__(self, seen: threading.Event) -> None:
        self._lock, self._seen = threading.Lock(), seen

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self._seen.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _waits_noticed(monkeypatch: pytest.MonkeyPatch, store: Store, seen: threading.Event) -> None:
    """`seen` is set when a flock, or one of `store`'s upload locks, has to wait for another holder."""
    _contended(monkeypatch, seen)
    monkeypatch.setattr(store, "_upload_locks", [_NoticingLock(seen) for _ in store._upload_locks])


def _sibling_deleted(client: TestClient, tmp_path: Path) -> tuple[str, str, str]:
    """An exam uploaded (its portal-venous series opened as study B), its arterial series opened from it as
    study A (of another StudyUID, whose ct lock never waits for B's), and A deleted while B held the upload:
    A's deletion is kept without the upload's files. Returns A, B and the upload's id."""
    folder = tmp_path / "exam"
    files = write_exam_of_two_studies(folder)
    every = [f for paths in files.values() for f in paths]
    r = client.post(
        "/api/studies", files=[("files", ("exam.zip", zip_bytes(every, folder), "application/zip"))]
    )
    assert r.status_code == 201, r.text
    b = r.json()
    arterial = {"series_uid": b["series"][1]["series_uid"]}
    r = client.post(f"/api/studies/{b['id']}/series", json=arterial)
    assert r.status_code == 201, r.text
    a = r.json()["id"]
    store = client.app.state.ctx.store
    assert store.ct_bucket(store.get_study(b["id"]).study_uid) != store.ct_bucket(
        store.get_study(a).study_uid
    )
    assert delete_study(client, a).status_code == 200
    assert not (store.data_dir / "trash" / a / "upload").exists()
    upload_id = store.get_study(b["id"]).upload_id
    assert upload_id is not None
    return a, b["id"], upload_id


def _upload_agrees(client: TestClient, a: str, b: str, upload_id: str, *, kept: bool) -> None:
    """Restored study A has the upload (`kept`: it is in its place, B's deletion kept without it, and its
    9 mm series opens from A) or has none (B's deletion keeps it), never an upload whose files are in B's
    deletion (erased with it)."""
    store = client.app.state.ctx.store
    had = (store.get_study(a).upload_id, store.upload_dir(upload_id).is_dir())
    with_b = (store.data_dir / "trash" / b / "upload").is_dir()
    assert (*had, with_b) == ((upload_id, True, False) if kept else (None, False, True))
    listed = client.get(f"/api/studies/{a}/series").json()
    if kept:
        nine = next(s for s in listed if s["description"] == "Abdomen 9.0")
        r = client.post(f"/api/studies/{a}/series", json={"series_uid": nine["series_uid"]})
        assert r.status_code == 201, r.text
    else:
        assert listed == []


@contextlib.contextmanager
def _server_and_restorer(tmp_path: Path, beside: bool) -> Iterator[tuple[TestClient, Store, Store]]:
    """A server's client and Store, and the Store a restore runs in: the server's, or (`beside`) a second
    one on the same data folder, as `sarcoscope studies restore` beside the server has."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    store = app.state.ctx.store
    restorer = Store(data) if beside else store
    with TestClient(app) as client:
        yield client, store, restorer
    if beside:
        restorer.close()
    store.close()


@pytest.mark.parametrize("beside", [False, True], ids=["in-the-server", "beside-the-server"])
def test_a_restore_during_the_deletion_of_its_uploads_last_study_keeps_the_upload_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    """Study A of an upload restored (by the server, or `sarcoscope studies restore` beside it: a second
    Store) while B, the upload's last live study, was deleted: the restore found the upload in its place and
    kept it, the deletion (its check before A's rows were committed) then moved it into B's entry, and A
    was restored pointing at an upload it could no longer open, which erasing B's deletion would erase. The
    restore holds the upload's lock from its look to its commit: the deletion waits and leaves the upload."""
    with _server_and_restorer(tmp_path, beside) as (client, store, restorer):
        a, b, upload_id = _sibling_deleted(client, tmp_path)
        waited, answers = threading.Event(), []
        _waits_noticed(monkeypatch, store, waited)

        def delete_meanwhile() -> None:
            answers.append(delete_study(client, b))
            waited.set()

        deleting = threading.Thread(target=delete_meanwhile)
        restore_rows = restorer.restore_rows

        def after_the_restores_look(*args: Any) -> None:
            deleting.start()
            assert waited.wait(60)  # the deletion waits for the upload's lock (or, unlocked, is done)
            restore_rows(*args)

        monkeypatch.setattr(restorer, "restore_rows", after_the_restores_look)
        restored = trash.restore(restorer, a, cli_actor())
        deleting.join()
        monkeypatch.undo()
        [answer] = answers
        assert answer.status_code == 200 and restored.upload_id == upload_id, answer.text
        _upload_agrees(client, a, b, upload_id, kept=True)


@pytest.mark.parametrize("beside", [False, True], ids=["in-the-server", "beside-the-server"])
def test_a_restore_during_the_deletion_of_its_uploads_last_study_leaves_the_upload_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    """The deletion of B, the upload's last live study, found no study of it left and was moving the upload
    into B's entry while study A of the upload was restored: the restore, finding the upload still in its
    place, kept it, and A was restored pointing at an upload in B's deletion. The restore waits for the
    upload's lock and restores A without the upload, which B's deletion keeps."""
    with _server_and_restorer(tmp_path, beside) as (client, store, restorer):
        a, b, upload_id = _sibling_deleted(client, tmp_path)
        waited, outcome = threading.Event(), []
        _waits_noticed(monkeypatch, store, waited)

        restoring = _restore_thread(restorer, a, outcome, done=waited)
        move_dir = moves.move_dir

        def after_the_deletions_look(src: Path, dst: Path) -> None:
            if dst.name == "upload" and dst.parent.name == f".{b}.deleting":
                restoring.start()
                assert waited.wait(60)  # the restore waits for the upload's lock (or, unlocked, is done)
            move_dir(src, dst)

        monkeypatch.setattr(moves, "move_dir", after_the_deletions_look)
        assert delete_study(client, b).status_code == 200
        restoring.join()
        monkeypatch.undo()
        [restored] = outcome
        assert getattr(restored, "upload_id", restored) is None
        _upload_agrees(client, a, b, upload_id, kept=False)


def test_a_restore_beside_a_starting_server_keeps_the_upload_it_found_from_a_stopped_restores_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore of B, the upload's last study, stopped after moving the upload out (a kill): the next
    start puts B back, with the upload when no study of it is left. `sarcoscope studies restore` of A (of
    the same upload) beside the starting server had found the upload in its place and kept it; the start
    (A's rows not yet committed) moved it into B's entry, and A was restored pointing at it there. The start
    waits for the restore's upload lock and leaves the upload to A."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        a, b, upload_id = _sibling_deleted(client, tmp_path)
        assert delete_study(client, b).status_code == 200
    store = app.state.ctx.store
    _killed_at(monkeypatch, store, "restore_rows")
    with pytest.raises(_Killed):  # B's files moved out, the upload among them; nothing put back
        trash.restore(store, b, "admin")
    monkeypatch.undo()
    store.close()
    assert store.upload_dir(upload_id).is_dir() and (data / "trash" / f".{b}.restoring").is_dir()

    beside = Store(data)
    looked, waited, outcome = threading.Event(), threading.Event(), []
    _contended(monkeypatch, waited)
    restore_rows = beside.restore_rows

    def after_the_restores_look(*args: Any) -> None:
        looked.set()
        assert waited.wait(60)  # the start waits for the upload's lock (or, unlocked, is done)
        restore_rows(*args)

    monkeypatch.setattr(beside, "restore_rows", after_the_restores_look)

    command = _restore_thread(beside, a, outcome)
    command.start()
    try:
        assert looked.wait(60)
        app = create_app(WebSettings(data_dir=data))
    finally:
        waited.set()
        command.join()
    monkeypatch.undo()
    [restored] = outcome
    assert getattr(restored, "upload_id", restored) == upload_id
    with TestClient(app) as client:
        assert [d["id"] for d in client.get("/api/deleted-studies").json()] == [b]
        _upload_agrees(client, a, b, upload_id, kept=True)
    beside.close()
    app.state.ctx.store.close()


def test_a_restore_beside_a_starting_server_finds_the_upload_a_stopped_restore_is_finished_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore of B, the upload's last study, committed, but power lost undid its move of the upload out
    of its entry: the next start moves it out. `sarcoscope studies restore` of A (of the same upload) beside
    the starting server, looking before that move, found no upload and restored A without it, for good,
    though B holds it. The restore waits for the start's upload lock and finds the upload in its place."""
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as client:
        a, b, upload_id = _sibling_deleted(client, tmp_path)
        assert delete_study(client, b).status_code == 200
    store = app.state.ctx.store
    restoring = _restore_killed_before_its_entry_goes(store, b, monkeypatch)
    store.close()
    store.upload_dir(upload_id).rename(restoring / "upload")  # the rename the disk had not written

    beside = Store(data)
    waited, outcome = threading.Event(), []
    _contended(monkeypatch, waited)

    command = _restore_thread(beside, a, outcome, done=waited)
    move_out = moves.move_out

    def after_the_starts_look(entry: Path, *args: Any) -> None:
        if entry == restoring:
            command.start()
            assert waited.wait(60)  # the restore waits for the upload's lock (or, unlocked, is done)
        move_out(entry, *args)

    monkeypatch.setattr(moves, "move_out", after_the_starts_look)
    try:
        app = create_app(WebSettings(data_dir=data))
    finally:
        waited.set()
        if command.is_alive():
            command.join()
    monkeypatch.undo()
    [restored] = outcome
    assert getattr(restored, "upload_id", restored) == upload_id
    with TestClient(app) as client:
        assert client.get("/api/deleted-studies").json() == []
        _upload_agrees(client, a, b, upload_id, kept=True)
    beside.close()
    app.state.ctx.store.close()
