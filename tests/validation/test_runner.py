"""run_validation end to end on synthetic cohorts with exact answers, and its errors."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
from validation_synth import decode_labels, image_of, make_slice

from sarcoscope.errors import ValidationInputError
from sarcoscope.segmentation import register_engine
from sarcoscope.validation import run_validation
from sarcoscope.validation.metrics import case_metrics
from sarcoscope.validation.stats import iou_bin_counts


def _write(tmp: Path, cases, *, heights: bool = True) -> tuple[Path, Path, Path, Path]:
    pred, ref = tmp / "pred", tmp / "ref"
    pred.mkdir()
    ref.mkdir()
    for case, _, p, r in cases:
        np.save(pred / f"{case}_pred.npy", p)
        np.save(ref / f"{case}.npy", r)
    sites = tmp / "sites.csv"
    sites.write_text("case_id,site\n" + "".join(f"{c},{s}\n" for c, s, _, _ in cases))
    patients = tmp / "patients.csv"
    patients.write_text(
        "case_id,height_cm\n" + "".join(f"{c},{160 + i}\n" for i, (c, *_) in enumerate(cases))
    )
    return pred, ref, sites, patients


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_cohort_report_flags_the_site_with_another_muscle_convention(tmp_path: Path, cohort):
    cases = cohort(n=8)  # 8 per site: enough power for Holm over 3 pairs x 8 metrics
    pred, ref, sites, patients = _write(tmp_path, cases)
    out = tmp_path / "report"
    rep = run_validation(
        pred, ref, out, sites_csv=sites, patients_csv=patients, pixel_spacing=(0.8, 0.8), gallery_size=2
    )
    assert rep.n_cases == 24
    assert set(rep.flagged_sites) == {"C"}
    assert any("muscle_dice" in r for r in rep.flagged_sites["C"])
    # Per-case numbers are exactly the metrics of the arrays.
    rows = {r["case_id"]: r for r in _csv(out / "per_case.csv")}
    for case, site, p, r in cases:
        expect = case_metrics(p, r, pixel_spacing=(0.8, 0.8))
        assert float(rows[case]["muscle_dice"]) == pytest.approx(expect["muscle_dice"])
        assert float(rows[case]["msv_iou"]) == pytest.approx(expect["msv_iou"])
        assert rows[case]["site"] == site
        h = 1.60 + list(rows).index(case) / 100
        assert float(rows[case]["smi_ref"]) == pytest.approx(expect["muscle_area_ref_cm2"] / h**2)
    # The area-error summary is the per-case errors' mean, mean absolute, largest and count beyond 6 %.
    errors = {c: case_metrics(p, r)["muscle_area_err_pct"] for c, _, p, r in cases}
    largest = max(errors, key=lambda c: abs(errors[c]))
    muscle = rep.area_error["muscle"]
    assert (muscle.n, muscle.worst_case, muscle.beyond_bar) == (
        24,
        largest,
        sum(abs(e) > 6 for e in errors.values()),
    )
    assert muscle.mean_pct == pytest.approx(np.mean(list(errors.values())))
    assert muscle.mean_abs_pct == pytest.approx(np.mean(np.abs(list(errors.values()))))
    assert muscle.worst_pct == pytest.approx(errors[largest])
    assert {r["tissue"] for r in _csv(out / "area_error_summary.csv")} == set(rep.tissues)
    # Table 3 counts are the bin counts of the per-case IoU.
    t3 = [r for r in _csv(out / "table3_iou_bins.csv") if r["column"] == "muscle"]
    expected = iou_bin_counts([case_metrics(p, r)["muscle_iou"] for _, _, p, r in cases])
    assert {r["iou_bin"]: int(r["count"]) for r in t3} == {k: v[0] for k, v in expected.items()}
    t5 = _csv(out / "table5_sites_iou_bins.csv")
    assert {r["site"]: int(r["n"]) for r in t5} == {"A": 8, "B": 8, "C": 8}
    flags = {r["site"] for r in _csv(out / "site_comparison.csv") if r["flagged"] == "True"}
    assert flags == {"C"}
    agreement = {r["quantity"] for r in _csv(out / "agreement.csv")}
    assert {"muscle area (cm²)", "SMI (cm²/m²)"} <= agreement
    md = (out / "report.md").read_text()
    assert "Table 3 layout" in md and "Table 5 layout" in md and "Site C flagged" in md
    assert "28.0 % of the reference sat pixels are predicted as muscle" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and 'src="figures' not in html
    assert len(list((out / "figures").glob("gallery_*.png"))) == 2
    assert json.loads((out / "settings.json").read_text())["reference_mapping"] == "sarcoscope"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no staging left


def test_internal_site_goes_to_table3_and_the_others_to_table6(tmp_path: Path, cohort):
    cases = cohort(n=3)
    pred, ref, sites, _ = _write(tmp_path, cases)
    sites.write_text("case_id,site,internal\n" + "".join(f"{c},{s},{s == 'A'}\n" for c, s, _, _ in cases))
    out = tmp_path / "out"
    run_validation(pred, ref, out, sites_csv=sites, gallery_size=0)
    t3 = _csv(out / "table3_iou_bins.csv")
    t6 = _csv(out / "table6_pooled_iou_bins.csv")
    assert sum(int(r["count"]) for r in t3 if r["column"] == "msv") == 3
    assert sum(int(r["count"]) for r in t6 if r["column"] == "msv") == 6
    assert "external sites (B, C)" in (out / "report.md").read_text()
    sites.write_text(
        "case_id,site,internal\n" + "".join(f"{c},A,{i == 0}\n" for i, (c, *_) in enumerate(cases))
    )
    with pytest.raises(ValidationInputError, match="marked internal on some rows only"):
        run_validation(pred, ref, out, sites_csv=sites)


def test_without_spacing_areas_are_not_invented(tmp_path: Path, cohort):
    pred, ref, _, patients = _write(tmp_path, cohort(n=2))
    rep = run_validation(pred, ref, tmp_path / "out", patients_csv=patients, gallery_size=0)
    assert "muscle_area_pred_cm2" not in rep.per_case[0]
    assert "muscle_area_err_pct" in rep.per_case[0]
    assert any("No pixel spacing" in w for w in rep.warnings)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "muscle area (pixels)" in md and "SMI agreement: not computed (no pixel spacing)" in md


def test_errors_are_clear_and_leave_the_old_report(tmp_path: Path, cohort):
    pred, ref, sites, _ = _write(tmp_path, cohort(n=2))
    out = tmp_path / "out"
    run_validation(pred, ref, out, gallery_size=0)
    before = (out / "per_case.csv").read_text()
    np.save(ref / "extra.npy", make_slice())
    with pytest.raises(ValidationInputError, match=r"reference case.*without prediction: extra"):
        run_validation(pred, ref, out)
    (ref / "extra.npy").unlink()
    np.save(pred / "A00_pred.npy", make_slice(shape=70))
    with pytest.raises(
        ValidationInputError, match=r"Case A00: prediction A00_pred.npy has shape \(1, 70, 70\)"
    ):
        run_validation(pred, ref, out)
    bad = make_slice()
    bad[0, 0] = 9
    np.save(pred / "A00_pred.npy", bad)
    with pytest.raises(ValidationInputError, match=r"A00_pred.npy: unknown label id\(s\) 9"):
        run_validation(pred, ref, out)
    np.save(pred / "A00_pred.npy", make_slice())
    sites.write_text("case_id,site\nA00,A\n")
    with pytest.raises(ValidationInputError, match="no site for case"):
        run_validation(pred, ref, out, sites_csv=sites)
    with pytest.raises(ValidationInputError, match="either a prediction folder or --engine"):
        run_validation(pred, ref, out, engine="threshold", images_dir=tmp_path)
    assert (out / "per_case.csv").read_text() == before  # failed runs never touched the last report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "patients.csv", "pred", "ref", "sites.csv"]


class _DecodingEngine:
    """Test engine: recovers the exact labels from the synthetic HU values."""

    name = "decode-test"
    model_id = "decode-test-1"

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        return decode_labels(slices)


class _TempLookingEngine(_DecodingEngine):
    """_DecodingEngine that notes what the temporary folder holds while it segments."""

    name = "temp-looking-test"
    seen: ClassVar[list[list[Path]]] = []

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        self.seen.append(sorted(Path(tempfile.gettempdir()).iterdir()))
        return super().segment(slices, pixel_spacing)


def test_predictions_not_kept_are_in_a_temporary_folder_that_a_later_run_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --keep-predictions an engine's label maps went to a `sarcoscope-pred-*` folder, which a killed
    run left for good. They are now in an images_temp_dir (named by its process: swept by any later run once
    that process is gone), removed at the end as before."""
    register_engine("temp-looking-test", _TempLookingEngine)
    images, ref = _three_cases(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    rep = run_validation(
        None, ref, tmp_path / "out", engine="temp-looking-test", images_dir=images, keep_predictions=False
    )
    assert [row["muscle_dice"] for row in rep.per_case] == [1.0, 1.0, 1.0]
    seen = {p for listing in _TempLookingEngine.seen for p in listing}
    (folder,) = {p for p in seen if not p.name.endswith(".lock")}
    assert seen == {folder, folder.with_name(f"{folder.name}.lock")}  # its lock file (fileio.LockedTempDir)
    assert folder.name.startswith(f"sarcoscope-predictions-{os.getpid()}-")
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "out" / "predictions").exists()


