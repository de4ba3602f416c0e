"""Issue 18 speed benchmark: whole-process `sarcoscope analyze` against a bare pydicom read of a series.

Every measurement is a fresh process (imports included), run alternately with its baseline so that machine
noise hits both alike; medians of `--repeats` runs. Printed per series: wall seconds and CPU seconds
(user+sys) of the bare read (`pydicom.dcmread(f).pixel_array` over the files) and of
`python -m sarcoscope.cli analyze SERIES -o OUT` with the default engine and options, their ratios, and
the peak RSS of each (with issue 18's goal for analyze: 2 × the HU volume's size + 150 MB). Then
`sarcoscope --help` (against `python -c pass`) and the time per 512² slice of the threshold and U-Net
engines on the real L3 slices, each in fresh processes alternating between the source trees (ONNX Runtime
session build reported apart).

Series: the real JPEG 2000 series in ../shared/data (20 slices, no L3 in it, so analysed with `--slice 10`)
and synthetic phantom series of 130, 300 and 600 slices of 512² (one 130-slice phantom at 3 mm, resampled
in z to the other lengths; cached in $TMPDIR/sarcoscope-bench).

    python scripts/benchmark_speed.py [--sizes 130 300 600] [--repeats 5] [--no-real] [--no-help]
        [--no-engines] [--engine unet] [--before SRC [--after SRC]]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REAL_SERIES = SHARED / "real" / "dicom_series" / "ts_thoracoabdominal_j2k"
REAL_SLICES = SHARED / "real" / "l3_slices" / "images"
CACHE = Path(tempfile.gettempdir()) / "sarcoscope-bench"

BARE_READ = (
    "import sys, pathlib, pydicom\n"
    "for f in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
    "    if f.is_file() and f.suffix != '.nrrd' and not f.name.startswith('.'):\n"
    "        pydicom.dcmread(f).pixel_array\n"
)


def _env(src: str | None) -> dict[str, str]:
    """A child's environment: `src` (a sarcoscope source tree) on PYTHONPATH when given, and Python's
    bytecode caches used as in an installed package (PYTHONDONTWRITEBYTECODE, set in some shells, made
    every process compile sarcoscope's modules from source: about 0.2 s of CPU per `analyze`)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if src:
        env["PYTHONPATH"] = src
    return env


def _child(cmd: list[str], src: str | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one child process, which must succeed; `src`: the sarcoscope source
    tree it imports (default: this process's PYTHONPATH)."""
    env = _env(src)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _synthetic_series(n: int, seed: int) -> Path:
    """A phantom DICOM series of `n` slices of 512² (made once, then cached).

    Made in a child process: making 600 slices grows a process to about 3 GB, and the children this
    script times afterwards, forked from it, counted those pages in their peak RSS (the 600 row read
    2952 MB for the bare read and analyze alike on the run that made the series)."""
    out = CACHE / f"phantom{seed}_{n}"
    if not (out / ".done").exists():
        code = "\n".join(
            (
                f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})",
                "import benchmark_speed",
                f"benchmark_speed._write_series({n}, {seed}, benchmark_speed.Path({str(out)!r}))",
            )
        )
        subprocess.run([sys.executable, "-c", code], env=_env(None), check=True)
    return out


def _write_series(n: int, seed: int, out: Path) -> None:
    """Write the phantom series of `_synthetic_series` to `out`, marked done when complete."""
    import numpy as np

    from sarcoscope.imaging import write_dicom_series
    from sarcoscope.phantom import make_volume

    base_n, base_thk = 130, 3.0
    vol = make_volume(seed, shape_xy=512, n_slices=base_n, slice_thickness_mm=base_thk)
    hu = vol.hu
    thk = base_thk
    if n != base_n:  # same z extent, linear interpolation between the 3 mm slices
        pos = np.linspace(0, base_n - 1, n)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, base_n - 1)
        w = (pos - lo)[:, None, None].astype(np.float32)
        hu = np.rint(hu[lo] * (1 - w) + hu[hi] * w).astype(np.int16)
        thk = base_thk * (base_n - 1) / (n - 1)
    write_dicom_series(hu, (thk, *vol.spacing[1:]), out, origin=vol.origin, metadata=vol.metadata())
    (out / ".done").touch()


def _compare(
    name: str, series: Path, extra: list[str], repeats: int, engine: str | None, trees: dict
) -> None:
    """One table row per source tree: analyze against the bare read, all runs alternating."""
    bare: list[tuple[float, float, float]] = []
    full: dict[str, list[tuple[float, float, float]]] = {k: [] for k in trees}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sarcoscope.cli", "analyze", str(series), "-o", f"{tmp}/out", *extra]
        if engine:
            cmd += ["--engine", engine]
        for _ in range(repeats):
            bare.append(_child([sys.executable, "-c", BARE_READ, str(series)]))
            for k, src in trees.items():
                full[k].append(_child(cmd, src))
    b = [statistics.median(x[i] for x in bare) for i in range(3)]
    files = sorted(f for f in series.iterdir() if f.is_file() and not f.name.startswith("."))
    goal = 2 * len(files) * _pixels(files[0]) * 2 / 2**20 + 150  # int16 HU
    for k, runs in full.items():
        a = [statistics.median(x[i] for x in runs) for i in range(3)]
        print(
            f"| {name} ({len(files)} files){k} | {b[0]:.2f} / {b[1]:.2f} | {a[0]:.2f} / {a[1]:.2f} | "
            f"**{a[0] / b[0]:.2f}×** / {a[1] / b[1]:.2f}× | {b[2]:.0f} / {a[2]:.0f} (goal {goal:.0f}) |",
            flush=True,
        )


