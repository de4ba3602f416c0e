"""Work a request leaves behind so that later requests are fast (a new version's QC picture, a new study's
viewer volume): run in threads, each failure logged (the work is then done on request), waited for when the
app stops, so that nothing is cut off half-written. What a job writes for a study goes through
Store.using_files, which the study's deletion waits for: nothing of it is written after it is gone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sarcoscope.errors import frames_of

log = logging.getLogger(__name__)


class BackgroundJobs:
    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, name: str, work: Callable[[], object]) -> None:
        thread = threading.Thread(target=self._run, args=(name, work), name=name)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:  # the study was deleted meanwhile, the store closed: made on request
            # its text may quote a header value (pydicom's ValueError for a malformed one), an OSError's its
            # path (named by UIDs): the type is logged, and a system error's reason
            what = type(exc).__name__ + (
                f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
            )
            log.debug("%s not done in the background (%s)\n%s", name, what, frames_of(exc))
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def wait(self, timeout: float = 120.0) -> None:
        """Wait for every job started so far."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
