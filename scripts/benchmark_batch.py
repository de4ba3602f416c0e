"""Cohort throughput of `sarcoscope batch` (issue 18): 1 vs 2 workers, process pool vs Dask LocalCluster.

A cohort of `--cases` copies (symbolic links) of one synthetic 130-slice 512² DICOM series (the one
benchmark_speed.py caches), analysed with the defaults (automatic L3, default engine, all outputs) by
`python -m sarcoscope.cli batch COHORT -o OUT --force` in a fresh process per run; configurations alternate,
medians of `--repeats` runs. Prints wall seconds, CTs per minute, CPU seconds per CT (every process the run
started, counted here when the batch process did not wait for it: a Dask fork server and its workers), the
speed-up of 2 workers over 1, the Dask/pool ratio, and an estimate for 100,000 CTs on 20 one-core Dask
workers from the 2-worker Dask run (the pool's without one): from the time per CT of a busy worker, and from
the CPU per CT (the bound on idle cores; a loaded machine inflates wall).

    python scripts/benchmark_batch.py [--cases 8] [--repeats 3] [--configs pool1 pool2 dask1 dask2]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import _env, _synthetic_series

#: prctl option: orphaned descendants are reparented to this process, which reaps them (Linux).
_PR_SET_CHILD_SUBREAPER = 36

CONFIGS = {
    "pool1": ["--workers", "1"],
    "pool2": ["--workers", "2"],
    "dask1": ["--workers", "1", "--scheduler", "local"],
    "dask2": ["--workers", "2", "--scheduler", "local"],
}


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--before", default=None, help="another sarcoscope src/ folder to run alternately (before/after)"
    )
    args = parser.parse_args()
    trees: dict[str, str | None] = {"": None} if not args.before else {" before": args.before, " after": None}

    series = _synthetic_series(130, args.seed)
    runs: dict[str, list[tuple[float, float]]] = {c + t: [] for c in args.configs for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        cohort.mkdir()
        for i in range(args.cases):
            (cohort / f"case{i:03d}").symlink_to(series, target_is_directory=True)
        for r in range(args.repeats):
            for c in args.configs:
                for t, src in trees.items():
                    out = Path(tmp) / f"out_{c}_{r}_{t.strip()}"
                    cmd = [sys.executable, "-m", "sarcoscope.cli", "batch", str(cohort), "-o", str(out)]
                    runs[c + t].append(_run([*cmd, "--force", *CONFIGS[c]], src))
                    failed = (out / "failures.csv").read_text().strip().splitlines()[1:]
                    if failed:
                        raise SystemExit(f"{c}{t}: {len(failed)} case(s) failed: {failed[0]}")
    load = os.getloadavg()[0]
    print(f"{args.cases} CTs of 130 slices (512²) per run, medians of {args.repeats}; load {load:.1f}")
    print("\n| configuration | wall s | CTs per minute | CPU s per CT |\n|---|---|---|---|")
    wall = {c: statistics.median(x[0] for x in v) for c, v in runs.items()}
    for c, v in runs.items():
        cpu = statistics.median(x[1] for x in v) / args.cases
        print(f"| {c} | {wall[c]:.1f} | {args.cases / wall[c] * 60:.1f} | {cpu:.2f} |")
    for c, v in runs.items():
        each = ", ".join(f"{w:.1f} {u / args.cases:.2f}" for w, u in v)
        print(f"{c}, each repeat (wall s, CPU s per CT): {each}")
    for t in trees:
        for kind in ("pool", "dask"):
            if f"{kind}1{t}" in wall and f"{kind}2{t}" in wall:
                ratio = wall[f"{kind}1{t}"] / wall[f"{kind}2{t}"]
                print(f"{kind}{t}: 2 workers / 1 worker throughput: {ratio:.2f}×")
        for n in ("1", "2"):
            if f"pool{n}{t}" in wall and f"dask{n}{t}" in wall:
                ratio = wall[f"dask{n}{t}"] / wall[f"pool{n}{t}"]
                # on a shared machine the load moves between repeats: the ratios of side-by-side runs too
                pairs = list(zip(runs[f"dask{n}{t}"], runs[f"pool{n}{t}"], strict=True))
                walls = statistics.median(d[0] / p[0] for d, p in pairs)
                cpus = statistics.median(d[1] / p[1] for d, p in pairs)
                print(
                    f"{n} worker(s){t}: Dask wall / pool wall: {ratio:.2f} (medians); median of each "
                    f"repeat's ratios: wall {walls:.2f}, CPU {cpus:.2f}"
                )
    # the Dask run's own cost when it was measured (the pool's otherwise): wall time of a busy one-core
    # worker, and the CPU per CT (what 20 idle cores would need, cluster start-up spread over the cohort)
    now = next((c + list(trees)[-1] for c in ("dask2", "pool2") if c + list(trees)[-1] in wall), None)
    if now is not None:
        per_ct = wall[now] * 2 / args.cases  # seconds one busy one-core worker spends per CT
        cpu = statistics.median(x[1] for x in runs[now]) / args.cases
        hours = [100_000 * s / 20 / 3600 for s in (per_ct, cpu)]
        print(
            f"estimate from {now}: 100,000 CTs on 20 one-core Dask workers ≈ {hours[0]:.1f} h "
            f"({per_ct:.1f} s/CT per busy worker), ≈ {hours[1]:.1f} h from the CPU per CT ({cpu:.2f} s)"
        )


def _run(cmd: list[str], src: str | None) -> tuple[float, float]:
    """(wall s until the batch process ends, CPU s of every process it started) of one run, which must
    succeed. A Dask fork server (and the workers it forked and reaped) outlives the batch process, which
    never waits for it: this process is their subreaper, so their CPU is counted when they end."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("cannot count the CPU of a run's orphaned processes (prctl: not Linux?)")
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env(src))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        cpu = usage.ru_utime + usage.ru_stime
        deadline = time.monotonic() + 60
        while True:  # the orphans: a fork server ends when it sees its parent gone
            try:
                pid, _, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                cpu += usage.ru_utime + usage.ru_stime
            elif time.monotonic() > deadline:
                raise SystemExit(f"{' '.join(cmd)} left processes running")
            else:
                time.sleep(0.01)
        if status != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({status}):\n{err.read().decode()[-2000:]}")
    return wall, cpu


if __name__ == "__main__":
    main()
