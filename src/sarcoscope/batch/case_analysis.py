"""One case of a batch: analysed (or kept from an earlier run, or pushed to its DICOMweb study) into its
own folder, inside whichever process runs it; returns a small outcome, never images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sarcoscope.batch.cases import REPORT, Case
from sarcoscope.batch.inputs import INPUT_FILES, input_changed, input_files_code, series_instances
from sarcoscope.batch.resume import changed_since
from sarcoscope.batch.tables import CaseOutcome, summary_row
from sarcoscope.errors import SarcoscopeError, bug_named
from sarcoscope.fileio import atomic_write_text, images_temp_dir
from sarcoscope.imaging.deidentify.messages import scrub_error
from sarcoscope.imaging.deidentify.policy import DeidentificationError, DeidentificationPolicy
from sarcoscope.imaging.dicom_warnings import quiet_header_values


def analyze_case(
    case: Case,
    out_root: Path,
    *,
    engine: str,
    cutoff_set: str | None,
    force: bool,
    deidentification: DeidentificationPolicy | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    push: bool = False,
    waits: tuple[float, float] = (10.0, 60.0),
) -> CaseOutcome:
    """Analyse one case into out_root/cases/<case_id>/ (runs inside a worker; returns a small outcome).

    A DICOMweb case is retrieved into a temporary folder first; with `push` its SEG, SR and QC capture
    are stored back into its study, and pushed.json records that, so a rerun pushes what a failed push
    left behind without analysing the case again; `waits`: the (connect, each answer) timeouts of the
    retrieval and the push. A failed push fails the case with its analysis' row kept (cohort.csv holds it,
    failures.csv says why). pydicom's warnings in this process quote no header value
    (imaging.dicom_warnings): a worker's log goes to a cluster's shared logs, as a server's does."""
    from sarcoscope.pipeline import analyze

    quiet_header_values()  # a Dask worker (or a spawned one) has not the command's filter
    out = case.folder(out_root)
    report_path = out / REPORT
    start = time.perf_counter()
    kept: dict[str, Any] = {}  # the earlier row, when this run could not tell whether it still holds
    changed: str | None = None  # why the earlier results are not kept
    try:
        earlier = json.loads(report_path.read_text()) if report_path.is_file() and not force else None
        if earlier:
            changed = changed_since(earlier, case, engine, cutoff_set, deidentification, pixel_spacing)
        try:
            instances = series_instances(case, waits)  # a DICOMweb series' images as the server has them
        except SarcoscopeError as exc:  # the server cannot say: the case fails, its earlier row listed
            if not (earlier and changed is None):
                raise
            kept = summary_row(case, earlier)
            raise SarcoscopeError(
                f"its earlier results are listed, but whether its series changed on the server since could "
                f"not be checked: {exc}"
            ) from None
        files = input_files_code(case, deidentification, instances)  # what this run reads, before it does
        if earlier and changed is None:
            changed = input_changed(earlier, out, case, files, deidentification, instances)
        # said by the process running the batch (the user's console), not here: a worker's log (a Dask
        # worker's goes to the cluster's shared logs) names no case, which is often a patient's folder
        if changed is None and earlier is not None:
            row = summary_row(case, earlier)
            if push and not (out / PUSHED).is_file():
                return _pushed(case, out, waits, row, start)
            return CaseOutcome(case.case_id, "skipped", row=row)
        # new results are not the ones stored: pushed by the next --push run (the analysis keeps the file)
        (out / PUSHED).unlink(missing_ok=True)
        with images_temp_dir("dicomweb") as tmp:
            analyze(
                _source(case, Path(tmp), waits),
                out_dir=out,
                slice_index=case.slice_index,
                slice_range=case.slice_range,
                pixel_spacing=pixel_spacing,
                engine=engine,
                height_cm=case.height_cm,
                weight_kg=case.weight_kg,
                sex=case.sex,
                cutoff_set=cutoff_set,
                deidentification=deidentification,
            )
        atomic_write_text(out / INPUT_FILES, files + "\n")
        row = summary_row(case, json.loads(report_path.read_text()))
        outcome = (
            _pushed(case, out, waits, row, start)
            if push
            else CaseOutcome(case.case_id, "done", time.perf_counter() - start, row=row)
        )
    except (Exception, SystemExit) as exc:  # one broken study must not stop a cohort of thousands (a
        # library's sys.exit included; a signal is Terminated, Ctrl-C KeyboardInterrupt: those stop the run)
        msg = failure_reason(exc, case, deidentification)
        outcome = CaseOutcome(case.case_id, "failed", time.perf_counter() - start, row=kept, error=msg)
    outcome.reanalysed = changed
    return outcome


