"""The DICOMweb client: CT series from a DICOMweb server (QIDO-RS to find, WADO-RS to retrieve), results
stored back (STOW-RS).

A `dicomweb+http(s)://…/studies/<StudyUID>[/series/<SeriesUID>]` input (pacs.dicomweb_query) names a
study, optionally one series. Without a series, the study's CT series is looked up with QIDO-RS; a study
with several CT series needs `--series`. The instances are written into a local folder, which is then read
like any DICOM folder. The results (SEG, SR, QC capture) can be stored back into the same study with STOW-RS
(`store_results`); those the study already holds (the same SOP Instance UIDs: the same result, stored
before) are not sent again.

`DICOMwebServer` is the one client the CLI, `batch` and the web app share. Searches are sent with their
wildcards (`*`, `?`) unencoded: Orthanc's DICOMweb plugin treats a percent-encoded `*` as a literal
(dicomweb-client encodes it), and RFC 3986 allows both characters in a query. Paging never trusts the
server to honour `offset` or `limit` (a server may cap pages or ignore offset). A ModalitiesInStudy
filter is never sent: Orthanc 1.10 applies it after limit/offset, so pages came back short and studies
were lost (measured in tests/batch/test_batch_dicomweb.py); the modalities are checked on the results.

How it logs in (basic auth or a bearer token, never shown) is pacs.dicomweb_auth's; addresses, search
filters and the reading of QIDO-RS answers are pacs.dicomweb_query's. Both are apart so that what needs no
connection is read without this module's imports (pydicom, dicomweb-client); neither imports this one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pydicom
import requests
import urllib3

from sarcoscope.errors import InputError, OutputError
from sarcoscope.pacs.dicomweb_auth import TOKEN_ENV, BearerToken, auth_for
from sarcoscope.pacs.dicomweb_query import (
    SERIES_FIELDS,
    SERIES_UID_TAG,
    STUDY_FIELDS,
    DICOMwebServerError,
    SeriesSummary,
    StudySummary,
    check_query,
    check_uid,
    is_wanted,
    parse_dicomweb_url,
    series_summary,
    study_summary,
    tag_value,
)

# dicomweb-client logs every request's study UID at INFO level; identifiers stay out of the server's log.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
#: What of a requested URL may identify a patient: its query (QIDO-RS search criteria: names, IDs, accession
#: numbers), and a DICOM UID as a path segment (the study's, the series').
_URL_QUERY = re.compile(r"\?[^\s\"')]*")
_URL_UID = re.compile(r"(?<=/)\d+(?:\.\d+){3,}(?=[/?\s\"')]|$)")


class _WithoutRequestedValues(logging.Filter):
    """urllib3's record with a URL's query and UIDs left out (`?<query>`, `<uid>`): it names every request's
    URL at DEBUG, and at WARNING one whose answer had a malformed header ("Failed to parse headers
    (url=...)"), which the server's log (INFO) then showed with the criteria of a PACS search."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = _URL_QUERY.sub("?<query>", record.getMessage())
        record.msg, record.args = _URL_UID.sub("<uid>", text), None
        return True


for _name in ("urllib3.connection", "urllib3.connectionpool", "urllib3.poolmanager"):
    logging.getLogger(_name).addFilter(_WithoutRequestedValues())


@dataclass(frozen=True)
class Stored:
    """What a store did: how many objects it sent (and the server stored), and how many the study held
    already (the same result stored before), which were not sent again."""

    sent: int
    held: int


class SeriesTooLarge(InputError):
    """A retrieved series grew beyond the size the caller accepts."""


def _client_errors() -> tuple[type[Exception], ...]:
    """What dicomweb-client raises for a server that fails: HTTP and connection errors, an unreadable answer,
    and retrying's RetryError when it gives up on a busy server (its retries; imported with it)."""
    from retrying import RetryError

    return (requests.RequestException, ValueError, RetryError)


class _Ending:
    """The end of the last response read through a session (`watch` is its response hook): whether a
    multipart answer ended with its closing boundary (`--boundary--`), which only a whole one has."""

    KEPT = 4096  # the closing boundary, and an epilogue after it

    def __init__(self) -> None:
        self.tail = bytearray()
        self.boundary: bytes | None = None

    def watch(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        match = re.search(r'boundary="?([^";]+)"?', response.headers.get("Content-Type", ""), re.IGNORECASE)
        self.boundary = match[1].strip().encode() if match else None
        self.tail.clear()  # a retried request's answer replaces the one before
        read = response.iter_content

        def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
            for chunk in read(chunk_size=chunk_size, decode_unicode=decode_unicode):
                if isinstance(chunk, bytes):
                    self.tail += chunk
                    del self.tail[: -self.KEPT]
                yield chunk

        response.iter_content = iter_content  # type: ignore[method-assign]
        return response

    def closed(self) -> bool:
        """Whether the answer ended with its closing boundary (an answer that is not multipart: yes)."""
        return self.boundary is None or b"--" + self.boundary + b"--" in self.tail


class DICOMwebServer:
    """A DICOMweb server: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS). A server address
    with `user:password@` logs in with HTTP basic auth (use HTTPS); a configured bearer token
    (`BearerToken.from_env`) is sent instead by an address without; messages never show either.

    Every failure is a DICOMwebServerError naming the server (without its password), never a traceback.
    Each wait has a bound, as the C-STORE path's (node.send_c_store): `connect_timeout` seconds for the TCP
    connection (a host that drops the request would hold it for minutes), `timeout` for each answer; the
    error says which ran out."""

    def __init__(self, base_url: str, timeout: float = 60.0, connect_timeout: float = 10.0) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        self._session = requests.Session()
        self._session.auth = auth_for(parts)
        if parts.username is not None:  # user:password@ became HTTP basic auth, and leaves the URL
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        self.base_url = urlunsplit(parts)
        self.timeout = (connect_timeout, timeout)  # requests' (connect, read)
        self.shown = self.base_url
        from dicomweb_client.api import DICOMwebClient  # only for DICOMweb work (≈40 ms to import)

        self._client = DICOMwebClient(url=self.base_url, session=self._session, timeout=self.timeout)
        # dicomweb-client retries every failure, an unreachable server too, 5 times with exponential waits
        # (30 s before "cannot reach"); 3 attempts, 1 s and 2 s apart, still ride out a busy server (503).
        self._client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)

    def _error(self, exc: Exception, what: str) -> DICOMwebServerError:
        # dicomweb-client gives up retrying a busy server (429, 503, 504) with retrying's RetryError, whose
        # last attempt holds the server's last answer
        last = getattr(getattr(exc, "last_attempt", None), "value", None)
        if isinstance(last, requests.Response):
            exc = requests.HTTPError(response=last)
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status in (401, 403) and isinstance(self._session.auth, BearerToken):
                return DICOMwebServerError(self._token_refused(status, what), status)
            if status == 401 and self._session.auth is None:
                return DICOMwebServerError(
                    f"The DICOMweb server {self.shown} asks for a login to answer {what} (HTTP 401): give "
                    f"its bearer token ({TOKEN_ENV} or --dicomweb-token-file) or user:password@ in its "
                    "address.",
                    status,
                )
            return DICOMwebServerError(
                f"The DICOMweb server {self.shown} refused {what} (HTTP {status}).", status
            )
        if isinstance(exc, requests.RequestException):
            return DICOMwebServerError(f"{self._unreached(exc, what)}.")
        return DICOMwebServerError(f"The DICOMweb server {self.shown} sent an unreadable answer to {what}.")

    def _token_refused(self, status: int, what: str) -> str:
        """Why the server refused the bearer token (never the token): 401 wrong or expired (read again from
        its file, if it has one), 403 not allowed to do this."""
        assert isinstance(self._session.auth, BearerToken)
        why = (
            "the token is not allowed to do this (its account lacks the permission), or it is wrong"
            if status == 403
            else "the token is wrong or expired"
            + (" (its file was read again)" if self._session.auth.file else "")
        )
        return (
            f"The DICOMweb server {self.shown} refused the bearer token for {what} (HTTP {status}): {why}. "
            f"Give a valid token ({TOKEN_ENV} or --dicomweb-token-file)."
        )

    def _unreached(self, exc: requests.RequestException, what: str) -> str:
        """Why a request got no answer: which wait ran out, or that the connection was refused."""
        connect, read = self.timeout
        cause = exc.args[0] if exc.args else None  # a read timeout while the body streams comes wrapped
        if isinstance(exc, requests.ConnectTimeout):
            return (
                f"Cannot reach the DICOMweb server {self.shown}: it did not take the connection within "
                f"{connect:g} s (a wrong host or port, a firewall, or the host is down)"
            )
        if isinstance(exc, requests.ReadTimeout):
            return (
                f"The DICOMweb server {self.shown} took the connection but did not answer {what} within "
                f"{read:g} s"
            )
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):  # it stalled in the middle of its answer
            return (
                f"The DICOMweb server {self.shown} stopped sending {what} part way: nothing more arrived "
                f"within {read:g} s"
            )
        if isinstance(exc, requests.ConnectionError):
            return (
                f"Cannot reach the DICOMweb server {self.shown}: it refused the connection or cannot be "
                "reached (is it running, on this port?)"
            )
        return f"Cannot reach the DICOMweb server {self.shown}: {type(exc).__name__}"

    def _qido(self, path: str, params: dict[str, str | int], what: str) -> list[dict]:
        # `*` and `?` stay literal: Orthanc does not match a percent-encoded wildcard.
        query = "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='*?')}" for k, v in params.items())
        try:
            response = self._session.get(
                f"{self.base_url}{path}?{query}",
                headers={"Accept": "application/dicom+json, application/json"},
                timeout=self.timeout,
            )
            response.raise_for_status()
            found = response.json() if response.content else []
        except (requests.RequestException, ValueError) as exc:
            raise self._error(exc, what) from None
        if isinstance(found, dict):
            found = [found]
        if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
            raise DICOMwebServerError(
                f"The DICOMweb server {self.shown} sent an unreadable answer to {what}."
            )
        return found

    def _study_page(self, filters: dict[str, str], limit: int, offset: int) -> list[StudySummary]:
        """One page of studies as the server sent it (modalities not yet checked)."""
        params: dict[str, str | int] = dict(check_query(filters))
        # Orthanc applies limit/offset before a ModalitiesInStudy filter, so pages silently lose studies:
        # the modality is checked on the results instead (`is_wanted`).
        params.pop("ModalitiesInStudy", None)
        params.update({"includefield": ",".join(STUDY_FIELDS), "limit": limit, "offset": offset})
        return [study_summary(i) for i in self._qido("/studies", params, "the study search")]

    def search_studies(
        self, filters: dict[str, str], limit: int = 100, offset: int = 0
    ) -> list[StudySummary]:
        """One page of the studies matching the filters."""
        return [s for s in self._study_page(filters, limit, offset) if is_wanted(s, filters)]

    def iter_studies(self, filters: dict[str, str], page: int = 100) -> Iterator[StudySummary]:
        """Every matching study, page by page, each once. A short page is not taken as the last (servers
        cap a page below the limit asked for, dcm4chee by its QIDO maximum): paging ends at a page that
        brings nothing new, which also ends it on a server that ignores `offset` and repeats itself."""
        seen: set[str] = set()
        offset = 0
        while True:
            studies = self._study_page(filters, page, offset)
            new = [s for s in studies if s.study_uid not in seen]
            seen.update(s.study_uid for s in new)
            yield from (s for s in new if is_wanted(s, filters))
            if not new:
                return
            offset += len(studies)

    def series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of a study (empty: the server has no such study)."""
        check_uid(study_uid, "StudyInstanceUID")
        params: dict[str, str | int] = {"includefield": ",".join(SERIES_FIELDS)}
        found = self._qido(f"/studies/{study_uid}/series", params, f"the series search of study {study_uid}")
        return sorted(
            (series_summary(i) for i in found if tag_value(i, SERIES_UID_TAG)), key=lambda s: s.number or 0
        )

    def instance_uids(self, study_uid: str, series_uid: str, page: int = 1000) -> list[str]:
        """The SOP Instance UIDs the server lists for a series now, sorted (empty: it has no such series),
        paged as iter_studies pages (servers cap a page below the limit asked for)."""
        check_uid(study_uid, "StudyInstanceUID")
        check_uid(series_uid, "SeriesInstanceUID")
        seen: set[str] = set()
        while True:
            params: dict[str, str | int] = {"includefield": "00080018", "limit": page, "offset": len(seen)}
            try:
                items = self._qido(
                    f"/studies/{study_uid}/series/{series_uid}/instances",
                    params,
                    f"the instance search of series {series_uid}",
                )
            except DICOMwebServerError as exc:
                if exc.status == 404:  # no such study or series
                    return sorted(seen)
                raise
            new = {uid for uid in (tag_value(i, "00080018") for i in items) if uid} - seen
            if not new:
                return sorted(seen)
            seen |= new

    def ct_series_uid(self, study_uid: str) -> str:
        """The study's only CT series; InputError when it has none or several."""
        ct = [s.series_uid for s in self.series(study_uid) if s.modality == "CT"]
        if not ct:
            raise InputError(f"Study {study_uid} on {self.shown} has no CT series.")
        if len(ct) > 1:
            raise InputError(
                f"Study {study_uid} on {self.shown} has {len(ct)} CT series; choose one with --series: "
                f"{', '.join(ct)}."
            )
        return ct[0]

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        folder: Path,
        max_bytes: int | None = None,
        expected: int | None = None,
    ) -> int:
        """Write the instances of a series into `folder` as they arrive (one file each); return how many.

        `max_bytes`: stop with SeriesTooLarge once the files written exceed it (the web app's upload
        limit). `expected`: how many instances the server reports for the series (asked when not given);
        fewer arriving is an error: a response that ends early (a dropped connection, a crashed worker)
        holds whole instances that would otherwise pass for the complete series. Instances are counted
        once by their SOP Instance UID (one sent twice is written once: a repeat must not make up for one
        missing), and one of another study or series is refused (it is not what the case names). The
        response must end with its closing multipart boundary: a server need not list a series' count
        ("if available"), and without one a response cut between two instances is told only by that.
        """
        check_uid(study_uid, "StudyInstanceUID")
        check_uid(series_uid, "SeriesInstanceUID")
        if expected is None:
            listed = (s.n_instances for s in self.series(study_uid) if s.series_uid == series_uid)
            expected = next(listed, None)
        folder.mkdir(parents=True, exist_ok=True)
        count = total = repeats = 0
        seen: set[str] = set()
        ending = _Ending()
        self._session.hooks["response"].append(ending.watch)
        try:
            # as stored (transfer-syntax=*): dicomweb-client asks for Explicit VR Little Endian, which the
            # server must transcode to, and Orthanc without its GDCM plugin cannot transcode JPEG 2000 (HTTP
            # 500); the reader decodes what CT is stored as
            as_stored = (("application/dicom", "*"),)
            for ds in self._client.iter_series(study_uid, series_uid, media_types=as_stored):
                if (str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))) != (
                    study_uid,
                    series_uid,
                ):
                    raise DICOMwebServerError(
                        f"The DICOMweb server {self.shown} sent an instance of another series or study when "
                        f"asked for series {series_uid} of study {study_uid}; it was not analysed.",
                        502,
                    )
                sop = str(ds.get("SOPInstanceUID", ""))
                if sop and sop in seen:
                    repeats += 1
                    continue
                seen.add(sop)
                count += 1
                path = folder / f"{count:05d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                total += path.stat().st_size
                if max_bytes is not None and total > max_bytes:
                    raise SeriesTooLarge(
                        f"Series {series_uid} is larger than this server accepts "
                        f"({max_bytes / 1024**2:.2f} MiB); ask the administrator to raise --max-upload-mb."
                    )
        except _client_errors() as exc:
            raise self._error(exc, f"the retrieval of series {series_uid}") from None
        except OSError as exc:  # the folder is on a full disk, or not writable
            raise OutputError(
                f"Cannot write the series retrieved from the DICOMweb server {self.shown} into {folder}: "
                f"{exc.strerror or exc}."
            ) from None
        finally:
            self._session.hooks["response"].remove(ending.watch)
        if count == 0:
            raise DICOMwebServerError(
                f"The DICOMweb server {self.shown} returned no instances of series {series_uid}.", 404
            )
        if expected is not None and count < expected:
            why = f"{repeats} instance sent twice" if repeats == 1 else f"{repeats} instances sent twice"
            raise DICOMwebServerError(
                f"The DICOMweb server {self.shown} sent {count} of the {expected} instances of series "
                f"{series_uid} ({why if repeats else 'the response ended early'}); nothing was kept, try "
                "again.",
                502,
            )
        if not ending.closed():
            raise DICOMwebServerError(
                f"The DICOMweb server {self.shown} ended the retrieval of series {series_uid} before its end "
                f"({count} instances arrived; the response lacks its closing boundary: a dropped connection "
                "or a failed server); nothing was kept, try again.",
                502,
            )
        return count

    def _held(self, study_uid: str, datasets: list[pydicom.Dataset]) -> set[str]:
        """The SOP Instance UIDs of `datasets` that study `study_uid` already holds (one search each: a UID
        list is not matched by every server)."""
        check_uid(study_uid, "StudyInstanceUID")
        found: set[str] = set()
        for ds in datasets:
            uid = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
            params: dict[str, str | int] = {"SOPInstanceUID": uid}
            items = self._qido(f"/studies/{study_uid}/instances", params, f"the search of study {study_uid}")
            if any(tag_value(i, "00080018") == uid for i in items):  # a server may ignore the filter
                found.add(uid)
        return found

    def _check_same_patient(self, study_uid: str, datasets: list[pydicom.Dataset]) -> None:
        """Refuse results whose PatientID is not the one the server files study `study_uid` under (a study
        moved to another patient since its images were read, a Study Instance UID two patients' studies
        share): they would be stored under the other patient, or file the study under a patient again. A
        study the server does not hold (yet), or whose patient it does not say, is not refused. The IDs
        are not named (the log keeps errors)."""
        check_uid(study_uid, "StudyInstanceUID")
        params: dict[str, str | int] = {"StudyInstanceUID": study_uid, "includefield": "00100020"}
        found = self._qido("/studies", params, f"the search of study {study_uid}")
        filed = {  # a server that leaves PatientID out of its answer cannot tell: not refused
            tag_value(i, "00100020") or ""
            for i in found
            if "00100020" in i and tag_value(i, "0020000D") in (None, study_uid)
        }
        ours = {str(ds.get("PatientID", "") or "") for ds in datasets}
        if filed and filed != ours:
            raise InputError(
                f"Not storing the results on {self.shown}: it files study {study_uid} under another "
                "patient ID than the images they were measured on (the study was moved to another patient "
                "since, or two patients' studies share its UID). Check the study on the PACS."
            )

    def store(self, study_uid: str, datasets: list[pydicom.Dataset]) -> Stored:
        """Store `datasets` (all of study `study_uid`) with STOW-RS, except those the study already holds.

        A dataset of another study is refused before anything is sent; a partial failure is an error."""
        foreign = [str(ds.SOPInstanceUID) for ds in datasets if ds.StudyInstanceUID != study_uid]
        if foreign:
            raise InputError(
                f"Not storing {len(foreign)} object(s) on {self.shown}: not in study {study_uid} "
                "(de-identified results are not pushed back to the source)."
            )
        self._check_same_patient(study_uid, datasets)
        held = self._held(study_uid, datasets)
        new = [ds for ds in datasets if str(ds.SOPInstanceUID) not in held]
        if not new:
            return Stored(0, len(held))
        try:
            # the server's answer as a Dataset; 202 Accepted names what it refused in its Failed SOP Sequence
            answer = self._client.store_instances(datasets=new, study_instance_uid=study_uid)
        except (*_client_errors(), TypeError, AttributeError) as exc:
            # TypeError, AttributeError: pydicom reading an answer that is JSON but not DICOM JSON
            raise self._error(exc, f"storing the results into study {study_uid}") from None
        failed = list(answer.get("FailedSOPSequence") or []) if isinstance(answer, pydicom.Dataset) else []
        if failed:
            raise DICOMwebServerError(
                f"The DICOMweb server {self.shown} refused {len(failed)} of {len(new)} object(s) "
                f"of study {study_uid}.",
                409,
            )
        return Stored(len(new), len(held))


