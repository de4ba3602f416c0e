"""Cohort runs: every case analysed, failures recorded without stopping the rest, reruns resume."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from sarcoscope import fileio
from sarcoscope.batch import discover_cases, read_manifest, run_batch
from sarcoscope.batch.cases import RESULT_COLUMNS, safe_case_id
from sarcoscope.batch.inputs import INPUT_FILES
from sarcoscope.cli import app
from sarcoscope.errors import InputError, OutputError
from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.phantom import make_slice


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three single-slice phantom studies and one broken study."""
    root = tmp_path_factory.mktemp("cohort")
    for seed in (1, 2, 3):
        sl = make_slice(seed, size=256)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), root / f"patient{seed}")
    (root / "broken").mkdir()
    (root / "broken" / "x.dcm").write_bytes(b"not dicom at all")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_discover_and_manifest(cohort: Path, tmp_path: Path) -> None:
    assert [c.case_id for c in discover_cases(cohort)] == ["broken", "patient1", "patient2", "patient3"]
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,path,height_cm,sex,site\nA,{cohort / 'patient1'},170,F,H1\n")
    (case,) = read_manifest(manifest)
    assert (case.case_id, case.height_cm, case.sex, case.site) == ("A", 170.0, "F", "H1")
    # cohort tables write the sex out as often as not
    manifest.write_text(f"case_id,path,sex\nA,{cohort / 'patient1'},Male\nB,{cohort / 'patient2'},female\n")
    assert [c.sex for c in read_manifest(manifest)] == ["M", "F"]
    manifest.write_text(f"case_id,path,sex\nA,{cohort / 'patient1'},X\n")
    with pytest.raises(InputError, match="Sex must be M or F"):
        read_manifest(manifest)
    # each of these crashed or was silently taken for something else
    for text, message in (
        ("case_id,path\nA\n", "line 2: every row needs a case_id and a path"),
        (
            f"case_id,path,slice\nA,{cohort / 'patient1'},abc\n",
            "line 2: column 'slice' must be a slice index",
        ),
        (f"case_id,path,slice\nA,{cohort / 'patient1'},1.5\n", "must be a slice index"),
        (f"case_id,path,slice,range\nA,{cohort / 'patient1'},3,2:4\n", "a slice or a range, not both"),
    ):
        manifest.write_text(text)
        with pytest.raises(InputError, match=message):
            read_manifest(manifest)
    manifest.write_bytes(f"case_id,path,site\nA,{cohort / 'patient1'},Hôpital\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"line 2: not UTF-8 text \(byte 0xf4\)"):
        read_manifest(manifest)
    # Excel's "CSV UTF-8" starts with a byte-order mark: the first column is still case_id
    manifest.write_bytes(b"\xef\xbb\xbf" + f"case_id,path\nA,{cohort / 'patient1'}\n".encode())
    assert [c.case_id for c in read_manifest(manifest)] == ["A"]


def test_batch_records_failures_and_resumes(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = run_batch(discover_cases(cohort), out)
    assert (summary.count("done"), summary.count("failed")) == (3, 1)
    rows = _rows(summary.cohort_csv)
    assert [r["case_id"] for r in rows] == ["patient1", "patient2", "patient3"]
    assert all(float(r["muscle_area_cm2"]) > 20 for r in rows)
    for row in rows:  # the case's segmentation quality, as its report.json has it
        quality = json.loads((out / "cases" / row["case_id"] / "report.json").read_text())["quality"]
        assert float(row["quality"]) == quality["score"]
        assert row["quality_flag"] == ("review" if quality["flagged"] else "ok")
    for r in rows:  # each DICOM case has its measurement report, with the cohort table's numbers
        sr = hd.sr.srread(out / "cases" / r["case_id"] / "report.sr.dcm")
        (muscle,) = [
            g for g in sr.content.get_planar_roi_measurement_groups() if "muscle" in g.tracking_identifier
        ]
        area = next(m.value for m in muscle.get_measurements() if m.name.meaning == "Area")
        assert area == pytest.approx(float(r["muscle_area_cm2"]), abs=1e-3)
    for r in rows:  # the cohort table reads as the case's metrics.csv average row, digit for digit
        (average,) = [m for m in _rows(out / "cases" / r["case_id"] / "metrics.csv") if m["row"] == "average"]
        for column in ("muscle_area_cm2", "muscle_mean_hu", "sat_area_cm2", "vat_mean_hu", "imat_area_cm2"):
            assert r[column] == average[column], column
    (failure,) = _rows(summary.failures_csv)
    assert failure["case_id"] == "broken" and failure["error"]
    again = run_batch(discover_cases(cohort), out)
    assert (again.count("skipped"), again.count("done"), again.count("failed")) == (3, 0, 1)
    assert _rows(again.cohort_csv) == rows


def test_batch_on_local_dask_cluster_matches_local_run(cohort: Path, tmp_path: Path) -> None:
    """Also: each worker process builds the U-Net's session once, not per case, and the LocalCluster (this
    run's own) runs no profiler: it sampled every busy worker's stack 100 times a second, for a dashboard
    this cluster does not serve. Its workers are forked from one fork server, not spawned (each imported
    distributed and the command again, and tore its interpreter down when the run ended), and check their
    memory every second, not 10 times a second."""
    distributed = pytest.importorskip("dask.distributed")
    psutil = pytest.importorskip("psutil")  # a dependency of dask.distributed
    cases = [c for c in discover_cases(cohort) if c.case_id != "broken"]
    local = run_batch(cases, tmp_path / "local")
    listening: set[str] = set()
    workers: dict[str, dict[str, Any]] = {}

    def worker_state(dask_worker: Any) -> dict[str, Any]:  # run in each worker process (by value)
        import psutil

        from sarcoscope.segmentation.unet import _session

        return {
            "cases": dask_worker.state.executed_count,
            "sessions": _session.cache_info().misses,  # the ONNX Runtime sessions this process built
            "callbacks": sorted(dask_worker.periodic_callbacks),
            "memory_check_ms": dask_worker.periodic_callbacks["memory_monitor"].callback_time,
            "parent": psutil.Process().parent().cmdline(),
        }

    def look(outcome: object) -> None:  # while the cluster runs: the addresses it listens on, the workers
        found = psutil.Process().net_connections("inet")
        listening.update(c.laddr.ip for c in found if c.status == psutil.CONN_LISTEN)
        client = distributed.default_client()
        workers.update(client.run(worker_state))

    dask = run_batch(cases, tmp_path / "dask", scheduler="local", workers=2, on_outcome=look)
    assert dask.count("done") == 3
    assert _rows(dask.cohort_csv) == _rows(local.cohort_csv)
    # only the scheduler, for this machine: Dask's dashboard, on every interface by default, showed anyone
    # on the network the case ids (folder names, often the patient's name) and the workers' logs
    assert listening == {"127.0.0.1"}
    assert len(workers) == 2 and sum(w["cases"] for w in workers.values()) == 3
    assert all(w["sessions"] == (1 if w["cases"] else 0) for w in workers.values()), workers
    assert all("profile" not in w["callbacks"] for w in workers.values()), workers
    assert all(w["memory_check_ms"] == 1000 for w in workers.values()), workers
    # both forked by one multiprocessing fork server ("... from multiprocessing.forkserver import main; ...")
    (parent,) = {" ".join(w["parent"]) for w in workers.values()}
    assert "multiprocessing.forkserver" in parent, parent


def test_batch_cli_exit_code_on_failures(cohort: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["batch", str(cohort), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3, result.output
    assert "3 analysed" in result.output and "1 failed" in result.output


def test_deidentified_batch_codes_case_ids(cohort: Path, tmp_path: Path) -> None:
    from sarcoscope.imaging.deidentify.policy import load_policy

    key = tmp_path / "deid.key"
    args = ["batch", str(cohort), "-o", str(tmp_path / "o"), "--deidentify", "--secret-file", str(key)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    policy = load_policy(key)
    rows = _rows(tmp_path / "o" / "cohort.csv")
    expected = sorted(f"case-{policy.pseudonymise_text('case', f'patient{seed}')}" for seed in (1, 2, 3))
    assert [r["case_id"] for r in rows] == expected
    assert {r["patient"] for r in rows} == {policy.pseudonym("ANONYMOUS")}  # the phantoms' PatientID
    assert sorted(p.parent.name for p in (tmp_path / "o" / "cases").glob("*/report.json")) == expected
    # every case folder, the failed case's too, holds its input's keyed code, no path
    assert all(str(cohort) not in p.read_text() for p in (tmp_path / "o" / "cases").glob("*/.input-code"))
    assert len(list((tmp_path / "o" / "cases").glob("*/.input-code"))) == 4
    (failure,) = _rows(tmp_path / "o" / "failures.csv")
    assert failure["case_id"].startswith("case-") and str(cohort) not in failure["error"]
    assert "broken" not in (tmp_path / "o" / "failures.csv").read_text()


def test_deidentified_failures_name_no_patient_file(tmp_path: Path) -> None:
    # a damaged file in a study whose folder and file names carry the patient's name
    case = tmp_path / "cohort" / "Doe_John_87654321"
    sl = make_slice(4, size=192)
    write_dicom_series(np.stack([sl.hu, sl.hu]), (3.0, *sl.pixel_spacing), case)
    first = sorted(case.iterdir())[0]
    damaged = first.with_name("Doe_John_img1.dcm")
    damaged.write_bytes(first.read_bytes()[:3000])
    first.unlink()
    out = tmp_path / "o"
    args = ["batch", str(case.parent), "-o", str(out), "--deidentify", "--secret-file", str(tmp_path / "k")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    (failure,) = _rows(out / "failures.csv")
    assert "truncated" in failure["error"] and "<input>" in failure["error"]
    assert "Doe" not in (out / "failures.csv").read_text() and "Doe" not in result.output


def test_a_deidentified_batch_worker_quotes_no_malformed_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """pydicom warns about a malformed header value quoting it (a UID with a leading zero, as archives
    hold them), through its logger and as a Python warning. The command's de-identified runs hide them in
    its own process, which local pool workers inherit by fork; a Dask worker (a process of the cluster's,
    spawned) does not, and its log (the cluster's, shared) quoted the original UIDs. The case's analysis
    hides them itself."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from sarcoscope.batch.case_analysis import analyze_in_worker
    from sarcoscope.imaging.deidentify.policy import load_policy

    sl = make_slice(6, size=192)
    (path,) = write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "C" / "case1")
    ds = pydicom.dcmread(path)
    raw = b"1.2.840.0777.1\0"
    ds[Tag("StudyInstanceUID")] = RawDataElement(Tag("StudyInstanceUID"), "UI", len(raw), raw, 0, False, True)
    ds.save_as(path)
    monkeypatch.setattr(logging.getLogger("pydicom"), "filters", [])  # as in a fresh worker process
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        # what a Dask worker runs for the case (dask_cluster._analyze_task), in a process of its own
        (case,) = discover_cases(tmp_path / "C")
        policy = load_policy(tmp_path / "key")
        kw = {"engine": "threshold", "cutoff_set": None, "force": False, "deidentification": policy}
        outcome = analyze_in_worker(case, out_root=tmp_path / "run", **kw)
    assert outcome.status == "done", outcome
    logged = caplog.text + "\n".join(str(w.message) for w in shown)
    assert "Invalid value for VR UI" in caplog.text and "0777" not in logged, logged


def test_identified_and_deidentified_results_are_not_mixed_in_one_folder(tmp_path: Path) -> None:
    # one table holding a patient's row under the folder name and under the pseudonym, with the same
    # measurements, links the two: a de-identified run needs a folder of its own, and so does the reverse
    sl = make_slice(5, size=192)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "Doe_John")
    cohort, key = str(tmp_path / "cohort"), ["--secret-file", str(tmp_path / "k")]
    named, coded = tmp_path / "named", tmp_path / "coded"
    for out, deid in ((named, []), (coded, ["--deidentify", *key])):
        assert CliRunner().invoke(app, ["batch", cohort, "-o", str(out), *deid]).exit_code == 0
    tables = {out: (out / "cohort.csv").read_bytes() for out in (named, coded)}
    for out, deid, said in (
        (named, ["--deidentify", *key], "holds results that are not de-identified"),
        (coded, [], "holds de-identified results"),
    ):
        result = CliRunner().invoke(app, ["batch", cohort, "-o", str(out), *deid])
        assert result.exit_code == 1 and said in " ".join(result.output.split()), result.output
        assert (out / "cohort.csv").read_bytes() == tables[out] and len(list((out / "cases").iterdir())) == 1


def test_a_table_write_stopped_midway_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sarcoscope.batch import tables

    def stopped(self: csv.DictWriter, rows: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while cohort.csv is rewritten after a case

    monkeypatch.setattr(csv.DictWriter, "writerows", stopped)
    with pytest.raises(KeyboardInterrupt):
        tables.write_csv_atomic(tmp_path / "cohort.csv", [{"case_id": "Doe_John"}], ["case_id"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_tables_get_the_permissions_of_the_runs_other_outputs(tmp_path: Path, umask: int) -> None:
    from sarcoscope.batch import tables

    old = os.umask(umask)
    try:
        tables.write_csv_atomic(tmp_path / "cohort.csv", [{"case_id": "A"}], ["case_id"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cohort.csv").stat().st_mode) == 0o666 & ~umask
    assert (tmp_path / "cohort.csv").read_bytes() == b"case_id\r\nA\r\n"


def test_a_second_cohort_adds_to_the_tables(tmp_path: Path) -> None:
    for name, seed in (("first", 5), ("second", 6)):
        sl = make_slice(seed, size=192)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / name / f"patient{seed}")
    (tmp_path / "second" / "broken").mkdir()
    (tmp_path / "second" / "broken" / "x.dcm").write_bytes(b"not dicom at all")
    out = tmp_path / "runs"
    assert CliRunner().invoke(app, ["batch", str(tmp_path / "first"), "-o", str(out)]).exit_code == 0
    assert CliRunner().invoke(app, ["batch", str(tmp_path / "second"), "-o", str(out)]).exit_code == 3
    assert [r["case_id"] for r in _rows(out / "cohort.csv")] == ["patient5", "patient6"]
    assert [r["case_id"] for r in _rows(out / "failures.csv")] == ["broken"]
    # a rerun of the first cohort keeps the second's rows and failures, and its own row once
    assert CliRunner().invoke(app, ["batch", str(tmp_path / "first"), "-o", str(out)]).exit_code == 0
    assert [r["case_id"] for r in _rows(out / "cohort.csv")] == ["patient5", "patient6"]
    assert [r["case_id"] for r in _rows(out / "failures.csv")] == ["broken"]


def test_a_case_folder_of_two_patients_fails_that_case(tmp_path: Path) -> None:
    sl = make_slice(7, size=128)
    for folder, patient in (("mixed/a", "P1"), ("mixed/b", "P2"), ("alone", "P3")):
        meta = CTMetadata(patient_id=patient)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / folder, metadata=meta)
    summary = run_batch(discover_cases(tmp_path / "cohort"), tmp_path / "o")
    assert [r["case_id"] for r in _rows(summary.cohort_csv)] == ["alone"]
    (failure,) = _rows(summary.failures_csv)
    assert failure["case_id"] == "mixed" and "holds the CT series of 2 patients" in failure["error"]
    assert not (tmp_path / "o" / "cases" / "mixed" / "report.json").exists()


def test_a_scheduler_address_that_is_not_one_is_a_clear_error(cohort: Path, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    result = CliRunner().invoke(
        app, ["batch", str(cohort), "-o", str(tmp_path / "o"), "--scheduler", "nonsense"]
    )
    assert result.exit_code == 1 and "Cannot reach the Dask scheduler at nonsense" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o" / "cohort.csv").exists()


def test_a_bad_engine_or_cutoff_set_is_refused_once_before_any_case(cohort: Path, tmp_path: Path) -> None:
    for option, value, message in (
        ("--engine", "nope", "nope"),
        ("--cutoffs", "nope", "Unknown cutoff set 'nope'"),
    ):
        result = CliRunner().invoke(app, ["batch", str(cohort), "-o", str(tmp_path / "o"), option, value])
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "o" / "cases").exists()
    result = CliRunner().invoke(app, ["batch", str(cohort), "-o", str(tmp_path / "o"), "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_a_resumed_batch_analyses_again_what_other_settings_made(
    cohort: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A case's earlier report made with another engine, cutoff set, patient facts or L3 choice is not this
    run's result: the case is analysed again instead of being kept beside rows made the new way."""
    out = tmp_path / "run"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,path,height_cm\nA,{cohort / 'patient1'},150\nB,{cohort / 'patient2'},150\n")
    first = run_batch(read_manifest(manifest), out, engine="threshold", cutoff_set="martin2013")
    assert first.count("done") == 2
    same = run_batch(read_manifest(manifest), out, engine="threshold", cutoff_set="martin2013")
    assert same.count("skipped") == 2
    manifest.write_text(f"case_id,path,height_cm\nA,{cohort / 'patient1'},190\nB,{cohort / 'patient2'},150\n")
    taller = run_batch(read_manifest(manifest), out, engine="threshold", cutoff_set="martin2013")
    assert (taller.count("done"), taller.count("skipped")) == (1, 1)
    other = run_batch(read_manifest(manifest), out, engine="threshold", cutoff_set="prado2008")
    assert other.count("done") == 2
    rows = _rows(other.cohort_csv)
    assert {r["sarcopenia_cutoff_set"] for r in rows} == {"prado2008"}
    smi = {r["case_id"]: float(r["smi_cm2_m2"]) for r in rows}
    area = {r["case_id"]: float(r["muscle_area_cm2"]) for r in rows}
    assert smi["A"] == pytest.approx(area["A"] / 1.9**2, abs=0.05)
    # de-identified reports lose the height, which their SMI still tells: the same run is resumed, a taller
    # manifest is not
    hidden = tmp_path / "deid"
    policy = DeidentificationPolicy(secret=b"k" * 32)
    assert (
        run_batch(read_manifest(manifest), hidden, engine="threshold", deidentification=policy).count("done")
        == 2
    )
    again = run_batch(read_manifest(manifest), hidden, engine="threshold", deidentification=policy)
    assert again.count("skipped") == 2
    manifest.write_text(f"case_id,path,height_cm\nA,{cohort / 'patient1'},180\nB,{cohort / 'patient2'},150\n")
    caplog.clear()
    taller = run_batch(read_manifest(manifest), hidden, engine="threshold", deidentification=policy)
    assert (taller.count("done"), taller.count("skipped")) == (1, 1)
    # why, without the patient's height (de-identified: kept out of logs, Dask workers' too)
    assert "made with another height_m than the manifest gives" in caplog.text
    assert "1.8" not in caplog.text and "1.9" not in caplog.text


def test_worker_processes_log_no_case_ids(cohort: Path, tmp_path: Path) -> None:
    """Case ids are folder or file names, often a patient's name or number. A worker process logged "case
    <id> is analysed again" (a Dask worker's log goes to the cluster's shared logs); now the process running
    the batch says it, on the user's console, beside the cohort table and failures naming the cases."""
    manifest = tmp_path / "m.csv"
    ids = ("Doe_Jane_0815", "Roe_Richard_4711")
    rows = "".join(
        f"{case},{cohort / folder},150\n" for case, folder in zip(ids, ("patient1", "patient2"), strict=True)
    )
    manifest.write_text("case_id,path,height_cm\n" + rows)
    out = tmp_path / "run"
    assert run_batch(read_manifest(manifest), out, engine="threshold").count("done") == 2
    manifest.write_text("case_id,path,height_cm\n" + rows.replace(",150", ",190"))
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # forked pool workers inherit it: their records reach the file
    handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        again = run_batch(read_manifest(manifest), out, engine="threshold", workers=2)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    assert again.count("done") == 2
    lines = [line.split(" ", 1) for line in log_file.read_text().splitlines()]
    worker_lines = [text for pid, text in lines if pid != str(os.getpid())]
    assert not [text for text in worker_lines if any(case in text for case in ids)]
    ours = [text for pid, text in lines if pid == str(os.getpid())]
    for case in ids:
        assert f"case {case} is analysed again: its earlier results were made with height_m 1.5" in "\n".join(
            ours
        )


def test_tables_that_are_not_ours_and_a_manifest_in_their_place_are_refused(
    cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    out.mkdir()
    manifest = out / "cohort.csv"  # the manifest kept where the results table goes
    manifest.write_text(f"case_id,path,height_cm\nA,{cohort / 'patient1'},170\n")
    result = CliRunner().invoke(app, ["batch", str(manifest), "-o", str(out)])
    assert result.exit_code == 1 and "is where the results table goes" in result.output
    assert manifest.read_text().startswith("case_id,path,height_cm")
    other = tmp_path / "other"
    other.mkdir()
    (other / "cohort.csv").write_text("name,value\nx,1\n")  # somebody's own table
    with pytest.raises(OutputError, match="has no case_id column"):
        run_batch(discover_cases(cohort)[1:2], other)
    assert (other / "cohort.csv").read_text() == "name,value\nx,1\n" and not (other / "cases").exists()
    # an output folder inside the cohort folder would be taken for a study by the next run
    result = CliRunner().invoke(app, ["batch", str(cohort), "-o", str(cohort / "results")])
    assert result.exit_code == 1 and "inside the cohort folder" in result.output
    assert not (cohort / "results").exists()


def test_manifest_columns_that_results_fill_and_bad_ranges_are_refused(cohort: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,path,sarcopenia,smi_cm2_m2\nA,{cohort / 'patient1'},no,99\n")
    with pytest.raises(InputError, match=r"sarcopenia, smi_cm2_m2, which cohort\.csv fills"):
        read_manifest(manifest)
    manifest.write_text(f"case_id,path,range\nA,{cohort / 'patient1'},3-5\n")
    with pytest.raises(InputError, match=r"m\.csv line 2: column 'range' must look like Z0:Z1"):
        read_manifest(manifest)
    # every column summary_row fills is named in RESULT_COLUMNS
    out = run_batch(discover_cases(cohort)[1:2], tmp_path / "o", engine="threshold")
    known = {"case_id", "site"}
    assert set(_rows(out.cohort_csv)[0]) - known <= RESULT_COLUMNS


def test_a_resumed_batch_analyses_again_what_another_pixel_spacing_measured(tmp_path: Path) -> None:
    """A NIfTI case without a spatial transform is measured at the --pixel-spacing given: a rerun with
    another spacing skipped it, and cohort.csv kept the areas of the old one as this run's."""
    sl = make_slice(2, size=128)
    img = nib.Nifti1Image(np.rint(sl.hu).astype(np.int16).T[:, :, None], np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    (tmp_path / "cohort").mkdir()
    nib.save(img, tmp_path / "cohort" / "case1.nii.gz")
    cases = discover_cases(tmp_path / "cohort")
    first = run_batch(cases, tmp_path / "run", engine="threshold", pixel_spacing=sl.pixel_spacing)
    assert first.count("done") == 1
    area = float(_rows(first.cohort_csv)[0]["muscle_area_cm2"])
    same = run_batch(cases, tmp_path / "run", engine="threshold", pixel_spacing=sl.pixel_spacing)
    assert same.count("skipped") == 1
    coarser = (2 * sl.pixel_spacing[0], 2 * sl.pixel_spacing[1])
    other = run_batch(cases, tmp_path / "run", engine="threshold", pixel_spacing=coarser)
    assert other.count("done") == 1
    report = json.loads((tmp_path / "run" / "cases" / "case1" / "report.json").read_text())
    assert report["input"]["spacing_mm_zyx"][1:] == pytest.approx(coarser)
    assert float(_rows(other.cohort_csv)[0]["muscle_area_cm2"]) > 2 * area


@pytest.mark.parametrize("deidentified", [False, True], ids=["identified", "deidentified"])
def test_a_resumed_batch_without_the_pixel_spacing_keeps_no_case_measured_at_the_users(
    tmp_path: Path, deidentified: bool
) -> None:
    """A rerun without --pixel-spacing skipped as done the cases an earlier run had measured at the spacing
    given, beside cases measured at their files' own: one table of areas at two kinds of scale, without
    saying so. Such a case is analysed again (and refused: its file defines no spacing), and a case measured
    at its file's spacing is analysed again by a run that gives one (and refused: its file has its own)."""
    sl = make_slice(2, size=128)
    (tmp_path / "cohort").mkdir()
    for name, transform in (("bare", False), ("placed", True)):
        voxels = np.rint(sl.hu).astype(np.int16).T[:, :, None]
        img = nib.Nifti1Image(voxels, np.diag([*sl.pixel_spacing, 3, 1]))
        if not transform:
            img.set_qform(None, code=0)
            img.set_sform(None, code=0)
        nib.save(img, tmp_path / "cohort" / f"{name}.nii.gz")
    bare, placed = discover_cases(tmp_path / "cohort")
    policy = DeidentificationPolicy(secret=b"k" * 32) if deidentified else None
    out, kw = tmp_path / "run", {"engine": "threshold", "deidentification": policy}
    assert run_batch([bare], out, pixel_spacing=sl.pixel_spacing, **kw).count("done") == 1
    assert run_batch([placed], out, **kw).count("done") == 1
    if deidentified:  # reports made before they said it: told by the reader's warning (scrubbed)
        for path in (out / "cases").glob("*/report.json"):
            report = json.loads(path.read_text())
            report["input"].pop("pixel_spacing_given")
            path.write_text(json.dumps(report))
    again = run_batch([bare, placed], out, **kw)
    assert [o.status for o in again.outcomes] == ["failed", "skipped"]
    assert "no spatial transform" in str(again.outcomes[0].error)
    assert len(_rows(out / "cohort.csv")) == 1 and len(_rows(out / "failures.csv")) == 1
    given = run_batch([bare, placed], out, pixel_spacing=sl.pixel_spacing, **kw)
    # the refused case's folder kept its results, made as this run makes them
    assert [o.status for o in given.outcomes] == ["skipped", "failed"]
    assert "defines its own pixel spacing" in str(given.outcomes[1].error)
    assert len(_rows(out / "cohort.csv")) == 1 and len(_rows(out / "failures.csv")) == 1


def test_a_resumed_deidentified_batch_keeps_no_result_made_with_more_of_the_patient(tmp_path: Path) -> None:
    """A rerun without --keep-patient-characteristics (or --keep-dates-shifted) skipped the cases an earlier
    run had made with it: their reports and DICOM objects kept the sex, age, height, weight (and shifted
    dates) that this run's de-identification removes."""
    sl = make_slice(5, size=192)
    facts = CTMetadata(patient_id="P7", patient_sex="F", patient_height_m=1.64, patient_weight_kg=61.0)
    write_dicom_series(
        sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "Doe_John", metadata=facts
    )
    cases, out = discover_cases(tmp_path / "cohort"), tmp_path / "run"
    keeping = DeidentificationPolicy(secret=b"k" * 32, keep_patient_characteristics=True)
    assert run_batch(cases, out, engine="threshold", deidentification=keeping).count("done") == 1
    (report_path,) = (out / "cases").glob("*/report.json")
    assert json.loads(report_path.read_text())["assessment"]["patient"]["sex"] == "F"
    removing = DeidentificationPolicy(secret=b"k" * 32)
    assert run_batch(cases, out, engine="threshold", deidentification=removing).count("done") == 1
    report = json.loads(report_path.read_text())
    assert report["assessment"]["patient"] == {
        **report["assessment"]["patient"],
        "sex": None,
        "height_m": None,
    }
    assert report["deidentification"]["codes"] == ["113100"]
    assert run_batch(cases, out, engine="threshold", deidentification=removing).count("skipped") == 1


def test_a_resumed_deidentified_batch_keeps_no_classification_telling_the_sex(tmp_path: Path) -> None:
    """A case de-identified by an earlier version, whose report kept each classification's rule, cutoff and
    flag ("women", 38.5), was skipped by a resumed run: its report kept telling the sex this run removes."""
    sl = make_slice(5, size=192)
    facts = CTMetadata(patient_id="P7", patient_sex="F", patient_height_m=1.64, patient_weight_kg=61.0)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "Doe", metadata=facts)
    cases, out = discover_cases(tmp_path / "cohort"), tmp_path / "run"
    removing = DeidentificationPolicy(secret=b"k" * 32)
    assert run_batch(cases, out, engine="threshold", deidentification=removing).count("done") == 1
    (report_path,) = (out / "cases").glob("*/report.json")
    report = json.loads(report_path.read_text())
    old = {**report["assessment"]["sarcopenia"][0], "status": "computed", "rule": "women", "cutoff": 38.5}
    report["assessment"]["sarcopenia"][0] = {**old, "value": 40.0, "flagged": False}
    report_path.write_text(json.dumps(report))
    assert run_batch(cases, out, engine="threshold", deidentification=removing).count("done") == 1
    assert json.loads(report_path.read_text())["assessment"]["sarcopenia"][0]["status"] == "not computed"
    assert run_batch(cases, out, engine="threshold", deidentification=removing).count("skipped") == 1


def test_a_second_batch_into_a_folder_being_written_is_refused(cohort: Path, tmp_path: Path) -> None:
    """Two runs into one folder rewrote cohort.csv in turn, each from the rows it had read when it started:
    the first run's last write dropped every row the second had finished meanwhile (and the reverse)."""
    sl = make_slice(9, size=256)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "other" / "patient9")
    out, said = tmp_path / "run", []
    first = [c for c in discover_cases(cohort) if c.case_id in ("patient1", "patient2")]

    def second_run(_: object) -> None:
        if not said:
            try:
                run_batch(discover_cases(tmp_path / "other"), out, engine="threshold")
            except OutputError as exc:
                said.append(str(exc))
            else:
                said.append("analysed")

    run_batch(first, out, engine="threshold", on_outcome=second_run)
    assert "another batch run" in said[0] and str(out) in said[0]
    assert run_batch(discover_cases(tmp_path / "other"), out, engine="threshold").count("done") == 1
    assert [r["case_id"] for r in _rows(out / "cohort.csv")] == ["patient1", "patient2", "patient9"]


def test_a_deidentified_batch_with_another_key_is_refused(cohort: Path, tmp_path: Path) -> None:
    """Case ids and pseudonyms depend on the key: a rerun with another key analysed every case again under
    new codes beside the old rows, so cohort.csv listed each patient under both keys' pseudonyms with the
    same measurements, linking two pseudonym sets that the keys exist to keep apart."""
    cases = [c for c in discover_cases(cohort) if c.case_id == "patient1"]
    out = tmp_path / "run"
    first = DeidentificationPolicy(secret=b"a" * 32)
    assert run_batch(cases, out, engine="threshold", deidentification=first).count("done") == 1
    table = (out / "cohort.csv").read_bytes()
    other = DeidentificationPolicy(secret=b"b" * 32)
    with pytest.raises(OutputError, match="another de-identification key"):
        run_batch(cases, out, engine="threshold", deidentification=other)
    assert (out / "cohort.csv").read_bytes() == table and len(list((out / "cases").iterdir())) == 1
    assert run_batch(cases, out, engine="threshold", deidentification=first).count("skipped") == 1


def test_a_second_cohort_whose_case_ids_name_the_first_ones_results_is_refused(tmp_path: Path) -> None:
    """Cohorts name their cases alike (patient1...): a second cohort into the same folder found the first
    one's patient1 done and listed that patient's results as its own patient1's (or, with other settings,
    analysed its patient1 over them). The run is refused before any case; the tables stay as they were."""
    for cohort, seed in (("A", 1), ("B", 5)):
        sl = make_slice(seed, size=256)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / cohort / "patient1")
    out = tmp_path / "run"
    assert run_batch(discover_cases(tmp_path / "A"), out, engine="threshold").count("done") == 1
    table = (out / "cohort.csv").read_bytes()
    with pytest.raises(OutputError, match=r"patient1 \(.*A/patient1\)"):
        run_batch(discover_cases(tmp_path / "B"), out, engine="threshold")
    assert (out / "cohort.csv").read_bytes() == table
    assert run_batch(discover_cases(tmp_path / "A"), out, engine="threshold").count("skipped") == 1


def test_a_second_cohort_whose_case_id_names_the_first_ones_failure_is_refused(tmp_path: Path) -> None:
    """A case that failed left no report naming its input: a second cohort's case of the same id was
    analysed into the folder, and its row replaced the first cohort's failure in failures.csv (that patient's
    failure was lost from the record). The case folder names its input from the first run on, so the run is
    refused before any case, naming the case id and the other input."""
    (tmp_path / "A" / "patient1").mkdir(parents=True)
    (tmp_path / "A" / "patient1" / "x.dcm").write_bytes(b"not dicom at all")
    sl = make_slice(5, size=256)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "B" / "patient1")
    out = tmp_path / "run"
    assert run_batch(discover_cases(tmp_path / "A"), out, engine="threshold").count("failed") == 1
    failures = (out / "failures.csv").read_bytes()
    for force in (False, True):
        with pytest.raises(OutputError, match=r"patient1 \(.*A/patient1\)"):
            run_batch(discover_cases(tmp_path / "B"), out, engine="threshold", force=force)
        assert (out / "failures.csv").read_bytes() == failures
    assert not (out / "cases" / "patient1" / "report.json").exists()
    again = run_batch(discover_cases(tmp_path / "A"), out, engine="threshold")
    assert again.count("failed") == 1 and len(_rows(out / "failures.csv")) == 1


def test_a_folder_that_cannot_be_locked_is_written_unguarded_with_a_warning(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # an NFS share mounted without locks answers flock with ENOLCK: the run goes on, as before the lock
    def no_locks(path: Path) -> int:
        raise OSError(errno.ENOLCK, "No locks available", str(path))

    monkeypatch.setattr(fileio, "claim_lock", no_locks)
    cases = [c for c in discover_cases(cohort) if c.case_id == "patient1"]
    assert run_batch(cases, tmp_path / "run", engine="threshold").count("done") == 1
    assert "cannot lock" in caplog.text and "No locks available" in caplog.text


def test_a_second_deidentified_cohort_with_the_first_ones_case_ids_is_refused(tmp_path: Path) -> None:
    """De-identified reports name no input, so a second cohort's patient1 got the first one's case code and
    was skipped as done: cohort.csv listed the first cohort's patient under the second's patient1. The run is
    refused before any case, naming neither the folders nor the case ids."""
    for cohort, seed in (("A", 1), ("B", 5)):
        sl = make_slice(seed, size=256)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / cohort / "patient1")
    out, policy = tmp_path / "run", DeidentificationPolicy(secret=b"k" * 32)
    first = run_batch(discover_cases(tmp_path / "A"), out, engine="threshold", deidentification=policy)
    assert first.count("done") == 1
    table, (report,) = (out / "cohort.csv").read_bytes(), (out / "cases").glob("*/report.json")
    before = report.read_bytes()
    for force in (False, True):
        with pytest.raises(OutputError, match="results of other inputs") as refused:
            run_batch(
                discover_cases(tmp_path / "B"), out, engine="threshold", deidentification=policy, force=force
            )
        said = str(refused.value)
        assert "patient1" not in said and str(tmp_path / "A") not in said and str(tmp_path / "B") not in said
        assert (out / "cohort.csv").read_bytes() == table and report.read_bytes() == before
    again = run_batch(discover_cases(tmp_path / "A"), out, engine="threshold", deidentification=policy)
    assert again.count("skipped") == 1


def test_a_resumed_deidentified_batch_keeps_no_burned_in_picture_it_does_not_accept(tmp_path: Path) -> None:
    """A rerun without --accept-burned-in skipped the cases an earlier run had made with it: their overlay
    and QC capture, showing pixels whose burned-in text may name the patient, stayed listed as this run's
    de-identified results. The case is analysed again (and refused, as this run refuses such images)."""
    import pydicom

    sl = make_slice(6, size=192)
    series = tmp_path / "cohort" / "Doe_John"
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), series)
    for path in series.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path)
    cases, out = discover_cases(tmp_path / "cohort"), tmp_path / "run"
    accepting = DeidentificationPolicy(secret=b"k" * 32, accept_burned_in=True)
    assert run_batch(cases, out, engine="threshold", deidentification=accepting).count("done") == 1
    (report_path,) = (out / "cases").glob("*/report.json")
    assert json.loads(report_path.read_text())["deidentification"]["burned_in_annotation_shown"] is True
    assert pydicom.dcmread(report_path.parent / "report.qc.dcm").PatientIdentityRemoved == "NO"
    refusing = DeidentificationPolicy(secret=b"k" * 32)
    again = run_batch(cases, out, engine="threshold", deidentification=refusing)
    (outcome,) = again.outcomes
    assert outcome.status == "failed" and "BurnedInAnnotation is YES" in str(outcome.error)
    # the image by its de-identified UID, not that UID remapped again (which names no image)
    original = pydicom.dcmread(next(series.glob("*.dcm"))).SOPInstanceUID
    assert f"image {refusing.uid(original)}:" in str(outcome.error)
    assert _rows(out / "cohort.csv") == [] and len(_rows(out / "failures.csv")) == 1
    assert run_batch(cases, out, engine="threshold", deidentification=accepting).count("skipped") == 1


def test_a_resumed_deidentified_batch_analyses_again_a_report_that_does_not_say_what_it_shows(
    tmp_path: Path,
) -> None:
    # reports made before they recorded whether they show burned-in annotation might: made again when this
    # run does not accept it
    sl = make_slice(6, size=192)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "case1")
    cases, out = discover_cases(tmp_path / "cohort"), tmp_path / "run"
    policy = DeidentificationPolicy(secret=b"k" * 32)
    assert run_batch(cases, out, engine="threshold", deidentification=policy).count("done") == 1
    (report_path,) = (out / "cases").glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["deidentification"].pop("burned_in_annotation_shown") is False
    report_path.write_text(json.dumps(report))
    assert run_batch(cases, out, engine="threshold", deidentification=policy).count("done") == 1
    assert run_batch(cases, out, engine="threshold", deidentification=policy).count("skipped") == 1


@pytest.mark.parametrize("deidentified", [False, True], ids=["identified", "deidentified"])
def test_a_resumed_batch_analyses_again_a_case_whose_input_now_holds_another_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deidentified: bool
) -> None:
    """A case whose folder held a report was skipped as done without looking at its input: when a data
    manager replaced a mis-filed case folder with the right patient's images, a resumed run kept the first
    patient's results in cohort.csv under that case id. The case is analysed again, saying why."""
    import shutil

    for cohort, seed in (("cohort", 1), ("right", 5)):
        sl = make_slice(seed, size=192)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / cohort / "patient1")
    policy = DeidentificationPolicy(secret=b"k" * 32) if deidentified else None
    kw = {"engine": "threshold", "deidentification": policy}
    out = tmp_path / "run"
    first = run_batch(discover_cases(tmp_path / "cohort"), out, **kw)
    assert first.count("done") == 1
    wrong = _rows(out / "cohort.csv")
    expected = _rows(run_batch(discover_cases(tmp_path / "right"), tmp_path / "fresh", **kw).cohort_csv)
    assert wrong != expected
    # the same file names and sizes, other images (copied with their times)
    shutil.copytree(tmp_path / "cohort" / "patient1", tmp_path / "misfiled")
    shutil.rmtree(tmp_path / "cohort" / "patient1")
    shutil.copytree(tmp_path / "right" / "patient1", tmp_path / "cohort" / "patient1")
    caplog.clear()
    again = run_batch(discover_cases(tmp_path / "cohort"), out, **kw)
    assert again.count("done") == 1 and _rows(out / "cohort.csv") == expected
    assert "analysed again" in caplog.text and "its input" in caplog.text
    assert run_batch(discover_cases(tmp_path / "cohort"), out, **kw).count("skipped") == 1
    # a case folder made before runs recorded their input's files: judged by its files' times
    (marker,) = (out / "cases").glob(f"*/{INPUT_FILES}")
    marker.unlink()
    assert run_batch(discover_cases(tmp_path / "cohort"), out, **kw).count("skipped") == 1
    assert marker.is_file()
    marker.unlink()
    shutil.rmtree(tmp_path / "cohort" / "patient1")
    shutil.copytree(tmp_path / "misfiled", tmp_path / "cohort" / "patient1")
    caplog.clear()
    assert run_batch(discover_cases(tmp_path / "cohort"), out, **kw).count("done") == 1
    assert _rows(out / "cohort.csv") == wrong and "made before its input last changed" in caplog.text
    # what a de-identified folder records of the input is a keyed code: no file name, size or time
    (case,) = (out / "cases").iterdir()
    recorded = " ".join(p.read_text() for p in case.iterdir() if p.name.startswith(".input"))
    if deidentified:
        assert "patient1" not in recorded and ".dcm" not in recorded and str(tmp_path) not in recorded


