"""`sarcoscope validate` on manual labels made elsewhere: Slice-O-Matic TAG references, per-tissue PNG
predictions, on the real L3 slices (../shared/data)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.conventions import TISSUES

CASES = ("EMC101", "EMC100", "EMC041")


def _folders(shared_data: Path, tmp_path: Path, write_tag, alberta_tags) -> tuple[Path, Path, Path]:
    """images/ (the real DICOM slices), ref/ (their reference as TAG files), pred/ (as tissue PNGs)."""
    real = shared_data / "real" / "l3_slices"
    images, ref, pred = tmp_path / "images", tmp_path / "ref", tmp_path / "pred"
    for folder in (images, ref, pred):
        folder.mkdir()
    for case in CASES:
        shutil.copy(real / "images" / f"L3_{case}.dcm", images)
        labels = np.load(real / "labels" / f"{case}.npy")
        write_tag(ref / f"{case}.tag", alberta_tags(labels))
        (pred / case).mkdir()
        for tissue, label in TISSUES.items():
            mask = ((labels == int(label)) * 255).astype(np.uint8)
            Image.fromarray(mask).save(pred / case / f"{tissue}.png")
    return images, ref, pred


def test_validate_reads_tag_references_and_png_predictions(
    shared_data: Path, tmp_path: Path, write_tag, alberta_tags
) -> None:
    images, ref, pred = _folders(shared_data, tmp_path, write_tag, alberta_tags)
    out = tmp_path / "report"
    args = ["validate", "--ref", ref, "--pred", pred, "--images", images, "-o", out, "--gallery", "1"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--ref-labels", "slice-o-matic-alberta"]])
    assert result.exit_code == 0, result.output
    with (out / "per_case.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case_id"] for r in rows) == sorted(CASES)
    for row in rows:  # the same labels in two formats: identical, on the image's grid
        assert float(row["msv_dice"]) == float(row["imat_dice"]) == float(row["vat_dice"]) == 1.0
        assert row["ref_file"].endswith(".tag") and row["pred_file"] == row["case_id"]
        assert -29 <= float(row["muscle_hu_ref"]) <= 150  # TAG rows and columns are the DICOM's
    assert "mapping `slice-o-matic-alberta`" in (out / "report.md").read_text()

    # Without the mapping, tags would be read as project ids: refused, the file named, no report written.
    result = CliRunner().invoke(app, [str(a) for a in [*args[:-4], "-o", tmp_path / "r2"]])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "EMC041.tagisaSlice-O-MaticTAGfile" in "".join(result.output.split())  # however rich wraps it
    assert not (tmp_path / "r2").exists()

    # A TAG file made for another image is refused with its case, file and image named.
    write_tag(ref / "EMC100.tag", np.zeros((256, 256), np.uint8))
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--ref-labels", "slice-o-matic-alberta"]])
    assert result.exit_code == 1, result.output
    expected = "Case EMC100: image L3_EMC100.dcm has shape (1, 512, 512) but label map EMC100.tag"
    assert "".join(expected.split()) in "".join(result.output.split())
