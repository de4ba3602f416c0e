"""Work a request leaves behind so that later requests are fast (a new version's QC picture, a new study's
viewer volume): run in threads, each failure logged (the work is then done on request), waited for when the
app stops, so that nothing is cut off half-written. Each job may name the study it works for: deleting the
study waits for them, so that nothing of it is written after it is gone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundJobs:
    def __init__(self) -> None:
        self._threads: dict[threading.Thread, str | None] = {}  # running job -> the study it works for
        self._lock = threading.Lock()

    def start(self, name: str, work: Callable[[], object], study_id: str | None = None) -> None:
        thread = threading.Thread(target=self._run, args=(name, work), name=name)
        with self._lock:
            self._threads[thread] = study_id
        thread.start()

    def _run(self, name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:  # the study was deleted meanwhile, the store closed: made on request
            log.debug("%s not done in the background: %s", name, exc)
        finally:
            with self._lock:
                self._threads.pop(threading.current_thread(), None)

    def wait(self, study_id: str | None = None, timeout: float = 120.0) -> None:
        """Wait for every job started so far (for `study_id`: every job for that study)."""
        with self._lock:
            threads = [t for t, s in self._threads.items() if study_id is None or s == study_id]
        for thread in threads:
            thread.join(timeout)