def test_a_case_that_succeeds_on_resume_leaves_failures_csv_as_it_finishes(tmp_path: Path) -> None:
    """failures.csv was rewritten only when a case failed (and at the end of the run): a case that had
    failed and succeeded on resume stayed listed as failed beside its cohort.csv row until then, and for
    good when the run was killed (kill -9, the machine lost) before it ended."""
    (tmp_path / "cohort" / "patient1").mkdir(parents=True)
    (tmp_path / "cohort" / "patient1" / "x.dcm").write_bytes(b"not dicom at all")
    sl = make_slice(2, size=192)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "patient2")
    out = tmp_path / "run"
    assert run_batch(discover_cases(tmp_path / "cohort"), out, engine="threshold").count("failed") == 1
    assert [r["case_id"] for r in _rows(out / "failures.csv")] == ["patient1"]
    (tmp_path / "cohort" / "patient1" / "x.dcm").unlink()  # the study exported again, complete
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "cohort" / "patient1")
    on_disk: list[tuple[list[str], list[str]]] = []

    def killed_here(outcome: object) -> None:  # what a run killed once this case is reported leaves
        tables = (_rows(out / "cohort.csv"), _rows(out / "failures.csv"))
        on_disk.append(tuple([r["case_id"] for r in rows] for rows in tables))

    run_batch(discover_cases(tmp_path / "cohort")[:1], out, engine="threshold", on_outcome=killed_here)
    assert on_disk == [(["patient1", "patient2"], [])]


