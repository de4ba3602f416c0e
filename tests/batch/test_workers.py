"""Worker-process setup: each worker's share of the cores, and freed memory kept for the next case."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sarcoscope.batch.workers import worker_threads

#: In a fresh process started as Dask's nanny starts its workers (MALLOC_TRIM_THRESHOLD_ set), allocate
#: and free an 8 MiB array 50 times and count the page faults; optionally after reuse_freed_memory().
#: Transparent huge pages are off in it: with them ("always", as on the CI machines) a fresh array could be
#: faulted in as a few 2 MiB pages, and the count told nothing (the test failed at random).
_CHILD = """
import ctypes, resource, sys
ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KiB pages' faults
import numpy as np
from sarcoscope.batch.workers import reuse_freed_memory
set_ok = reuse_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    a = np.ones(1 << 20)  # 8 MiB, written: every page touched
    del a
print(set_ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_worker_threads_share_the_cores() -> None:
    cores = os.cpu_count() or 1
    assert worker_threads(1) == cores
    assert worker_threads(cores) == 1
    assert worker_threads(cores * 4) == 1  # never zero
    assert worker_threads(0) == cores


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_freed_memory_is_reused_in_a_dask_style_worker() -> None:
    """With Dask's trim threshold every large array is mapped and faulted in afresh (here about 500 faults
    per 8 MiB array, 25,000 in all); after reuse_freed_memory the same loop reuses the first array's pages."""
    _, plain = _faults("plain")
    ok, kept = _faults("keep")
    assert ok == "True"
    assert plain > 50 * 100  # every array faulted in again
    assert kept < plain / 10
