"""What the user gives instead of (or besides) the input: pixel spacing for a NIfTI without a transform,
an output folder checked before any work."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from badinput_corpus import to_ras
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.phantom import make_slice


def _without_transform(path: Path, hu: np.ndarray) -> Path:
    """hu (y, x) as a one-slice NIfTI whose header has no spatial transform and placeholder 1 mm pixdim."""
    img = nib.Nifti1Image(to_ras(hu[None]), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, path)
    return path


def _muscle(args: list[str], out: Path) -> tuple[float, list[str]]:
    result = CliRunner().invoke(app, [*args, "--engine", "threshold", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    return report["average"]["tissues"]["muscle"]["area_cm2"], report["warnings"]


def test_nifti_without_transform_is_measured_with_the_users_spacing(tmp_path: Path) -> None:
    sl = make_slice(2, size=128)
    hu = np.rint(sl.hu).astype(np.int16)
    row, col = sl.pixel_spacing
    ct = _without_transform(tmp_path / "ct.nii.gz", hu)
    refused = CliRunner().invoke(app, ["analyze", str(ct), "-o", str(tmp_path / "a")])
    assert refused.exit_code == 1 and "no spatial transform" in refused.output
    assert not (tmp_path / "a").exists()
    muscle, warnings = _muscle(["analyze", str(ct), "--pixel-spacing", str(row), str(col)], tmp_path / "b")
    assert any("given by the user" in w for w in warnings)
    # the same pixels with the spacing in the header: the same area (read as 1 mm pixels: ~1/7 of it)
    nib.save(nib.Nifti1Image(to_ras(hu[None]), np.diag([col, row, 3.0, 1.0])), tmp_path / "ref.nii.gz")
    reference, _ = _muscle(["analyze", str(tmp_path / "ref.nii.gz")], tmp_path / "c")
    assert muscle == pytest.approx(reference, rel=1e-6)  # float32 header
    assert abs(reference - sl.truth["area_cm2"]["muscle"]) < 0.25 * sl.truth["area_cm2"]["muscle"]


def test_output_folder_is_checked_before_the_input_is_read(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file")
    for command in ("analyze", "batch"):
        args = [command, str(tmp_path / "no-such-input"), "-o", str(tmp_path / "blocker" / "out")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        assert "blocker is not a folder" in " ".join(result.output.split())