def _serve_series(folder: Path, seeds: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Phantom series (name -> seed) in `folder`, retrieved as from a DICOMweb server; their addresses."""
    import shutil

    import pydicom

    from sarcoscope.pacs import dicomweb

    urls = {}
    for name, seed in seeds.items():
        sl = make_slice(seed, size=192)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), folder / name)
        head = pydicom.dcmread(next((folder / name).iterdir()))
        urls[name] = (
            f"dicomweb+http://pacs.invalid/studies/{head.StudyInstanceUID}/series/{head.SeriesInstanceUID}"
        )

    def fetch(text: str, into: Path, *args: object, **kw: object) -> Path:
        (name,) = [n for n, url in urls.items() if text == url]
        shutil.copytree(folder / name, into, dirs_exist_ok=True)
        return into

    def listed(text: str, *args: object, **kw: object) -> list[str]:  # the series, wherever the server is
        (name,) = [n for n, url in urls.items() if text.split("/studies/")[1] == url.split("/studies/")[1]]
        return sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in (folder / name).iterdir())

    monkeypatch.setattr(dicomweb, "fetch_series", fetch)
    monkeypatch.setattr(dicomweb, "series_instance_uids", listed)
    return urls


def test_a_case_analysed_again_without_push_is_pushed_by_the_next_push_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pushed.json says a case's results are stored in its study. A run without --push that analysed the
    case again (another cutoff set, its input changed) carried it into the new results' folder, so the next
    --push run skipped the case as pushed: the PACS kept the old results and the new ones were never
    stored."""
    import pydicom

    from sarcoscope.batch import Case
    from sarcoscope.export.writer import dicom_result_files
    from sarcoscope.pacs import dicomweb

    url = _serve_series(tmp_path / "pacs", {"ct": 3}, monkeypatch)["ct"]
    stored: list[list[str]] = []

    def store(text: str, paths: list[Path], *args: object, **kw: object) -> dicomweb.Stored:
        stored.append(sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in paths))
        return dicomweb.Stored(sent=len(paths), held=0)

    monkeypatch.setattr(dicomweb, "store_results", store)
    cases, out = [Case(case_id="ct1", path=url)], tmp_path / "run"
    kw = {"engine": "threshold"}
    assert run_batch(cases, out, cutoff_set="martin2013", push=True, **kw).count("done") == 1
    assert run_batch(cases, out, cutoff_set="prado2008", **kw).count("done") == 1
    results = sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in dicom_result_files(out / "cases" / "ct1")
    )
    assert len(stored) == 1 and stored[0] != results
    assert run_batch(cases, out, cutoff_set="prado2008", push=True, **kw).count("done") == 1
    assert stored[1:] == [results]
    assert run_batch(cases, out, cutoff_set="prado2008", push=True, **kw).count("skipped") == 1
    assert len(stored) == 2


