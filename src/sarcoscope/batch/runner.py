"""Run `analyze` over a cohort: in this process, in local worker processes, or on a Dask cluster.

Resumable by construction: each case writes its own folder atomically (export.writer), and a case whose
report.json already exists is skipped unless `force`. A failing case is recorded with its message and never
stops the others (in a worker, neither does a SystemExit or KeyboardInterrupt raised by its analysis), nor
does a case whose worker process dies (kill -9, out of memory): it becomes a failed row.
cohort.csv and failures.csv are rewritten as each case finishes, so an interrupted run keeps every finished
row. Workers return only a small summary row, never images, so the cluster's memory stays low.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sarcoscope.batch.cases import REPORT, Case
from sarcoscope.batch.inputs import (
    INPUT_FILES,
    check_same_inputs,
    input_changed,
    input_files_code,
    series_instances,
)
from sarcoscope.batch.workers import init_worker, reuse_freed_memory, worker_threads
from sarcoscope.errors import OutputError, SarcoscopeError
from sarcoscope.export.report import AREA_DECIMALS, HU_DECIMALS
from sarcoscope.fileio import (
    atomic_write_text,
    check_output_folder,
    holding_lock,
    images_temp_dir,
    remove_dead_images,
)
from sarcoscope.imaging.deidentify.messages import scrub_error
from sarcoscope.imaging.deidentify.policy import DeidentificationError, DeidentificationPolicy
from sarcoscope.segmentation.base import DEFAULT_ENGINE

#: Held in the output folder by the run writing into it (see fileio.claim_lock): a second run would rewrite
#: cohort.csv from the rows it knows, dropping the first's.
BATCH_LOCK = ".batch.lock"


logger = logging.getLogger(__name__)


@dataclass
class CaseOutcome:
    """What happened to one case: "done", "skipped" (already analysed) or "failed" (with the reason)."""

    case_id: str
    status: str
    seconds: float = 0.0
    row: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: Why the case's earlier results were not kept (it was analysed again), for the run's own log.
    reanalysed: str | None = None


@dataclass
class BatchSummary:
    outcomes: list[CaseOutcome]
    cohort_csv: Path
    failures_csv: Path
    #: The tables' rows when the run started (kept in them until this run has an outcome for their case).
    kept_rows: list[dict[str, Any]] = field(default_factory=list)
    kept_failures: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def keep_earlier_rows(self) -> None:
        """Keep the tables' rows until this run has an outcome for their case: analysing a second cohort (or
        a part of one) into the same folder adds to its tables instead of dropping what is there, and a run
        stopped midway keeps the rows of the cases it did not reach."""
        self.kept_rows = _read_csv(self.cohort_csv)
        self.kept_failures = _read_csv(self.failures_csv)

    def write(self) -> None:
        """(Re)write cohort.csv and failures.csv from the outcomes so far and the kept rows, sorted by case
        id, atomically.

        Called after every case: O(cases) each time, negligible beside a case's analysis even for
        thousands of cases, and a run killed at any moment leaves complete tables of what it finished."""
        outcomes = sorted(self.outcomes, key=lambda o: o.case_id)
        seen = {o.case_id for o in outcomes}
        kept_rows = [r for r in self.kept_rows if r.get("case_id") not in seen]
        rows = sorted([*kept_rows, *(o.row for o in outcomes if o.row)], key=lambda r: r["case_id"])
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        _write_csv_atomic(self.cohort_csv, rows, columns or ["case_id"])
        failed = [{"case_id": o.case_id, "error": o.error} for o in outcomes if o.status == "failed"]
        kept_failures = [r for r in self.kept_failures if r.get("case_id") not in seen]
        failed = sorted([*kept_failures, *failed], key=lambda r: r["case_id"])
        _write_csv_atomic(self.failures_csv, failed, ["case_id", "error"])


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summary_row(case: Case, report: dict[str, Any]) -> dict[str, Any]:
    """The cohort table's row for one case, read from its report.json, to metrics.csv's precision."""
    avg = report["average"]["tissues"]
    assessment = report["assessment"]
    row: dict[str, Any] = {
        "case_id": case.case_id,
        "site": case.site or "",
        "l3_mode": report["l3"]["mode"],
        "l3_slices": " ".join(str(i) for i in report["l3"]["slice_indices"]),
        "l3_confidence": report["l3"].get("confidence"),
        "engine": report["segmentation"]["model_id"],
    }
    for tissue in ("muscle", "sat", "vat", "imat"):
        row[f"{tissue}_area_cm2"] = round(avg[tissue]["area_cm2"], AREA_DECIMALS)
        mean_hu = avg[tissue]["mean_hu"]
        row[f"{tissue}_mean_hu"] = None if mean_hu is None else round(mean_hu, HU_DECIMALS)
    smi = assessment["smi"].get("value")
    row["smi_cm2_m2"] = None if smi is None else round(smi, AREA_DECIMALS)
    (chosen,) = [c for c in assessment["sarcopenia"] if c["selected"]]
    row["sarcopenia_cutoff_set"] = chosen["set"]
    row["sarcopenia"] = chosen["flagged"] if chosen["status"] == "computed" else "not computed"
    quality = report.get("quality", {})
    computed = quality.get("status") == "computed" and quality["score"] is not None
    row["quality"] = quality["score"] if computed else ""
    row["quality_flag"] = ("review" if quality["flagged"] else "ok") if computed else ""
    row["warnings"] = len(report.get("warnings", []))
    if "deidentification" in report:
        row["patient"] = report["deidentification"]["patient_pseudonym"]
    row.update(case.extra)
    return row


def deidentified_case(case: Case, policy: DeidentificationPolicy) -> Case:
    """The case under a keyed code instead of its id (ids are often folder names: a name or patient ID)."""
    return replace(case, case_id=f"case-{policy.pseudonymise_text('case', case.case_id)}")


#: A case id `deidentified_case` makes.
DEIDENTIFIED_CASE_ID = re.compile(r"case-[0-9a-f]{12}")


def _check_same_kind(out_root: Path, case_ids: set[str], deidentified: bool) -> None:
    """Refuse a folder holding other cases' results of the other kind (de-identified or not): one table
    listing a patient under the folder name and under the pseudonym, with the same measurements, links
    the two."""
    kept = [
        r.get("case_id") or "" for name in ("cohort.csv", "failures.csv") for r in _read_csv(out_root / name)
    ]
    cases = out_root / "cases"
    kept += [p.name for p in cases.iterdir() if not p.name.startswith(".")] if cases.is_dir() else []
    other = {c for c in kept if c not in case_ids and bool(DEIDENTIFIED_CASE_ID.fullmatch(c)) != deidentified}
    if other:
        held = "results that are not de-identified" if deidentified else "de-identified results"
        raise OutputError(
            f"{out_root} holds {held} ({len(other)} case(s)); give this run a folder of its own: one table "
            "with both would list a patient under the name and the pseudonym, linking the two."
        )


def _busy(out_root: Path) -> Callable[[str], str]:
    return lambda holder: (
        f"another batch run (process {holder}) is writing into {out_root}; wait for it to end, or give this "
        "run a folder of its own (each run rewrites cohort.csv from the rows it knows, dropping the other's)."
    )


#: In a de-identified run's output folder: a keyed digest naming the key its case codes and pseudonyms were
#: made with (nothing of a patient), so that a run with another key is refused.
KEY_MARKER = ".deidentification-key-id"


def _check_same_key(out_root: Path, policy: DeidentificationPolicy) -> None:
    """Refuse a folder of results de-identified with another key (each patient's rows would be in the tables
    under both keys' codes and pseudonyms, with the same measurements, linking them); mark the folder with
    this key's digest otherwise."""
    key_id = policy.pseudonymise_text("key-id", "batch")
    marker = out_root / KEY_MARKER
    if not marker.is_file():
        atomic_write_text(marker, key_id + "\n")
    elif marker.read_text(encoding="utf-8").strip() != key_id:
        raise OutputError(
            f"{out_root} holds results made with another de-identification key; give this run a folder of "
            "its own, or the key those were made with: one table with both would list a patient under two "
            "pseudonyms, linking them."
        )


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
    failures.csv says why)."""
    from sarcoscope.pipeline import analyze

    out = out_root / "cases" / case.case_id
    report_path = out / REPORT
    start = time.perf_counter()
    kept: dict[str, Any] = {}  # the earlier row, when this run could not tell whether it still holds
    changed: str | None = None  # why the earlier results are not kept
    try:
        earlier = json.loads(report_path.read_text()) if report_path.is_file() and not force else None
        if earlier:
            changed = _changed_since(earlier, case, engine, cutoff_set, deidentification, pixel_spacing)
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
        remove_dead_images()  # a retrieved series or extracted zip of a case whose worker died here
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
    except Exception as exc:  # one broken study must not stop a cohort of thousands
        msg = _failure(exc, case, deidentification)
        outcome = CaseOutcome(case.case_id, "failed", time.perf_counter() - start, row=kept, error=msg)
    outcome.reanalysed = changed
    return outcome


def _failure(exc: BaseException, case: Case, deidentification: DeidentificationPolicy | None) -> str:
    """failures.csv's reason for a case whose analysis raised `exc`."""
    if isinstance(exc, SarcoscopeError):
        msg = str(exc)
    elif isinstance(exc, SystemExit):  # its text is only the status: say what it is
        msg = f"internal error SystemExit: the analysis asked to end its process (sys.exit({exc.code!r}))"
    else:  # KeyboardInterrupt() and GeneratorExit() have no text
        msg = f"internal error {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    # the input's paths, UIDs and descriptions may name the patient
    if deidentification is not None and not isinstance(exc, DeidentificationError):
        msg = scrub_error(msg, deidentification, case.path)
    return msg