def _save_nifti_slice(image: np.ndarray, path: Path, spacing: float) -> None:
    ras = np.ascontiguousarray(image[np.newaxis].transpose(2, 1, 0)[::-1, ::-1, :]).astype(np.int16)
    nib.save(nib.Nifti1Image(ras, np.diag([spacing, spacing, 5.0, 1.0])), path)


def _three_cases(tmp_path: Path) -> tuple[Path, Path]:
    """Folders of three synthetic cases x1..x3: images (NIfTI, L3_ prefixed) and reference labels."""
    images, ref = tmp_path / "images", tmp_path / "ref"
    images.mkdir()
    ref.mkdir()
    for i, case in enumerate(("x1", "x2", "x3")):
        labels = make_slice(a=26 + i, b=20)
        _save_nifti_slice(image_of(labels), images / f"L3_{case}.nii.gz", 0.75)
        np.save(ref / f"{case}.npy", labels)
    return images, ref


def test_engine_mode_segments_images_and_scores_hu(tmp_path: Path):
    register_engine("decode-test", _DecodingEngine)
    images, ref = _three_cases(tmp_path)
    rep = run_validation(None, ref, tmp_path / "out", engine="decode-test", images_dir=images, gallery_size=1)
    for row in rep.per_case:
        assert row["muscle_dice"] == row["imat_dice"] == row["msv_dice"] == 1.0
        assert row["muscle_hu_diff"] == 0.0 and row["muscle_hu_ref"] == pytest.approx(45.0)
        assert row["sat_area_err_cm2"] == 0.0
    assert rep.per_case[0]["muscle_area_ref_cm2"] == pytest.approx(
        np.count_nonzero(make_slice(a=26, b=20) == 1) * 0.75**2 / 100
    )
    assert sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir()) == [
        "x1.npy",
        "x2.npy",
        "x3.npy",
    ]
    assert "engine `decode-test` (model `decode-test-1`)" in (tmp_path / "out" / "report.md").read_text()
    # The prediction mapping also applies to engine output (here: IMAT merged into muscle).
    four = tmp_path / "ref4"
    four.mkdir()
    for case in ("x1", "x2", "x3"):
        np.save(
            four / f"{case}.npy", np.where(np.load(ref / f"{case}.npy") == 4, 1, np.load(ref / f"{case}.npy"))
        )
    rep = run_validation(
        None, four, tmp_path / "out4", engine="decode-test", images_dir=images,
        ref_mapping="imat-in-muscle-4class", pred_mapping="sarcoscope-imat-as-muscle", gallery_size=0,
    )  # fmt: skip
    assert rep.tissues == ("muscle", "sat", "vat") and not rep.warnings
    assert all(r["muscle_dice"] == 1.0 and "imat_dice" not in r for r in rep.per_case)
    # An image that is not on the label grid is refused before any segmentation.
    _save_nifti_slice(image_of(make_slice(shape=70)), images / "L3_x1.nii.gz", 0.75)
    with pytest.raises(ValidationInputError, match=r"Case x1: image L3_x1.nii.gz has shape \(1, 70, 70\)"):
        run_validation(None, ref, tmp_path / "out5", engine="decode-test", images_dir=images)


