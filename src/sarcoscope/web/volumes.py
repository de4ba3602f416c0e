"""Studies on disk: turning an upload into stored files (by UID) plus a fast cache, and loading them back.

An upload is written to a fresh temporary folder under the data folder with names the server chooses
(the client's file names only decide whether a part is a zip, a NIfTI file or DICOM). After `read_ct`
accepted it, the original DICOM files of the chosen series are moved to `ct/<StudyUID>/<SeriesUID>/
<SOPInstanceUID>.dcm`, and the decoded HU array is cached as `.npy` so that opening a study later shows
images without decoding the DICOM again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarcoscope.errors import InputError, OutputError, SarcoscopeError
from sarcoscope.fileio import write_gzip
from sarcoscope.imaging.volume import CTMetadata, CTVolume, image_numbers
from sarcoscope.store import ConflictError, StorageError, Store, Study, is_dicom_uid, new_study_id
from sarcoscope.store.files import atomic_private_file, make_private, private_dir, sync_dir, sync_tree
from sarcoscope.store.studies import series_stored_already

if TYPE_CHECKING:
    from sarcoscope.web.uploads import KeptUpload

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: The cache's geometry of a study's volume (beside its hu.npy): written at the upload, read by VolumeCache.
VOLUME_INFO = "volume.json"


@dataclass(frozen=True)
class UploadedPart:
    """One received file: the client's name (used for its suffix only) and where the server saved it."""

    client_name: str
    path: Path
    size: int


def _kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    return "dicom"


def _hu_for_cache(hu: np.ndarray) -> np.ndarray:
    """int16 when the values are integers in range (DICOM CT always is), else float32."""
    if np.issubdtype(hu.dtype, np.integer) and hu.min() >= -32768 and hu.max() <= 32767:
        return hu.astype(np.int16, copy=False)
    rounded = np.rint(hu)
    if np.array_equal(rounded, hu) and rounded.min() >= -32768 and rounded.max() <= 32767:
        return rounded.astype(np.int16)
    return hu.astype(np.float32, copy=False)


def ingest(
    store: Store,
    parts: list[UploadedPart],
    work_dir: Path,
    *,
    actor: str,
    client: str | None = None,
    series_uid: str | None = None,
) -> tuple[Study, CTVolume]:
    """Read the uploaded parts as one CT series, store its files and add the study.

    Raises InputError for unreadable input and ConflictError for a series uploaded before.
    """
    try:
        return _ingest(store, parts, work_dir, actor=actor, client=client, series_uid=series_uid)
    except StorageError:  # names no file
        raise
    except SarcoscopeError as exc:
        raise type(exc)(_client_words(str(exc), parts, work_dir)) from None


def _client_words(text: str, parts: list[UploadedPart], work_dir: Path) -> str:
    """`text` with the server's folders and file names replaced by what the user knows: their upload. A
    reader that names a file by its name alone ("the values of part000000.nii.gz ...") names the user's
    file too, not the name the server stored it under."""
    for part in parts:
        text = text.replace(str(part.path), part.client_name or "an uploaded file")
    text = text.replace(str(work_dir / "extracted"), "the zip").replace(str(work_dir), "the upload")
    for part in sorted(parts, key=lambda p: len(p.path.name), reverse=True):  # part000001.nii.gz first
        text = text.replace(part.path.name, part.client_name or "an uploaded file")
    return text


def _ingest(
    store: Store,
    parts: list[UploadedPart],
    work_dir: Path,
    *,
    actor: str,
    client: str | None,
    series_uid: str | None,
) -> tuple[Study, CTVolume]:
    from sarcoscope.imaging import read_ct
    from sarcoscope.imaging.read import read_ct_surveyed
    from sarcoscope.web.uploads import KeptUpload

    if not parts:
        raise InputError("The upload contained no files.")
    kinds = {_kind(p.client_name) for p in parts}
    if len(parts) > 1 and kinds != {"dicom"}:
        raise InputError(
            "Upload either DICOM files (a folder), or exactly one .zip, or exactly one NIfTI file; "
            f"got {len(parts)} files including {', '.join(sorted(kinds - {'dicom'}))}."
        )
    kind = kinds.pop()
    total = sum(p.size for p in parts)
    if kind == "nifti":
        volume = read_ct(parts[0].path)
        volume.warnings = without_upload_paths(volume.warnings, work_dir)
        return add_study(store, volume, total, actor=actor, client=client, nifti=parts[0])
    if kind == "zip":
        from sarcoscope.imaging.archive import extract_zip

        source = work_dir / "extracted"
        try:
            extract_zip(parts[0].path, source)
        except OutputError as exc:  # the server's disk is full, not the zip bad: 507 naming no folder
            if not isinstance(exc.__cause__, OSError):
                raise
            raise StorageError.of("the upload", exc.__cause__) from None
    else:
        source = parts[0].path.parent
    volume, infos, files = read_ct_surveyed(source, series_uid=series_uid)
    volume.warnings = without_upload_paths(volume.warnings, work_dir)  # shown and reported
    kept = KeptUpload.of(series_uid, infos, files)  # None: the upload held this series only
    return add_study(store, volume, total, actor=actor, client=client, kept=kept)


