"""Run `analyze` over a cohort: in this process, in local worker processes, or on a Dask cluster.

Resumable by construction: each case writes its own folder atomically (export.writer), and a case whose
report.json already exists is skipped unless `force`. A failing case is recorded with its message and never
stops the others (in a worker, neither does a SystemExit or KeyboardInterrupt raised by its analysis), nor
does a case whose worker process dies (kill -9, out of memory): it becomes a failed row.
cohort.csv and failures.csv are rewritten as each case finishes, so an interrupted run keeps every finished
row. Workers return only a small summary row, never images, so the cluster's memory stays low.

Here the run itself; one case is batch.case_analysis (whether its earlier results hold: batch.resume), the
ways to run many batch.local_pool and batch.dask_cluster, the tables batch.tables, and what is checked of
the output folder before anything is written batch.output_folder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sarcoscope.batch.case_analysis import PUSHED, WORKER_DIED, analyze_case, analyze_in_worker
from sarcoscope.batch.cases import Case
from sarcoscope.batch.dask_cluster import run_on_dask
from sarcoscope.batch.inputs import check_same_inputs
from sarcoscope.batch.local_pool import run_locally
from sarcoscope.batch.output_folder import (
    BATCH_LOCK,
    DEIDENTIFIED_CASE_ID,
    KEY_MARKER,
    busy_message,
    check_same_key,
    check_same_kind,
    check_tables,
    deidentified_case,
)
from sarcoscope.batch.tables import BatchSummary, CaseOutcome, summary_row
from sarcoscope.errors import OutputError, SarcoscopeError
from sarcoscope.fileio import check_output_folder, holding_lock
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.segmentation.base import DEFAULT_ENGINE

#: Also importable from here, where they were defined before the batch package was split by concern.
__all__ = [
    "BATCH_LOCK",
    "DEIDENTIFIED_CASE_ID",
    "KEY_MARKER",
    "PUSHED",
    "WORKER_DIED",
    "BatchSummary",
    "CaseOutcome",
    "analyze_case",
    "analyze_in_worker",
    "deidentified_case",
    "run_batch",
    "summary_row",
]

logger = logging.getLogger(__name__)


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
    from sarcoscope.pacs.dicomweb_query import check_waits

    check_waits(*waits)
    check_output_folder(out_root)
    check_tables(out_root)
    if pixel_spacing is not None:  # checked once here, not failed in every case
        from sarcoscope.imaging.read import check_pixel_spacing

        check_pixel_spacing(pixel_spacing, "--pixel-spacing")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_root}: {exc}") from exc
    with holding_lock(out_root / BATCH_LOCK, busy_message(out_root)):
        if deidentification is not None:
            cases = [deidentified_case(case, deidentification) for case in cases]
        check_same_kind(out_root, {case.case_id for case in cases}, deidentification is not None)
        if deidentification is not None:
            check_same_key(out_root, deidentification)
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
        stream = (
            run_on_dask(cases, scheduler, workers, **kw) if scheduler else run_locally(cases, workers, **kw)
        )
        outcomes: list[CaseOutcome] = []
        summary = BatchSummary(outcomes, out_root / "cohort.csv", out_root / "failures.csv")
        summary.keep_earlier_rows()
        # a run stopped early (Ctrl-C, an error) ends its workers before it raises, its tables written first
        with contextlib.closing(stream):
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
