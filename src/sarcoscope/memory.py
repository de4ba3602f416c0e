"""The C heap's freed memory (glibc only; elsewhere nothing changes): kept for the next case by a process
that analyses case after case, handed back between the stages of one analysis.

NumPy's large arrays come from the C allocator, which decides whether memory an array freed stays in the
process or goes back to the system; the two policies here pull opposite ways, so they live together.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
from typing import Any

logger = logging.getLogger(__name__)

#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Where glibc's adaptive thresholds settle in a default process: blocks up to 32 MiB come from the heap and
#: up to 64 MiB of free heap is kept (the adaptive mmap threshold's ceiling on 64-bit, and twice it).
KEEP_MMAP_BYTES = 32 << 20
KEEP_TRIM_BYTES = 64 << 20


@functools.cache
def _glibc() -> Any | None:
    """The C library when it is glibc (mallopt, malloc_trim), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (a libc without them raises here)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process for the next case (a batch or Dask worker). Returns whether set.

    Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, to return memory to the system
    promptly. Setting it also switches off glibc's adaptive mmap threshold, so every array over 128 KiB is
    mapped and zero-filled afresh: in a Dask worker that was a third more CPU per CT than in a local worker
    (system time; BENCHMARKS.md, Cohorts). These are the thresholds a default process adapts to.
    """
    libc = _glibc()
    if libc is None:
        return False
    done = libc.mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_BYTES) == 1
    done = libc.mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_BYTES) == 1 and done
    if not done:
        logger.debug("glibc refused the malloc thresholds; freed memory is handled as the process started")
    return done


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system between the stages of an analysis.

    Memory a stage freed (the localizer's working grids, the network's working memory, the second
    engine's arrays in its thread) otherwise stays resident in the allocator's heaps, one per thread, under
    the next stage's peak: 41 MB after segmenting a 130-slice series, 10-13 MB of its analysis's peak
    (BENCHMARKS.md). A call takes about 1 ms; a process analysing case after case (batch workers keep
    freed memory for the next case) pays about 0.02 s of system time per case to map it again."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
