"""De-identification of DICOM files: one file to bytes (the web app's download), and a file, folder or zip
into a new folder (`sarcoscope deidentify`), which refuses a damaged file rather than write an incomplete
copy.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length

from sarcoscope.errors import InputError, OutputError
from sarcoscope.fileio import check_outside_input, partial_beside, remove_left_partials
from sarcoscope.imaging.deidentify.policy import DeidentificationError, DeidentificationPolicy
from sarcoscope.imaging.deidentify.profile import deidentify_dataset
from sarcoscope.imaging.deidentify.refusals import (
    burned_in_problem,
    document_name,
    encapsulated_document_problem,
    image_name,
)
from sarcoscope.imaging.dicom_pixels import _transfer_syntax
from sarcoscope.imaging.dicom_reader import _iter_files, _read_header
from sarcoscope.imaging.read import _existing, _extracted


def deidentify_file(path: Path, policy: DeidentificationPolicy, source: str | None = None) -> bytes:
    """The DICOM file at `path`, de-identified, as bytes (the file itself is not changed); `source` names it
    in a refusal (default: the path, for the user's own files; the web app names the slice instead)."""
    ds = pydicom.dcmread(path)
    deidentify_dataset(ds, policy, source=str(path) if source is None else source)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class DeidentifySummary:
    """What `deidentify_tree` did; `burned_in_refused` names the images left out for burned-in text by
    their de-identified UIDs (image_name), never by their files' names, which may name the patient."""

    out_dir: Path
    written: int = 0
    non_dicom: int = 0
    duplicates: int = 0
    burned_in_refused: list[str] = field(default_factory=list)
    burned_in_accepted: int = 0
    #: encapsulated documents (PDF, CDA...) left out, by their de-identified UIDs: their text stays theirs
    documents_refused: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)


def deidentify_tree(
    src: Path,
    out_dir: Path,
    policy: DeidentificationPolicy,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DeidentifySummary:
    """De-identify every DICOM file of a file, folder or zip into the new folder `out_dir`.

    Files are written as `<pseudonym>/<study UID>/<series UID>/<SOP instance UID>.dcm` (remapped values: the
    input's file names may carry names); non-DICOM files are counted and skipped. Images with burned-in
    annotation are left out (listed in the summary) unless the policy accepts them, and so are encapsulated
    documents (PDF, CDA...: their own text is out of the profile's reach); a single input file with
    burned-in annotation, or a document, is refused. Everything is written into a temporary folder beside
    `out_dir` and renamed at the end: a failed run leaves no `out_dir`.
    """
    src = _existing(src)
    out_dir = Path(out_dir)
    check_outside_input(out_dir, src)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"Output folder {out_dir} exists and is not empty; give a new or empty folder.")
    if src.is_file() and src.suffix.lower() == ".zip":
        with _extracted(src) as tmp:
            return _deidentify_files(_iter_files(tmp), out_dir, policy, progress, single=False)
    return _deidentify_files(_iter_files(src), out_dir, policy, progress, single=src.is_file())


def _deidentify_files(
    files: list[Path],
    out_dir: Path,
    policy: DeidentificationPolicy,
    progress: Callable[[int, int], None] | None,
    *,
    single: bool,
) -> DeidentifySummary:
    summary = DeidentifySummary(out_dir=out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_left_partials(out_dir)  # those killed runs left beside it (an earlier version's stay)
        partial = partial_beside(out_dir)  # private (0700) until its owner decides to share it
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc}") from exc
    tmp = Path(partial.name)
    try:
        for done, path in enumerate(files, start=1):
            _deidentify_one(path, policy, tmp, summary, single=single, place=(done, len(files)))
            if progress is not None:
                progress(done, len(files))
        if summary.written == 0:
            raise DeidentificationError(
                f"No DICOM file could be de-identified ({summary.non_dicom} non-DICOM file(s), "
                f"{len(summary.burned_in_refused)} refused for burned-in annotation, "
                f"{len(summary.documents_refused)} encapsulated document(s) left out)."
            )
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); replaced by the finished folder
        os.replace(tmp, out_dir)
    except OSError as exc:
        raise OutputError(f"Cannot write the de-identified files into {out_dir}: {exc}") from exc
    finally:
        partial.cleanup()  # and its lock file; the folder is gone when it became out_dir
    return summary


