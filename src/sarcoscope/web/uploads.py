"""An upload that held several series of one patient (an exam export: arterial and portal-venous, thin and
thick reconstructions): the series not analysed are kept, listed with what tells them apart, and opened as
studies of their own without uploading again. A study stays one series (labels live on its pixel grid).

On disk, `uploads/<upload id>/files/` holds the other series' files, numbered (their images and any damaged
file that would refuse one; nothing else of the upload: reports, localizers, nor its folder and file names),
and `series.json` lists the series found in the upload in the reader's order (the first is the default, the
one `sarcoscope analyze` reads), each with the study it was opened as. Both go with the upload's last study.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarcoscope.errors import InputError, SarcoscopeError
from sarcoscope.store import ConflictError, NotFoundError, Store, Study, new_study_id
from sarcoscope.store.files import atomic_private_file, make_private, private_dir

if TYPE_CHECKING:  # pydicom loads with the first request that reads DICOM
    from sarcoscope.imaging.dicom_reader import SeriesInfo
    from sarcoscope.imaging.volume import CTVolume

LISTING = "series.json"
#: A kept file's name: its number in the upload (KeptUpload.store).
KEPT_NAME = re.compile(r"\d{6}\.dcm")
log = logging.getLogger(__name__)


def _entry(info: SeriesInfo, default: bool) -> dict[str, Any]:
    """What the Series list shows of one series (the reader's key chooses it again)."""
    return {
        "series_uid": info.series_uid,
        "description": info.description,
        "n_slices": info.n_slices,
        "slice_thickness_mm": info.slice_thickness_mm,
        "phase": info.phase,
        "orientation": info.orientation,
        "note": info.note,
        "default": default,
        "study_id": None,
    }


@dataclass
class KeptUpload:
    """The series of an upload that holds several, before its chosen series' study is added."""

    upload_id: str
    chosen: str
    series: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # of every series, the chosen one's moved on by then

    @classmethod
    def of(cls, chosen: str | None, infos: list[SeriesInfo], files: list[Path]) -> KeptUpload | None:
        """The series of an upload (`infos`, their `files`: imaging.read_ct_surveyed) when there are
        several of one patient; None otherwise (another patient's series are never kept with this one's,
        nor offered beside it). The patient is the reader's (SeriesInfo.patient): without a PatientID, the
        series of two studies are two patients', as the reader refusing such an upload says; a series
        with neither could be anyone's."""
        patients = {i.patient for i in infos}
        if len(infos) < 2 or len(patients) > 1 or None in patients:
            return None
        entries = [_entry(info, n == 0) for n, info in enumerate(infos)]
        chosen = infos[0].series_uid if chosen is None else chosen
        return cls(new_study_id(), chosen, entries, files)

    def store(self, store: Store, study_id: str) -> None:
        """Move the other series' files (the chosen series' are stored already) into the data folder, under
        names the server chooses: the upload's own folder and file names (a zip's are often the patient's:
        "Jansen Piet 12345678/CT abdomen/IM0001") are not kept, as no file of a study is (the reader tells
        the series apart by their headers)."""
        folder = private_dir(store.upload_dir(self.upload_id))
        _keep_numbered(private_dir(folder / "files"), [p for p in self.files if p.exists()])
        for entry in self.series:
            if entry["series_uid"] == self.chosen:
                entry["study_id"] = study_id
        _write_listing(folder, self.series)


def _keep_numbered(files: Path, paths: list[Path]) -> None:
    """Move `paths` into the folder `files` as the next numbered files (KEPT_NAME)."""
    n = sum(1 for p in files.iterdir() if KEPT_NAME.fullmatch(p.name))
    for path in paths:
        while (target := files / f"{n:06d}.dcm").exists():
            n += 1
        shutil.move(path, target)
        make_private(target)  # a zip's files have the umask's mode
        n += 1


def number_kept_files(store: Store) -> int:
    """Rename the files of uploads kept by an earlier version, which stored them under the upload's own
    folder and file names (often the patient's), to numbers; at the server's start, before any request.
    Returns how many were renamed."""
    renamed = 0
    for files in sorted((store.data_dir / "uploads").glob("*/files")):
        if _all_numbered(files):  # as this version keeps them: nothing to do
            continue
        kept = sorted(p for p in files.rglob("*") if p.is_file())
        named = [p for p in kept if p.parent != files or not KEPT_NAME.fullmatch(p.name)]
        _keep_numbered(files, named)
        renamed += len(named)
        for folder in sorted((p for p in files.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):  # not empty (no file of the upload): left, the start goes on
                folder.rmdir()
    if renamed:
        log.warning("Renamed %d kept files of uploads to numbers (they had the upload's names).", renamed)
    return renamed


def _all_numbered(files: Path) -> bool:
    """Whether the folder holds numbered files only: its listing tells, without reading each file's
    status (a data folder holds thousands of kept files, and every start checks them)."""
    with os.scandir(files) as entries:
        return all(e.is_file(follow_symlinks=False) and KEPT_NAME.fullmatch(e.name) for e in entries)


def _write_listing(folder: Path, series: list[dict[str, Any]], *, durable: bool = False) -> None:
    """`durable`: on the disk when it returns (fsync), for a listing written after the commit it records."""
    with atomic_private_file(folder / LISTING, durable=durable) as f:
        f.write(json.dumps(series).encode())


def _opened_as(store: Store, upload_id: str, entry: dict[str, Any]) -> str | None:
    """The id of the study a listed series was opened as: the listing's, else the study of this upload
    holding the series (its row committed, the listing written after it lost with power, or not yet
    written by the opening under way)."""
    if entry["study_id"] is not None:
        return str(entry["study_id"])
    holder = store.find_series(entry["series_uid"])
    return holder.id if holder is not None and holder.upload_id == upload_id else None


def _read_listing(store: Store, upload_id: str) -> list[dict[str, Any]] | None:
    """The upload's series.json; None when it is gone (removed by hand, or a damaged data folder)."""
    try:
        return list(json.loads((store.upload_dir(upload_id) / LISTING).read_text()))
    except (OSError, ValueError):
        return None


def upload_series(store: Store, study: Study) -> list[dict[str, Any]]:
    """The series of the study's upload, for choosing which to analyse: each with the study it was opened
    as, whether it can be opened and why not. Empty when the upload held this series only."""
    if study.upload_id is None or (series := _read_listing(store, study.upload_id)) is None:
        return []
    listed: list[dict[str, Any]] = []
    for entry in series:
        reason = None if entry["orientation"] == "axial" else "not axial: L3 analysis needs an axial series"
        opened = _opened_as(store, study.upload_id, entry)
        del entry["study_id"]
        if opened is not None and not _exists(store, opened):
            reason, opened = "its study was deleted, with its files", None
        listed.append({**entry, "study_id": opened, "current": opened == study.id, "reason": reason})
    return listed


def _exists(store: Store, study_id: str) -> bool:
    try:
        store.get_study(study_id)
    except NotFoundError:
        return False
    return True


def open_series(
    store: Store, study: Study, series_uid: str, *, actor: str, client: str | None
) -> tuple[Study, CTVolume | None]:
    """The study of another series of `study`'s upload: the one it was opened as before, else a new one
    read from the kept files (then with its volume). NotFoundError for a series not in the upload."""
    if study.upload_id is None:
        raise NotFoundError("This study's upload held one series only; there is no other to open.")
    upload_id = study.upload_id
    with store.upload_lock(upload_id):  # two users choosing the same series get one study
        series = _read_listing(store, upload_id)
        if series is None:
            raise ConflictError("The other series of this upload are no longer stored; upload them again.")
        entry = next((e for e in series if e["series_uid"] == series_uid), None)
        if entry is None:
            raise NotFoundError("That series is not in this study's upload.")
        opened = _opened_as(store, upload_id, entry)
        if opened is not None:
            if not _exists(store, opened):
                raise ConflictError("That series' study was deleted, with its files: upload them again.")
            if entry["study_id"] is None:  # the listing lost its opening: recorded again
                entry["study_id"] = opened
                _write_listing(store.upload_dir(upload_id), series, durable=True)
            return store.get_study(opened), None
        new, volume = _add_from_upload(store, upload_id, series_uid, actor=actor, client=client)
        entry["study_id"] = new.id
        _write_listing(store.upload_dir(upload_id), series, durable=True)  # as the committed row it records
    return new, volume


def _add_from_upload(
    store: Store, upload_id: str, series_uid: str, *, actor: str, client: str | None
) -> tuple[Study, CTVolume]:
    """Read one series from the kept files and add its study (its files move to `ct/`: copied, then
    deleted here once the study is added, so that a failure leaves the series to be opened again)."""
    from sarcoscope.imaging import read_ct
    from sarcoscope.web.volumes import add_study, without_upload_paths

    files = store.upload_dir(upload_id) / "files"
    try:
        volume = read_ct(files, series_uid=series_uid)
        volume.warnings = without_upload_paths(volume.warnings, files)
        paths = [Path(h.filename) for h in volume.dicom_headers or []]
        size = sum(p.stat().st_size for p in paths)
    except SarcoscopeError as exc:  # messages name the server's folder; the user knows their upload
        raise type(exc)(str(exc).replace(str(files), "the upload")) from None
    except OSError as exc:
        raise InputError(f"The series could not be read from the stored upload: {exc.strerror}") from None
    added = add_study(store, volume, size, actor=actor, client=client, upload_id=upload_id)
    for path in paths:
        path.unlink(missing_ok=True)
    return added
