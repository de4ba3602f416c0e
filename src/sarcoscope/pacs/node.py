"""`sarcoscope listen`: a DICOM node. A C-STORE SCP (pynetdicom) receives CT series from a scanner or PACS,
analyses each series once no image of it has arrived for `settle` seconds, and sends the SEG, SR and QC
capture back by C-STORE (`push_to`) or STOW-RS (`push_dicomweb`): the hands-free mode.

The output folder (owner-only) holds `incoming/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm` (each file
written atomically) and `results/<SeriesUID>/` (`<SeriesUID>_<StudyUID>` for another study reusing the
series UID; the files `sarcoscope analyze` writes; `error.txt` when
the series could not be analysed or its results not sent). A series' images are deleted `late_window`
seconds after a successful analysis (never with `keep_images`): images of it arriving until then make the
whole series analysed again (the same images sent again, then or later, leave results that were sent as
they are); images arriving later, fewer than it was analysed with, are refused (a fragment is not the
series) and kept until the rest is sent again. The series a stopped node left in
incoming/ (not analysed, failed, or grown while it was analysed) are analysed again when it starts. A series
whose images came in an association that was aborted (the sender stopped, the connection dropped) may have
arrived in part: it is not analysed until images of its study are sent again in an association that ends
normally. Results that could not be sent (the PACS down or refusing) are kept and sent again, as they are,
`retry_send` seconds later and when the node starts, up to `send_attempts` times; then the node gives up
(error.txt says so and how to send them: a restart, or the series sent again, tries once more).
The log names series by their UIDs, never a patient's name, ID or dates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from sarcoscope.errors import InputError, SarcoscopeError, frames_of
from sarcoscope.fileio import atomic_write_text, locked_temp_file, remove_left_files
from sarcoscope.imaging.dicom_warnings import quiet_header_values
from sarcoscope.pacs.dicomweb import DICOMwebServer
from sarcoscope.pacs.dicomweb_query import check_uid, check_waits, parse_dicomweb_root
from sarcoscope.segmentation.base import DEFAULT_ENGINE

log = logging.getLogger(__name__)
# pynetdicom logs every association and the received datasets' elements at INFO/DEBUG; highdicom names every
# source image's SOP Instance UID at INFO whenever a SEG or SR is made (the node's log names series only)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
logging.getLogger("highdicom").setLevel(logging.WARNING)

#: The prefix and suffix of an image being received (fileio.locked_temp_file), renamed into place once whole.
_RECEIVING = (".recv-", ".tmp")

_PEER = re.compile(r"^(?P<aet>[^@\\]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Peer:
    """A DICOM node to send to: its AE title, host and port (`AE@host:port`)."""

    aet: str
    host: str
    port: int


def parse_peer(text: str) -> Peer:
    """`AE@host:port` as a Peer; InputError with the expected form otherwise."""
    match = _PEER.match(text.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise InputError(
            f"Cannot read the DICOM node '{text[:80]}': expected AE_TITLE@host:port (e.g. PACS@10.0.0.5:104)."
        )
    return Peer(match["aet"].strip(), match["host"], int(match["port"]))


def send_c_store(
    paths: list[Path], peer: Peer, calling_aet: str, connect_timeout: float = 10.0, timeout: float = 60.0
) -> int:
    """Send DICOM files to `peer` by C-STORE in one association; return how many it accepted.

    Each wait has a bound, so a peer that does not answer fails the send instead of holding the node:
    `connect_timeout` seconds for the TCP connection (a host that drops it would hold it for minutes),
    `timeout` for each answer (the association's acceptance, each store's status) and for a silent link.
    Any refusal (connection, association, presentation context or a non-success status) or a wait that
    runs out is an InputError saying which."""
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = connect_timeout
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        syntaxes = {
            str(ds.file_meta.TransferSyntaxUID) for ds in datasets if str(ds.SOPClassUID) == sop_class
        }
        ae.add_requested_context(
            sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        )
    where = f"{peer.aet}@{peer.host}:{peer.port}"
    connected = threading.Event()
    started = time.monotonic()
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.aet, evt_handlers=[(evt.EVT_CONN_OPEN, lambda _: connected.set())]
    )
    if not assoc.is_established:  # which wait ran out, or who refused what
        if connected.is_set() and assoc.is_rejected:
            why = (
                f"rejected the association (does it know this node's AE title {calling_aet}, and is "
                f"{peer.aet} its AE title?)"
            )
        elif connected.is_set():
            why = f"did not answer the association request within {timeout:g} s (or aborted it)"
        elif time.monotonic() - started >= connect_timeout:
            why = (
                f"did not answer the connection within {connect_timeout:g} s (a wrong host or port, a "
                "firewall, or the host is down)"
            )
        else:
            why = "refused the connection or cannot be reached (is the PACS running, on this port?)"
        raise InputError(f"The DICOM node {where} {why}; nothing was sent.")
    sent = 0
    try:
        # a set is sent whole or not at all: a peer that does not take one of its objects (many PACS take
        # no SEG) is told before anything goes out
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        refused = sorted({str(ds.SOPClassUID) for ds in datasets} - accepted)
        if refused:
            names = ", ".join(UID(uid).name for uid in refused)
            raise InputError(f"The DICOM node {where} does not accept {names}; nothing was sent.")
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status:  # no answer: pynetdicom aborted the association
                raise InputError(
                    f"The DICOM node {where} did not answer the store of {ds.Modality} within {timeout:g} s "
                    f"(or dropped the connection); {sent} of {len(datasets)} object(s) were sent."
                )
            code = int(getattr(status, "Status", -1))
            if code not in (0x0000, 0xB000, 0xB006, 0xB007):  # success, or stored with a warning
                raise InputError(
                    f"The DICOM node {where} did not store {ds.Modality} (status 0x{code & 0xFFFF:04X})."
                )
            sent += 1
    finally:
        assoc.release()
    return sent


#: Written into a series' image folder once it is analysed (the number of images it held when the analysis
#: started): a restarted node then waits for late images of it instead of analysing it again.
ANALYSED_MARKER = ".analysed"
#: Written into a series' image folder when an association that sent images of it was aborted (the sender
#: stopped, the connection dropped): what arrived may be a part of the series, which is not analysed until an
#: association sending images of its study ends normally (the study sent again, or resumed).
INTERRUPTED_MARKER = ".interrupted"
#: Written into a series' image folder when its results could not be sent (the number of images analysed,
#: then of attempts made): they are sent again, as they are, every `retry_send` seconds and by a restarted
#: node (not made anew: the same objects, whatever part of them the PACS took before), up to `send_attempts`.
UNSENT_MARKER = ".unsent"
#: Written into a series' results folder once they are sent: which images (their SOP Instance UIDs, digested)
#: they were made from (`.sources-unsent` until then). The same images sent again (a routing rule firing
#: twice, a resend) leave the results as they are, instead of analysing and sending them again.
SOURCES = ".sources"
SOURCES_UNSENT = ".sources-unsent"
#: Written into a series' results folder when it is first made: the StudyInstanceUID of the series. A
#: Series Instance UID reused by another study (an anonymiser, a copied export) gets a folder of its own,
#: `<SeriesUID>_<StudyUID>`, instead of putting its results over the first study's (and having them sent,
#: later, into the first study).
STUDY_OWNER = ".study"


def _slices_analysed(out: Path) -> int | None:
    """How many slices the series' earlier analysis read (its report.json), None without one."""
    try:
        return int(json.loads((out / "report.json").read_text(encoding="utf-8"))["input"]["shape_zyx"][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _marked(marker: Path) -> list[int]:
    """The numbers a marker holds: the images the series held when its analysis started, then (UNSENT_MARKER)
    the attempts to send its results; [] if unreadable."""
    try:
        return [int(n) for n in marker.read_text(encoding="utf-8").split()]
    except (OSError, ValueError):
        return []


def _images_marked(marker: Path) -> int | None:
    """How many images the series held when its analysis started (the marker's count), None if unreadable."""
    return next(iter(_marked(marker)), None)


def _sources(names: list[str]) -> str:
    """A digest of the images a series' folder holds (`names`: their file names, their SOP Instance UIDs)."""
    return f"{hashlib.sha256(chr(10).join(sorted(names)).encode()).hexdigest()} {len(names)}\n"


def _unchanged_since(marker: Path, images: list[Path]) -> bool:
    """Whether the series' images are those `marker` counted: none arrived during the analysis (the marker
    counts those before it) or since (newer than the marker)."""
    if not marker.is_file():
        return False
    written = marker.stat().st_mtime
    return _images_marked(marker) == len(images) and all(f.stat().st_mtime <= written for f in images)


@dataclass
class ListenSettings:
    """What `sarcoscope listen` does with what it receives."""

    out: Path
    host: str = "127.0.0.1"
    port: int = 11112
    aet: str = "SARCOSCOPE"
    #: Seconds without a new image after which a series counts as complete.
    settle: float = 30.0
    engine: str = DEFAULT_ENGINE
    push_to: Peer | None = None
    push_dicomweb: str | None = None
    #: Calling AE titles allowed to send (empty: any).
    allowed_aets: list[str] = field(default_factory=list)
    keep_images: bool = False
    #: Seconds an analysed series' images are kept for late images of it (a scanner pausing mid-series).
    late_window: float = 600.0
    #: Seconds after which results that could not be sent (the PACS down or refusing) are sent again.
    retry_send: float = 300.0
    #: Attempts to send a series' results before the node gives up on them (288: a day, 5 minutes apart).
    send_attempts: int = 288
    #: `push_to` (C-STORE) and `push_dicomweb` (STOW-RS): seconds to wait for the TCP connection, and for
    #: each answer of the peer.
    push_connect_timeout: float = 10.0
    push_timeout: float = 60.0


class Node:
    """The C-STORE SCP plus the loop that analyses settled series. `start` listens (in pynetdicom's
    threads); `run` analyses until `stop` is called; `process_settled` is one pass of that loop."""

    def __init__(self, settings: ListenSettings) -> None:
        if settings.settle < 0:
            raise SarcoscopeError("--settle must be 0 seconds or more.")
        if settings.late_window < 0:
            raise SarcoscopeError("--late-window must be 0 seconds or more.")
        if settings.send_attempts < 1:
            raise SarcoscopeError("--send-attempts must be 1 or more.")
        check_waits(settings.push_connect_timeout, settings.push_timeout)
        if not 0 < len(settings.aet) <= 16:
            raise SarcoscopeError("The AE title must be 1 to 16 characters long.")
        from sarcoscope.segmentation import get_engine

        get_engine(settings.engine)  # an unknown engine or a model that does not load fails now, not later
        self.settings = settings
        self.incoming = settings.out / "incoming"
        self.results = settings.out / "results"
        waits = {"timeout": settings.push_timeout, "connect_timeout": settings.push_connect_timeout}
        self.dicomweb = (
            DICOMwebServer(parse_dicomweb_root(settings.push_dicomweb), **waits)
            if settings.push_dicomweb
            else None
        )
        self._pending: dict[tuple[str, str], float] = {}
        self._analysed_at: dict[tuple[str, str], float] = {}  # images kept for late arrivals, since
        self._sending: dict[Any, set[tuple[str, str]]] = {}  # the series each open association sent images of
        self._unsent: dict[tuple[str, str], tuple[float, int, int]] = {}  # not sent: since, images, attempts
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self.analysed: list[str] = []  # series UIDs whose results were written (and sent), in order
        self.failed: list[str] = []

    # -- receiving ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Listen for associations (non-blocking); refuses to start on a port already in use."""
        from pydicom.uid import AllTransferSyntaxes
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import CTImageStorage, Verification

        quiet_header_values()  # the node's log goes to the site's log system, as a server's does
        self.settings.out.mkdir(parents=True, exist_ok=True)
        self.settings.out.chmod(0o700)  # received images and results are patient data: owner only
        self.incoming.mkdir(exist_ok=True)
        self.results.mkdir(exist_ok=True)
        self._remove_left_receipts()
        self._resume()
        ae = AE(ae_title=self.settings.aet)
        ae.add_supported_context(CTImageStorage, AllTransferSyntaxes)
        ae.add_supported_context(Verification)
        if self.settings.allowed_aets:
            ae.require_calling_aet = list(self.settings.allowed_aets)
        try:
            self._server = ae.start_server(
                (self.settings.host, self.settings.port),
                block=False,
                evt_handlers=[
                    (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_ABORTED, self._on_aborted),
                ],
            )
        except OSError as exc:
            raise SarcoscopeError(
                f"Cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror or exc}."
            ) from None
        log.info(
            "listening as %s on %s:%d; series are analysed %g s after their last image",
            self.settings.aet,
            self.settings.host,
            self.settings.port,
            self.settings.settle,
        )

    def _remove_left_receipts(self) -> None:
        """Remove the images a node killed (kill -9, the out-of-memory killer) left half-written in incoming/
        (`.recv-<random>.tmp`): those whose writer no longer holds their lock (fileio.remove_left_files), so
        never one that another node sharing this folder is receiving. Logged by count."""
        removed = remove_left_files(self.incoming.glob(f"*/*/{_RECEIVING[0]}*{_RECEIVING[1]}"))
        if removed:
            log.info("removed %d image(s) that a stopped node left half-received", removed)

    def _resume(self) -> None:
        """Queue the series a stopped node left in incoming/ (received, not yet analysed or failed); those
        analysed with every image they hold wait for late images again, then are deleted; results that were
        not sent are sent again."""
        from sarcoscope.export.writer import dicom_result_files

        now = time.monotonic()
        with self._lock:
            for folder in sorted(self.incoming.glob("*/*")):
                if not (folder.is_dir() and any(folder.glob("*.dcm"))):
                    continue
                key = (folder.parent.name, folder.name)
                images = list(folder.glob("*.dcm"))
                unsent = folder / UNSENT_MARKER
                results = self._results_of(folder.parent.name, folder.name)
                if _unchanged_since(unsent, images) and dicom_result_files(results):
                    made = _marked(unsent)[1:2] or [1]  # attempts before the restart (an older node's: one)
                    # sent at once, given up or not: a restart is how error.txt says to send them again
                    self._unsent[key] = (now - self.settings.retry_send, len(images), made[0])
                elif _unchanged_since(folder / ANALYSED_MARKER, images):
                    # analysed with all its images: kept for late images, then deleted (or kept for good)
                    if not self.settings.keep_images:
                        self._analysed_at[key] = now
                else:
                    self._pending[key] = now
        if self._pending:
            log.info("%d series received before a restart are queued again", len(self._pending))
        if self._unsent:
            log.info("%d series' results not sent before a restart are sent again", len(self._unsent))

    def _on_store(self, event: Any) -> int:
        """Write one received CT image into incoming/ (atomically) and note when its series last grew."""
        try:
            ds = event.dataset
            study = check_uid(str(ds.StudyInstanceUID), "StudyInstanceUID")
            series = check_uid(str(ds.SeriesInstanceUID), "SeriesInstanceUID")
            sop = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
        except (SarcoscopeError, AttributeError, ValueError):  # its text quotes the value: any of the header
            log.warning("refused an image without valid UIDs (digits and dots, at most 64 characters)")
            return 0xA900  # dataset does not match SOP class
        folder = self.incoming / study / series
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = locked_temp_file(folder, *_RECEIVING)
        try:
            with os.fdopen(fd, "wb") as fh:  # its lock held until it is in place (_remove_left_receipts)
                fh.write(event.encoded_dataset(include_meta=True))
                fh.flush()
                os.replace(tmp, folder / f"{sop}.dcm")
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            log.error("cannot store an image of series %s: %s", series, exc)
            return 0xA700  # out of resources
        with self._lock:
            self._pending[(study, series)] = time.monotonic()
            self._analysed_at.pop((study, series), None)  # analysed again, with these images
            self._unsent.pop((study, series), None)  # and its new results sent
            if getattr(event, "assoc", None) is not None:
                self._sending.setdefault(event.assoc, set()).add((study, series))
        return 0x0000

    def _on_released(self, event: Any) -> None:
        """An association ended normally: the studies it sent images of are whole again (sent again, or
        resumed where an aborted association stopped, as Orthanc's retried jobs do: the series complete
        before the abort are not sent again), and their series are analysed once they settle."""
        with self._lock:
            sent = self._sending.pop(event.assoc, set())
            for study in {study for study, _ in sent}:
                for interrupted in (self.incoming / study).glob(f"*/{INTERRUPTED_MARKER}"):
                    interrupted.unlink(missing_ok=True)
                    self._pending[(study, interrupted.parent.name)] = time.monotonic()

    def _on_aborted(self, event: Any) -> None:
        """An association was aborted: the series it sent images of may have arrived in part; they are not
        analysed until they are sent again."""
        with self._lock:
            sent = self._sending.pop(event.assoc, set())
        for study, series in sorted(sent):
            try:
                (self.incoming / study / series / INTERRUPTED_MARKER).touch()
            except OSError as exc:
                log.error("cannot mark series %s as received in part: %s", series, exc)
            log.warning(
                "series %s: the association sending it was aborted; it is analysed when it is sent again",
                series,
            )

    # -- analysing ----------------------------------------------------------------------------------
    def process_settled(self, now: float | None = None) -> int:
        """Analyse (and send) every series that has been quiet for `settle` seconds; return how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ready = [key for key, last in self._pending.items() if now - last >= self.settings.settle]
            for key in ready:
                del self._pending[key]
            expired = [k for k, t in self._analysed_at.items() if now - t >= self.settings.late_window]
            for key in expired:
                del self._analysed_at[key]
            unsent = [
                (k, n, a) for k, (t, n, a) in self._unsent.items() if now - t >= self.settings.retry_send
            ]
            for key, _, _ in unsent:
                del self._unsent[key]
        for study, series in ready:
            self._analyse(study, series, now)
        for (study, series), count, attempts in unsent:
            self._deliver(study, series, count, now, attempts)
        for study, series in expired:
            self._delete_images(self.incoming / study / series)
        return len(ready)

    def _delete_images(self, images: Path) -> None:
        shutil.rmtree(images, ignore_errors=True)
        if images.parent.is_dir() and not any(images.parent.iterdir()):
            images.parent.rmdir()

    def _analyse(self, study: str, series: str, now: float) -> None:
        from sarcoscope.pipeline import analyze

        images = self.incoming / study / series
        marker = images / ANALYSED_MARKER
        try:
            out = self._results_of(study, series, claim=True)  # a full disk fails this series here
            error = out / "error.txt"
            sources, unsent_sources = out / SOURCES, out / SOURCES_UNSENT
            names = [p.name for p in images.glob("*.dcm")]
            count, made_from = len(names), _sources(names)
            if sources.is_file() and sources.read_text(encoding="utf-8") == made_from:
                log.info("series %s: the %d images its results were made from and sent, again", series, count)
                self._mark_analysed(study, series, count, now)
                return
            sources.unlink(missing_ok=True)
            unsent_sources.unlink(missing_ok=True)
            (images / UNSENT_MARKER).unlink(missing_ok=True)  # results made anew replace those not sent
            if (images / INTERRUPTED_MARKER).is_file():
                raise SarcoscopeError(
                    f"The association sending this series was aborted (the sender stopped or the connection "
                    f"dropped) after {count} images, which may be a part of it: it is not analysed. Send the "
                    "series again; it is analysed once a transfer of its study ends normally."
                )
            earlier = _slices_analysed(out) if not marker.is_file() else None
            if earlier is not None and count < earlier:
                raise SarcoscopeError(
                    f"{count} images of this series arrived after it was analysed with {earlier} and its "
                    f"images were deleted ({self.settings.late_window:g} s later); a fragment is not the "
                    "series, so the results here are still those of that analysis. Send the whole series "
                    "again to analyse it with them."
                )
            log.info("series %s: %d images received; analysing", series, count)
            analyze(images, out_dir=out, engine=self.settings.engine)
            error.unlink(missing_ok=True)
            unsent_sources.write_text(made_from, encoding="utf-8")  # SOURCES once they are sent
        except Exception as exc:  # one bad series must not stop the node
            self._failed(study, series, exc)
            return
        self._deliver(study, series, count, now)

    def _failed(self, study: str, series: str, exc: Exception, then: str = "") -> None:
        """Log why a series was not analysed or sent, and write it into its error.txt."""
        images = self.incoming / study / series
        frames = ""
        if isinstance(exc, SarcoscopeError):
            reason = str(exc).replace(str(images), "the received series")
        else:  # a system's error by its reason, without its path; a bug's without its text, which may quote a
            # header value (pydicom's ValueError for a malformed one does): the log has its frames
            reason = f"internal error {type(exc).__name__}"
            if isinstance(exc, OSError) and exc.strerror:
                reason += f": {exc.strerror}"
            else:
                frames = f"\n{frames_of(exc)}"
        reason += then
        log.error("series %s not analysed or not sent: %s%s", series, reason, frames)
        try:  # a full disk or an unwritable folder fails this series, it does not stop the node
            (images / ANALYSED_MARKER).unlink(missing_ok=True)  # failed: kept, and analysed again at start
            out = self._results_of(study, series, claim=True)
            (out / "error.txt").write_text(reason + "\n", encoding="utf-8")
        except OSError as why:
            log.error("series %s: cannot write its error.txt: %s", series, why.strerror or why)
        self.failed.append(series)  # once its error.txt says why, as analysed follows the results

    def _deliver(self, study: str, series: str, count: int, now: float, attempts: int = 0) -> None:
        """Send the series' results (analysed with `count` images; `attempts` made before). Those that cannot
        be sent are kept and sent again, as they are, `retry_send` seconds later (a restarted node sends them
        at once), until `send_attempts` were made: then error.txt says they were given up, and how to send
        them."""
        from sarcoscope.export.writer import dicom_result_files

        images = self.incoming / study / series
        out = self._results_of(study, series)
        unsent = images / UNSENT_MARKER
        try:
            self._send(study, series, dicom_result_files(out))
        except Exception as exc:
            attempts += 1
            most = self.settings.send_attempts
            if attempts < most:
                retry = self.settings.retry_send
                then = f" The results are sent again in {retry:g} s (attempt {attempts} of {most})."
            else:
                then = (
                    f" Not sent after {attempts} attempts: no more are made. The results stay in "
                    f"results/{out.name}/; to send them, restart the node (it tries once more) or send the "
                    "series to it again."
                )
            self._failed(study, series, exc, then)
            try:
                unsent.write_text(f"{count} {attempts}\n", encoding="utf-8")
            except OSError as why:
                log.error("series %s: cannot mark its results as not sent: %s", series, why.strerror or why)
            with self._lock:
                if attempts < most and (study, series) not in self._pending:  # new images: analysed again
                    self._unsent[(study, series)] = (now, count, attempts)
            return
        try:
            unsent.unlink(missing_ok=True)
            (out / "error.txt").unlink(missing_ok=True)
            if (out / SOURCES_UNSENT).is_file():
                os.replace(out / SOURCES_UNSENT, out / SOURCES)
        except OSError as why:
            log.error("series %s: %s", series, why)
        self.analysed.append(series)
        self._mark_analysed(study, series, count, now)

    def _results_of(self, study: str, series: str, claim: bool = False) -> Path:
        """The results folder of a series: results/<SeriesUID>/, or <SeriesUID>_<StudyUID>/ when another
        study's series of that UID has it (see STUDY_OWNER). `claim`: made, and marked as this study's, if
        it is not yet (a folder of an older node, without the mark, is taken as this series')."""
        out = self.results / series
        try:
            owner = (out / STUDY_OWNER).read_text(encoding="utf-8").strip() or study
        except OSError:
            owner = study
        if owner != study:
            out = self.results / f"{series}_{study}"
        if claim:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / STUDY_OWNER).is_file():
                atomic_write_text(out / STUDY_OWNER, study + "\n")
        return out

    def _mark_analysed(self, study: str, series: str, count: int, now: float) -> None:
        """Mark the series' images as analysed: kept `late_window` seconds for late images, not analysed
        (nor sent) again by a restarted node."""
        try:
            (self.incoming / study / series / ANALYSED_MARKER).write_text(f"{count}\n", encoding="utf-8")
        except OSError as why:
            log.error("series %s: cannot mark it analysed (%s); a restart analyses it again", series, why)
        if not self.settings.keep_images:
            with self._lock:
                self._analysed_at[(study, series)] = now

    def _send(self, study: str, series: str, files: list[Path]) -> None:
        if self.settings.push_to is not None:
            peer = self.settings.push_to
            waits = self.settings.push_connect_timeout, self.settings.push_timeout
            sent = send_c_store(files, peer, self.settings.aet, *waits)
            log.info(
                "series %s: sent %d result objects to %s@%s:%d", series, sent, peer.aet, peer.host, peer.port
            )
        if self.dicomweb is not None:
            stored = self.dicomweb.store(study, [pydicom.dcmread(f) for f in files])
            log.info(
                "series %s: stored %d result objects on %s (%d held there already)",
                series,
                stored.sent,
                self.dicomweb.shown,
                stored.held,
            )

    # -- running ------------------------------------------------------------------------------------
    def run(self, poll: float = 1.0) -> None:
        """Analyse settled series until `stop` (or Ctrl+C); then stop listening."""
        try:
            while not self._stop.wait(min(poll, max(self.settings.settle, 0.05))):
                self.process_settled()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