_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _header_cut_short(ds: Dataset) -> str | None:
    """Why a file that holds no image part is not whole, or None: an image storage object (by its SOP
    class, or the file meta's when the cut came before it) whose header ends before Rows, as a copy broken
    off in its header reads. pydicom parses such a file without complaint."""
    if "Rows" in ds or "PixelDataProviderURL" in ds or any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        return None
    file_meta = getattr(ds, "file_meta", None)
    stored = file_meta.get("MediaStorageSOPClassUID", "") if file_meta is not None else ""
    sop_class = pydicom.uid.UID(str(ds.get("SOPClassUID", "") or stored or ""))
    if "Image Storage" not in sop_class.name:
        return None  # not an image (an SR, a presentation state...), or no class to tell
    return f"a {sop_class.name} header that ends before its image (no Rows, Columns or pixel data)"


def _pixel_data_damage(ds: Dataset) -> str | None:
    """Why an image's pixel data is not whole (missing, or shorter than its header says: a file cut short;
    or the header itself cut before the image), or None. Its bytes are copied as they are, so a broken
    image would pass for a whole one. A cut compressed image has no end of its fragments and is refused
    when parsed (_read_header)."""
    cut = _header_cut_short(ds)
    if cut is not None:
        return f"{cut} (truncated)"
    if "Rows" not in ds or "Columns" not in ds or "PixelDataProviderURL" in ds:
        return None  # not an image, or its pixels are elsewhere
    if not any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        return "an image header (Rows, Columns) without pixel data"
    if "PixelData" not in ds or _transfer_syntax(ds).is_compressed:
        return None
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # a header that does not say how long its pixels are: nothing to compare with
    found = len(ds.PixelData or b"")
    if found < expected:
        return (
            f"{found} bytes of pixel data where its Rows, Columns, frames, samples and bits need {expected} "
            "(truncated)"
        )
    return None


def _deidentify_one(
    path: Path,
    policy: DeidentificationPolicy,
    tmp: Path,
    summary: DeidentifySummary,
    *,
    single: bool,
    place: tuple[int, int] = (1, 1),
) -> None:
    """De-identify one file into `tmp`; `place` (its number, of how many) names it in an error when its
    path is scrubbed from the message (a de-identifying run's console shows no file name)."""
    ds = _read_header(path)  # large values (pixel data) are read from the file when written
    if ds is None:
        summary.non_dicom += 1
        return
    damage = _pixel_data_damage(ds)
    if damage is not None:
        raise InputError(
            f"damaged DICOM file {path} (file {place[0]} of {place[1]}, sorted by path): {damage}; nothing "
            "was written (the copy would not be complete): replace or remove the file, then run again"
        )
    document = encapsulated_document_problem(ds)
    if document is not None and not single:  # one file on its own is refused (deidentify_dataset)
        summary.documents_refused.append(f"{document_name(ds, policy)} ({document})")
        return
    problem = burned_in_problem(ds)
    if problem is not None and not policy.accept_burned_in and not single:
        summary.burned_in_refused.append(f"{image_name(ds, policy)} ({problem})")
        return
    # named by its de-identified UID: the file's name and folders may name the patient
    deidentify_dataset(ds, policy)
    summary.burned_in_accepted += problem is not None
    names = (str(ds.PatientID), ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"))
    instance = ds.get("SOPInstanceUID") or uuid.uuid4().hex
    target = tmp.joinpath(*(str(n or "unknown") for n in names), f"{instance}.dcm")
    if target.exists():
        summary.duplicates += 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(target, enforce_file_format=True)
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{path}: cannot be written as a DICOM file after de-identification: {exc}") from exc
    summary.written += 1
    summary.patients.add(str(ds.PatientID))
