"""What a command imports (issue 18): each library costs every run its import time, so a command loads only
the ones its work needs. Checked on the modules a fresh process holds at its end, not on times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: `sarcoscope` as the console script runs it, then the listed libraries it had imported (JSON on stderr).
RUN_AND_LIST = """
import json, sys
from sarcoscope.cli import main
wanted = json.loads(sys.argv[1])
sys.argv = ["sarcoscope", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stderr.write("\\nLOADED " + json.dumps([m for m in wanted if m in sys.modules]) + "\\n")
sys.exit(code)
"""

#: Libraries no `--help` needs (scipy.ndimage alone takes about 0.25 s to import, pydicom 0.3 s). Not
#: pydantic: typer itself imports it to show a command's options.
HEAVY = [
    "numpy",
    "scipy",
    "pydicom",
    "highdicom",
    "onnxruntime",
    "matplotlib",
    "nibabel",
    "PIL",
    "yaml",
    "requests",
    "torch",
]


def _run(tmp_path: Path, wanted: list[str], *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SARCOSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    env["HOME"] = str(tmp_path)  # no key or model registry of the user's
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, json.dumps(wanted), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("LOADED "))
    return done, json.loads(line.removeprefix("LOADED "))


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    for args in (["--help"], ["analyze", "--help"]):
        done, loaded = _run(tmp_path, HEAVY, *args)
        assert done.returncode == 0, done.stderr
        assert "analyze" in done.stdout
        assert loaded == [], f"`sarcoscope {' '.join(args)}` imported {loaded}"


def test_a_nifti_analysis_imports_no_dicom_object_writer(tmp_path: Path) -> None:
    """highdicom and pydicom's SR code dictionary (≈0.15 s) are for the SEG, SR and QC capture, which a NIfTI
    input does not get; its report still says why the SEG was not written."""
    made, _ = _run(tmp_path, [], "phantom", str(tmp_path / "ph"), "--kind", "slice", "--format", "nifti")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    done, loaded = _run(
        tmp_path,
        ["highdicom", "pydicom.sr.codedict", "sarcoscope.export.seg", "nibabel"],
        *["analyze", str(tmp_path / "ph" / "ct.nii.gz"), "-o", str(out), "--engine", "threshold"],
    )
    assert done.returncode == 0, done.stderr
    assert loaded == ["nibabel"]
    report = json.loads((out / "report.json").read_text())
    assert "DICOM SEG not written: the input was not DICOM (see labels.nii.gz)" in report["warnings"]
    assert sorted(p.name for p in out.iterdir()) == sorted(report["outputs"].values())
