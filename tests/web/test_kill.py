"""`sarcoscope serve` killed with SIGKILL in the middle of an upload and of a label save, then restarted:
no orphan files, no saved label version lost or damaged, the database consistent."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarcoscope.imaging import CTMetadata, write_dicom_series

SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`sarcoscope serve` in a child process on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SARCOSCOPE_")}
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "sarcoscope.cli", "serve", "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 240  # a readiness wait on a loaded machine, not a speed check
        while True:
            try:
                if self.request("GET", "/api/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"server did not start: {self.process.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, payload: object = None) -> object:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.request(method, path, body, {"Content-Type": "application/json"})
        assert status < 300, (status, data[:500])
        return json.loads(data)

    def labels(self, sid: str, version: int) -> bytes:
        status, data = self.request("GET", f"/api/studies/{sid}/labels?version={version}")
        assert status == 200, data[:500]
        return gzip.decompress(data)  # sent gzip-encoded; http.client does not decode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process.stderr.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        self.process.stderr.close()


def _multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for f in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{f.name}"\r\n'
            "Content-Type: application/dicom\r\n\r\n".encode()
            + f.read_bytes()
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _series(folder: Path, n_slices: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, -900, size=(n_slices, 128, 128)).astype(np.int16)  # air around...
    hu[:, 20:108, 10:118] = 40  # ...a body, so that the threshold engine finds one
    meta = CTMetadata(patient_id=f"KILL-{seed}", series_description="kill test")
    return write_dicom_series(hu, (3.0, 2.0, 2.0), folder, metadata=meta, seed=seed)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 120  # a readiness wait on a loaded machine, not a speed check
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.05)


def _start_upload(server: Server, body: bytes, content_type: str, send: int) -> http.client.HTTPConnection:
    """Begin POST /api/studies declaring the whole body, and send only its first `send` bytes."""
    conn = server.connect()
    conn.putrequest("POST", "/api/studies")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[:send])
    return conn


def _start_label_save(
    server: Server, sid: str, base: int, labels: bytes, send: int
) -> http.client.HTTPConnection:
    """Begin a label save declaring the whole body, and send only its first `send` bytes."""
    conn = server.connect()
    conn.putrequest("POST", f"/api/studies/{sid}/labels?base_version={base}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(len(labels)))
    conn.endheaders()
    conn.send(labels[:send])
    return conn


def _check_consistent(server: Server, saved: dict[str, dict[int, bytes]]) -> list[dict]:
    """No file without a study row, every study complete, every saved label version intact."""
    data = server.data_dir
    studies = server.json("GET", "/api/studies")
    assert list((data / "tmp").iterdir()) == []
    series = {s["series_uid"]: s for s in studies}
    stored = {p.name: p for p in (data / "ct").glob("*/*")}
    assert set(stored) == set(series)
    for uid, study in series.items():
        assert len(list(stored[uid].glob("*.dcm"))) == study["n_slices"]
        assert server.request("GET", f"/api/studies/{study['id']}/image/axial/0")[0] == 200
    assert {p.name for p in (data / "cache").iterdir()} == {s["id"] for s in studies}
    for sid, versions in saved.items():
        listed = [v["version"] for v in server.json("GET", f"/api/studies/{sid}/versions")]
        assert set(versions) <= set(listed) and listed == list(range(max(listed), 0, -1))
        for version, labels in versions.items():
            assert server.labels(sid, version) == labels
    with sqlite3.connect(data / "sarcoscope.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return studies


def test_kill_during_upload_and_label_save_leaves_a_consistent_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    small = _series(tmp_path / "small", 12, seed=1)
    big = _series(tmp_path / "big", 80, seed=2)

    server = Server(data)
    try:
        body, content_type = _multipart(small)
        status, answer = server.request("POST", "/api/studies", body, {"Content-Type": content_type})
        assert status == 201, answer
        sid = json.loads(answer)["id"]
        server.json("PUT", f"/api/studies/{sid}/selection", {"mode": "range", "first": 3, "last": 5})
        server.json("POST", f"/api/studies/{sid}/segment", {})
        saved = {sid: {1: server.labels(sid, 1)}}
        edited = bytes(b % 5 for b in range(len(saved[sid][1])))
        octets = {"Content-Type": "application/octet-stream"}
        status, _ = server.request("POST", f"/api/studies/{sid}/labels?base_version=1", edited, octets)
        assert status == 201
        saved[sid][2] = edited

        # 1. killed while an upload and a label save are being received (half of each body sent)
        body, content_type = _multipart(big)
        # (the connections stay open until the kill: a client that hangs up is a different case)
        inflight = [
            _start_upload(server, body, content_type, len(body) // 2),
            _start_label_save(server, sid, 2, edited[::-1], len(edited) // 2),
        ]
        _wait_for(lambda: any(p.is_file() for p in (data / "tmp").rglob("*")))  # files being written
        server.kill()
        for conn in inflight:
            conn.close()
        server = Server(data)
        _check_consistent(server, saved)

        # 2. killed after a whole upload and a whole label save were sent, while the server stores them
        # (or just after): each is either stored complete or not at all
        inflight = [
            _start_upload(server, body, content_type, len(body)),
            _start_label_save(server, sid, 2, edited[::-1], len(edited)),
        ]
        time.sleep(0.5)
        server.kill()
        for conn in inflight:
            conn.close()
        server = Server(data)
        if server.json("GET", f"/api/studies/{sid}/versions")[0]["version"] == 3:
            saved[sid][3] = edited[::-1]
        _check_consistent(server, saved)
    finally:
        server.stop()
