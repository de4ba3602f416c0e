"""Setting up a process that analyses case after case: a local pool worker or a Dask worker.

Such a process allocates the same large arrays for every CT (volumes, working grids, label maps), so two
process-wide settings decide much of its cost besides the analysis itself: how many threads its engines
use, and whether freed memory is kept for the next case or handed back to the system.
"""

from __future__ import annotations

import os

from sarcoscope.memory import reuse_freed_memory

__all__ = ["init_worker", "reuse_freed_memory", "worker_threads"]


def worker_threads(workers: int) -> int:
    """Each worker's share of this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def init_worker(threads: int, signals: bool = False) -> None:
    """Set up a worker process on this machine: its engines use `threads` threads, not every core, and
    it keeps freed memory for the next case. With `signals` (a process-pool worker, whose signals are its
    own; a Dask nanny handles its worker's) a termination signal unwinds the case cleanly."""
    from sarcoscope.errors import stop_cleanly_on_signals
    from sarcoscope.segmentation.unet import set_process_threads

    set_process_threads(threads)
    reuse_freed_memory()
    if signals:
        stop_cleanly_on_signals()
