"""Setting up a process that analyses case after case: a local pool worker or a Dask worker.

Such a process allocates the same large arrays for every CT (volumes, working grids, label maps), so two
process-wide settings decide much of its cost besides the analysis itself: how many threads its engines
use, and whether freed memory is kept for the next case or handed back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Where glibc's adaptive thresholds settle in a default process: blocks up to 32 MiB come from the heap and
#: up to 64 MiB of free heap is kept (the adaptive mmap threshold's ceiling on 64-bit, and twice it).
KEEP_MMAP_BYTES = 32 << 20
KEEP_TRIM_BYTES = 64 << 20


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


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process for the next case (glibc only; elsewhere nothing changes).

    Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, to return memory to the system
    promptly. Setting it also switches off glibc's adaptive mmap threshold, so every array over 128 KiB is
    mapped and zero-filled afresh: in a Dask worker that was a third more CPU per CT than in a local worker
    (system time; BENCHMARKS.md, Cohorts). These are the thresholds a default process adapts to. Returns
    whether they were set.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_BYTES) == 1
        done = libc.mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_BYTES) == 1 and done
    except (OSError, AttributeError):  # a libc without mallopt
        return False
    if not done:
        logger.debug("glibc refused the malloc thresholds; freed memory is handled as the process started")
    return done