class _TrainedEngine(_DecodingEngine):
    """The decoding engine with a model card that names the cases its model was trained and stopped on."""

    name = "trained-test"
    card: ClassVar[dict] = {
        "training_data": {"train": {"data_cases": ["x2", "y7"]}, "validation": {"data_cases": ["x3"]}}
    }


def test_cases_the_model_has_seen_are_named_as_a_fit_not_a_test(tmp_path: Path):
    """A site that fine-tunes on its corrected slices and validates on them would read a fit as accuracy."""
    register_engine("trained-test", _TrainedEngine)
    images, ref = _three_cases(tmp_path)
    rep = run_validation(
        None, ref, tmp_path / "out", engine="trained-test", images_dir=images, gallery_size=0
    )
    [warning] = [w for w in rep.warnings if "training data" in w]
    assert warning.startswith("2 of the 3 cases (x2, x3) were in the training data")
    assert warning in (tmp_path / "out" / "report.md").read_text()
    assert warning in json.loads((tmp_path / "out" / "settings.json").read_text())["warnings"]
    only_new = run_validation(
        None, ref, tmp_path / "out2", engine="decode-test", images_dir=images, gallery_size=0
    )  # no model card: nothing to say
    assert not [w for w in only_new.warnings if "training data" in w]


def test_four_class_reference_without_merging_warns(tmp_path: Path, cohort):
    cases = [(c, s, p, np.where(r == 4, 1, r)) for c, s, p, r in cohort(n=1)]
    pred, ref, _, _ = _write(tmp_path, cases)
    rep = run_validation(pred, ref, tmp_path / "out", ref_mapping="imat-in-muscle-4class", gallery_size=0)
    assert rep.tissues == ("muscle", "sat", "vat")
    assert any("sarcoscope-imat-as-muscle" in w for w in rep.warnings)


