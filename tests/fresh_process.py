"""Run a script in a fresh Python process importing this tree's sarcoscope: for what one process's history
would hide (imports, memory high-water marks, caches)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


def fresh_process_json(script: str) -> Any:
    """The JSON the script prints on its last line (the script must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextmanager
def running_process(script: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A fresh process running the script (which may import this tree's test helpers), with the first line
    it prints (what it made), which it must print and then wait (e.g. `sys.stdin.read()`); killed as the
    out-of-memory killer does (SIGKILL, no cleanup) when the block has not killed it."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": f"{SRC}:{TESTS}", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line, f"the process said nothing (exit status {child.wait()})"
        yield child, line
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