def test_a_second_manifest_whose_case_id_names_another_dicomweb_series_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case folder names its input so that another cohort's case of the same id is refused, but a
    manifest's DICOMweb cases were left out (a query's case id is its series; a manifest's is the user's): a
    second manifest's P01, another patient's series, was analysed over the first manifest's P01 (before
    that, skipped as done: its row the first patient's). The run is refused before any case."""
    urls = _serve_series(tmp_path / "pacs", {"a": 1, "b": 5}, monkeypatch)
    out = tmp_path / "run"
    for name in ("a", "b"):
        (tmp_path / f"{name}.csv").write_text(f"case_id,path\nP01,{urls[name]}\n")
    assert run_batch(read_manifest(tmp_path / "a.csv"), out, engine="threshold").count("done") == 1
    table = (out / "cohort.csv").read_bytes()
    with pytest.raises(OutputError, match=r"results of other inputs under case ids of this run: P01 \("):
        run_batch(read_manifest(tmp_path / "b.csv"), out, engine="threshold")
    assert (out / "cohort.csv").read_bytes() == table
    assert run_batch(read_manifest(tmp_path / "a.csv"), out, engine="threshold").count("skipped") == 1
    # the same series on the server under another address (moved, renamed): the same input, not analysed again
    moved = urls["a"].replace("pacs.invalid", "pacs2.invalid:8443")
    (tmp_path / "a.csv").write_text(f"case_id,path\nP01,{moved}\n")
    assert run_batch(read_manifest(tmp_path / "a.csv"), out, engine="threshold").count("skipped") == 1
    assert (out / "cohort.csv").read_bytes() == table