def add_study(
    store: Store,
    volume: CTVolume,
    upload_bytes: int,
    *,
    actor: str,
    client: str | None,
    nifti: UploadedPart | None = None,
    kept: KeptUpload | None = None,
    upload_id: str | None = None,
) -> tuple[Study, CTVolume]:
    """Store a series read from an upload (its DICOM files, or the NIfTI file `nifti`) and add its study.

    `kept`: the upload's other series, moved to the data folder to be opened later; `upload_id`: the
    kept upload this series comes from, whose files are copied (the caller deletes them once the study is
    added: a failure must not lose them). ConflictError for a series uploaded before, or whose deleted
    study's files are still being removed (all under Store.ct_lock: see there).
    """
    from pydicom.uid import generate_uid

    if not volume.is_axial:
        raise InputError(f"The uploaded series is {volume.orientation}; L3 analysis needs an axial series.")
    md = volume.metadata
    sops: list[str] = []
    if volume.source_kind == "dicom":
        study_uid, series, sops = _dicom_uids(volume)
    else:
        assert nifti is not None
        digest = hashlib.sha256(nifti.path.read_bytes()).hexdigest()
        study_uid = str(generate_uid(entropy_srcs=["sarcoscope-nifti-study", digest]))
        series = str(generate_uid(entropy_srcs=["sarcoscope-nifti-series", digest]))
    study = Study(
        id=new_study_id(),
        study_uid=study_uid,
        series_uid=series,
        patient_id=md.patient_id,
        study_date=md.study_date,
        # A NIfTI file has no description; its name is what the user knows it by.
        series_description=md.series_description or (nifti.client_name if nifti else None),
        source_kind=volume.source_kind,
        n_slices=volume.n_slices,
        rows=int(volume.shape[1]),
        cols=int(volume.shape[2]),
        spacing=[float(s) for s in volume.spacing],
        upload_bytes=int(upload_bytes),
        status="uploaded",
        created_by=actor,
        patient={
            "height_cm": md.patient_height_m * 100.0 if md.patient_height_m else None,
            "weight_kg": md.patient_weight_kg,
            "sex": md.patient_sex,
            "cutoff_set": None,
        },
        upload_id=kept.upload_id if kept is not None else upload_id,
    )
    dest = store.series_dir(study)
    with store.ct_lock(study_uid):  # until the study is added, or its files removed again
        existing = store.find_series(series)
        if existing is not None:
            raise series_stored_already(existing, study)
        if dest.exists():
            raise ConflictError(
                f"The files of a deleted study of series {series} are still being removed; upload it again "
                "in a moment."
            )
        private_dir(dest)
        try:
            sop_uids: list[str] = []
            if volume.source_kind == "dicom":
                sop_uids = _store_dicom_files(
                    volume, dest, sops, study_uid, series, copy=upload_id is not None
                )
            else:
                assert nifti is not None
                suffix = ".nii.gz" if nifti.client_name.lower().endswith(".gz") else ".nii"
                shutil.move(nifti.path, dest / f"volume{suffix}")
                make_private(dest / f"volume{suffix}")
            _write_cache(store, study.id, volume, sop_uids)
            if kept is not None:
                kept.store(store, study.id)
            _on_disk(store, study, kept=kept is not None)
            store.add_study(study, actor=actor, client=client)
        except BaseException as exc:
            shutil.rmtree(store.cache_dir(study.id), ignore_errors=True)
            if kept is not None:
                shutil.rmtree(store.upload_dir(kept.upload_id), ignore_errors=True)
            if store.find_series(series) is None:  # unless the failure came after the study was added
                shutil.rmtree(dest, ignore_errors=True)
                with contextlib.suppress(OSError):  # its StudyUID folder, unless another series is in it
                    dest.parent.rmdir()
            # a full disk, said without the file's path: the kept series' paths keep the zip's folder
            # names (often the patient's), which an OSError would carry to the client and the server's log
            if isinstance(exc, OSError):
                raise StorageError.of("the series", exc) from None
            raise
    return study, volume