#: Written into a case's folder once its results are stored on the DICOMweb server.
PUSHED = "pushed.json"


def _changed_since(
    report: dict[str, Any],
    case: Case,
    engine: str,
    cutoff_set: str | None,
    deidentification: DeidentificationPolicy | None,
    pixel_spacing: tuple[float, float] | None = None,
) -> str | None:
    """What makes a case's earlier report not this run's result (None: it is): another model or engine
    version, cutoff set, patient facts, L3 choice, pixel spacing (given by the user, or another value, in
    one run and not the other: one table would hold areas measured at both), or de-identification (or
    its options: a case kept from a run that retained the patient's characteristics or shifted dates, or
    accepted burned-in annotation, would keep them in a folder this run de-identifies without). A resumed
    batch analyses such a case again instead of mixing results made two ways in one table."""
    from sarcoscope.composition import default_cutoff_set, load_cutoffs
    from sarcoscope.segmentation import get_engine

    model_id = get_engine(engine).model_id
    if report["segmentation"]["model_id"] != model_id:
        return f"made by {report['segmentation']['model_id']}, this run uses {model_id}"
    chosen = next(c["set"] for c in report["assessment"]["sarcopenia"] if c["selected"])
    wanted = cutoff_set or default_cutoff_set()
    if chosen != wanted:
        return f"classified with cutoff set {chosen}, this run uses {wanted}"
    patient = dict(report["assessment"]["patient"])
    given = {
        "height_m": case.height_cm / 100.0 if case.height_cm is not None else None,
        "weight_kg": case.weight_kg,
        "sex": case.sex,
    }
    if "deidentification" in report and patient.get("height_m") is None:
        # de-identified without the patient's characteristics: only the height can be told, from the SMI
        smi = report["assessment"]["smi"].get("value")
        area = report["average"]["tissues"]["muscle"]["area_cm2"]
        patient = {"height_m": math.sqrt(area / smi) if smi else None}
        given = {"height_m": given["height_m"]}
    for key, value in given.items():
        stored = patient.get(key)
        floats = isinstance(stored, float) and isinstance(value, float)
        same = stored == value or (floats and math.isclose(stored, value, rel_tol=1e-4))
        if value is not None and not same:
            # de-identified: the patient's characteristics stay out of the log (and Dask workers' logs)
            if deidentification is not None:
                return f"made with another {key} than the manifest gives"
            return f"made with {key} {stored}, the manifest gives {value}"
    chosen_slices = report["l3"]["slice_indices"]
    if case.slice_index is not None:
        wanted_slices = [case.slice_index]
    elif case.slice_range is not None:
        wanted_slices = list(range(min(case.slice_range), max(case.slice_range) + 1))
    else:
        wanted_slices = chosen_slices
    if chosen_slices != wanted_slices:
        return f"of slice(s) {chosen_slices}, the manifest chooses {wanted_slices}"
    measured = report["input"]["spacing_mm_zyx"][1:]
    was = " x ".join(f"{v:g}" for v in measured)
    given = report["input"].get("pixel_spacing_given")
    if given is None:  # a report made before reports said it: the reader's warning says it
        given = any("given by the user" in w for w in report["input"].get("warnings", []))
    if given and pixel_spacing is None:
        return f"measured at the pixel spacing {was} mm given by the user, this run gives none"
    if not given and pixel_spacing is not None:
        return f"measured at the file's own pixel spacing {was} mm, this run gives one (--pixel-spacing)"
    if pixel_spacing is not None and not all(
        math.isclose(a, b, rel_tol=1e-4) for a, b in zip(measured, pixel_spacing, strict=True)
    ):
        now = " x ".join(f"{v:g}" for v in pixel_spacing)
        return f"measured at pixel spacing {was} mm, this run gives {now} mm"
    made = report["deidentification"]["codes"] if "deidentification" in report else None
    # a report that does not say whether it shows burned-in annotation was made before reports said it
    shown = made is not None and report["deidentification"].get("burned_in_annotation_shown") is not False
    if shown and deidentification is not None and not deidentification.accept_burned_in:
        return "made showing images with burned-in annotation (or not saying), which this run refuses"
    wanted_codes = deidentification.method_code_values if deidentification is not None else None
    if made != wanted_codes:
        if made is None or wanted_codes is None:
            return "not de-identified" if made is None else "de-identified"
        return f"de-identified with method codes {made}, this run uses {wanted_codes}"
    if deidentification is not None and not deidentification.keep_patient_characteristics:
        # made before de-identification removed them: the rule, cutoff and flag tell the sex or BMI
        table = load_cutoffs()
        for kind, sets in (("sarcopenia", table.sarcopenia), ("myosteatosis", table.myosteatosis)):
            for c in report["assessment"][kind]:
                if c["status"] == "computed" and c["set"] in sets and sets[c["set"]].needs_sex_or_bmi:
                    return f"de-identified keeping the {kind} classification by the sex or BMI it removed"
    return None


