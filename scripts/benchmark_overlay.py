"""Issue 18: overlay.png drawn with matplotlib (export/overlay.py at commit `--old`, the last that used it)
against NumPy + Pillow (this tree), on the same AnalysisResults.

Printed per case (a 130-slice phantom series with automatic L3: three panels, vertebra labels; its L3
slice alone: one panel): milliseconds of `render_overlay` (drawing + PNG at zlib level 3) in one process,
old and new alternating after one warm-up call each, medians of `--repeats`. Then, in fresh processes
(alternating, medians), what every `sarcoscope analyze` process pays: the import of sarcoscope.pipeline and
export.writer and the first render, from two copies of src/ made in `--trees`: after-src (this tree) and
before-src (the same with the old overlay.py). Those two trees are also what scripts/benchmark_speed.py's
`--before`/`--after` compare whole analyze processes with. The series is the one benchmark_speed caches.

    python scripts/benchmark_overlay.py [--old 97e6eb4] [--repeats 7] [--trees DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from benchmark_speed import ROOT, _synthetic_series

#: In a fresh process (PYTHONPATH: one of the trees): import what analyze imports, render the pickled result.
CHILD = """
import pathlib, pickle, sys, time
w, c = time.perf_counter(), time.process_time()
import sarcoscope.pipeline, sarcoscope.export.writer
w1, c1 = time.perf_counter(), time.process_time()
result = pickle.loads(pathlib.Path(sys.argv[1]).read_bytes())
w2, c2 = time.perf_counter(), time.process_time()
sarcoscope.export.writer.render_overlay(result, pathlib.Path(sys.argv[2]))
w3, c3 = time.perf_counter(), time.process_time()
print(w1 - w, c1 - c, w3 - w2, c3 - c2, "matplotlib" in sys.modules)
"""


def _old_source(rev: str) -> str:
    """export/overlay.py as it was at `rev`."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:src/sarcoscope/export/overlay.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _trees(folder: Path, old_source: str) -> dict[str, Path]:
    """Copies of this src/ in `folder`: after-src as it is, before-src with the old overlay.py (and without
    export/drawing.py), so that the two differ only in how the picture is drawn."""
    trees = {"old": folder / "before-src", "new": folder / "after-src"}
    ignore = shutil.ignore_patterns("__pycache__")
    for tree in trees.values():
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(ROOT / "src", tree, ignore=ignore)
    (trees["old"] / "sarcoscope" / "export" / "overlay.py").write_text(old_source)
    (trees["old"] / "sarcoscope" / "export" / "drawing.py").unlink()
    return trees


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_overlay", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases() -> dict[str, Any]:
    """The AnalysisResults drawn (threshold engine, no quality score: only the picture is measured here)."""
    from sarcoscope.imaging.volume import CTVolume
    from sarcoscope.pipeline import analyze

    volume = analyze(_synthetic_series(130, 3), engine="threshold", quality=False)
    z = volume.selection.indices[0]
    v = volume.volume
    one = CTVolume(
        hu=v.hu[z : z + 1].copy(),
        spacing=v.spacing,
        origin=v.origin,
        direction=v.direction,
        metadata=v.metadata,
    )
    single = analyze(one, engine="threshold", quality=False, slice_index=0)
    return {"phantom 130, automatic L3 (3 panels)": volume, "its L3 slice alone (1 panel)": single}


def _in_process(cases: dict[str, Any], old: ModuleType, new: ModuleType, repeats: int, out: Path) -> None:
    """Render ms of each case, old and new alternating (which goes first alternates too)."""
    print("| case | old: render ms (wall / CPU) | new: render ms (wall / CPU) | old / new (wall) |")
    print("|---|---|---|---|")
    for k, (name, result) in enumerate(cases.items()):
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for r in range(repeats + 1):
            for which, module in (("old", old), ("new", new)) if r % 2 else (("new", new), ("old", old)):
                w, c = time.perf_counter(), time.process_time()
                module.render_overlay(result, out / f"{which}_{k}.png")
                if r:  # the first call of each warms up
                    times[which].append((time.perf_counter() - w, time.process_time() - c))
        o, n = ([statistics.median(x[i] * 1000 for x in times[w]) for i in range(2)] for w in ("old", "new"))
        print(f"| {name} | {o[0]:.0f} / {o[1]:.0f} | {n[0]:.0f} / {n[1]:.0f} | **{o[0] / n[0]:.1f}×** |")


def _fresh(trees: dict[str, Path], result: Any, repeats: int, tmp: Path) -> None:
    """Import and first-render ms in fresh processes, one per tree, alternating."""
    print("\nFresh processes: `import sarcoscope.pipeline, sarcoscope.export.writer`, then one render\n")
    print("| tree | import ms (wall / CPU) | first render ms (wall / CPU) | matplotlib loaded |")
    print("|---|---|---|---|")
    pickled = tmp / "result.pkl"
    pickled.write_bytes(pickle.dumps(result))
    runs: dict[str, list[list[float]]] = {k: [] for k in trees}
    loaded: dict[str, str] = {}
    for _ in range(repeats):
        for which, tree in trees.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(pickled), str(tmp / "child.png")],
                check=True,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(tree)),
            ).stdout.split()
            runs[which].append([float(x) * 1000 for x in out[:4]])
            loaded[which] = out[4]
    for which, values in runs.items():
        m = np.median(np.array(values), axis=0)
        name = trees[which].name
        print(f"| {name} | {m[0]:.0f} / {m[1]:.0f} | {m[2]:.0f} / {m[3]:.0f} | {loaded[which]} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", default="97e6eb4", help="commit whose overlay.py drew with matplotlib")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the old and new PNGs in")
    parser.add_argument("--trees", type=Path, default=None, help="folder for before-src and after-src")
    args = parser.parse_args()
    from sarcoscope.export import overlay as new

    print(f"load {os.getloadavg()[0]:.1f}; old = {args.old}; medians of {args.repeats} alternating runs\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_source = _old_source(args.old)
        (tmp / "old_overlay.py").write_text(old_source)
        cases = _cases()
        out = args.keep or tmp
        out.mkdir(parents=True, exist_ok=True)
        _in_process(cases, _load(tmp / "old_overlay.py"), new, args.repeats, out)
        trees = _trees(args.trees or tmp, old_source)
        _fresh(trees, next(iter(cases.values())), args.repeats, tmp)


if __name__ == "__main__":
    main()
