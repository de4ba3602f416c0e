"""`sarcoscope` command line: thin wrappers around the pipeline stages, one module per kind of work.

User errors (SarcoscopeError) print one clear message and exit 1; `--debug` shows the traceback. SIGTERM and
SIGHUP unwind like Ctrl-C, so nothing half-written or temporary is left (exit 128 + the signal), and a signal
while the process ends is reported the same way.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import NoReturn

from sarcoscope.cli import analysis, cohort, models, serving  # noqa: F401  (they register the commands)
from sarcoscope.cli.common import app, stopped
from sarcoscope.errors import Terminated, stop_cleanly_on_signals

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    stop_cleanly_on_signals()
    try:
        app()
        status = 0
    except SystemExit as exc:  # how the command ends
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    _exit(status)


def _exit(status: int) -> NoReturn:
    """End the process as Python would, less the teardown of its modules: that takes half a second after an
    analysis, with Ctrl-C and SIGTERM back at their default action, so a signal then ended the process
    without a word (exit -2). A signal while the exit functions run is noted, not raised into them, and
    reported as at any other moment ("interrupted", 130; "terminated", 128 + the signal)."""
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(status)  # threads to wait for, as Python's exit does
    received: list[int] = []
    try:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), lambda signum, frame: received.append(signum))
        atexit._run_exitfuncs()  # what Python's exit runs before the teardown
        sys.stdout.flush()
        if received:
            status = stopped(received[0])
    except KeyboardInterrupt:  # arrived before the signals were noted instead
        status = stopped(signal.SIGINT)
    except Terminated as exc:
        status = stopped(exc.signum)
    sys.stderr.flush()
    os._exit(status)
