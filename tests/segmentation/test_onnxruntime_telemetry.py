"""ONNX Runtime's official builds (1.2x and later) send usage telemetry to Microsoft from Linux too, and keep
a device id under the user's cache folder. A hospital server running sarcoscope must not send it unasked: the
engine's process starts none of it. The switch (ORT_DISABLE_TELEMETRY) is read when onnxruntime is first
imported, so each run is a fresh process with its own HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = """
import numpy as np
from sarcoscope.segmentation.unet import UNetEngine
UNetEngine().segment(np.full((1, 64, 64), -1000.0, dtype=np.float32), (0.75, 0.75))
"""
BARE = """
import onnxruntime as ort
from sarcoscope.segmentation.unet import resolve_model_dir
ort.InferenceSession(str(resolve_model_dir(None) / "model.onnx"), providers=["CPUExecutionProvider"])
"""


def _written_by(code: str, home: Path) -> list[str]:
    """What a Python process running `code` with HOME at `home` leaves under it (and in its temp folder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"))
    (home / "tmp").mkdir(parents=True)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_the_engine_leaves_no_telemetry_id_or_cache(tmp_path: Path) -> None:
    bare = _written_by(BARE, tmp_path / "bare")
    if not any("onnxruntime" in p for p in bare):
        pytest.skip(f"this onnxruntime build keeps no telemetry files (it wrote {bare})")
    assert _written_by(ENGINE, tmp_path / "engine") == []
