"""The validation toolkit on the real L3 slices (../shared/data): id matching, spacing and HU from DICOM."""

from __future__ import annotations

import shutil
from pathlib import Path

from sarcoscope.validation import run_validation


def test_reference_against_itself_on_real_slices(shared_data: Path, tmp_path: Path):
    real = shared_data / "real" / "l3_slices"
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted((real / "labels").glob("*.npy")):
        shutil.copy(f, pred / f"{f.stem}_pred.npy")
    rep = run_validation(pred, real / "labels", tmp_path / "out", images_dir=real / "images", gallery_size=1)
    # "L3_EMC101.dcm", "EMC101.npy" and "EMC101_pred.npy" are one case.
    cases = sorted(f.stem for f in (real / "labels").glob("*.npy"))
    assert len(cases) >= 5 and sorted(r["case_id"] for r in rep.per_case) == cases
    for row in rep.per_case:
        assert row["msv_dice"] == row["muscle_dice"] == row["imat_dice"] == 1.0
        assert row["muscle_area_err_cm2"] == 0.0 and row["muscle_hu_diff"] == 0.0
        # The labels were drawn with the HU windows, so image and labels line up only if both are read
        # in the same orientation: reference tissue means must fall inside their windows.
        assert -29 <= row["muscle_hu_ref"] <= 150
        assert -190 <= row["sat_hu_ref"] <= -30 and -190 <= row["imat_hu_ref"] <= -30
        assert 50 < row["muscle_area_ref_cm2"] < 400  # spacing came from the DICOM header
    assert not rep.warnings