def test_two_runs_on_one_dask_scheduler_keep_their_own_cases(cohort: Path, tmp_path: Path) -> None:
    """Each case was submitted under the key sarcoscope-<case id>, and a Dask scheduler takes a task of a
    key it holds for the same task: two runs on one shared cluster, each with its patient1 (cohorts name
    their cases alike), got one result, and the second run listed the first cohort's patient1 (analysed into
    the first run's folder) as its own, its own patient1 never analysed."""
    distributed = pytest.importorskip("dask.distributed")
    sl = make_slice(5, size=192)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "B" / "patient1")
    second = []

    def start_second(_: object) -> None:  # while the first run holds its result
        second.append(
            run_batch(discover_cases(tmp_path / "B"), tmp_path / "b", engine="threshold", scheduler=address)
        )

    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        run_batch(
            [c for c in discover_cases(cohort) if c.case_id == "patient1"],
            tmp_path / "a",
            engine="threshold",
            scheduler=address,
            on_outcome=start_second,
        )
    (outcome,) = second[0].outcomes
    assert outcome.status == "done" and (tmp_path / "b" / "cases" / "patient1" / "report.json").is_file()
    alone = run_batch(discover_cases(tmp_path / "B"), tmp_path / "alone", engine="threshold")
    assert _rows(tmp_path / "b" / "cohort.csv") == _rows(alone.cohort_csv)


