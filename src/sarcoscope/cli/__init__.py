"""`sarcoscope` command line: thin wrappers around the pipeline stages, one module per kind of work.

User errors (SarcoscopeError) print one clear message and exit 1; `--debug` shows the traceback. SIGTERM and
SIGHUP unwind like Ctrl-C, so nothing half-written or temporary is left (exit 128 + the signal).

Every run (`--help` too) has typer read the signatures of all the commands. The command modules therefore
do not use `from __future__ import annotations`: typer would evaluate each annotation's text twice per
command, ≈0.03 s of CPU per run (issue 18). Their heavy imports are inside the commands.
"""

from __future__ import annotations

from sarcoscope.cli import analysis, cohort, models, serving  # noqa: F401  (they register the commands)
from sarcoscope.cli.common import app
from sarcoscope.errors import stop_cleanly_on_signals

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    stop_cleanly_on_signals()
    app()