def _source(case: Case, tmp: Path, waits: tuple[float, float]) -> Path | Any:
    """What `analyze` reads: the case's path, or its DICOMweb series retrieved into `tmp`, waiting at most
    `waits` (connect, each answer)."""
    from sarcoscope.imaging import read_ct
    from sarcoscope.pacs.dicomweb import fetch_series, is_dicomweb, shown_url

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
    from sarcoscope.pacs.dicomweb import is_dicomweb, store_results

    if not (isinstance(case.path, str) and is_dicomweb(case.path)):
        raise SarcoscopeError("--push stores results back to a DICOMweb server; this case is not from one.")
    files = dicom_result_files(out)
    try:
        stored = store_results(case.path, files, waits[1], waits[0])
    except SarcoscopeError as exc:
        raise SarcoscopeError(f"analysed, but the results were not stored: {exc}") from None
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{PUSHED}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        record = {"stored": stored.sent, "already_stored": stored.held, "files": [f.name for f in files]}
        json.dump(record, fh)
    os.replace(tmp, out / PUSHED)


#: The failure recorded for a case whose worker process died under it.
WORKER_DIED = (
    "the worker process analysing this case died (killed, e.g. by the out-of-memory killer, or crashed); "
    "no report was written"
)


def _died(case: Case) -> CaseOutcome:
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
        return CaseOutcome(case.case_id, "failed", error=_failure(exc, case, kw["deidentification"]))


