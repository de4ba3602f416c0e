"""What the server's log may say of an exception: no patient data. Its text may quote a header value
(pydicom's ValueError for a malformed one does: a UID, a name) or a file's path, named by DICOM UIDs; the log
keeps the traceback's frames and the exception's type (pydicom's warnings: imaging.dicom_warnings)."""

from __future__ import annotations

import traceback


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
