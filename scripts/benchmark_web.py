"""Issue 18's web goals: server ready < 1.5 s, first image after upload < 0.3 s (130 slices), segment one
slice < 150 ms (warm server).

Each repeat starts a fresh `sarcoscope serve` (scratch data folder) from each source tree in turn, so that
machine noise hits the trees alike, and does what the browser does (studies.js, app.js, l3view.js):

- ready: from starting the process to the first 200 of GET /api/health (polled every 5 ms), and the
  process's CPU seconds (user + sys) at that moment, then the page's first call, GET /api/config;
- upload: POST /api/studies of a 130-slice 512x512 phantom DICOM series (benchmark_speed's, 68 MB);
- from the upload's response: GET /api/studies/{id} and the first axial PNG (the middle slice, where the
  viewer opens), then the coronal and sagittal PNGs (the fallback viewer's tiles and the label editor's
  images), GET /api/models (the L3 view's model choice: it starts building the segmentation engine in
  the background), then the WebGL viewer's volume.nii.gz (written in the background since the upload);
- POST .../localize (the L3 view asks for it; it pre-places the mid-L3 slice);
- POST .../segment of that slice with each of `--engines` in turn (default: the server's default engine):
  the first request of the process (cold), then `--segments` more (warm); before each, the previous
  version's QC picture and analysis, made in the background, are waited for (GET .../export/overlay and
  .../analysis), so that they do not compete with the request. After each, GET .../analysis, which the
  label tab asks for next (its quality score's second opinion runs after the segment request's answer):
  "segment + analysis" is when the page has both.

Prints medians and p95 per tree and the ratio now/before, then the segment request's work timed in this
process (body mask, engine alone, what the request runs, the second opinion after it); never asserts times
(shared, noisy machine).

    python scripts/benchmark_web.py [--src SRC] [--before OTHER/src] [--repeats 5] [--segments 5]
        [--engines unet threshold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import web_server  # scripts/ is on sys.path when a script runs
from benchmark_speed import _synthetic_series
from web_server import call, start_server

GOALS = {"ready": 1.5, "first axial image after upload": 0.3}
#: The goal of a warm segment request, whichever the engine.
SEGMENT_GOAL = 0.15
#: Shared objects whose being mapped into the server at ready shows a heavy import.
HEAVY_LIBRARIES = ("onnxruntime", "scipy", "torch", "matplotlib")


def timed_start(src: Path, data: Path) -> tuple[subprocess.Popen, int, float]:
    """web_server.start_server, timed: its 0.2 s polling interval shortened to 5 ms."""
    sleep = time.sleep
    start = time.perf_counter()
    with mock.patch.object(web_server.time, "sleep", lambda s: sleep(min(s, 0.005))):
        proc, port = start_server(src, data)
    return proc, port, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def heavy_libraries(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name in HEAVY_LIBRARIES if f"/{name}/" in maps or f"/{name}." in maps]


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = "benchmark"
    head = 'Content-Disposition: form-data; name="files"; filename='
    parts = [f'--{boundary}\r\n{head}"{f.name}"\r\n\r\n'.encode() + f.read_bytes() + b"\r\n" for f in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def timed_call(
    port: int, method: str, path: str, body: bytes | None = None, kind: str = ""
) -> tuple[float, bytes]:
    start = time.perf_counter()
    data = call(port, method, path, body, kind)
    return time.perf_counter() - start, data


def one_repeat(
    src: Path, upload: tuple[bytes, str], segments: int, engines: list[str], times: dict[str, list[float]]
) -> tuple[list[str], int]:
    """A fresh server through the whole sequence; appends to `times`; returns the heavy libraries loaded at
    ready and the segmented slice."""

    def keep(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    with tempfile.TemporaryDirectory() as tmp:
        proc, port, ready = timed_start(src, Path(tmp) / "data")
        try:
            keep("ready", ready)
            keep("server CPU at ready", cpu_seconds(proc.pid))
            heavy = heavy_libraries(proc.pid)
            keep("first GET /api/config (the page's first call)", timed_call(port, "GET", "/api/config")[0])
            seconds, data = timed_call(port, "POST", "/api/studies", *upload)
            keep("upload (130 x 512², request)", seconds)
            uploaded = time.perf_counter()
            study = json.loads(data)
            sid, mid = study["id"], study["n_slices"] // 2
            call(port, "GET", f"/api/studies/{sid}")
            seconds, _ = timed_call(port, "GET", f"/api/studies/{sid}/image/axial/{mid}")
            keep("first axial image after upload", time.perf_counter() - uploaded)
            keep("  axial PNG request", seconds)
            keep(
                "  coronal PNG request",
                timed_call(port, "GET", f"/api/studies/{sid}/image/coronal/{study['rows'] // 2}")[0],
            )
            keep(
                "  sagittal PNG request",
                timed_call(port, "GET", f"/api/studies/{sid}/image/sagittal/{study['cols'] // 2}")[0],
            )
            call(port, "GET", "/api/models")  # the L3 view's engine and model choice, after its images
            seconds, _ = timed_call(port, "GET", f"/api/studies/{sid}/volume.nii.gz")
            keep("viewer volume.nii.gz received, after upload", time.perf_counter() - uploaded)
            keep("  volume.nii.gz request", seconds)
            seconds, data = timed_call(
                port, "POST", f"/api/studies/{sid}/localize", b"{}", "application/json"
            )
            keep("localize", seconds)
            located = json.loads(data)
            version, l3 = located["latest_version"], located["selection"]["first"]
            for k in range(segments + 1):
                for engine in engines:
                    if version:  # the previous version's QC picture and quality score: in the background
                        call(port, "GET", f"/api/studies/{sid}/export/overlay?version={version}")
                        call(port, "GET", f"/api/studies/{sid}/analysis?version={version}")
                    body = json.dumps({"base_version": version, "engine": engine}).encode()
                    path = f"/api/studies/{sid}/segment"
                    seconds, data = timed_call(port, "POST", path, body, "application/json")
                    version = json.loads(data)["version"]
                    analysis, _ = timed_call(port, "GET", f"/api/studies/{sid}/analysis?version={version}")
                    when = "cold (first of the process)" if k == 0 else "warm"
                    keep(f"segment ({engine}), {when}", seconds)
                    keep(f"  segment + analysis ({engine}), {when}", seconds + analysis)
        finally:
            proc.terminate()
            proc.wait(30)
    return heavy, l3


def engine_reference(series: Path, index: int, repeats: int, engines: list[str]) -> None:
    """The segment request's work without the server, in this process (wall and CPU): where its time goes."""
    import numpy as np

    from sarcoscope.imaging import read_ct
    from sarcoscope.segmentation import get_engine
    from sarcoscope.segmentation.body import body_and_limbs
    from sarcoscope.segmentation.quality import segment_then_score

    volume = read_ct(series)
    hu, spacing = np.asarray(volume.hu[[index]]), volume.pixel_spacing
    start = time.perf_counter()
    for name in engines:
        get_engine(name)
    build = time.perf_counter() - start
    runs: dict[str, list[tuple[float, float]]] = {}

    def timed(key: str, work: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = work()
        runs.setdefault(key, []).append((time.perf_counter() - wall, time.process_time() - cpu))
        return out

    for _ in range(repeats + 1):  # the first pass warms caches and is not counted
        for name in engines:
            engine = get_engine(name)  # as each request does (one ONNX Runtime session per process)
            timed(f"{name}: body mask", lambda: body_and_limbs(hu[0], spacing))
            timed(f"{name}: the engine alone", lambda e=engine: e.segment(hu, spacing))
            _, score = timed(
                f"{name}: what the request runs (segment_then_score: labels, network signals)",
                lambda e=engine: segment_then_score(e, hu, spacing),
            )
            timed(f"{name}: after the answer, the quality score's second opinion", score)
    print(f"\nIn this process (--src), slice {index}: building the engines {build:.3f} s")
    for key, values in runs.items():
        wall, _ = summary([w for w, _ in values[1:]])
        cpu, _ = summary([c for _, c in values[1:]])
        print(f"- {key}: {wall:.3f} s wall, {cpu:.3f} s CPU (medians)")


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument(
        "--before", type=Path, help="another source tree, run alternately (e.g. a worktree's src)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--segments", type=int, default=5, help="warm segment requests per server")
    parser.add_argument("--engines", nargs="+", help="engines segmented with, in turn (default: the default)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))  # engine_reference (and the series, if made) use this tree
    trees = {"now": args.src.resolve()}
    if args.before:
        trees = {"before": args.before.resolve(), **trees}
    if not args.engines:
        from sarcoscope.segmentation.base import DEFAULT_ENGINE

        args.engines = [DEFAULT_ENGINE]
    series = _synthetic_series(130, seed=3)
    files = sorted(f for f in series.iterdir() if f.is_file() and not f.name.startswith("."))
    upload = multipart(files)
    times: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    heavy: dict[str, set[str]] = {name: set() for name in trees}
    loads = []
    for _ in range(args.repeats):
        for name, src in trees.items():
            libraries, l3 = one_repeat(src, upload, args.segments, args.engines, times[name])
            heavy[name].update(libraries)
            loads.append(os.getloadavg()[0])
    size = f"{len(files)} slices of 512² ({len(upload[0]) / 1e6:.0f} MB)"
    print(
        f"{args.repeats} repeats (fresh server each), {size}, {args.segments} warm segments per server "
        f"and engine ({', '.join(args.engines)}); "
        f"load average {min(loads):.1f}-{max(loads):.1f}"
    )
    for name in trees:
        print(f"{name}: heavy libraries loaded at ready: {', '.join(sorted(heavy[name])) or 'none'}")
    names = list(trees)
    head = " | ".join(f"{n} median / p95" for n in names)
    ratio = " now/before (median) |" if len(names) == 2 else ""
    print(f"\n| measure | {head} |{ratio} goal |")
    print("|---|" + "---|" * len(names) + ("---|" if ratio else "") + "---|")
    for key in times[names[-1]]:
        cells = []
        for n in names:
            median, p95 = summary(times[n][key])
            unit = " s CPU" if "CPU" in key else " s"
            cells.append(f"{median:.3f} / {p95:.3f}{unit}")
        row = f"| {key} | {' | '.join(cells)} |"
        if ratio:
            row += f" {summary(times['now'][key])[0] / summary(times['before'][key])[0]:.2f} |"
        goal = SEGMENT_GOAL if key.startswith("segment (") and key.endswith("warm") else GOALS.get(key)
        if goal is not None:
            median = summary(times["now"][key])[0]
            row += f" < {goal} s: {'met' if median < goal else 'not met'} (median) |"
        else:
            row += " |"
        print(row, flush=True)

    engine_reference(series, l3, args.repeats, args.engines)


if __name__ == "__main__":
    main()
