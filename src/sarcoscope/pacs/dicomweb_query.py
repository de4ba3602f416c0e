"""What is said to a DICOMweb server and read back from it, without a connection: its addresses, the searches
and their answers.

An input `dicomweb+http://host:port/prefix/studies/<StudyUID>[/series/<SeriesUID>]` (or `dicomweb+https`)
names the server's DICOMweb root (`http://host:port/prefix`) and a study, optionally one series
(`parse_dicomweb_url`); `serve --dicomweb-url`, a `batch` cohort searched on a server and `listen
--push-dicomweb` name the root alone (`parse_dicomweb_root`).
An address may carry `user:password@`, which `shown_url` hides wherever one is shown. Search filters are
checked before anything is sent (`check_query`), and QIDO-RS's DICOM JSON answers are read into
`StudySummary` and `SeriesSummary` here.

Apart from the client (pacs.dicomweb) because none of this needs a connection, nor requests, pydicom or
dicomweb-client: batch's case listing (batch.cases) and the login (pacs.dicomweb_auth) read addresses
without importing them. It imports neither pacs.dicomweb nor pacs.dicomweb_auth.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sarcoscope.errors import InputError, SarcoscopeError

SCHEME = "dicomweb+"
_URL = re.compile(
    r"^dicomweb\+(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/studies/(?P<study>[0-9.]+)"
    r"(?:/series/(?P<series>[0-9.]+))?/?$"
)
_ROOT = re.compile(r"^(?:dicomweb\+)?(?P<base>https?://[^/?#\s]+(?:/[^?#\s]*?)?)/?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")
SERIES_UID_TAG = "0020000E"
MODALITY_TAG = "00080060"
#: Study attributes a search may filter on (QIDO-RS keywords), and the ones every result carries.
QUERY_KEYS = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StudyInstanceUID",
    "StudyDescription",
    "ModalitiesInStudy",
)
#: What a study search, and a series search, ask the server to include in every result (`includefield`).
STUDY_FIELDS = (
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyDescription",
)
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances", "Modality")


@dataclass(frozen=True)
class DICOMwebTarget:
    """Where a DICOMweb input points: the server root, the study, and maybe a series."""

    base_url: str
    study_uid: str
    series_uid: str | None = None


@dataclass(frozen=True)
class StudySummary:
    """One study a QIDO-RS search found (the values the server returned; None where it returned none)."""

    study_uid: str
    patient_name: str | None
    patient_id: str | None
    study_date: str | None
    accession_number: str | None
    description: str | None
    modalities: list[str]
    n_series: int | None
    n_instances: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a study."""

    series_uid: str
    modality: str | None
    description: str | None
    number: int | None
    n_instances: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_dicomweb(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_dicomweb_url(text: str) -> DICOMwebTarget:
    """Split a `dicomweb+http(s)://…/studies/UID[/series/UID]` input; InputError with the form otherwise."""
    match = _URL.match(text)
    if match is None or not _port_readable(match["base"]):
        raise InputError(
            f"Cannot read the DICOMweb address '{shown_url(text)}': expected "
            "dicomweb+http://host:port/prefix/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]."
        )
    return DICOMwebTarget(match["base"], match["study"], match["series"])


def parse_dicomweb_root(text: str) -> str:
    """The server root of `[dicomweb+]http(s)://host:port/prefix` (no /studies/…); InputError otherwise."""
    match = _ROOT.match(text.strip())
    if match is None or "/studies" in match["base"].split("://", 1)[1] or not _port_readable(match["base"]):
        raise InputError(
            f"Cannot read the DICOMweb server address '{shown_url(text)}': expected "
            "http(s)://host:port/prefix (the DICOMweb root, e.g. http://pacs:8042/dicom-web)."
        )
    return match["base"]


def _port_readable(base: str) -> bool:
    """Whether the server address has no port or a number for one (urllib raises ValueError otherwise)."""
    try:
        _ = urlsplit(base).port
    except ValueError:
        return False
    return True


def shown_url(url: str) -> str:
    """`url` without a password (a server address may carry user:password@ for HTTP basic auth); also an
    address that cannot be read (an error message names it)."""
    try:
        parts = urlsplit(url.removeprefix(SCHEME))
    except ValueError:
        return "(an unreadable address)"
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return (SCHEME if is_dicomweb(url) else "") + urlunsplit(parts._replace(netloc=netloc))


def check_uid(uid: str, what: str) -> str:
    """`uid` if it is a DICOM UID (digits and dots, at most 64 characters); InputError otherwise."""
    if len(uid) > 64 or not _UID.match(uid):
        raise InputError(f"'{uid[:80]}' is not a valid {what} (digits and dots, at most 64 characters).")
    return uid


def check_query(filters: dict[str, str]) -> dict[str, str]:
    """The search filters, checked: known keys, short single values, dates as YYYYMMDD[-YYYYMMDD]."""
    checked: dict[str, str] = {}
    for key, raw in filters.items():
        if key not in QUERY_KEYS:
            raise InputError(f"Cannot search by '{key[:64]}': use one of {', '.join(QUERY_KEYS)}.")
        value = raw.strip()
        if not value:
            continue
        if len(value) > 64 or "\\" in value or any(ord(c) < 32 for c in value):
            raise InputError(f"The {key} filter must be one value of at most 64 characters.")
        if key == "StudyDate":
            value = value.replace("/", "").replace(".", "")
            match = _DATE_RANGE.match(value)
            if match is None or not (match[1] or match[2]) or (match[1] and match[2] and "-" not in value):
                raise InputError(
                    f"StudyDate '{raw[:32]}' is not a date or range: use YYYYMMDD, YYYYMMDD-YYYYMMDD, "
                    "YYYYMMDD- or -YYYYMMDD."
                )
            if match[1] and match[2] and match[1] > match[2]:
                raise InputError(f"StudyDate range {value} ends before it starts.")
        if key == "StudyInstanceUID":
            check_uid(value, "StudyInstanceUID")
        checked[key] = value
    return checked


def parse_query(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` command-line filters as a checked search (see `check_query`)."""
    filters: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--query '{pair[:64]}' is not KEY=VALUE (e.g. StudyDate=20240101-20241231).")
        filters[key.strip()] = value
    return check_query(filters)


def _values(item: dict, tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value") or [])


def tag_value(item: dict, tag: str) -> str | None:
    """The first value of `tag` in a DICOM JSON item (a person name's alphabetic form); None without one."""
    values = _values(item, tag)
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # a person name: {"Alphabetic": "..."}
        return str(value.get("Alphabetic")) if value.get("Alphabetic") else None
    return str(value)


def _int(item: dict, tag: str) -> int | None:
    value = tag_value(item, tag)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def study_summary(item: dict) -> StudySummary:
    """A study search's result item (DICOM JSON) as a StudySummary."""
    return StudySummary(
        study_uid=tag_value(item, "0020000D") or "",
        patient_name=tag_value(item, "00100010"),
        patient_id=tag_value(item, "00100020"),
        study_date=tag_value(item, "00080020"),
        accession_number=tag_value(item, "00080050"),
        description=tag_value(item, "00081030"),
        modalities=[str(m) for m in _values(item, "00080061")],
        n_series=_int(item, "00201206"),
        n_instances=_int(item, "00201208"),
    )


def series_summary(item: dict) -> SeriesSummary:
    """A series search's result item (DICOM JSON) as a SeriesSummary."""
    return SeriesSummary(
        series_uid=tag_value(item, SERIES_UID_TAG) or "",
        modality=tag_value(item, MODALITY_TAG),
        description=tag_value(item, "0008103E"),
        number=_int(item, "00200011"),
        n_instances=_int(item, "00201209"),
    )


def is_wanted(study: StudySummary, filters: dict[str, str]) -> bool:
    """Whether a found study has the modality the filters ask for (a server may have ignored the filter;
    a study whose modalities the server did not list is kept, its series are checked later)."""
    wanted = filters.get("ModalitiesInStudy", "").strip().upper()
    return bool(study.study_uid) and (not wanted or not study.modalities or wanted in study.modalities)


class DICOMwebServerError(InputError):
    """The DICOMweb server could not be reached or refused a request (raised by pacs.dicomweb; here so that
    the web app can answer it without importing the client).

    `status` is the server's HTTP status (None: no answer), so the web app can answer 404 or 502."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def check_waits(connect_timeout: float, timeout: float) -> None:
    """Refuse waits for the PACS of 0 s or less before any work (requests would refuse them only at the
    first request, e.g. the push after the analysis, as an internal error)."""
    if connect_timeout <= 0 or timeout <= 0:
        raise SarcoscopeError(
            "--pacs-connect-timeout and --pacs-timeout (--push-connect-timeout, --push-timeout) must be more "
            "than 0 seconds."
        )
