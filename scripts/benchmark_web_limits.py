"""Server memory when a client sends an oversized label save (issue #16: 500 MiB body -> +930 MB).

Starts `sarcoscope serve` from the given source tree on a scratch data folder, makes one label version
(3 slices of 128x128: a save is 48 KiB), then sends a 500 MiB body to POST /api/studies/{id}/labels, with
Content-Length and (on a fresh server) chunked, and prints the status and the growth of the server's peak
resident memory.

    python scripts/benchmark_web_limits.py [--src path/to/src] [--mib 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from web_server import call, start_server  # scripts/ is on sys.path when a script runs

CHUNK = 1 << 20


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def labelled_study(port: int, folder: Path) -> str:
    from sarcoscope.imaging import write_dicom_series

    hu = np.full((12, 128, 128), -1000, np.int16)
    hu[:, 20:108, 10:118] = 40
    files = write_dicom_series(hu, (3.0, 2.0, 2.0), folder)
    boundary = "benchmark"
    head = 'Content-Disposition: form-data; name="files"; filename='
    parts = [f'--{boundary}\r\n{head}"{f.name}"\r\n\r\n'.encode() + f.read_bytes() + b"\r\n" for f in files]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    sid = json.loads(call(port, "POST", "/api/studies", body, f"multipart/form-data; boundary={boundary}"))[
        "id"
    ]
    call(
        port,
        "PUT",
        f"/api/studies/{sid}/selection",
        json.dumps({"mode": "range", "first": 4, "last": 6}).encode(),
        "application/json",
    )
    call(port, "POST", f"/api/studies/{sid}/segment", b"{}", "application/json")
    return str(sid)


def send_oversized(port: int, sid: str, total: int, chunked: bool) -> tuple[int | str, int]:
    """Send `total` bytes of labels; returns (status or error, bytes sent before the server answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest("POST", f"/api/studies/{sid}/labels?base_version=1")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(total))
    conn.endheaders()
    block = b"\1" * CHUNK
    sent = 0
    try:
        while sent < total:
            conn.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            sent += len(block)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered and closed the connection
    try:
        return conn.getresponse().status, sent
    except OSError as exc:
        return type(exc).__name__, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--mib", type=int, default=500)
    args = parser.parse_args()
    for chunked in (False, True):  # a fresh server each: the peak (VmHWM) only ever grows
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(args.src.resolve(), Path(tmp) / "data")
            try:
                sid = labelled_study(port, Path(tmp) / "series")
                before = peak_rss_mb(proc.pid)
                status, sent = send_oversized(port, sid, args.mib * CHUNK, chunked)
                time.sleep(0.5)
                growth = peak_rss_mb(proc.pid) - before
            finally:
                proc.terminate()
                proc.wait(30)
        how = "chunked" if chunked else "Content-Length"
        print(
            f"{args.mib} MiB label save ({how}): HTTP {status} (client sent {sent / CHUNK:.0f} MiB); "
            f"server peak memory +{growth:.0f} MB"
        )


if __name__ == "__main__":
    main()
