"""pydicom's warnings about a malformed header value quote the value ("Invalid value for VR UI:
'1.2.840.0123…'": a UID, a name, a date), through its logger and again as a Python warning on standard
error. A server's log and a de-identified run's console must not hold them: the reason is kept, the value
left out, and so is the path some name their file by (an upload's file is below the zip's folders, which
PACS exports name by the patient)."""

from __future__ import annotations

import logging
import re
import warnings

#: A value as pydicom quotes it: its repr, in single or double quotes, of text or bytes.
_QUOTED = re.compile(r"""b?'[^'\n]*'|b?"[^"\n]*\"""")
#: The file named at the end of a message ("End of file reached before delimiter ... in file <path>").
_IN_FILE = re.compile(r" in file .*", re.DOTALL)


class WithoutQuotedValues(logging.Filter):
    """A record with every quoted value replaced by `<value>`, and without the path of the file it names."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _QUOTED.sub("<value>", _IN_FILE.sub("", record.getMessage())), None
        return True


def quiet_header_values() -> None:
    """pydicom's log records without the values they quote, and its Python warnings (the same texts) not
    shown. For the whole process; calling it again changes nothing. pydicom itself need not be imported."""
    pydicom_log = logging.getLogger("pydicom")
    if not any(isinstance(f, WithoutQuotedValues) for f in pydicom_log.filters):
        pydicom_log.addFilter(WithoutQuotedValues())
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
