"""A batch on this machine: in this process, or in a pool of worker processes where a case whose worker
dies (killed by the out-of-memory killer, crashed) becomes a failed row and the others go on."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sarcoscope.batch.case_analysis import analyze_case, analyze_in_worker, worker_died
from sarcoscope.batch.cases import Case
from sarcoscope.batch.tables import CaseOutcome
from sarcoscope.batch.workers import init_worker, worker_threads


def run_locally(cases: list[Case], workers: int, **kw: Any) -> Iterator[CaseOutcome]:
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
            yield worker_died(suspects[0])
            continue
        for case in suspects:
            if (yield from _pool_run(deque([case]), 1, kw)):
                yield worker_died(case)


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
