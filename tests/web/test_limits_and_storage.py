"""Request body limits enforced while streaming, owner-only data at rest, and no files without an owner."""

from __future__ import annotations

import asyncio
import gzip
import io
import itertools
import json
import os
import stat
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from test_api import delete_study, get_labels, put_patient, segmented, upload
from web_synth import multipart, write_series, zip_bytes

from sarcoscope.web import WebSettings, create_app

CHUNK = 64 * 1024


def _asgi_request(
    app: FastAPI, method: str, path: str, chunks: Iterable[bytes], headers: dict[str, str], query: str = ""
) -> tuple[int, dict, int]:
    """Send a request body chunk by chunk straight to the app, as a server does with a chunked upload.

    Returns (status, JSON body, number of chunks the app read): unlike TestClient, nothing is read
    ahead, so the count shows where the app stopped reading.
    """
    source = iter(chunks)
    consumed = 0
    response: dict = {"status": None, "body": b""}

    async def receive() -> dict:
        nonlocal consumed
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            response["status"] = message["status"]
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver"), *((k.encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return response["status"], json.loads(response["body"]), consumed


def _endless(first: bytes = b"") -> Iterator[bytes]:
    """A body that never ends (a client streaming forever): the server must stop reading it."""
    return itertools.chain([first] if first else [], itertools.repeat(b"\0" * CHUNK))


def test_a_chunked_label_save_over_its_size_is_refused_while_streaming(
    client: TestClient, series: list[Path]
) -> None:
    sid, v1 = segmented(client, series)
    expected = 3 * 96 * 96  # the base version's (n, y, x)
    app = client.app
    path = f"/api/studies/{sid}/labels"
    octets = {"content-type": "application/octet-stream"}
    status, body, consumed = _asgi_request(app, "POST", path, _endless(), octets, "base_version=1")
    assert status == 413 and "the body is longer" in body["detail"]
    assert consumed <= expected // CHUNK + 2  # stopped within a chunk of the expected size
    # A declared Content-Length over the size is refused before a single byte is read.
    declared = {**octets, "content-length": str(expected + 1)}
    status, body, consumed = _asgi_request(app, "POST", path, _endless(), declared, "base_version=1")
    assert status == 413 and consumed == 0 and f"Expected {expected} bytes" in body["detail"]
    huge = {**octets, "content-length": str(600 * 1024**2)}  # over any label save: the middleware answers
    status, body, consumed = _asgi_request(app, "POST", path, _endless(), huge, "base_version=1")
    assert status == 413 and consumed == 0 and "larger than this server accepts" in body["detail"]
    assert [v["version"] for v in client.get(f"/api/studies/{sid}/versions").json()] == [v1["version"]]


def test_a_chunked_upload_over_the_limit_is_refused_while_streaming(client: TestClient) -> None:
    limit = client.app.state.ctx.settings.max_upload_bytes  # 8 MiB in the fixture
    head = (
        b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
        b"Content-Type: application/dicom\r\n\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=b"}
    status, body, consumed = _asgi_request(client.app, "POST", "/api/studies", _endless(head), headers)
    assert status == 413 and "--max-upload-mb" in body["detail"]
    assert consumed <= limit // CHUNK + 2
    data_dir = client.app.state.ctx.store.data_dir
    assert list((data_dir / "tmp").iterdir()) == [] and client.get("/api/studies").json() == []


