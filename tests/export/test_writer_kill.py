"""kill -9 in the middle of writing: the output folder always holds one complete, consistent set."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import pytest

import sarcoscope
from sarcoscope.export import write_outputs

#: Writes the two results alternately into the folder, forever, saying when each write is complete.
WRITER = """
import pickle, sys
from pathlib import Path
from sarcoscope.export import write_outputs
results = pickle.loads(Path(sys.argv[1]).read_bytes())
for k in range(10**6):
    write_outputs(results[k % 2], Path(sys.argv[2]))
    print(k, flush=True)
"""


def _state(folder: Path) -> dict:
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return {
        "names": sorted(p.name for p in folder.iterdir() if p.name != "notes.txt"),
        "slices": report["l3"]["slice_indices"],
        "listed": sorted(report["outputs"].values()),
        "metrics": (folder / "metrics.csv").read_bytes(),
        "labels_depth": nib.load(folder / "labels.nii.gz").shape[2],
    }


@pytest.mark.slow
def test_kill_during_writes_leaves_a_complete_set(make_result, tmp_path: Path) -> None:
    results = (make_result((5,), dicom=True), make_result((4, 5, 6)))  # differ in every file
    expected = []
    for k, result in enumerate(results):
        write_outputs(result, tmp_path / f"ref{k}")
        expected.append(_state(tmp_path / f"ref{k}"))
    assert expected[0]["names"] != expected[1]["names"]  # the SEG is only in the first set
    pickled = tmp_path / "results.pkl"
    pickled.write_bytes(pickle.dumps(results))
    out = tmp_path / "work" / "out"
    write_outputs(results[1], out)
    (out / "notes.txt").write_text("user file")
    env = {**os.environ, "PYTHONPATH": str(Path(sarcoscope.__file__).parents[1])}
    rng = random.Random(16)
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(pickled), str(out)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 3)):
            proc.stdout.readline()  # some writes completed
        # a write takes ~0.1-0.5 s here: the kill lands somewhere inside the next one
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = _state(out)  # report.json present and readable: never neither set
        assert state in expected, "the folder holds a mix of two runs"
        assert state["listed"] == state["names"]
        assert (out / "notes.txt").read_text() == "user file"
    # the next write cleans up what the killed one left beside the folder
    write_outputs(results[0], out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
