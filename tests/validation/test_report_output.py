"""Where `run_validation` writes: only its own outputs are replaced, risky output folders are refused,
staging folders never linger, and permissions follow the user's umask like the other outputs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from validation_synth import make_slice

from sarcoscope.errors import OutputError
from sarcoscope.validation import run_validation
from sarcoscope.validation.report_folder import REPORT_OUTPUTS


def _labels(folder: Path, cases: tuple[str, ...] = ("a", "b", "c"), suffix: str = "") -> Path:
    folder.mkdir(parents=True)
    for i, case in enumerate(cases):
        np.save(folder / f"{case}{suffix}.npy", make_slice(a=26 + i, b=20))
    return folder


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_report_replaces_only_its_own_outputs(tmp_path: Path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "NOTES.txt").write_text("my notes")
    (out / "cases" / "case1").mkdir(parents=True)
    (out / "cases" / "case1" / "report.json").write_text("{}")
    pred, ref = _labels(out / "pred", suffix="_pred"), _labels(out / "ref")  # inputs inside the folder
    l3 = tmp_path / "l3.csv"
    l3.write_text("case_id,l3_slice,slice_spacing_mm\na,40,3\n")
    run_validation(None, None, out, ref_l3_csv=l3, pred_l3_csv=l3)
    assert (out / "l3_per_case.csv").is_file()
    (out / "figures" / "gallery_gone.png").write_bytes(b"old figure")
    run_validation(pred, ref, out, gallery_size=1)
    names = {p.name for p in out.iterdir()}
    assert {"NOTES.txt", "cases", "pred", "ref"} <= names
    assert (out / "NOTES.txt").read_text() == "my notes"
    assert (out / "cases" / "case1" / "report.json").read_text() == "{}"
    assert sorted(p.name for p in pred.iterdir()) == ["a_pred.npy", "b_pred.npy", "c_pred.npy"]
    assert sorted(p.name for p in ref.iterdir()) == ["a.npy", "b.npy", "c.npy"]
    assert {"report.md", "report.html", "per_case.csv", "settings.json"} <= names
    # The earlier report's outputs this one does not write are gone: the folder never mixes two reports.
    assert "l3_per_case.csv" not in names and "l3_summary.csv" not in names
    assert not (out / "figures" / "gallery_gone.png").exists()
    assert _hidden(out) == [] and _hidden(tmp_path) == []


def test_files_named_like_outputs_that_no_report_wrote_are_refused_not_replaced(tmp_path: Path):
    """A study folder's own figures/, report.md or settings.json (common names) were taken for an earlier
    report's outputs: replaced, or removed when the report wrote none, with the figures in them."""
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    out = tmp_path / "study"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "fig1.png").write_bytes(b"my figure")
    (out / "report.md").write_text("my notes")
    with pytest.raises(OutputError, match=r"figures, report.md .*no validation report"):
        run_validation(pred, ref, out, gallery_size=0)
    assert (out / "figures" / "fig1.png").read_bytes() == b"my figure"
    assert (out / "report.md").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.md"]
    assert _hidden(tmp_path) == []


def test_every_output_of_a_full_report_is_a_known_output(tmp_path: Path):
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    sites, patients, l3 = tmp_path / "sites.csv", tmp_path / "patients.csv", tmp_path / "l3.csv"
    sites.write_text("case_id,site,internal\na,A,yes\nb,B,no\nc,B,no\n")
    patients.write_text("case_id,height_cm\na,170\nb,160\nc,180\n")
    l3.write_text("case_id,l3_slice,slice_spacing_mm\na,40,3\nb,41,3\nc,42,3\n")
    out = tmp_path / "out"
    rep = run_validation(
        pred, ref, out, sites_csv=sites, patients_csv=patients, ref_l3_csv=l3, pred_l3_csv=l3,
        pixel_spacing=(0.8, 0.8), gallery_size=1,
    )  # fmt: skip
    assert {p.name for p in out.iterdir()} <= REPORT_OUTPUTS
    assert set(rep.files) <= REPORT_OUTPUTS


def test_risky_output_folders_are_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "data.txt").write_text("precious")
    monkeypatch.chdir(work)
    for out in (Path("."), work, tmp_path):  # the current folder and one above it
        with pytest.raises(OutputError, match="current folder, one above it or the home folder"):
            run_validation(pred, ref, out)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(OutputError, match="home folder"):
        run_validation(pred, ref, tmp_path / "home")
    results = tmp_path / "results.csv"
    results.write_text("important")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        run_validation(pred, ref, results)
    with pytest.raises(OutputError, match="is an input folder"):
        run_validation(pred, ref, ref)
    with pytest.raises(OutputError, match="is inside an input folder"):  # its report a case of the next run
        run_validation(pred, ref, ref / "report")
    assert not (ref / "report").exists()
    assert results.read_text() == "important"
    assert sorted(p.name for p in work.iterdir()) == ["data.txt", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "pred", "ref", "results.csv", "work"]


def test_an_input_inside_an_output_of_the_report_is_refused(tmp_path: Path):
    out = tmp_path / "out"
    pred = _labels(out / "predictions", suffix="_pred")  # e.g. saved by an earlier --engine run
    ref = _labels(tmp_path / "ref")
    with pytest.raises(OutputError, match=r"out/predictions, an output of the report"):
        run_validation(pred, ref, out)
    assert sorted(p.name for p in pred.iterdir()) == ["a_pred.npy", "b_pred.npy", "c_pred.npy"]
    assert [p.name for p in out.iterdir()] == ["predictions"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(proc.stdout)


def test_staging_folders_of_killed_runs_are_removed(tmp_path: Path):
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    out = tmp_path / "out"
    killed = tmp_path / f".out.validate-staging-{_dead_pid()}-0123456789ab"
    legacy = tmp_path / ".out.tmp-ab12cd34"  # left by an earlier version (no process id in the name)
    live = tmp_path / f".out.validate-staging-{os.getppid()}-0123456789ab"  # a run still going
    user = tmp_path / ".out.tmp-notes123"  # the user's, holding other files
    for folder in (killed, legacy, live, user):
        (folder / "figures").mkdir(parents=True)
    (user / "mine.txt").write_text("x")
    run_validation(pred, ref, out, gallery_size=0)
    assert _hidden(tmp_path) == sorted([live.name, user.name])


def test_a_failed_run_leaves_no_staging_and_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    out = tmp_path / "out"
    run_validation(pred, ref, out, gallery_size=0)
    before = (out / "report.md").read_text()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sarcoscope.validation.placement._replace", fail)
    with pytest.raises(OutputError, match="No space left on device"):
        run_validation(pred, ref, out, gallery_size=0, title="another title")
    assert (out / "report.md").read_text() == before
    assert _hidden(tmp_path) == [] and _hidden(out) == []


def test_permissions_follow_the_umask_and_an_existing_folder_keeps_its_own(tmp_path: Path):
    pred, ref = _labels(tmp_path / "pred", suffix="_pred"), _labels(tmp_path / "ref")
    old = os.umask(0o022)
    try:
        run_validation(pred, ref, tmp_path / "new", gallery_size=0)
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755
        assert stat.S_IMODE((tmp_path / "new" / "per_case.csv").stat().st_mode) == 0o644
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        run_validation(pred, ref, private, gallery_size=0)
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    finally:
        os.umask(old)
