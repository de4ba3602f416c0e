"""Side inputs of `run_validation` (sites, patients, L3 files, file names): bad content is one clear
ValidationInputError naming the file and row, never a crash or a silently wrong report."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from validation_synth import make_slice

from sarcoscope.cli import app
from sarcoscope.errors import ValidationInputError
from sarcoscope.validation import run_validation


@pytest.fixture
def maps(tmp_path: Path) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for case in ("c1", "c2", "c3"):
        np.save(pred / f"{case}_pred.npy", make_slice())
        np.save(ref / f"{case}.npy", make_slice())
    return pred, ref


def test_side_files_that_are_not_utf8_name_the_file_and_line(tmp_path: Path, maps: tuple[Path, Path]):
    pred, ref = maps
    sites = tmp_path / "sites.csv"
    sites.write_bytes(b"case_id,site\nc1,M\xfcnchen\nc2,B\nc3,B\n")
    with pytest.raises(ValidationInputError, match=r"Sites file .*sites.csv line 2: not UTF-8 .*0xfc"):
        run_validation(pred, ref, tmp_path / "out", sites_csv=sites)
    patients = tmp_path / "patients.csv"
    patients.write_bytes(b"case_id,height_cm\nc1,170\nc2,17\xe90\n")
    with pytest.raises(ValidationInputError, match=r"Patients file .*patients.csv line 3: not UTF-8"):
        run_validation(pred, ref, tmp_path / "out", patients_csv=patients)
    ok, bad = tmp_path / "ok.csv", tmp_path / "l3.csv"
    ok.write_text("case_id,l3_slice,slice_spacing_mm\nc1,40,3\n")
    bad.write_bytes(b"case_id,l3_slice,slice_spacing_mm\nc1,4\xe90,3\n")
    with pytest.raises(ValidationInputError, match=r"L3 file .*l3.csv line 2: not UTF-8"):
        run_validation(None, None, tmp_path / "out", ref_l3_csv=ok, pred_l3_csv=bad)
    bom = tmp_path / "bom.csv"  # Excel's "CSV UTF-8" starts with a byte-order mark: fine
    bom.write_bytes(b"\xef\xbb\xbfcase_id,l3_slice,slice_spacing_mm\nc1,41,3\n")
    rep = run_validation(None, None, tmp_path / "out", ref_l3_csv=ok, pred_l3_csv=bom)
    assert rep.l3_summary is not None and rep.l3_summary["mean_abs_error_mm"] == 3.0


def test_a_text_file_named_npy_and_a_sites_file_without_rows_say_so(tmp_path: Path, maps: tuple[Path, Path]):
    """They were "contains pickled (object) data ... load it unsafely" and "needs a header"."""
    pred, ref = maps
    args = ["validate", "--pred", str(pred), "--ref", str(ref), "-o", str(tmp_path / "out")]
    (pred / "c2_pred.npy").write_text("case,muscle\nc2,12\n")
    result = CliRunner().invoke(app, args, env={"COLUMNS": "10000"})
    assert (result.exit_code, result.output) == (
        1,
        f"error: Case c2: {pred / 'c2_pred.npy'} is not a NumPy array file (a .npy file starts with "
        "\\x93NUMPY).\n",
    )
    np.save(pred / "c2_pred.npy", make_slice())
    sites = tmp_path / "sites.csv"
    sites.write_text("case_id,site\n")
    result = CliRunner().invoke(app, [*args, "--sites", str(sites)], env={"COLUMNS": "10000"})
    assert (result.exit_code, result.output) == (1, f"error: Sites file {sites}: has a header but no rows.\n")
    sites.write_text("case,centre\nc1,A\n")
    with pytest.raises(
        ValidationInputError, match=r"sites.csv: needs a header with the columns case_id and site"
    ):
        run_validation(pred, ref, tmp_path / "out", sites_csv=sites)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("pred_rows", "message"),
    [
        ("c1,nan,3", r"line 2: l3_slice 'nan' is not a finite number"),
        ("c1,inf,3", r"line 2: l3_slice 'inf' is not a finite number"),
        ("c1,-5,3", r"line 2: l3_slice must be a whole, non-negative slice index"),
        ("c1,40,nan", r"line 2: slice_spacing_mm 'nan' is not a finite number"),
        ("c1,40,0", r"line 2: slice_spacing_mm 0 must be positive"),
        ("c1,,-3", r"line 2: slice_spacing_mm -3 must be positive"),
    ],
)
def test_l3_values_that_measure_nothing_are_refused(tmp_path: Path, pred_rows: str, message: str):
    ref, pred = tmp_path / "ref.csv", tmp_path / "pred.csv"
    ref.write_text("case_id,l3_slice,slice_spacing_mm\nc1,40,3\n")
    pred.write_text(f"case_id,l3_slice,slice_spacing_mm\n{pred_rows}\n")
    with pytest.raises(ValidationInputError, match=r"pred.csv " + message):
        run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)


def test_a_nan_z_position_is_refused_not_counted_as_a_miss(tmp_path: Path):
    ref, pred = tmp_path / "ref.csv", tmp_path / "pred.csv"
    ref.write_text("case_id,l3_slice,z_mm\nc1,41,10\nc2,30,103\n")
    pred.write_text("case_id,l3_slice,z_mm\nc1,40,nan\nc2,30,100\n")
    with pytest.raises(ValidationInputError, match=r"pred.csv line 2: z_mm 'nan' is not a finite number"):
        run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)


def test_a_case_listed_twice_in_the_patients_file_is_refused(tmp_path: Path, maps: tuple[Path, Path]):
    pred, ref = maps
    patients = tmp_path / "patients.csv"
    patients.write_text("case_id,height_cm\nc1,150\nc2,160\nc1,190\n")
    with pytest.raises(ValidationInputError, match=r"patients.csv line 4: case c1 appears twice"):
        run_validation(pred, ref, tmp_path / "out", patients_csv=patients, pixel_spacing=(0.8, 0.8))
    patients.write_text("case_id,height_cm\nc1,150\n,170\n")
    with pytest.raises(ValidationInputError, match=r"patients.csv line 3: empty case_id"):
        run_validation(pred, ref, tmp_path / "out", patients_csv=patients, pixel_spacing=(0.8, 0.8))


def test_file_names_that_are_not_utf8_are_refused_up_front(tmp_path: Path, maps: tuple[Path, Path]):
    pred, ref = maps
    name = b"M\xfcller"  # Latin-1, as on many shares and USB exports
    for folder, suffix in ((pred, b"_pred"), (ref, b"")):
        try:
            with open(os.fsencode(folder) + b"/" + name + suffix + b".npy", "wb") as fh:
                np.save(fh, make_slice())
        except OSError:
            pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(ValidationInputError, match=r"ref holds a file whose name is not UTF-8.*: M\\xfcller"):
        run_validation(pred, ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_patient_heights_are_checked_against_the_one_plausible_range(tmp_path: Path):
    from sarcoscope.validation.inputs import read_heights

    patients = tmp_path / "patients.csv"
    patients.write_text("case_id,height_cm\nc1,150\nc2,80\n")  # 80 cm: the analysis itself refuses it
    with pytest.raises(ValidationInputError, match=r"line 3: height 80 cm is outside the plausible"):
        read_heights(patients)
    patients.write_text("case_id,height_m\nc1,1.5\nc2,2.4\n")
    assert read_heights(patients) == {"c1": 1.5, "c2": 2.4}