def test_a_dask_scheduler_is_not_told_the_case_ids(tmp_path: Path) -> None:
    """Case ids are folder names, often the patient's name: each case's task was keyed
    sarcoscope-<case id>-<run>, and a shared cluster's scheduler shows its tasks' keys on its dashboard
    (task stream, progress) and names them in its log (a task whose workers died), to every user of the
    cluster. The keys name the run and the case's place in it only."""
    distributed = pytest.importorskip("dask.distributed")
    sl = make_slice(5, size=192)
    write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), tmp_path / "C" / "DOE_JOHN_19570312")
    seen: list[str] = []
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        summary = run_batch(
            discover_cases(tmp_path / "C"),
            tmp_path / "run",
            engine="threshold",
            scheduler=cluster.scheduler_address,
            on_outcome=lambda _: seen.extend(str(k) for k in cluster.scheduler.tasks),
        )
    assert summary.count("done") == 1 and seen and all(k.startswith("sarcoscope-") for k in seen)
    assert not any("DOE" in k or "19570312" in k for k in seen)


class _Stopped(BaseException):
    """What escapes a case's analysis on a worker: not an Exception (as SystemExit, KeyboardInterrupt)."""


def test_a_case_escaping_its_analysis_on_dask_is_a_failed_row_no_cluster_log_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Case ids and paths are folder names, often the patient's. What escaped analyze_case on a Dask worker
    was the task's error: the worker logged "Compute Failed" with its message (here naming the case's path)
    into the cluster's shared logs, and, a BaseException, it stopped the client's event loop: the run hung.
    And the task's argument was the case, whose repr distributed before 2024.12 wrote into that log with
    every failed task's arguments. Now the case is a failed row, named in failures.csv only."""
    distributed = pytest.importorskip("dask.distributed")
    from distributed.worker import convert_args_to_str, convert_kwargs_to_str

    from sarcoscope.batch import Case, case_analysis

    def stop(case: Case, waits: object) -> None:
        raise _Stopped(f"stopped reading {case.path}")

    monkeypatch.setattr(case_analysis, "series_instances", stop)
    case = Case("Doe_Jane_0815", tmp_path / "Doe_Jane_0815")  # never read: the analysis stops first
    caplog.set_level(logging.DEBUG, logger="distributed")  # the scheduler's and (in process) the worker's
    arguments: list[str] = []  # each task's arguments as distributed < 2024.12 logged a failed task's

    def look(_: object) -> None:
        for ts in cluster.scheduler.tasks.values():
            spec = ts.run_spec
            arguments.append(convert_args_to_str(spec.args) + convert_kwargs_to_str(spec.kwargs))

    ended: list[object] = []
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        run = threading.Thread(  # the run hung: the test fails, not hangs
            target=lambda: ended.append(
                run_batch([case], tmp_path / "run", scheduler=cluster.scheduler_address, on_outcome=look)
            ),
            daemon=True,
        )
        run.start()
        run.join(60)
    logs = "\n".join(caplog.handler.format(r) for r in caplog.records if r.name.startswith("distributed"))
    assert "sarcoscope-" in logs  # captured (they name the task's key)
    assert "Doe_Jane" not in logs
    assert ended, "the run did not end"
    assert _rows(tmp_path / "run" / "failures.csv") == [
        {
            "case_id": "Doe_Jane_0815",
            "error": "internal error _Stopped (its text left out: it may quote the input's headers)",
        }
    ]
    assert arguments and all("Case #0" in text and "Doe_Jane" not in text for text in arguments)


