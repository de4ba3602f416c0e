"""A case that kills its worker process becomes a failed row; the cohort goes on and keeps every row."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sarcoscope.batch import Case, run_batch
from sarcoscope.batch.inputs import INPUT_MARKER
from sarcoscope.batch.runner import WORKER_DIED, CaseOutcome
from sarcoscope.imaging import write_dicom_series
from sarcoscope.phantom import make_slice


@dataclass(frozen=True)
class _KillerCase(Case):
    """A case whose worker is killed with SIGKILL (as by the OOM killer) when it starts on it. Only worker
    processes die: they import this module (fork; Dask's spawned workers get the test's sys.path)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "path" and multiprocessing.parent_process() is not None:
            signal.raise_signal(signal.SIGKILL)
        return super().__getattribute__(name)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    root = tmp_path_factory.mktemp("crash-cohort")
    cases = []
    for seed in (1, 2, 3):
        sl = make_slice(seed, size=128)
        write_dicom_series(sl.hu[None], (3.0, *sl.pixel_spacing), root / f"p{seed}")
        cases.append(Case(case_id=f"p{seed}", path=root / f"p{seed}"))
    return cases


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _check_written_so_far(out: Path, seen: list[CaseOutcome]):
    """on_outcome: when a case is reported, the tables on disk already hold it and every earlier one."""

    def check(outcome: CaseOutcome) -> None:
        seen.append(outcome)
        analysed = {r["case_id"] for r in _rows(out / "cohort.csv")}
        failed = {r["case_id"] for r in _rows(out / "failures.csv")}
        assert analysed == {o.case_id for o in seen if o.status == "done"}
        assert failed == {o.case_id for o in seen if o.status == "failed"}

    return check


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
def test_killed_worker_is_a_failed_row_and_the_run_goes_on(studies: list[Case], tmp_path: Path) -> None:
    killer = _KillerCase(case_id="killer", path=tmp_path / "nothing")
    out = tmp_path / "run"
    seen: list[CaseOutcome] = []
    summary = run_batch(
        [killer, *studies], out, engine="threshold", workers=2, on_outcome=_check_written_so_far(out, seen)
    )
    assert (summary.count("done"), summary.count("failed")) == (3, 1)
    assert [r["case_id"] for r in _rows(summary.cohort_csv)] == ["p1", "p2", "p3"]
    assert _rows(summary.failures_csv) == [{"case_id": "killer", "error": WORKER_DIED}]
    assert len(seen) == 4
    # nothing half-written: the folder holds only the name of its input (another cohort's "killer" is refused)
    assert [p.name for p in (out / "cases" / "killer").iterdir()] == [INPUT_MARKER]


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
def test_a_case_finished_when_the_pool_breaks_stays_done(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker died just after another had finished its case (report written) but before that case's
    outcome was back: the pool broke, the finished case was re-run as a suspect and, finding its report,
    listed as skipped (kept from an earlier run) instead of done; the killed-worker test flaked so. The
    order is forced here: p1's worker finishes, then waits; only then is the killer's worker killed."""
    from sarcoscope import pipeline
    from sarcoscope.batch import case_analysis

    finished = tmp_path / "p1-finished"
    real_analyze, real_row = pipeline.analyze, case_analysis.summary_row

    def analyze(ct: Path, **kw: Any) -> Any:
        if kw["out_dir"].name == "killer" and multiprocessing.parent_process() is not None:
            _wait_for(finished)
            signal.raise_signal(signal.SIGKILL)
        return real_analyze(ct, **kw)

    def summary_row(case: Case, report: dict[str, Any]) -> dict[str, Any]:
        first = not finished.exists()
        if case.case_id == "p1" and first and multiprocessing.parent_process() is not None:
            finished.touch()  # p1's results are all written: its outcome is not sent back before the break
            time.sleep(60)  # ended with the broken pool
        return real_row(case, report)

    monkeypatch.setattr(pipeline, "analyze", analyze)  # the workers' too (fork)
    monkeypatch.setattr(case_analysis, "summary_row", summary_row)
    killer = Case(case_id="killer", path=studies[0].path)
    out = tmp_path / "run"
    seen: list[CaseOutcome] = []
    summary = run_batch(
        [killer, *studies], out, engine="threshold", workers=2, on_outcome=_check_written_so_far(out, seen)
    )
    assert finished.exists()
    statuses = {o.case_id: o.status for o in seen}
    assert statuses == {"killer": "failed", "p1": "done", "p2": "done", "p3": "done"}
    assert [r["case_id"] for r in _rows(summary.cohort_csv)] == ["p1", "p2", "p3"]
    assert _rows(summary.failures_csv) == [{"case_id": "killer", "error": WORKER_DIED}]
    # the next run keeps p1 as done before it
    again = run_batch(studies, out, engine="threshold", workers=2)
    assert (again.count("skipped"), again.count("done")) == (3, 0)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
def test_a_worker_killed_once_its_case_is_written_leaves_the_case_done(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one case in flight when its worker died was listed as the worker's victim, failed, even when its
    results were all written (killed on its way out): it is now tried again, and found done."""
    from sarcoscope.batch import case_analysis

    finished = tmp_path / "p1-finished"
    real_row = case_analysis.summary_row

    def summary_row(case: Case, report: dict[str, Any]) -> dict[str, Any]:
        if multiprocessing.parent_process() is not None and not finished.exists():
            finished.touch()
            signal.raise_signal(signal.SIGKILL)  # everything written, the outcome not sent back
        return real_row(case, report)

    monkeypatch.setattr(case_analysis, "summary_row", summary_row)  # the workers' too (fork)
    summary = run_batch([studies[0]], tmp_path / "run", engine="threshold", workers=2)
    assert finished.exists()
    assert [(o.case_id, o.status) for o in summary.outcomes] == [("p1", "done")]
    assert _rows(summary.failures_csv) == []


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
def test_the_images_a_killed_worker_extracted_do_not_stay_in_the_temporary_folder(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip case is extracted (a DICOMweb case retrieved) into the system's temporary folder, removed when
    the case ends; a worker killed meanwhile (out of memory: expected, and listed as such) left the
    patient's whole CT there for good, outside any output folder. The next case analysed removes it."""
    import tempfile
    import zipfile

    from sarcoscope.imaging import read

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the workers' too (fork)
    (tmp_path / "tmp").mkdir()
    archive = tmp_path / "patient.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(studies[0].path.iterdir()):
            zf.write(f, f.name)
    real = read.extract_zip

    def extract_then_die(zipped: Path, folder: Path) -> None:
        real(zipped, folder)
        if multiprocessing.parent_process() is not None:  # killed in the worker, as by the OOM killer
            signal.raise_signal(signal.SIGKILL)

    monkeypatch.setattr(read, "extract_zip", extract_then_die)
    killed = run_batch(
        [Case(case_id="zipped", path=archive)], tmp_path / "run", engine="threshold", workers=2
    )
    assert _rows(killed.failures_csv) == [{"case_id": "zipped", "error": WORKER_DIED}]
    assert any((tmp_path / "tmp").rglob("*.dcm"))  # what a killed worker leaves
    later = run_batch([studies[1]], tmp_path / "run", engine="threshold")
    assert later.count("done") == 1
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_killed_dask_worker_is_a_failed_row(studies: list[Case], tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    import dask

    killer = _KillerCase(case_id="killer", path=tmp_path / "nothing")
    # no retry of the killer; one task per worker, so the other case does not run on the dying worker
    with dask.config.set(
        {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
    ):
        summary = run_batch(
            [killer, studies[0]], tmp_path / "dask", engine="threshold", scheduler="local", workers=2
        )
    assert (summary.count("done"), summary.count("failed")) == (1, 1)
    assert _rows(summary.failures_csv) == [{"case_id": "killer", "error": WORKER_DIED}]


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
@pytest.mark.parametrize(
    ("escaping", "error"),
    [
        (SystemExit(3), "internal error SystemExit: the analysis asked to end its process (sys.exit(3))"),
        (  # a library's message may quote the input (a header value, a path named by the patient)
            SystemExit("cannot read Jansen^Piet 12345678"),
            "internal error SystemExit: the analysis asked to end its process (sys.exit(a message))",
        ),
        (KeyboardInterrupt(), "internal error KeyboardInterrupt"),
        (GeneratorExit(), "internal error GeneratorExit"),
    ],
)
def test_a_case_escaping_its_analysis_in_a_worker_is_a_failed_row_and_the_run_goes_on(
    studies: list[Case],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    escaping: BaseException,
    error: str,
) -> None:
    """What is not an Exception (a library calling sys.exit, a KeyboardInterrupt or GeneratorExit raised in
    the analysis) escaped a pool worker's case: the pool sent it back and the run raised it, stopping the
    whole cohort (SystemExit: the command ended with the library's status, as if done). Now it is that case's
    failed row, no worker logs the case, the other cases are analysed, and a rerun analyses it."""
    from sarcoscope import pipeline

    real = pipeline.analyze

    def analyze(ct: Path, **kw: Any) -> Any:
        if Path(ct).name == "p2":
            logging.getLogger("some.library").error("giving up on %s", ct)  # a worker's own log
            raise escaping
        return real(ct, **kw)

    monkeypatch.setattr(pipeline, "analyze", analyze)  # the workers' too (fork)
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # forked pool workers inherit it: their records reach the file
    handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    out = tmp_path / "run"
    try:
        summary = run_batch(studies, out, engine="threshold", workers=2)
    finally:
        root.removeHandler(handler)
        handler.close()
    assert (summary.count("done"), summary.count("failed")) == (2, 1)
    assert [r["case_id"] for r in _rows(summary.cohort_csv)] == ["p1", "p3"]
    assert _rows(summary.failures_csv) == [{"case_id": "p2", "error": error}]
    lines = [line.split(" ", 1) for line in log_file.read_text().splitlines()]
    workers = [text for pid, text in lines if pid != str(os.getpid())]
    assert workers == [f"giving up on {studies[1].path}"]  # the library's own line, nothing of ours
    monkeypatch.setattr(pipeline, "analyze", real)
    again = run_batch(studies, out, engine="threshold", workers=2)
    assert (again.count("done"), again.count("skipped"), again.count("failed")) == (1, 2, 0)
    assert [r["case_id"] for r in _rows(again.cohort_csv)] == ["p1", "p2", "p3"]
    assert _rows(again.failures_csv) == []


@pytest.fixture
def console_ctrl_c() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as in a console. A shell without job control (a CI step, `cmd &`)
    starts a background job with SIGINT ignored, which Python then leaves so and the pool's forked workers
    inherit: there the Ctrl-C test's run went on to its end ("did not raise KeyboardInterrupt")."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
@pytest.mark.usefixtures("console_ctrl_c")
def test_ctrl_c_stops_the_run_and_its_workers_and_keeps_what_finished(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the console (SIGINT to the batch's process and its workers) still stops the run, now that
    a worker turns a KeyboardInterrupt escaping a case into the case's failed row: the interrupted case is
    not one, the workers end with the run, the tables keep what finished, and a rerun goes on from there."""
    from sarcoscope import pipeline

    real = pipeline.analyze

    def analyze(ct: Path, **kw: Any) -> Any:
        if Path(ct).name == "p2":
            time.sleep(60)  # still running when Ctrl-C comes
        return real(ct, **kw)

    def ctrl_c(outcome: CaseOutcome) -> None:
        for worker in multiprocessing.active_children():
            os.kill(worker.pid, signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(pipeline, "analyze", analyze)  # the workers' too (fork)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_batch(studies, out, engine="threshold", workers=2, on_outcome=ctrl_c)
    assert multiprocessing.active_children() == []
    assert [r["case_id"] for r in _rows(out / "cohort.csv")] == ["p1"]
    assert _rows(out / "failures.csv") == []
    monkeypatch.setattr(pipeline, "analyze", real)
    again = run_batch(studies, out, engine="threshold", workers=2)
    assert (again.count("done"), again.count("skipped"), again.count("failed")) == (2, 1, 0)


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="worker start method is not fork")
def test_a_run_stopped_in_its_own_process_ends_its_workers_before_it_raises(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped in the batch's own process (an interrupt that reaches it alone, an error writing its
    tables) left its pool to the garbage collector: shut down only once the run's generator was collected
    (here when pytest let the exception go; in the command, at exit), and then waiting for the case in
    flight (60 s here), or forever when a signal had left a result queue's lock taken in a worker. The run
    now ends its workers (a case in flight unwinds as on SIGTERM; one stuck is killed) before it raises."""
    from sarcoscope import pipeline

    real = pipeline.analyze

    def analyze(ct: Path, **kw: Any) -> Any:
        if Path(ct).name == "p2":
            time.sleep(60)  # still running when the run stops
        return real(ct, **kw)

    def stop(outcome: CaseOutcome) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "analyze", analyze)  # the workers' too (fork)
    out = tmp_path / "run"
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_batch(studies, out, engine="threshold", workers=2, on_outcome=stop)
    assert multiprocessing.active_children() == []
    assert time.monotonic() - start < 30
    assert [r["case_id"] for r in _rows(out / "cohort.csv")] == ["p1"]
    assert _rows(out / "failures.csv") == []
    assert [p.name for p in (out / "cases" / "p2").iterdir()] == [INPUT_MARKER]


def test_a_library_calling_sys_exit_fails_its_case_also_without_worker_processes(
    studies: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker the cases are analysed in the batch's own process: a library's sys.exit in one case
    ended the whole command there (with that library's status, as if the cohort were done)."""
    from sarcoscope import pipeline

    real = pipeline.analyze

    def analyze(ct: Path, **kw: Any) -> Any:
        if Path(ct).name == "p2":
            raise SystemExit(3)
        return real(ct, **kw)

    monkeypatch.setattr(pipeline, "analyze", analyze)
    summary = run_batch(studies, tmp_path / "run", engine="threshold", workers=1)
    assert (summary.count("done"), summary.count("failed")) == (2, 1)
    reason = "internal error SystemExit: the analysis asked to end its process (sys.exit(3))"
    assert _rows(summary.failures_csv) == [{"case_id": "p2", "error": reason}]
