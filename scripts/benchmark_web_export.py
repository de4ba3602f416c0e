"""Web export latency under concurrent users (issue #15, defect 10: HTML export 5.5 s median, 10 s p95 with 8
users; the goal is the first image of a study < 0.5 s and an export < 1 s at that load).

Starts `sarcoscope serve` from the given source tree on a scratch data folder, uploads one phantom study per
user (256x256, 5 mm slices), selects its mid-L3 slice and segments it (threshold engine), then lets `--users`
threads at once each open their study cold (first axial PNG, and the viewer's volume) and export the
printable HTML report `--rounds` times. Prints median and p95 per request type.

    python scripts/benchmark_web_export.py [--src path/to/src] [--users 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from web_server import call, start_server  # scripts/ is on sys.path when a script runs


def segmented_study(port: int, folder: Path, seed: int) -> str:
    from sarcoscope.phantom.io import write_phantom

    phantom = write_phantom(folder, seed=seed, shape_xy=256, slice_thickness_mm=5.0)
    files = sorted(Path(phantom["paths"]["dicom"]).iterdir())
    boundary = "benchmark"
    head = 'Content-Disposition: form-data; name="files"; filename='
    parts = [f'--{boundary}\r\n{head}"{f.name}"\r\n\r\n'.encode() + f.read_bytes() + b"\r\n" for f in files]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    form = f"multipart/form-data; boundary={boundary}"
    sid = json.loads(call(port, "POST", "/api/studies", body, form))["id"]
    mid = int(phantom["truth"]["l3_mid_index"])
    selection = json.dumps({"mode": "slice", "first": mid}).encode()
    call(port, "PUT", f"/api/studies/{sid}/selection", selection, "application/json")
    call(port, "POST", f"/api/studies/{sid}/segment", b'{"engine": "threshold"}', "application/json")
    return str(sid)


def timed(port: int, path: str, times: dict[str, list[float]], key: str, lock: threading.Lock) -> None:
    start = time.perf_counter()
    call(port, "GET", path)
    with lock:
        times[key].append(time.perf_counter() - start)


def user(port: int, sid: str, rounds: int, times: dict[str, list[float]], lock: threading.Lock) -> None:
    timed(port, f"/api/studies/{sid}/image/axial/10", times, "first image (axial PNG, cold)", lock)
    timed(port, f"/api/studies/{sid}/volume.nii.gz", times, "viewer volume (NIfTI, first)", lock)
    for _ in range(rounds):
        timed(port, f"/api/studies/{sid}/export/html", times, "HTML export", lock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(args.src.resolve(), Path(tmp) / "data")
        try:
            studies = [segmented_study(port, Path(tmp) / f"p{i}", seed=i) for i in range(args.users)]
            call(port, "POST", "/api/session", b'{"user": "bench"}', "application/json")
            times: dict[str, list[float]] = {
                "first image (axial PNG, cold)": [],
                "viewer volume (NIfTI, first)": [],
                "HTML export": [],
            }
            lock = threading.Lock()
            threads = [
                threading.Thread(target=user, args=(port, sid, args.rounds, times, lock)) for sid in studies
            ]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(30)
    load = os.getloadavg()[0]
    print(f"{args.users} users at once, {args.rounds} HTML exports each; wall {wall:.1f} s; load {load:.1f}")
    print("| request | n | median | p95 |")
    print("|---|---|---|---|")
    for key, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        print(f"| {key} | {len(values)} | {statistics.median(values):.2f} s | {p95:.2f} s |")


if __name__ == "__main__":
    main()