def _local(cases: list[Case], workers: int, **kw: Any) -> Iterator[CaseOutcome]:
    """Run the cases in `workers` processes; a case whose worker dies becomes a failed row.

    At most `workers` cases are in flight, so when a worker dies (the pool then breaks) the suspects are
    those few: one alone is the culprit; several are re-run one by one in a fresh process, and the one
    that kills that process too is the culprit. The other cases go on in a new pool.
    """
    if workers <= 1:
        for case in cases:
            yield analyze_case(case, **kw)
        return
    queue = deque(cases)
    while queue:
        suspects = yield from _pool_run(queue, workers, kw)
        if len(suspects) == 1:
            yield _died(suspects[0])
            continue
        for case in suspects:
            if (yield from _pool_run(deque([case]), 1, kw)):
                yield _died(case)


def _pool_run(
    queue: deque[Case], workers: int, kw: dict[str, Any]
) -> Generator[CaseOutcome, None, list[Case]]:
    """Run queued cases in one pool until the queue is empty (returns []) or the pool breaks (returns the
    cases that were in flight, none of which finished)."""
    init = {"initializer": init_worker, "initargs": (worker_threads(workers), True)}
    with ProcessPoolExecutor(max_workers=workers, **init) as pool:
        running: dict[Future[CaseOutcome], Case] = {}
        while queue or running:
            while queue and len(running) < workers:
                case = queue.popleft()
                try:
                    running[pool.submit(analyze_in_worker, case, **kw)] = case
                except BrokenProcessPool:
                    queue.appendleft(case)
                    return list(running.values())
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                if isinstance(fut.exception(), BrokenProcessPool):
                    broken = True
                    continue
                yield fut.result()
                del running[fut]
            if broken:
                finished = [f for f in running if f.done() and f.exception() is None]
                for fut in finished:
                    yield fut.result()
                    del running[fut]
                return list(running.values())
    return []