def test_json_bodies_are_small(client: TestClient, series: list[Path]) -> None:
    sid = upload(client, series)["id"]
    headers = {"content-type": "application/json"}
    path = f"/api/studies/{sid}/selection"
    status, body, consumed = _asgi_request(client.app, "PUT", path, _endless(b'{"mode": "'), headers)
    assert status == 413 and "small JSON object" in body["detail"] and consumed <= 64 * 1024 // CHUNK + 2
    assert client.get(f"/api/studies/{sid}").json()["selection"] is None


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_data_at_rest_is_owner_only_whatever_the_umask(tmp_path: Path, series: list[Path]) -> None:
    old_umask = os.umask(0o002)  # as permissive as a shared group setup
    try:
        app = create_app(WebSettings(data_dir=tmp_path / "data"))
        with TestClient(app) as c:
            zipped = [("files", ("study.zip", zip_bytes(series), "application/zip"))]
            sid = c.post("/api/studies", files=zipped).json()["id"]  # extracted files come from the zip
            c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
            assert c.post(f"/api/studies/{sid}/segment", json={}).status_code == 200
            assert c.get(f"/api/studies/{sid}/export/nifti").status_code == 200
            modes = _modes(tmp_path / "data")  # while the database's -wal and -shm files exist
        app.state.ctx.store.close()
    finally:
        os.umask(old_umask)
    names = set(modes)
    assert {"sarcoscope.db", "sarcoscope.db-wal", "ct", "cache", "tmp", f"cache/{sid}/hu.npy"} <= names
    assert sum(name.endswith(".dcm") for name in names) == len(series)
    loose = {name: oct(mode) for name, mode in modes.items() if mode not in (0o700, 0o600)}
    assert loose == {}
    folders = {name for name in names if (tmp_path / "data" / name).is_dir()}
    assert all(modes[name] == 0o700 for name in folders) and all(
        modes[name] == 0o600 for name in names - folders
    )


def test_an_existing_world_readable_data_folder_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "ct").mkdir(parents=True)
    data.chmod(0o755)
    (data / "ct").chmod(0o755)
    (data / "sarcoscope.db").touch(mode=0o644)
    create_app(WebSettings(data_dir=data)).state.ctx.store.close()
    assert {name: oct(m) for name, m in _modes(data).items() if name in (".", "ct", "sarcoscope.db")} == {
        ".": "0o700",
        "ct": "0o700",
        "sarcoscope.db": "0o600",
    }


def test_orphans_of_an_interrupted_upload_are_removed_at_start(tmp_path: Path, series: list[Path]) -> None:
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as c:
        study = upload(c, series)
    app.state.ctx.store.close()

    def stored(p: Path) -> bool:  # not the data folder's own files, nor its lock files (buckets, no data)
        return p.is_file() and p.parent.name not in ("data", "locks")

    kept = sorted(p for p in data.rglob("*") if stored(p))
    study_uid = next(p.parent.name for p in (data / "ct").glob(f"*/{study['series_uid']}"))
    orphans = [
        data / "tmp" / "0f" / "part000001.dcm",  # an upload killed while it was received
        data / "ct" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm",  # files moved in, row never committed
        data / "ct" / study_uid / "9.9" / "9.9.1.dcm",  # another series of a stored study, no row
        data / "cache" / ("ab" * 16) / "hu.npy",
        data / "cache" / study["id"] / ".hu.npy.123.tmp",  # inside a stored study's cache: kept
    ]
    for path in orphans:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PHI")
    outside = tmp_path / "elsewhere"
    (outside / "9.8").mkdir(parents=True)
    (outside / "9.8" / "keep.txt").write_text("not the server's")
    (data / "ct" / "9.7").symlink_to(outside)  # a link is removed, never followed
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as c:
        assert c.get(f"/api/studies/{study['id']}/image/axial/3").status_code == 200
    app.state.ctx.store.close()
    remaining = sorted(p for p in data.rglob("*") if stored(p))
    assert [p for p in orphans if p.exists()] == [orphans[4]]  # inside a study's own cache: not an orphan
    orphans[4].unlink()
    assert sorted(p for p in remaining if p != orphans[4]) == kept
    assert not (data / "ct" / "1.2.3").exists() and not (data / "cache" / ("ab" * 16)).exists()
    assert not (data / "ct" / "9.7").is_symlink() and (outside / "9.8" / "keep.txt").exists()


def test_an_upload_that_fails_half_way_leaves_nothing(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from sarcoscope.web import volumes

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(volumes, "_write_cache", disk_full)  # after the CT files were moved in
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app, raise_server_exceptions=False) as c:
        refused = c.post("/api/studies", files=multipart(series))
        assert refused.status_code == 507 and "No space left on device" in refused.json()["detail"]
        assert c.get("/api/studies").json() == []
    app.state.ctx.store.close()
    # not even an empty folder named by the Study Instance UID
    assert [p for d in ("ct", "cache", "tmp") for p in (data / d).iterdir()] == []


