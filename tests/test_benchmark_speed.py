"""scripts/benchmark_speed.py measures this checkout's sarcoscope, not whichever one the interpreter has
installed (BENCHMARKS.md, 2026-12-07: a before/after run without --after compared main with itself)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_speed", ROOT / "scripts" / "benchmark_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_after_runs_import_this_checkouts_sarcoscope(tmp_path) -> None:
    bench = _script()
    before = str(tmp_path / "before" / "src")
    trees = bench.source_trees(before, None)
    assert trees == {" before": before, " after": str(ROOT / "src")}
    assert bench.source_trees(None, None) == {"": str(ROOT / "src")}
    assert bench.source_trees(before, "/elsewhere/src")[" after"] == "/elsewhere/src"
    imported = subprocess.run(
        [sys.executable, "-c", "import sarcoscope; print(sarcoscope.__file__)"],
        env=bench._env(trees[" after"]),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(imported) == ROOT / "src" / "sarcoscope" / "__init__.py"