def _on_disk(store: Store, study: Study, *, kept: bool) -> None:
    """Put the files the study's row will name on the disk (fsync of each file and of the folders naming
    them: its series, its decoded images, and with `kept` its upload's other series, stored by this upload)
    before the row is committed: power lost after the commit, which the database flushes, must not leave a
    study whose images are empty or missing. One fsync per file: a series' files were written (or moved
    from tmp/) without one."""
    folders = [store.series_dir(study), store.cache_dir(study.id)]
    if kept and study.upload_id is not None:
        folders.append(store.upload_dir(study.upload_id))
    for folder in folders:
        sync_tree(folder)
        sync_dir(folder.parent)
    sync_dir(folders[0].parent.parent)  # ct/, which names a new StudyUID folder


def without_upload_paths(warnings: list[str], work_dir: Path) -> list[str]:
    """The reader's warnings naming no file or folder of the upload. They are stored with the study and go
    into every report, de-identified ones too; below the server's folder a path holds the client's names (a
    zip's folders are often named by the patient: "Jansen Piet 12345678/CT abdomen/IM0001"), which no
    de-identification can tell from the text once the upload is gone."""
    if not any(str(work_dir) in w for w in warnings):
        return list(warnings)
    paths = sorted([work_dir, *work_dir.rglob("*")], key=lambda p: len(str(p)), reverse=True)
    shown = [(str(p), "an uploaded file" if p.is_file() else "the upload") for p in paths]
    out = []
    for text in warnings:
        for path, name in shown:
            if path in text:
                text = text.replace(path, name)
        out.append(text)
    return out


def _without_stored_upload_path(text: str, store: Store) -> str:
    """A warning stored before `without_upload_paths` was applied at upload (sarcoscope 0.1.0 until
    2026-12-05), without the upload's path: the readers' warnings end a file's path with " has no " and a
    folder's with ": "."""
    tmp = re.escape(str(store.data_dir / "tmp"))
    text = re.sub(tmp + r"/[0-9a-f]{32}/.*?(?= has no )", "an uploaded file", text)
    return re.sub(tmp + r"/[0-9a-f]{32}(?:/.*?)?(?=: |$)", "the upload", text)


def _dicom_uids(volume: CTVolume) -> tuple[str, str, list[str]]:
    """The series' Study and Series Instance UIDs and its slices' SOP Instance UIDs (in slice order);
    stable stand-ins, with a warning, for any that are empty or not UIDs.

    `sarcoscope analyze` reads such series, so the web app does too. A slice without a SOP Instance UID
    gets its file meta's Media Storage SOP Instance UID when that is one, else a UID derived from the
    file's bytes; the study and series stand-ins derive from the slices' UIDs, so the same series
    uploaded again is recognised as a duplicate.
    """
    from pydicom.uid import generate_uid

    md = volume.metadata
    headers = volume.dicom_headers or []
    sops: list[str] = []
    generated = 0
    for h in headers:
        uid = str(h.get("SOPInstanceUID", "") or "")
        if not is_dicom_uid(uid):
            meta = getattr(h, "file_meta", None)
            uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "") if meta is not None else ""
            if not is_dicom_uid(uid) or uid in sops:
                digest = hashlib.sha256(_header_file(h).read_bytes()).hexdigest()
                uid = str(generate_uid(entropy_srcs=["sarcoscope-dicom-instance", digest]))
            generated += 1
        sops.append(uid)
    study_uid, series = md.study_instance_uid or "", md.series_instance_uid or ""
    digest = hashlib.sha256("\\".join(sorted(sops)).encode()).hexdigest()
    replaced = []
    if generated:
        replaced.append(f"SOP Instance UID of {generated} of {len(headers)} slices")
    if not is_dicom_uid(study_uid):
        replaced.append(f"Study Instance UID {study_uid!r}")
        study_uid = str(generate_uid(entropy_srcs=["sarcoscope-dicom-study", digest]))
    if not is_dicom_uid(series):
        replaced.append(f"Series Instance UID {series!r}")
        series = str(generate_uid(entropy_srcs=["sarcoscope-dicom-series", digest]))
    if replaced:
        volume.warnings.append(
            f"The series' {' and '.join(replaced)} {'is' if len(replaced) == 1 else 'are'} empty or not a "
            f"valid UID; sarcoscope uses generated UIDs instead (study {study_uid}, series {series}), "
            "written into its stored copy of the files, for storage and exports."
        )
    return study_uid, series, sops


def _header_file(header: Any) -> Path:
    name = getattr(header, "filename", None)
    if not isinstance(name, str) or not Path(name).is_file():
        raise InputError("A slice of the series cannot be matched to an uploaded file.")
    return Path(name)