def test_a_full_disk_while_receiving_an_upload_is_507_and_leaves_nothing(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the third file of the upload is written: 507 by its reason (no server folder in
    it), not a 500 with a traceback, and neither the files received before nor a study are left."""
    import errno

    from sarcoscope.store.files import open_private
    from sarcoscope.web import upload as upload_module

    opened: list[Path] = []

    class FillsUp(io.BufferedWriter):
        def write(self, data: Any) -> int:
            if len(opened) >= 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(opened[-1]))
            return super().write(data)

    def open_filling(path: Path) -> io.BufferedWriter:
        opened.append(path)
        return FillsUp(open_private(path).detach())

    monkeypatch.setattr(upload_module, "open_private", open_filling)
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app, raise_server_exceptions=False) as c:
        refused = c.post("/api/studies", files=multipart(series))
        assert refused.status_code == 507, refused.text
        detail = refused.json()["detail"]
        assert "No space left on device" in detail and str(data) not in detail and "part0" not in detail
        assert c.get("/api/studies").json() == []
    app.state.ctx.store.close()
    assert len(opened) == 3 and not any(p.exists() for p in opened)
    assert [p for d in ("ct", "cache", "tmp", "uploads") for p in (data / d).iterdir()] == []


def test_deleting_a_study_deletes_every_file_of_it(
    client: TestClient, series: list[Path], tmp_path: Path
) -> None:
    sid, _ = segmented(client, series)
    other = upload(client, write_series(tmp_path / "other", seed=5, patient_id="PAT-002"))
    data_dir = client.app.state.ctx.store.data_dir
    assert len(list((data_dir / "ct").iterdir())) == 2
    assert delete_study(client, sid).status_code == 200
    assert [p.name for p in (data_dir / "cache").iterdir()] == [other["id"]]
    (left,) = (data_dir / "ct").iterdir()  # the deleted study's StudyUID folder went with its series
    assert [p.name for p in left.iterdir()] == [other["series_uid"]]
    assert list((data_dir / "tmp").iterdir()) == []


def test_a_deleted_study_leaves_nothing_readable_in_the_database_file(
    client: TestClient, tmp_path: Path
) -> None:
    store = client.app.state.ctx.store
    if store.engine.dialect.name != "sqlite":
        pytest.skip("the database file is SQLite's")

    def default_off(connection: object, _record: object) -> None:  # as most SQLite builds are
        connection.execute("PRAGMA secure_delete=OFF")  # type: ignore[attr-defined]

    event.listen(store.engine, "connect", default_off, insert=True)  # before the store's own settings
    store.engine.dispose()
    files = write_series(tmp_path / "s", patient_id="PATXYZ-4711")
    sid, _ = segmented(client, files)
    put_patient(client, sid, {"height_cm": 181.5, "weight_kg": 77.0, "sex": "M"})
    assert delete_study(client, sid).status_code == 200
    database = b"".join(p.read_bytes() for p in store.data_dir.glob("sarcoscope.db*"))
    for text in (b"PATXYZ-4711", b"synthetic", b"181.5", b"20240131"):  # ID, description, height, date
        assert database.count(text) == 0, text


def test_downloads_too_large_for_memory_are_built_in_the_data_folder(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    folders: list[object] = []
    temporary_file, spooled_file = tempfile.TemporaryFile, tempfile.SpooledTemporaryFile

    def recorded(*args: object, **kwargs: object) -> object:
        folders.append(kwargs.get("dir"))
        return temporary_file(*args, **kwargs)  # type: ignore[call-overload]

    def spills(*args: object, **kwargs: object) -> object:  # every download spills out of memory
        return spooled_file(*args, **{**kwargs, "max_size": 1})  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", spills)
    sid, _ = segmented(client, series)
    labels, version, _ = get_labels(client, sid)
    labels[0, :4, :4] = 1  # a correction: training data
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": version}, content=labels.tobytes())
    assert r.status_code == 201, r.text
    assert client.get(f"/api/studies/{sid}/dicom").status_code == 200
    assert client.get("/api/training-data").status_code == 200
    tmp = client.app.state.ctx.store.data_dir / "tmp"
    assert len(folders) == 2 and all(Path(str(f)) == tmp for f in folders), folders


def test_a_study_deleted_while_its_viewer_volume_is_written_leaves_no_file(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst interleaving: the background job writes the viewer volume (the patient's whole CT) only after
    # the study's rows and files were deleted, into a cache folder it recreates.
    from sarcoscope.store import NotFoundError
    from sarcoscope.store.files import private_dir
    from sarcoscope.web import volumes

    store = client.app.state.ctx.store
    write = volumes._write_viewer_nifti

    def late_write(path: Path, volume: object) -> None:
        for _ in range(500):  # until the study is gone (at most 5 s)
            try:
                store.get_study(path.parent.name)
            except NotFoundError:
                break
            time.sleep(0.01)
        private_dir(path.parent)
        write(path, volume)  # type: ignore[arg-type]

    monkeypatch.setattr(volumes, "_write_viewer_nifti", late_write)
    sid = upload(client, series)["id"]
    assert delete_study(client, sid).status_code == 200
    client.app.state.ctx.jobs.wait()
    assert not (store.data_dir / "cache" / sid).exists()
    assert _left_outside_the_trash(store, sid) == []


def test_a_study_deleted_while_a_request_writes_its_viewer_volume_leaves_no_file(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As above, but the viewer's own request writes the volume (the one made after the upload was not kept):
    # the deletion waited for background work only, so the request's file, finished after the study's
    # folder was emptied, stayed until the server's next start.
    from sarcoscope.store import NotFoundError
    from sarcoscope.store.files import private_dir
    from sarcoscope.web import volumes

    store, ctx = client.app.state.ctx.store, client.app.state.ctx
    sid = upload(client, series)["id"]
    ctx.jobs.wait()
    (store.cache_dir(sid) / volumes.VIEWER_NIFTI).unlink()
    write, writing = volumes._write_viewer_nifti, threading.Event()

    def late_write(path: Path, volume: object) -> None:
        writing.set()
        for _ in range(500):  # until the study's rows are gone (at most 5 s)
            try:
                store.get_study(sid)
            except NotFoundError:
                break
            time.sleep(0.01)
        for _ in range(100):  # and its folder (unless the deletion waits for this write)
            if not path.parent.exists():
                break
            time.sleep(0.01)
        private_dir(path.parent)  # as a write that ends after the folder was emptied, before it is removed
        write(path, volume)  # type: ignore[arg-type]

    monkeypatch.setattr(volumes, "_write_viewer_nifti", late_write)
    answer: dict[str, Any] = {}
    viewer = TestClient(client.app, raise_server_exceptions=False)
    request = threading.Thread(
        target=lambda: answer.update(r=viewer.get(f"/api/studies/{sid}/volume.nii.gz"))
    )
    request.start()
    assert writing.wait(10)
    assert delete_study(client, sid).status_code == 200
    request.join(10)
    assert answer["r"].status_code == 200  # asked before the deletion: the volume it asked for
    assert len(gzip.decompress(answer["r"].content)) > 0
    assert _left_outside_the_trash(store, sid) == []


@pytest.mark.parametrize("path", ["image/axial/5", "hu/5", "body/5", "volume.nii.gz", "dicom?first=0&last=2"])
def test_a_request_whose_study_is_deleted_meanwhile_answers_404(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The study is deleted right after the request looked it up, before it reads the study's files: not
    a 409, 422 or 500 about missing files, but the 404 of a study that is gone; and nothing of it is left."""
    from sarcoscope.store import NotFoundError

    store, ctx = client.app.state.ctx.store, client.app.state.ctx
    sid = upload(client, series)["id"]
    ctx.jobs.wait()
    ctx.volumes.drop(sid)  # as after a restart: read from its folder
    get = store.get_study
    deletion = threading.Thread(target=lambda: store.delete_study(sid, "someone else"))

    def deleted_after_this(study_id: str) -> object:
        study = get(study_id)
        monkeypatch.setattr(store, "get_study", get)
        deletion.start()
        for _ in range(500):  # until its rows are gone (at most 5 s)
            try:
                get(study_id)
            except NotFoundError:
                break
            time.sleep(0.01)
        return study

    monkeypatch.setattr(store, "get_study", deleted_after_this)
    r = TestClient(client.app, raise_server_exceptions=False).get(f"/api/studies/{sid}/{path}")
    deletion.join(10)
    assert r.status_code == 404 and "No study" in r.json()["detail"], r.text
    assert _left_outside_the_trash(store, sid) == []


def test_an_encrypted_zip_is_refused_with_a_reason(client: TestClient, series: list[Path]) -> None:
    data = bytearray(zip_bytes(series[:2]))
    # Mark every entry encrypted (general-purpose flag bit 0) in its local and central headers, as a
    # password-protected zip has them.
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + flag_offset] |= 0x01
            start += 4
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        assert all(info.flag_bits & 0x1 for info in zf.infolist())
    r = client.post("/api/studies", files=[("files", ("locked.zip", bytes(data), "application/zip"))])
    assert r.status_code == 422 and "encrypted" in r.json()["detail"] and "locked.zip" in r.json()["detail"]
    assert client.get("/api/studies").json() == []