def _pixels(dicom_file: Path) -> int:
    """Pixels per slice of a DICOM file."""
    import pydicom

    ds = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    return int(ds.Rows) * int(ds.Columns)


def _help(repeats: int, trees: dict) -> None:
    runs: dict[str, tuple[list[str], str | None]] = {"python -c pass": ([sys.executable, "-c", "pass"], None)}
    for k, src in trees.items():
        runs[f"sarcoscope --help{k}"] = ([sys.executable, "-m", "sarcoscope.cli", "--help"], src)
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, (cmd, src) in runs.items():
            times[k].append(_child(cmd, src))
    print("\n| command | wall s | CPU s |\n|---|---|---|")
    for k, v in times.items():
        print(
            f"| `{k}` | {statistics.median(x[0] for x in v):.3f} | {statistics.median(x[1] for x in v):.3f} |"
        )


#: One engine timed in a fresh process on the real 512² slices: ms per slice (median of 3 passes), one
#: slice per call and all slices in one call, and the first call (engine and session build included).
ENGINE_TIMING = """
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from sarcoscope.imaging import read_ct
from sarcoscope.segmentation import get_engine
vols = [read_ct(p) for p in sorted(Path(sys.argv[2]).glob("*.dcm"))]
vols = [v for v in vols if v.hu.shape[1:] == (512, 512)]
t = time.perf_counter()
engine = get_engine(sys.argv[1])
engine.segment(vols[0].hu[:1], vols[0].pixel_spacing)
first = time.perf_counter() - t
stack = np.concatenate([v.hu for v in vols])
one, many = [], []
for _ in range(3):
    t = time.perf_counter()
    for v in vols:
        engine.segment(v.hu, v.pixel_spacing)
    one.append((time.perf_counter() - t) / len(vols) * 1000)
    t = time.perf_counter()
    engine.segment(stack, vols[0].pixel_spacing)
    many.append((time.perf_counter() - t) / len(vols) * 1000)
print(json.dumps([statistics.median(one), statistics.median(many), first * 1000, len(vols)]))
"""


def _engines(repeats: int, trees: dict) -> None:
    """Milliseconds per 512² slice on the real L3 slices: each engine in `repeats` fresh processes per source
    tree, the trees alternating; medians."""
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for name in ("threshold", "unet"):
        for r in range(repeats):
            for k in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                env = _env(trees[k])
                cmd = [sys.executable, "-c", ENGINE_TIMING, name, str(REAL_SLICES)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                runs.setdefault((name, k), []).append(json.loads(done.stdout))
    n = int(next(iter(runs.values()))[0][3])
    print(f"\n{n} real 512² L3 slices, medians of {repeats} alternating processes (3 passes each)\n")
    print(
        "| engine | ms per slice, one slice per call | ms per slice, all slices in one call | first call ms |"
        "\n|---|---|---|---|"
    )
    for (name, k), v in runs.items():
        one, many, first = (statistics.median(x[i] for x in v) for i in range(3))
        print(f"| {name}{k} | {one:.0f} | {many:.0f} | {first:.0f} |")


def source_trees(before: str | None, after: str | None) -> dict[str, str]:
    """Row label -> the sarcoscope src/ folder its children import: `after` or this checkout's. Left to
    the environment, they imported the interpreter's installed sarcoscope (an editable install of another
    checkout), so a "before/after" run compared that tree with itself."""
    here = after or str(ROOT / "src")
    return {" before": before, " after": here} if before else {"": here}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[130, 300, 600])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--engine", default=None, help="engine for analyze (default: the CLI's default)")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--no-help", action="store_true")
    parser.add_argument("--no-engines", action="store_true")
    parser.add_argument(
        "--before", default=None, help="another sarcoscope src/ folder to run alternately (before/after)"
    )
    parser.add_argument(
        "--after", default=None, help="the src/ folder of 'after' (default: this checkout's src/)"
    )
    args = parser.parse_args()
    trees = source_trees(args.before, args.after)
    for src in trees.values():  # the bytecode caches written before the first timed run
        compileall.compile_dir(src, quiet=1)
    where = "; ".join(f"{k.strip() or 'sarcoscope'} from {src}" for k, src in trees.items())
    print(f"python {sys.executable}; {where}; load {os.getloadavg()[0]:.1f}")
    print(f"medians of {args.repeats} alternating runs, fresh processes, imports included\n")
    print(
        "| series | bare read: wall / CPU s | analyze: wall / CPU s | ratio wall / CPU | peak RSS MB "
        "read / analyze |\n|---|---|---|---|---|"
    )
    if not args.no_real and REAL_SERIES.is_dir():
        _compare("real J2K, --slice 10", REAL_SERIES, ["--slice", "10"], args.repeats, args.engine, trees)
    for n in args.sizes:
        _compare(f"phantom {n}", _synthetic_series(n, args.seed), [], args.repeats, args.engine, trees)
    if not args.no_help:
        _help(args.repeats, trees)
    if not args.no_engines and REAL_SLICES.is_dir():
        _engines(args.repeats, trees)


if __name__ == "__main__":
    main()