def store_results(
    text: str, paths: list[Path], timeout: float = 60.0, connect_timeout: float = 10.0
) -> Stored:
    """Store the DICOM files `paths` (results of the study `text` names) with STOW-RS (see
    DICOMwebServer.store, and its timeouts).

    They must belong to that study: results of a de-identified run (another study UID) are refused."""
    target = parse_dicomweb_url(text)
    return DICOMwebServer(target.base_url, timeout, connect_timeout).store(
        target.study_uid, [pydicom.dcmread(p) for p in paths]
    )


def series_instance_uids(text: str, timeout: float = 60.0, connect_timeout: float = 10.0) -> list[str]:
    """The SOP Instance UIDs of the series `text` names (its study's only CT series when it names none)
    as the server lists them now, sorted; waits as fetch_series does."""
    target = parse_dicomweb_url(text)
    server = DICOMwebServer(target.base_url, timeout, connect_timeout)
    uid = target.series_uid or server.ct_series_uid(target.study_uid)
    return server.instance_uids(target.study_uid, uid)


def fetch_series(
    text: str,
    folder: Path,
    series_uid: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 10.0,
) -> Path:
    """Retrieve the CT series that `text` names into `folder` (one file per instance); return the folder.
    Each request waits as DICOMwebServer's do: `connect_timeout` for the connection, `timeout` for each
    answer (a retrieval that stalls half way fails once nothing arrived for `timeout` seconds).

    Network and server failures become InputError naming the server, never a traceback."""
    target = parse_dicomweb_url(text)
    server = DICOMwebServer(target.base_url, timeout, connect_timeout)
    uid = series_uid or target.series_uid or server.ct_series_uid(target.study_uid)
    server.retrieve_series(target.study_uid, uid, folder)
    return folder
