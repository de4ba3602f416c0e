"""What the server's log may say: no patient data. The libraries that read DICOM quote the header values they
find malformed (pydicom: "Invalid value for VR UI: '1.2.840.0123…'", a UID, a name, a date), and an
exception's text may quote them too; the log keeps the reason, the traceback's frames and the exception's
type, not the values."""

from __future__ import annotations

import logging
import re
import traceback
import warnings

#: A value as pydicom quotes it: its repr, in single or double quotes, of text or bytes.
_QUOTED = re.compile(r"""b?'[^'\n]*'|b?"[^"\n]*\"""")


class WithoutQuotedValues(logging.Filter):
    """A record with every quoted value replaced by `<value>` (pydicom's warnings about a malformed header
    value, which quote it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _QUOTED.sub("<value>", record.getMessage()), None
        return True


def quiet_header_values() -> None:
    """pydicom's warnings about header values logged without the values; their copies as Python warnings (on
    the server's standard error, the value in them) not shown. For the whole process, once."""
    pydicom_log = logging.getLogger("pydicom")  # pydicom itself is imported with the first DICOM request
    if not any(isinstance(f, WithoutQuotedValues) for f in pydicom_log.filters):
        pydicom_log.addFilter(WithoutQuotedValues())
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")


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