def failure_reason(exc: BaseException, case: Case, deidentification: DeidentificationPolicy | None) -> str:
    """failures.csv's reason for a case whose analysis raised `exc`: a bug's by its type (the cohort's tables
    and console are shared beyond the patient's record; `sarcoscope --debug analyze` on the case shows its
    text)."""
    if isinstance(exc, SarcoscopeError):
        msg = str(exc)
    elif isinstance(exc, SystemExit):  # a status, or a message (which may quote the input): say what it is
        status = repr(exc.code) if exc.code is None or isinstance(exc.code, int) else "a message"
        msg = f"internal error SystemExit: the analysis asked to end its process (sys.exit({status}))"
    else:  # KeyboardInterrupt() and GeneratorExit() have no text
        msg = f"internal error {bug_named(exc) if str(exc) else type(exc).__name__}"
    # the input's paths, UIDs and descriptions may name the patient
    if deidentification is not None and not isinstance(exc, DeidentificationError):
        msg = scrub_error(msg, deidentification, case.path)
    return msg


#: Written into a case's folder once its results are stored on the DICOMweb server.
PUSHED = "pushed.json"


def _source(case: Case, tmp: Path, waits: tuple[float, float]) -> Path | Any:
    """What `analyze` reads: the case's path, or its DICOMweb series retrieved into `tmp`, waiting at most
    `waits` (connect, each answer)."""
    from sarcoscope.imaging import read_ct
    from sarcoscope.pacs.dicomweb import fetch_series
    from sarcoscope.pacs.dicomweb_query import is_dicomweb, shown_url

    if isinstance(case.path, str) and is_dicomweb(case.path):
        volume = read_ct(fetch_series(case.path, tmp, timeout=waits[1], connect_timeout=waits[0]))
        volume.source_path = shown_url(case.path)  # the address (no password), not the temporary folder
        return volume
    return Path(case.path)


def _pushed(
    case: Case, out: Path, waits: tuple[float, float], row: dict[str, Any], start: float
) -> CaseOutcome:
    """The outcome of an analysed case once its results are pushed: a failed push fails the case but keeps
    its row (the analysis is in the table; a rerun pushes without analysing again)."""
    try:
        _push(case, out, waits)
    except SarcoscopeError as exc:
        return CaseOutcome(case.case_id, "failed", time.perf_counter() - start, row=row, error=str(exc))
    return CaseOutcome(case.case_id, "done", time.perf_counter() - start, row=row)


def _push(case: Case, out: Path, waits: tuple[float, float]) -> None:
    """Store the case's SEG, SR and QC capture into its DICOMweb study, waiting at most `waits` (connect,
    each answer); record it in pushed.json."""
    from sarcoscope.export.writer import dicom_result_files
    from sarcoscope.pacs.dicomweb import store_results
    from sarcoscope.pacs.dicomweb_query import is_dicomweb

    if not (isinstance(case.path, str) and is_dicomweb(case.path)):
        raise SarcoscopeError("--push stores results back to a DICOMweb server; this case is not from one.")
    files = dicom_result_files(out)
    try:
        stored = store_results(case.path, files, waits[1], waits[0])
    except SarcoscopeError as exc:
        raise SarcoscopeError(f"analysed, but the results were not stored: {exc}") from None
    record = {"stored": stored.sent, "already_stored": stored.held, "files": [f.name for f in files]}
    atomic_write_text(out / PUSHED, json.dumps(record))


#: The failure recorded for a case whose worker process died under it.
WORKER_DIED = (
    "the worker process analysing this case died (killed, e.g. by the out-of-memory killer, or crashed); "
    "no report was written"
)


def worker_died(case: Case) -> CaseOutcome:
    """The failed row of a case whose worker process died under it."""
    return CaseOutcome(case.case_id, "failed", error=WORKER_DIED)


def analyze_in_worker(case: Case, **kw: Any) -> CaseOutcome:
    """`analyze_case` in a worker process (of the local pool, or a Dask worker): what escapes it (a
    BaseException such as SystemExit from a library calling sys.exit, a KeyboardInterrupt raised in the
    analysis; an error outside its own try) is the case's failed row. Sent back as the task's error, the
    process running the batch raised it, which stopped the whole cohort; a Dask worker logged it with its
    message (often naming the case's path) and, a BaseException, it stopped the client's event loop (the run
    hung). A real Ctrl-C still stops the run: the console's SIGINT reaches the batch's own process too."""
    try:
        return analyze_case(case, **kw)
    except BaseException as exc:
        return CaseOutcome(case.case_id, "failed", error=failure_reason(exc, case, kw["deidentification"]))