@pytest.mark.parametrize("query", ["%", "_", "%%", "\\"])
def test_search_wildcards_do_not_list_every_study(client: TestClient, series: list[Path], query: str) -> None:
    upload(client, series)
    r = client.get("/api/studies", params={"q": query})
    assert r.status_code == 200 and r.json() == []


def test_label_saves_keep_exact_bytes(client: TestClient, series: list[Path]) -> None:
    """The streamed save stores exactly the bytes sent, whatever their chunking."""
    sid, _ = segmented(client, series)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(3, 96, 96), dtype=np.uint8)
    pieces = [labels.tobytes()[i : i + 1000] for i in range(0, labels.size, 1000)]
    status, body, _ = _asgi_request(
        client.app,
        "POST",
        f"/api/studies/{sid}/labels",
        pieces,
        {"content-type": "application/octet-stream"},
        "base_version=1",
    )
    assert status == 201 and body["version"] == 2
    stored = client.app.state.ctx.store.load_labels(sid, 2).labels
    np.testing.assert_array_equal(stored, labels)


def test_a_server_file_that_cannot_be_read_or_written_is_said_without_its_path(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no handler names the failure, an OSError of a server file was a 500 whose traceback (uvicorn's
    log) named the file: for a stored slice gone from the disk, ct/<StudyInstanceUID>/<SeriesInstanceUID>/
    <SOPInstanceUID>.dcm, the patient's UIDs. It is now said by the system's reason only, in the answer and
    the log (with the code's frames), and a full disk under a download is 507, not 500."""
    import errno
    import logging

    from sarcoscope.web.api import downloads as api_module

    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app, raise_server_exceptions=False) as c:
        study = upload(c, series)
        stored = sorted((data / "ct").rglob("*.dcm"))
        stored[0].unlink()  # a disk error, a hand that tidied the data folder
        with caplog.at_level(logging.ERROR):
            gone = c.get(f"/api/studies/{study['id']}/dicom", params={"first": 0, "last": len(stored) - 1})
        assert gone.status_code == 500 and "No such file or directory" in gone.json()["detail"]
        logged = caplog.text + gone.text
        assert study["series_uid"] not in logged and str(data) not in logged
        assert "download_dicom" in caplog.text  # the frames are there to find where

        class Full(io.BytesIO):
            def write(self, _: Any) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(api_module, "_download_buffer", lambda ctx: Full())
        full = c.get(f"/api/studies/{study['id']}/dicom", params={"first": 1, "last": 2})
        assert full.status_code == 507 and "No space left on device" in full.json()["detail"]
    app.state.ctx.store.close()


def _left_outside_the_trash(store: Any, sid: str) -> list[Path]:
    """The deleted study's files still where the live studies' are (its trash entry holds what it had)."""
    trash = store.data_dir / "trash"
    return [p for p in store.data_dir.rglob("*") if sid in str(p) and not p.is_relative_to(trash)]


def test_background_work_that_fails_on_a_file_logs_no_path(caplog: pytest.LogCaptureFixture) -> None:
    """A background job (a study's viewer volume, a QC picture) that failed on a file logged the system's
    error, whose path names the study's files by their DICOM UIDs, into the server's debug log. It logs the
    job and the reason only."""
    from sarcoscope.web.background import BackgroundJobs

    path = "/data/ct/1.2.840.99.1/1.2.840.99.2/1.2.840.99.3.dcm"

    def fails() -> None:
        raise FileNotFoundError(2, "No such file or directory", path)

    jobs = BackgroundJobs()
    with caplog.at_level("DEBUG", logger="sarcoscope.web.background"):
        jobs.start("viewer volume of 0123", fails)
        jobs.wait()
    [logged] = [r.getMessage() for r in caplog.records]
    assert logged.startswith(
        "viewer volume of 0123 not done in the background (FileNotFoundError: No such file or directory)\n"
    )
    assert "in fails" in logged and "1.2.840.99" not in logged, logged