def _sop_class(header: Any) -> str:
    """The slice's SOP Class UID, or its file meta's Media Storage SOP Class UID when it has none."""
    uid = str(header.get("SOPClassUID", "") or "")
    if is_dicom_uid(uid):
        return uid
    meta = getattr(header, "file_meta", None)
    stored = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""
    return stored if is_dicom_uid(stored) else uid


def _store_dicom_files(
    volume: CTVolume, dest: Path, sops: list[str], study_uid: str, series_uid: str, *, copy: bool = False
) -> list[str]:
    """Move (or `copy`) the series' files to `dest/<SOPInstanceUID>.dcm`; return the SOP UIDs in slice order.

    A file whose UIDs were replaced (see _dicom_uids), or without a SOP Class UID where its file meta has
    one, is stored with these written in, so that downloads and exports (a DICOM SEG references its
    source images by class and instance) use the UIDs sarcoscope uses.
    """
    import pydicom

    headers = volume.dicom_headers or []
    if len(headers) != volume.n_slices or len(set(sops)) != len(sops):
        raise InputError("The series' slices and files do not match one to one; cannot store its files.")
    for header, uid in zip(headers, sops, strict=True):
        path = _header_file(header)
        target = dest / f"{uid}.dcm"
        fixes = {
            "SOPInstanceUID": uid,
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid,
            "SOPClassUID": _sop_class(header),
        }
        if all(str(header.get(k, "") or "") == v for k, v in fixes.items()):
            (shutil.copyfile if copy else shutil.move)(path, target)
            make_private(target)  # a file extracted from a zip has the umask's mode
            continue
        ds = pydicom.dcmread(path)
        for keyword, value in fixes.items():
            setattr(ds, keyword, value)
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        with atomic_private_file(target) as f:
            ds.save_as(f, enforce_file_format=True)
        if not copy:
            path.unlink()
    return sops


def _write_cache(store: Store, study_id: str, volume: CTVolume, sop_uids: list[str]) -> None:
    folder = private_dir(store.cache_dir(study_id))
    with atomic_private_file(folder / "hu.npy") as f:
        np.save(f, _hu_for_cache(np.asarray(volume.hu)))
    geometry = {
        "spacing": [float(s) for s in volume.spacing],
        "origin": [float(s) for s in volume.origin],
        "direction": np.asarray(volume.direction, dtype=float).tolist(),
        "metadata": volume.metadata.as_dict(),
        "source_kind": volume.source_kind,
        "slice_positions": None
        if volume.slice_positions is None
        else np.asarray(volume.slice_positions).tolist(),
        "sop_uids": sop_uids,
        "image_numbers": image_numbers(volume),
        "warnings": list(volume.warnings),
        "stored_flip": list(volume.stored_flip),
        "source_axes": None if volume.source_axes is None else list(volume.source_axes),
    }
    with atomic_private_file(folder / VOLUME_INFO) as f:
        f.write(json.dumps(geometry).encode())


