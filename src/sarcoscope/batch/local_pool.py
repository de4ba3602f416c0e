"""A batch on this machine: in this process, or in a pool of worker processes where a case whose worker
dies (killed by the out-of-memory killer, crashed) becomes a failed row and the others go on."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from sarcoscope.batch.case_analysis import analyze_case, analyze_in_worker, worker_died
from sarcoscope.batch.cases import REPORT, Case
from sarcoscope.batch.tables import CaseOutcome
from sarcoscope.batch.workers import init_worker, worker_threads

#: How long a worker of a run stopped early has to unwind its case before it is killed.
UNWIND_SECONDS = 5.0
#: Which report.json a case folder held when the run started (None: none), by case id.
_Stamps = dict[str, tuple[int, int] | None]


def run_locally(cases: list[Case], workers: int, **kw: Any) -> Generator[CaseOutcome, None, None]:
    """Run the cases in `workers` processes; a case whose worker dies becomes a failed row.

    At most `workers` cases are in flight, so when a worker dies (the pool then breaks) the suspects are
    those few: one alone is the culprit; several are re-run one by one in a fresh process, and the one
    that kills that process too is the culprit. The other cases go on in a new pool. A suspect may have
    finished (its outcome lost with the pool): re-run, it finds its report and is listed done, not skipped
    as if kept from an earlier run, and it is never taken for the culprit untried.
    """
    if workers <= 1:
        for case in cases:
            yield analyze_case(case, **kw)
        return
    before = {case.case_id: _report_stamp(case.folder(kw["out_root"])) for case in cases}
    queue = deque(cases)
    while queue:
        suspects = yield from _pool_run(queue, workers, kw, before)
        if len(suspects) == 1 and not _written_now(suspects[0], kw["out_root"], before):
            yield worker_died(suspects[0])
            continue
        for case in suspects:
            if (yield from _pool_run(deque([case]), 1, kw, before)):
                yield worker_died(case)


def _pool_run(
    queue: deque[Case], workers: int, kw: dict[str, Any], before: _Stamps
) -> Generator[CaseOutcome, None, list[Case]]:
    """Run queued cases in one pool until the queue is empty (returns []) or the pool breaks (returns the
    cases that were in flight, whose outcomes did not come back: one of them may have finished)."""
    init = {"initializer": init_worker, "initargs": (worker_threads(workers), True)}
    with ProcessPoolExecutor(max_workers=workers, **init) as pool:
        try:
            return (yield from _run_in(pool, queue, workers, kw, before))
        except BaseException:  # the run stops early (Ctrl-C, an error; GeneratorExit: the run closed it)
            _end_workers(pool)
            raise


def _run_in(
    pool: ProcessPoolExecutor, queue: deque[Case], workers: int, kw: dict[str, Any], before: _Stamps
) -> Generator[CaseOutcome, None, list[Case]]:
    """_pool_run's work in its pool `pool`."""
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
            yield _as_done_here(fut.result(), running.pop(fut), kw["out_root"], before)
        if broken:
            finished = [f for f in running if f.done() and f.exception() is None]
            for fut in finished:
                yield _as_done_here(fut.result(), running.pop(fut), kw["out_root"], before)
            return list(running.values())
    return []


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers before the run stops early, instead of waiting for their cases: a case in
    flight unwinds as on SIGTERM (nothing half-written, no temporary copy of its images left), and no worker
    outlives the run. A worker still there after UNWIND_SECONDS is killed: a signal arriving as a worker
    sends its outcome (a console's Ctrl-C reaches the workers too) can leave the result queue's lock taken,
    and then every worker waits for it forever."""
    # no public way before Python 3.14's terminate_workers()
    processes, manager = list(pool._processes.values()), pool._executor_manager_thread
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)  # a worker whose case has unwound is then told to end
    deadline = time.monotonic() + UNWIND_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
    if manager is not None:
        manager.join()  # it has reaped the workers


def _report_stamp(folder: Path) -> tuple[int, int] | None:
    """Which report.json `folder` holds (None: none): an analysis writes a new file (a new folder swapped
    in), so another stamp means a report written since."""
    try:
        st = (folder / REPORT).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _written_now(case: Case, out_root: Path, before: _Stamps) -> bool:
    """Whether the case's report was written in this run."""
    stamp = _report_stamp(case.folder(out_root))
    return stamp is not None and stamp != before[case.case_id]


def _as_done_here(outcome: CaseOutcome, case: Case, out_root: Path, before: _Stamps) -> CaseOutcome:
    """A case found analysed ("skipped") by its re-run as a suspect, after its first run finished and its
    outcome was lost with the pool, is done in this run, not kept from an earlier one."""
    if outcome.status == "skipped" and _written_now(case, out_root, before):
        outcome.status = "done"
    return outcome
