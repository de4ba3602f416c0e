"""Run a script in a fresh Python process importing this tree's sarcoscope: for what one process's history
would hide (imports, memory high-water marks, caches)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"


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