class VolumeCache:
    """Decoded volumes of recently opened studies (least recently used dropped first); thread-safe."""

    def __init__(self, store: Store, size: int) -> None:
        self.store = store
        self.size = max(1, size)
        self._items: OrderedDict[str, CTVolume] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, study_id: str, volume: CTVolume) -> None:
        with self._lock:
            self._items[study_id] = volume
            self._items.move_to_end(study_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, study_id: str) -> None:
        with self._lock:
            self._items.pop(study_id, None)

    def get(self, study: Study) -> CTVolume:
        """The study's volume (HU, geometry, metadata; no DICOM headers) from memory or the `.npy` cache."""
        with self._lock:
            if study.id in self._items:
                self._items.move_to_end(study.id)
                return self._items[study.id]
        with self.store.using_files(study.id):  # kept before its deletion drops it, not after
            volume = self._load(study)
            self.put(study.id, volume)
        return volume

    def _load(self, study: Study) -> CTVolume:
        try:
            info = self._info(study)
            hu = np.load(self.store.cache_dir(study.id) / "hu.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"The stored images of study {study.id} cannot be read: {exc}") from exc
        positions = info.get("slice_positions")
        numbers = info.get("image_numbers")
        return CTVolume(
            hu=hu,
            spacing=tuple(info["spacing"]),  # type: ignore[arg-type]
            origin=tuple(info["origin"]),  # type: ignore[arg-type]
            direction=np.asarray(info["direction"], dtype=float),
            metadata=CTMetadata(**info["metadata"]),
            source_kind=info["source_kind"],
            source_path=None,
            slice_positions=None if positions is None else np.asarray(positions),
            warnings=[_without_stored_upload_path(w, self.store) for w in info.get("warnings", [])],
            stored_flip=tuple(bool(f) for f in info.get("stored_flip", (False, False))),  # type: ignore[arg-type]
            source_axes=tuple(info["source_axes"]) if info.get("source_axes") else None,  # type: ignore[arg-type]
            # the exports name the slices by them too; a study stored before they were kept has none
            instance_numbers=numbers if isinstance(numbers, list) else None,
        )

    def shown(self, study: Study) -> tuple[np.ndarray | None, list[int] | None]:
        """What an answer showing the study says of its volume, from the cache's geometry read once (its HU
        are not loaded for it): its voxel axes (columns: LPS unit vectors of x, y, z) and its slices' DICOM
        Instance Numbers (imaging.volume.image_numbers; None for a NIfTI study or one stored before they were
        kept); None for what cannot be read (its files being deleted)."""
        try:
            info = self._info(study)
        except (OSError, ValueError):
            return None, None
        try:
            direction = np.asarray(info["direction"], dtype=float).reshape(3, 3)
        except (ValueError, KeyError, TypeError):
            direction = None
        numbers = info.get("image_numbers")
        return direction, numbers if isinstance(numbers, list) else None

    def sop_uids(self, study: Study) -> list[str]:
        return list(self._info(study).get("sop_uids") or [])

    def _info(self, study: Study) -> dict[str, Any]:
        """The study's volume.json (_write_cache: geometry, metadata, SOP UIDs, warnings); OSError or
        ValueError when it cannot be read."""
        info: dict[str, Any] = json.loads((self.store.cache_dir(study.id) / VOLUME_INFO).read_text())
        return info

    def with_headers(self, study: Study) -> CTVolume:
        """The volume plus its per-slice DICOM headers (read from the stored files), for DICOM exports."""
        import pydicom

        with self.store.using_files(study.id):
            base = self.get(study)
            uids = self.sop_uids(study)
            if not uids:
                return base
            folder = self.store.series_dir(study)
            headers = [pydicom.dcmread(folder / f"{uid}.dcm", stop_before_pixels=True) for uid in uids]
        for ds in headers:  # a series stored with generated UIDs (see _dicom_uids) is exported with them
            if not is_dicom_uid(str(ds.get("StudyInstanceUID", ""))):
                ds.StudyInstanceUID = study.study_uid
            if not is_dicom_uid(str(ds.get("SeriesInstanceUID", ""))):
                ds.SeriesInstanceUID = study.series_uid
        return CTVolume(
            hu=base.hu,
            spacing=base.spacing,
            origin=base.origin,
            direction=base.direction,
            metadata=base.metadata,
            source_kind=base.source_kind,
            source_path=str(folder),
            slice_positions=base.slice_positions,
            dicom_headers=headers,
            warnings=list(base.warnings),
            stored_flip=base.stored_flip,
            instance_numbers=base.instance_numbers,
        )


#: The viewer's copy of a study's volume, in the study's cache folder (made on first request).
VIEWER_NIFTI = "viewer.nii.gz"
#: One writer per file (the temporary name is per process, not per thread); striped by study.
_VIEWER_LOCKS = [threading.Lock() for _ in range(32)]


def viewer_nifti(store: Store, study: Study, volume: CTVolume) -> Path:
    """The study's HU volume as a gzipped int16 NIfTI-1 file for the browser viewer; made once, then reused.

    Voxel (i, j, k) is the cache's (x, y, z) = (column, row, slice), so the viewer's voxel indices are the
    API's slice indices. The header carries only geometry (RAS affine as qform and sform), the HU unit
    and a fixed description: nothing from the patient or the DICOM headers.
    """
    path = store.cache_dir(study.id) / VIEWER_NIFTI
    with store.using_files(study.id), _VIEWER_LOCKS[int(study.id[:8], 16) % len(_VIEWER_LOCKS)]:
        if not path.exists():
            _write_viewer_nifti(path, volume)
    return path


def _write_viewer_nifti(path: Path, volume: CTVolume) -> None:
    """The HU as NIfTI (export.nifti.grid_nifti), written right after the upload: DICOM's HU are int16
    already, so they are not converted through float copies, and the file is deflated on every core."""
    from sarcoscope.export.nifti import LPS_TO_RAS, grid_nifti

    hu = np.asarray(volume.hu)
    if hu.dtype != np.int16:
        hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    img = grid_nifti(hu, LPS_TO_RAS @ volume.affine_lps)
    img.header["descrip"] = b"CT HU (sarcoscope viewer)"
    with atomic_private_file(path) as f:
        write_gzip(img.to_bytes(), f, level=1)