def test_l3_localization(tmp_path: Path):
    ref = tmp_path / "ref_l3.csv"
    pred = tmp_path / "pred_l3.csv"
    ref.write_text("case_id,l3_slice,slice_spacing_mm\na,40,3\nb,50,3\nc,60,3\nd,70,3\n")
    pred.write_text("case_id,l3_slice\na,40\nb,51\nc,58\nd,74\n")
    rep = run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)
    s = rep.l3_summary
    assert s is not None
    # errors 0, 3, -6, 12 mm
    assert s["mean_abs_error_mm"] == pytest.approx(5.25)
    assert s["median_abs_error_mm"] == pytest.approx(4.5)
    assert (s["within_5mm"], s["within_10mm"], s["exact_slice"]) == (0.5, 0.75, 0.25)
    rows = _csv(tmp_path / "out" / "l3_per_case.csv")
    assert [float(r["error_mm"]) for r in rows] == [0.0, 3.0, -6.0, 12.0]
    # A blank predicted slice: L3 not found, a miss in the fractions, outside the error statistics.
    pred.write_text("case_id,l3_slice\na,40\nb,\nc,58\nd,74\n")
    s = run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred).l3_summary
    assert s is not None and s["not_found"] == 1
    assert s["mean_abs_error_mm"] == pytest.approx(6.0)  # 0, 6, 12
    assert (s["within_5mm"], s["within_10mm"]) == (0.25, 0.5)
    assert "| 4 | 1 |" in (tmp_path / "out" / "report.md").read_text()
    pred.write_text("case_id,l3_slice,z_mm\na,40,100.5\n")
    ref.write_text("case_id,l3_slice,z_mm\na,41,102.0\n")
    rep = run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)
    assert rep.l3_summary is not None and rep.l3_summary["mean_abs_error_mm"] == pytest.approx(1.5)
    ref.write_text("case_id,slice\na,40\n")
    with pytest.raises(ValidationInputError, match="columns case_id and l3_slice"):
        run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)
    ref.write_text("case_id,l3_slice\na,41\n")
    pred.write_text("case_id,l3_slice\na,40\n")
    with pytest.raises(ValidationInputError, match="no z_mm in both files and no slice_spacing_mm"):
        run_validation(None, None, tmp_path / "out", ref_l3_csv=ref, pred_l3_csv=pred)


def test_the_console_says_the_muscle_area_error_and_the_l3_error(tmp_path: Path):
    """What SMI inherits (the area error) and the L3 error are printed, not only the Dice table."""
    from typer.testing import CliRunner

    from sarcoscope.cli import app

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    exact = make_slice()
    short = exact.copy()
    muscle = np.flatnonzero(short == 1)
    short.flat[muscle[: len(muscle) // 10]] = 0  # a tenth of the muscle missed: -10 %, to the pixel
    expected = -100 * (len(muscle) // 10) / len(muscle)
    for case, labels in (("c1", exact), ("c2", short)):
        np.save(ref / f"{case}.npy", exact)
        np.save(pred / f"{case}.npy", labels)
    (tmp_path / "ref_l3.csv").write_text("case_id,l3_slice,slice_spacing_mm\nc1,40,3\nc2,50,3\n")
    (tmp_path / "pred_l3.csv").write_text("case_id,l3_slice,slice_spacing_mm\nc1,41,3\nc2,50,3\n")
    args = ["validate", "--pred", pred, "--ref", ref, "-o", tmp_path / "out"]
    args += ["--ref-l3", tmp_path / "ref_l3.csv", "--pred-l3", tmp_path / "pred_l3.csv"]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "10000"})
    assert result.exit_code == 0, result.output
    assert (
        f"Muscle area error: mean {expected / 2:+.1f} %, mean |error| {-expected / 2:.1f} %, largest "
        f"{expected:+.1f} % (c2); beyond ±6 % on 1 of 2 case(s)\n" in result.output
    )
    assert "L3: 2 case(s), 0 not found; median |error| 1.5 mm, largest 3.0 mm, within 10 mm 100 %\n" in (
        result.output
    )