def test_a_resumed_run_killed_after_its_first_case_keeps_every_finished_row(
    cohort: Path, tmp_path: Path
) -> None:
    """A resumed run rewrote cohort.csv and failures.csv after its first case from the rows of this run's
    outcomes only: the rows (and failures) of every case the earlier run had finished and this one had not
    reached yet left the tables, and a run killed then (kill -9, out of memory) left tables missing cases
    whose folders hold their reports."""
    out = tmp_path / "run"
    first = run_batch(discover_cases(cohort), out, engine="threshold")
    tables = (_rows(first.cohort_csv), _rows(first.failures_csv))
    assert (len(tables[0]), len(tables[1])) == (3, 1)
    on_disk = []

    def killed_here(_: object) -> None:  # what a run killed once its first case is reported leaves
        on_disk.append((_rows(out / "cohort.csv"), _rows(out / "failures.csv")))

    run_batch(discover_cases(cohort)[::-1], out, engine="threshold", on_outcome=killed_here)
    assert on_disk[0] == tables and on_disk[-1] == tables


def test_names_differing_only_outside_ascii_get_distinct_stable_case_ids(tmp_path: Path) -> None:
    """Folders named "Ξανθοπούλου_X" and "山田_X" were both case "X", and the run stopped ("Case id 'X'
    appears twice"); "山田" had no case id. Each keeps its ASCII part and gets a digest of its whole name (in
    NFC); ASCII names keep their ids; de-identified, the case codes show none of it."""
    import hashlib
    import unicodedata

    from phi_dicom import POLICY
    from sarcoscope.batch.output_folder import DEIDENTIFIED_CASE_ID, deidentified_case

    def digest(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()[:10]

    names = ["Ξανθοπούλου_X", "山田_X", "山田", "Müller X", "John Smith", "patient1", "a.b-c"]
    for name in names:
        (tmp_path / "cohort" / name).mkdir(parents=True)
    (tmp_path / "cohort" / "山田_X2.nii.gz").write_bytes(b"")
    expected = {
        "Ξανθοπούλου_X": f"X_{digest('Ξανθοπούλου_X')}",
        "山田_X": f"X_{digest('山田_X')}",
        "山田": digest("山田"),
        "Müller X": f"M_ller_X_{digest('Müller X')}",
        "John Smith": "John_Smith",  # as before
        "patient1": "patient1",
        "a.b-c": "a.b-c",
        "山田_X2.nii.gz": f"X2_{digest('山田_X2')}",
    }
    cases = discover_cases(tmp_path / "cohort")
    assert {c.path.name: c.case_id for c in cases} == expected
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", c.case_id) for c in cases)
    # as macOS may list a name (decomposed), and in a manifest
    assert safe_case_id(unicodedata.normalize("NFD", "Müller X")) == expected["Müller X"]
    manifest = tmp_path / "m.csv"
    rows = "".join(f"{name},{tmp_path / 'cohort' / name}\n" for name in names)
    manifest.write_text(f"case_id,path\n{rows}", encoding="utf-8")
    assert [c.case_id for c in read_manifest(manifest)] == [expected[n] for n in names]
    coded = [deidentified_case(c, POLICY).case_id for c in cases]
    assert len(set(coded)) == len(cases) and all(DEIDENTIFIED_CASE_ID.fullmatch(c) for c in coded)


def test_a_case_id_twice_is_refused_naming_where_the_two_are_not_only_their_id(tmp_path: Path) -> None:
    """Two inputs making one case id (or ids differing only in letter case) were refused by that id alone,
    which a --deidentify run's console scrubs ("Case id 'ANONYMIZED' appears twice in <input>"): nothing
    told which two. The refusal now says where they are (the folder's studies in name order, the manifest's
    lines), which names no patient, and de-identified still shows neither name nor path."""
    from sarcoscope.cli import app

    cohort = tmp_path / "cohort"
    for name in ("Doe John", "Doe_John", "Roe, Jane", "roe_jane"):
        (cohort / name).mkdir(parents=True)
    key = ["--deidentify", "--secret-file", str(tmp_path / "key")]
    result = CliRunner().invoke(app, ["batch", str(cohort), "-o", str(tmp_path / "o"), *key])
    assert result.exit_code == 1, result.output
    assert "appears twice in <input> (the studies 1 and 2 found in it, in name order)" in result.output
    assert "Doe" not in result.output and str(cohort) not in result.output
    (cohort / "Doe John").rmdir()
    with pytest.raises(InputError, match=r"\(the studies 2 and 3 found in it, in name order\) differ only"):
        discover_cases(cohort)

    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,path\nSmith_J,a\nother,b\nsmith_j,c\nother,d\n")
    with pytest.raises(InputError, match=r"'Smith_J' and 'smith_j' in .*m\.csv \(lines 2 and 4\) differ"):
        read_manifest(manifest)
    manifest.write_text("case_id,path\nSmith_J,a\nother,b\nx,c\nother,d\n")
    with pytest.raises(InputError, match=r"Case id 'other' appears twice in .*m\.csv \(lines 3 and 5\);"):
        read_manifest(manifest)
