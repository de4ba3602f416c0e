"""`sarcoscope` command line: thin wrappers around the pipeline stages, one module per kind of work.

User errors (SarcoscopeError) print one clear message and exit 1; `--debug` shows the traceback.
"""

from __future__ import annotations

from sarcoscope.cli import analysis, cohort, models, serving  # noqa: F401  (they register the commands)
from sarcoscope.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
