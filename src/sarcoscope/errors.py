"""Errors a user can act on. The CLI prints their message (no traceback unless --debug) and exits non-zero."""

from __future__ import annotations

import signal
import traceback


class SarcoscopeError(Exception):
    """Base class: the message names the file or the problem in words a user understands."""

    exit_code = 1


class InputError(SarcoscopeError):
    """The input cannot be read as CT (missing, empty, corrupt, not CT, unsupported compression...)."""


class LevelError(SarcoscopeError):
    """L3 cannot be selected or located (outside the field of view, range outside the volume...)."""


class TooFewSlicesError(LevelError):
    """The series is too short to count vertebrae on (one slice, or a few): normal when the user chose the
    level, not a failure of the localizer."""


class SegmentationError(SarcoscopeError):
    """A slice cannot be segmented (no body in the slice, unknown engine, missing model...)."""


class ValidationInputError(SarcoscopeError):
    """Validation inputs do not match (unmatched case ids, shape/spacing mismatch, unknown label ids)."""


class LabelMapError(InputError, ValidationInputError):
    """A label file cannot be read, does not fit its image's pixel grid, or holds ids its mapping lacks.

    Both an input error (training, the web import) and a validation input error, so each caller's handling
    of its own inputs covers label maps too."""


class CompositionError(SarcoscopeError):
    """Body composition cannot be measured or assessed (label map does not fit the image, implausible
    height/weight/age, unknown cutoff set)."""


class OutputError(SarcoscopeError):
    """Output files cannot be written (the output path is not a folder, no permission, disk full)."""


class Terminated(BaseException):
    """A termination signal arrived (a cancelled cluster job, `kill`, a closed terminal). Not an Exception,
    so that handlers of one failed case do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def stop_cleanly_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into an exception, as Ctrl-C is: the code being left then removes what it
    was writing, so no partial output and no temporary copy of a patient's images (an extracted zip, a
    staging folder) is left behind. Only SIGKILL cannot be cleaned up after. Main thread only."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _terminate)


def bug_named(exc: BaseException) -> str:
    """A bug's exception as a message that may be shared (a cohort's failures.csv, a de-identified run's
    console) names it: by its type, not its text, which may quote a header value (pydicom's ValueError for
    a malformed name does) or a file's path, named by the patient or by DICOM UIDs."""
    return f"{type(exc).__name__} (its text left out: it may quote the input's headers)"


def frames_of(exc: BaseException) -> str:
    """`exc`'s traceback as the log shows it, each exception of its chain by its type without its text (which
    may quote a header value or a file's path, named by DICOM UIDs)."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        name = type(current).__name__
        parts.append(f"Traceback (most recent call last):\n{frames}{name} (its text left out)")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nThe above exception led to this one:\n\n".join(reversed(parts))