@dataclass(frozen=True)
class _NumberedCase:
    """A case as a Dask task's argument, shown as `Case #<number in the run>`: distributed names a failed
    task's arguments (their repr: before 2024.12 in full) in the worker's log, which goes to the cluster's
    shared logs, and a case's id and path are folder names, often the patient's."""

    number: int
    case: Case

    def __repr__(self) -> str:
        return f"Case #{self.number}"


def _analyze_task(task: _NumberedCase, **kw: Any) -> CaseOutcome:
    """`analyze_in_worker` as a Dask task."""
    return analyze_in_worker(task.case, **kw)


def _dask(cases: list[Case], scheduler: str, workers: int, **kw: Any) -> Iterator[CaseOutcome]:
    """Submit one task per case to a Dask cluster ("local" starts a LocalCluster on this machine).

    A case whose worker dies every time the scheduler retries it (KilledWorker) becomes a failed row.
    """
    try:
        from dask.distributed import Client, KilledWorker, LocalCluster
        from dask.distributed import as_completed as dask_as_completed
    except ImportError:
        raise SarcoscopeError(
            "Dask is not installed: pip install 'sarcoscope[cluster]' to run on a Dask cluster."
        ) from None
    if scheduler == "local":
        # no dashboard: Dask serves it on every interface, without a login, and its pages show the case ids
        # (folder names, often the patient's name) and the workers' logs
        cluster = LocalCluster(
            n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
        client.run(init_worker, worker_threads(workers))  # this machine's cores, shared by its workers
    else:
        cluster = None
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address (ValueError)
            raise SarcoscopeError(
                f"Cannot reach the Dask scheduler at {scheduler}: {exc} (give 'local' or an address like "
                "tcp://host:8786)"
            ) from None
        # a worker without sarcoscope fails its cases with a clear row; this setup is only an optimisation
        client.run(reuse_freed_memory, on_error="ignore")
    # a scheduler takes a task of a key it holds for that task: another run's case of the same id on a shared
    # cluster (cohorts name their cases alike) would give its result as this case's. The key names the run
    # and the case's place in it, not the case id (a folder name, often the patient's): a shared scheduler
    # shows every user its tasks' keys (dashboard) and names them in its log.
    run = uuid.uuid4().hex[:12]
    try:
        futures = {
            client.submit(
                _analyze_task, _NumberedCase(n, case), key=f"sarcoscope-{run}-{n}", pure=False, **kw
            ): case
            for n, case in enumerate(cases)
        }
        for fut in dask_as_completed(futures):
            try:
                yield fut.result()
            except KilledWorker:
                yield _died(futures[fut])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _check_tables(out_root: Path) -> None:
    """Refuse an output folder whose cohort.csv or failures.csv is not a table of this tool (no case_id
    column): its rows would be kept and mixed with ours, or the file replaced."""
    for name in ("cohort.csv", "failures.csv"):
        path = out_root / name
        if not path.is_file():
            continue
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if "case_id" not in header:
            raise OutputError(
                f"{path} is not a sarcoscope {name} (it has no case_id column); choose another output folder."
            )


def _write_csv_atomic(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write the table beside `path` and move it over; a write stopped midway (Ctrl-C, a full disk) leaves
    no partial copy of the cohort's rows behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def run_batch(
    cases: list[Case],
    out_root: Path,
    *,
    engine: str = DEFAULT_ENGINE,
    cutoff_set: str | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    force: bool = False,
    on_outcome: Callable[[CaseOutcome], None] | None = None,
    deidentification: DeidentificationPolicy | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    push: bool = False,
    waits: tuple[float, float] = (10.0, 60.0),
) -> BatchSummary:
    """Analyse every case; write cohort.csv (one row per analysed case) and failures.csv into out_root.

    `deidentification`: every case's files are de-identified, and case ids (folder names, often a name or
    patient ID) become keyed codes `case-<hex>` in the output folders, cohort.csv and failures.csv, with a
    `patient` column holding the pseudonym; the manifest's own extra columns are copied as they are.

    `scheduler`: None runs locally (`workers` processes), "local" starts a Dask LocalCluster with `workers`
    workers, any other value is the address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786); with a
    cluster, out_root and the inputs must be on storage every worker can reach.

    `push`: every case read from a DICOMweb server gets its SEG, SR and QC capture stored back into its
    study (STOW-RS); not with `deidentification` (the results would belong to another patient and study).
    `waits`: the (connect, each answer) timeouts in seconds of every request to a DICOMweb server (each
    retrieval, each push).
    """
    if push and deidentification is not None:
        raise SarcoscopeError(
            "--push stores results in the source studies; it cannot be combined with --deidentify."
        )
    from sarcoscope.pacs.dicomweb import check_waits

    check_waits(*waits)
    check_output_folder(out_root)
    _check_tables(out_root)
    if pixel_spacing is not None:  # checked once here, not failed in every case
        from sarcoscope.imaging.read import check_pixel_spacing

        check_pixel_spacing(pixel_spacing, "--pixel-spacing")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_root}: {exc}") from exc
    with holding_lock(out_root / BATCH_LOCK, _busy(out_root)):
        if deidentification is not None:
            cases = [deidentified_case(case, deidentification) for case in cases]
        _check_same_kind(out_root, {case.case_id for case in cases}, deidentification is not None)
        if deidentification is not None:
            _check_same_key(out_root, deidentification)
        check_same_inputs(out_root, cases, deidentification)
        kw: dict[str, Any] = {
            "out_root": out_root,
            "engine": engine,
            "cutoff_set": cutoff_set,
            "force": force,
            "deidentification": deidentification,
            "pixel_spacing": pixel_spacing,
            "push": push,
            "waits": waits,
        }
        stream = _dask(cases, scheduler, workers, **kw) if scheduler else _local(cases, workers, **kw)
        outcomes: list[CaseOutcome] = []
        summary = BatchSummary(outcomes, out_root / "cohort.csv", out_root / "failures.csv")
        summary.keep_earlier_rows()
        try:
            for outcome in stream:
                if outcome.reanalysed is not None:
                    logger.warning(
                        "case %s is analysed again: its earlier results were %s",
                        outcome.case_id,
                        outcome.reanalysed,
                    )
                outcomes.append(outcome)
                summary.write()  # an interrupted run keeps every row, and no failure of a case now done
                if on_outcome is not None:
                    on_outcome(outcome)
        finally:
            if outcomes:  # a run that failed before its first case leaves the tables as they were
                summary.write()
        return summary
