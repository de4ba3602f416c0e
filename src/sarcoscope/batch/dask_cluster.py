"""A batch on a Dask cluster: one task per case, named so that no case id reaches the cluster."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from sarcoscope.batch.case_analysis import analyze_in_worker, worker_died
from sarcoscope.batch.cases import Case
from sarcoscope.batch.tables import CaseOutcome
from sarcoscope.batch.workers import init_worker, reuse_freed_memory, worker_threads
from sarcoscope.errors import SarcoscopeError

#: Settings of a LocalCluster, which is this run's own (a shared cluster's are its owner's). Its workers
#: share this machine's cores with the analyses (BENCHMARKS.md, Cohorts, has the numbers):
#: - the workers are forked from one fork server, as a process pool's are from the batch: spawned, each
#:   imported Python, distributed and the command again, and ended by tearing its interpreter down (0.3-1.3 s
#:   between a worker's "closed" and its exit, which the run waited for); a fork server imports once, and
#:   its children end at once (os._exit), as pool workers do;
#: - no profiler and a system monitor every 5 s: both serve a dashboard this cluster has not; the
#:   profiler walked each busy worker's stack every 10 ms;
#: - every server's event-loop tick every 500 ms, not 20 ms, and memory checked every second, not 10
#:   times a second (by each worker and by its nanny for it): an idle 2-worker cluster spent 27 ms of CPU
#:   a second, now 10.
#: (Each worker keeps holding its next case, worker-saturation 1.1: with 1.0 it waited for the scheduler
#: between cases, 25-33 ms on a busy machine against 4-5, and runs did not end more evenly.)
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.multiprocessing-method": "forkserver",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
}


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


def run_on_dask(
    cases: list[Case], scheduler: str, workers: int, **kw: Any
) -> Generator[CaseOutcome, None, None]:
    """Submit one task per case to a Dask cluster ("local" starts a LocalCluster on this machine).

    A case whose worker dies every time the scheduler retries it (KilledWorker) becomes a failed row.
    """
    try:
        import dask
        from dask.distributed import Client, KilledWorker, LocalCluster
        from dask.distributed import as_completed as dask_as_completed
    except ImportError:
        raise SarcoscopeError(
            "Dask is not installed: pip install 'sarcoscope[cluster]' to run on a Dask cluster."
        ) from None
    if scheduler == "local":
        # no dashboard: Dask serves it on every interface, without a login, and its pages show the case ids
        # (folder names, often the patient's name) and the workers' logs
        with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the nannies hand it to their workers
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
                yield worker_died(futures[fut])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
