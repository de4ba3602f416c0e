"""DICOM CT series -> CTVolume: find the image files, pick one series, order, decode and rescale to HU.

Real exports are messy: several series (and scouts, dose reports, SR/SEG objects) in one folder, files
without extension, shuffled names, missing InstanceNumber, compressed pixel data, padding values, gaps and
gantry tilt. Everything that is skipped or odd is reported in `CTVolume.warnings`; what makes the input
unusable raises InputError naming the file.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

from sarcoscope.errors import InputError
from sarcoscope.imaging.dicom_pixels import DicomFile, float_list, raw_text, to_hu
from sarcoscope.imaging.multiframe import frame_count, orientation_cosines, read_multiframe
from sarcoscope.imaging.volume import CTMetadata, CTVolume, plane_of_normal, turn_axial_to_standard

#: Values larger than this (the pixel data) are read from the file only when decoded: each file is parsed
#: once, and the pixel bytes of series that are not read never enter memory.
DEFER_BYTES = 64 * 1024
#: Skip reasons that mean the file is damaged rather than of another kind.
_TRUNCATED_HEADER = "DICOM file without Modality or SOP Class (truncated?)"
_TRUNCATED_IMAGE = "CT image header without pixel data (truncated?)"
_CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
#: A Modality (a code string) and a SOP Class UID as a skip reason may quote them: well formed only. An
#: element whose length was damaged holds the header after it too (the patient's name, dates, UIDs).
_MODALITY = re.compile(r"[A-Z0-9 _]{1,16}")
_SOP_CLASS = re.compile(r"[0-9.]{1,64}")


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in an input, for choosing with `read_ct(path, series_uid=...)`."""

    series_uid: str
    description: str
    n_slices: int
    modality: str
    orientation: str  # "axial" | "coronal" | "sagittal" | "unknown"
    series_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    note: str = ""  # what is special about it (not axial, NIfTI...)
    patient_id: str = ""  # to tell apart the series of several patients in one folder
    slice_thickness_mm: float | None = None  # SliceThickness of its first image
    phase: str | None = None  # contrast phase when the headers tell it (see contrast_phase)
    study_uid: str = ""  # StudyInstanceUID of its first image: the patient of a series without PatientID

    @property
    def patient(self) -> str | None:
        """Whose series this is, as the reader tells patients apart (see patient_key): the PatientID, or
        without one the study. Two series without PatientID are one patient's only within one study."""
        return patient_key(self.patient_id, self.study_uid)


#: Words of series descriptions that name a contrast phase, tried in this order ("non-contrast" before the
#: agent; "portal venous" is one phase, as is "venous" alone on an abdominal CT).
_PHASE_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "non-contrast",
        re.compile(r"\b(non[- ]?contrast|nativ|native|unenhanced|plain|w/o|without contrast)\b"),
    ),
    ("arterial", re.compile(r"\b(arterial|arteriell|art|angio)\b")),
    ("portal-venous", re.compile(r"\b(portal|porto ?venous|pv|venous|ven[oö]s)\b")),
    ("delayed", re.compile(r"\b(delayed|late|equilibrium)\b")),
)


def contrast_phase(description: str | None, contrast_agent: str | None) -> str | None:
    """The contrast phase as the series' headers tell it, to help the user pick a series: from words of its
    description, else "contrast" when a contrast agent is recorded; None when they do not say (muscle
    attenuation depends on the phase, so a guess would mislead)."""
    text = (description or "").lower()
    for phase, words in _PHASE_WORDS:
        if words.search(text):
            return phase
    return "contrast" if contrast_agent and contrast_agent.strip() else None


def patient_key(patient_id: str | None, study_uid: str | None) -> str | None:
    """What identifies the patient (for pseudonyms, date offsets, and telling the patients of one folder
    apart): PatientID; without one, the study (each such study then counts as a patient of its own: no
    patient is merged with another); None without both."""
    if patient_id and patient_id.strip():
        return patient_id.strip()
    if study_uid and study_uid.strip():
        return f"study:{study_uid.strip()}"
    return None


def _is_dicom_candidate(path: Path) -> bool:
    return path.is_file() and path.name.upper() != "DICOMDIR" and not path.name.startswith(".")


def _iter_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = [Path(d) / f for d, _, names in os.walk(root) for f in names]
    return sorted(p for p in files if _is_dicom_candidate(p))


def _read_header(path: Path) -> Dataset | None:
    """Parse one file; None when it is not DICOM. A DICOM file that cannot be parsed raises InputError."""
    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        # DICOM written without the 128-byte preamble usually starts with an implicit-VR (0008,xxxx) tag.
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] != b"\x08\x00":
            return None
        try:
            return pydicom.dcmread(path, defer_size=DEFER_BYTES, force=True)
        except Exception as exc:
            raise InputError(f"corrupt DICOM file {path}: {exc}") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(f"corrupt or truncated DICOM file {path}: {exc}") from exc


def _frames(ds: Dataset) -> int:
    try:
        return int(float(raw_text(ds, "NumberOfFrames") or 1))
    except ValueError:
        return 1


def _skip_reason(ds: Dataset) -> str | None:
    """Why this DICOM object is not an axial-CT-series candidate (None = candidate)."""
    sop = raw_text(ds, "SOPClassUID") or ""
    if sop == MediaStorageDirectoryStorage:
        return "DICOMDIR"
    modality = (raw_text(ds, "Modality") or "").upper()
    if not modality and not sop:
        return _TRUNCATED_HEADER
    if modality != "CT" and not (modality == "" and sop in _CT_SOP_CLASSES):
        if modality:
            return modality if _MODALITY.fullmatch(modality) else "object of a malformed modality"
        return f"object without modality (SOP class {sop if _SOP_CLASS.fullmatch(sop) else 'malformed'})"
    if "Rows" not in ds or "PixelData" not in ds:
        # A CT image (by SOP class, or without one) that lacks them was cut short; other CT objects
        # (raw data, private classes) simply carry no image.
        return _TRUNCATED_IMAGE if sop in _CT_SOP_CLASSES or not sop else "CT object without image"
    if not int(ds.get("Rows") or 0) or not int(ds.get("Columns") or 0):
        return "image of 0 rows or columns"
    image_type = (raw_text(ds, "ImageType") or "").upper().split("\\")
    if "LOCALIZER" in (v.strip() for v in image_type):
        return "localizer"
    photometric = raw_text(ds, "PhotometricInterpretation") or ""
    if int(ds.get("SamplesPerPixel", 1)) != 1 or not photometric.startswith("MONOCHROME"):
        return "colour (RGB) image"
    if _frames(ds) > 1:
        return None  # enhanced CT: geometry lives in the functional groups
    if "ImageOrientationPatient" not in ds and "ImagePositionPatient" not in ds and "PixelSpacing" not in ds:
        return "CT image without geometry"
    return None


def _summary(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counter.most_common())


def _orientation_key(ds: Dataset) -> tuple[float, ...]:
    iop = float_list(ds, "ImageOrientationPatient")
    # a NaN would make every image its own group (NaN != NaN): unusable values group as missing ones
    return tuple(round(v, 2) for v in iop) if iop and len(iop) == 6 and all(map(math.isfinite, iop)) else ()


@dataclass
class _Series:
    uid: str
    files: list[DicomFile]
    multiframe: bool = False  # one enhanced CT file holds all slices

    @property
    def first(self) -> Dataset:
        return self.files[0].ds

    @property
    def n_slices(self) -> int:
        return frame_count(self.first) if self.multiframe else len(self.files)

    @property
    def orientation(self) -> str:
        key = orientation_cosines(self.first) if self.multiframe else _orientation_key(self.first)
        if not key:
            return "unknown"
        return plane_of_normal(np.cross(key[:3], key[3:]))

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "")

    @property
    def patient(self) -> str | None:
        return patient_key(raw_text(self.first, "PatientID"), raw_text(self.first, "StudyInstanceUID"))


class _Scan:
    """All files under a path, classified; candidate CT images grouped by series."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n_files = 0
        self.skipped: Counter[str] = Counter()
        self.series: dict[str, _Series] = {}
        self.damaged: list[tuple[Path, str, str | None]] = []  # path, reason, series uid if readable
        for path in _iter_files(root):
            self.n_files += 1
            ds = _read_header(path)
            if ds is None:
                self.skipped["not DICOM"] += 1
                continue
            reason = _skip_reason(ds)
            if reason is not None:
                self.skipped[reason] += 1
                if reason in (_TRUNCATED_HEADER, _TRUNCATED_IMAGE):
                    self.damaged.append((path, reason, raw_text(ds, "SeriesInstanceUID")))
                continue
            uid = raw_text(ds, "SeriesInstanceUID") or ""
            if _frames(ds) > 1:
                # each multi-frame file is a volume of its own
                key = uid if uid not in self.series else f"{uid}#{raw_text(ds, 'SOPInstanceUID')}"
                self.series[key] = _Series(key, [DicomFile(path, ds)], multiframe=True)
                continue
            if uid in self.series and self.series[uid].multiframe:
                uid = f"{uid}#single-frame"
            self.series.setdefault(uid, _Series(uid, [])).files.append(DicomFile(path, ds))
        for series in self.series.values():
            if not series.multiframe:
                self._keep_majority_geometry(series)

    def _keep_majority_geometry(self, series: _Series) -> None:
        """Drop images whose orientation or size differs from most of the series (scouts mixed in)."""

        def key(f: DicomFile) -> tuple:
            return (_orientation_key(f.ds), int(f.ds.get("Rows", 0)), int(f.ds.get("Columns", 0)))

        counts = Counter(key(f) for f in series.files)
        if len(counts) > 1:
            majority = counts.most_common(1)[0][0]
            n_before = len(series.files)
            series.files = [f for f in series.files if key(f) == majority]
            self.skipped["image with another orientation or size than its series"] += n_before - len(
                series.files
            )

    def infos(self) -> list[SeriesInfo]:
        infos = []
        for s in self.series.values():
            number = s.first.get("SeriesNumber")
            infos.append(
                SeriesInfo(
                    series_uid=s.uid,
                    description=s.description,
                    n_slices=s.n_slices,
                    modality=str(s.first.get("Modality", "CT") or "CT"),
                    orientation=s.orientation,
                    series_number=int(number) if number not in (None, "") else None,
                    rows=int(s.first.Rows),
                    columns=int(s.first.Columns),
                    note=("multi-frame (enhanced) CT; " if s.multiframe else "")
                    + ("" if s.orientation == "axial" else "not axial: L3 analysis needs an axial series"),
                    patient_id=raw_text(s.first, "PatientID") or "",
                    slice_thickness_mm=_number(s.first, "SliceThickness"),
                    phase=contrast_phase(s.description, raw_text(s.first, "ContrastBolusAgent")),
                    study_uid=raw_text(s.first, "StudyInstanceUID") or "",
                )
            )
        return sorted(infos, key=lambda i: (i.orientation != "axial", -i.n_slices, i.series_uid))

    def nothing_usable(self) -> InputError:
        if self.n_files == 0:
            return InputError(f"no files in {self.root}")
        found = _summary(self.skipped)
        if self.root.is_file():
            return InputError(f"{self.root} is not a readable CT image (DICOM, NIfTI or zip): {found}")
        hint = ""
        if any(p.name.lower().endswith((".nii", ".nii.gz")) for p in _iter_files(self.root)):
            hint = "; give the NIfTI file itself as input"
        files = f"{self.n_files} file{'s' * (self.n_files != 1)}"
        return InputError(f"no CT image series in {self.root} (found {files}: {found}){hint}")


def list_dicom_series(root: Path) -> list[SeriesInfo]:
    """CT image series under `root` (a folder or one file), axial with most slices first."""
    return _Scan(root).infos()


def read_dicom_surveyed(
    root: Path, series_uid: str | None = None
) -> tuple[CTVolume, list[SeriesInfo], list[Path]]:
    """`read_dicom`, with the CT image series under `root` (as list_dicom_series) and the files that reading
    any of them needs: their images and the damaged files that would refuse them (everything else there,
    reports, localizers, other files, is no part of a series to read). One reading of the headers for both:
    an upload reads one series and keeps the others."""
    scan = _Scan(root)
    infos = scan.infos()  # before reading one series changes its headers
    files = [f.path for s in scan.series.values() for f in s.files] + [path for path, _, _ in scan.damaged]
    return _read_scan(scan, series_uid, None, detach=False), infos, files


def read_dicom(
    root: Path, series_uid: str | None = None, source_path: str | None = None, *, detach: bool = False
) -> CTVolume:
    """Read the chosen (or best) CT series under `root` into a CTVolume.

    `detach=True` loads every header value still deferred to its file, for files about to be deleted
    (extracted archives); otherwise values above DEFER_BYTES other than the pixel data (rare large private
    elements) are read from the file when first accessed.
    """
    return _read_scan(_Scan(root), series_uid, source_path, detach=detach)


def _read_scan(scan: _Scan, series_uid: str | None, source_path: str | None, *, detach: bool) -> CTVolume:
    root = scan.root
    if not scan.series:
        raise scan.nothing_usable()
    infos = scan.infos()
    if series_uid is not None:
        if series_uid not in scan.series:
            listed = ", ".join(f"{i.series_uid} ({i.description!r}, {i.n_slices} slices)" for i in infos)
            raise InputError(f"series {series_uid} not found in {root}; CT series there: {listed}")
        chosen = series_uid
    else:
        _refuse_several_patients(scan)
        chosen = infos[0].series_uid
    for path, reason, uid in scan.damaged:
        if uid is None or uid == chosen:
            raise InputError(f"damaged DICOM file {path}: {reason}")
    _refuse_without_sop_class(scan.series[chosen])
    warnings: list[str] = []
    if scan.skipped:
        n = sum(scan.skipped.values())
        warnings.append(f"skipped {n} file{'s' * (n != 1)} in {root}: {_summary(scan.skipped)}")
    others = [i for i in infos if i.series_uid != chosen]
    if others:
        pick = next(i for i in infos if i.series_uid == chosen)
        listed = "; ".join(
            f"{i.series_uid} ({i.description!r}, {i.n_slices} {i.orientation} slices)" for i in others
        )
        warnings.append(
            f"{len(infos)} CT series found; read {pick.series_uid} ({pick.description!r}, {pick.n_slices} "
            f"{pick.orientation} slices); others: {listed} "
            "(choose one with --series, or series_uid= in Python)"
        )
    series = scan.series[chosen]
    if series.multiframe:
        meta = metadata_from_header(series.first, warnings)
        volume = read_multiframe(series.files[0].path, meta, warnings)
    else:
        volume = _read_series(series.files, warnings)
    volume.source_path = source_path or str(root)
    if detach:
        for header in volume.dicom_headers or []:
            for tag in list(header.keys()):
                elem = header.get_item(tag)
                if isinstance(elem, RawDataElement) and elem.value is None:
                    header[tag]  # reads the deferred value now
    return volume


def _sop_class(ds: Dataset) -> str:
    """The image's SOP Class UID, or its file meta's Media Storage SOP Class UID when it has none."""
    meta = getattr(ds, "file_meta", None)
    stored = raw_text(meta, "MediaStorageSOPClassUID") if meta is not None else None
    return (raw_text(ds, "SOPClassUID") or stored or "").strip()


def _refuse_without_sop_class(series: _Series) -> None:
    """Refuse a series with an image that says nowhere what kind of object it is (no SOP Class UID, none in
    its file meta either; DICOM requires one): such a file is incomplete, cannot be stored with UIDs
    written in (its file meta needs the class) nor referenced by a DICOM SEG or SR, so every entry point
    refuses it here, naming the file, instead of failing later in one of them."""
    lacking = [f for f in series.files if not _sop_class(f.ds)]
    if lacking:
        n = len(lacking)
        raise InputError(
            f"{lacking[0].path}{f' and {n - 1} other image(s) of its series' if n > 1 else ''} "
            f"{'has' if n == 1 else 'have'} no SOP Class UID (nor one in the file meta): an incomplete DICOM "
            "image, which cannot be stored or referenced by the results; export the series again from the "
            "archive"
        )


def _refuse_several_patients(scan: _Scan) -> None:
    """Refuse to pick a series among several patients' (a folder of mixed exports): the one picked, by
    slice count, could be the wrong patient's, and its report would name that patient as if asked for."""
    patients = {s.patient for s in scan.series.values()} - {None}
    if len(patients) > 1:
        raise InputError(
            f"{scan.root} holds the CT series of {len(patients)} patients (different PatientID, or different "
            "studies without one); one analysis is one patient's: choose a series with --series UID "
            "(`sarcoscope series` lists them with their patient), or give each patient's images a folder of "
            "their own."
        )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _order_slices(
    files: list[DicomFile], warnings: list[str]
) -> tuple[list[DicomFile], np.ndarray, np.ndarray]:
    """Sort by position along the slice normal; drop duplicates. Returns files, positions, direction."""
    first = files[0].ds
    iop = float_list(first, "ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        if len(files) > 1:
            raise InputError(f"{files[0].path} has no ImageOrientationPatient; cannot order the slices")
        warnings.append(f"{files[0].path} has no ImageOrientationPatient; assumed a standard axial slice")
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    row_raw, col_raw = np.array(iop[:3]), np.array(iop[3:])
    norms = (float(np.linalg.norm(row_raw)), float(np.linalg.norm(col_raw)))
    if not all(0.5 < n < 1.5 for n in norms) or abs(float(row_raw @ col_raw)) > 0.1 * norms[0] * norms[1]:
        raise InputError(
            f"{files[0].path} has an invalid ImageOrientationPatient {iop}: the row and column directions "
            "must be perpendicular unit vectors"
        )
    row, col = _unit(row_raw), _unit(col_raw)
    normal = _unit(np.cross(row, col))
    direction = np.column_stack([row, col, normal])

    ipps = []
    for f in files:
        ipp = float_list(f.ds, "ImagePositionPatient")
        if ipp is None or len(ipp) != 3:
            if len(files) > 1:
                raise InputError(f"{f.path} has no ImagePositionPatient; cannot order the slices by position")
            ipp = [0.0, 0.0, 0.0]
            warnings.append(f"{f.path} has no ImagePositionPatient; origin set to (0, 0, 0)")
        if not all(map(math.isfinite, ipp)):
            raise InputError(f"{f.path} has an unusable ImagePositionPatient {ipp}; cannot place the slice")
        ipps.append(ipp)
    points = np.asarray(ipps, dtype=float)
    proj = points @ normal
    order = np.argsort(proj, kind="stable")
    files = [files[i] for i in order]
    points, proj = points[order], proj[order]

    if len(files) > 1:
        keep = np.concatenate([[True], np.diff(proj) > 1e-3])
        if 2 * keep.sum() < len(keep):  # not a doubled export: the positions do not describe one volume
            raise InputError(
                f"{len(keep)} slices of the series {files[0].path.parent} lie at only {int(keep.sum())} "
                "distinct position(s) along the slice normal: their ImagePositionPatient cannot order them "
                "into one volume (a mis-exported series, or images of other planes). Give one file to "
                "analyse a single image."
            )
        if not keep.all():
            dup = sorted({round(float(p), 3) for p in proj[~keep]})
            warnings.append(
                f"{int((~keep).sum())} slices duplicate the position of another slice (at {_mm_list(dup)} "
                "along the slice normal); kept the first of each"
            )
            files = [f for f, k in zip(files, keep, strict=True) if k]
            points, proj = points[keep], proj[keep]
    return files, points, direction


def _mm_list(values: Iterable[float], limit: int = 8) -> str:
    vals = list(values)
    text = ", ".join(f"{v:g} mm" for v in vals[:limit])
    return text + (f" and {len(vals) - limit} more" if len(vals) > limit else "")


def _check_spacing(proj: np.ndarray, warnings: list[str]) -> float:
    """Median slice distance; uneven distances (gaps, missing slices) go into warnings."""
    gaps = np.diff(proj)
    dz = round(float(np.median(gaps)), 5)  # DS positions carry ~6 decimals
    tol = max(0.05 * dz, 0.01)
    bad = np.flatnonzero(np.abs(gaps - dz) > tol)
    if bad.size:
        pairs = [f"{proj[i]:g}->{proj[i + 1]:g} mm ({gaps[i]:g} mm)" for i in bad[:8]]
        more = f" and {bad.size - 8} more" if bad.size > 8 else ""
        missing = int(np.sum(np.maximum(np.rint(gaps[bad] / dz) - 1, 0)))
        warnings.append(
            f"uneven slice spacing: expected {dz:g} mm, found {', '.join(pairs)}{more}"
            + (f"; about {missing} slices missing" if missing else "")
            + "; z positions in slice_positions are exact, but the array assumes even spacing"
        )
    return dz


def _check_tilt(files: list[DicomFile], points: np.ndarray, normal: np.ndarray, warnings: list[str]) -> None:
    tilts = {(float_list(f.ds, "GantryDetectorTilt") or [0.0])[0] for f in files}
    tilts.discard(0.0)
    angle = 0.0
    if len(points) > 1:
        step = points[-1] - points[0]
        cos = abs(float(step @ normal)) / float(np.linalg.norm(step))
        angle = math.degrees(math.acos(min(1.0, cos)))
    if angle > 0.5 or tilts:
        detail = f"slice positions progress {angle:.1f}° off the slice normal" if angle > 0.5 else ""
        if tilts:
            detail += ("; " if detail else "") + f"GantryDetectorTilt {sorted(tilts)}°"
        warnings.append(
            f"gantry tilt: {detail}; slices are sheared, not resampled (areas per slice are unaffected, "
            "3D geometry is approximate)"
        )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value) or None
    return str(value).strip() or None


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) and number > 0 else None


def _age_years(text: str | None) -> float | None:
    """DICOM AS ("063Y", "006M", "010W", "003D") in years."""
    if not text or len(text) != 4 or not text[:3].isdigit():
        return None
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}.get(text[3].upper())
    return int(text[:3]) / per_year if per_year else None


def _height_m(ds: Dataset, warnings: list[str]) -> float | None:
    """PatientSize in metres; centimetres (a common site error) are converted, nonsense dropped."""
    value = _number(ds, "PatientSize")
    if value is None or 0.4 <= value <= 2.5:
        return value
    if 40 <= value <= 250:
        warnings.append(f"PatientSize {value:g} looks like centimetres; used {value / 100:g} m")
        return value / 100
    warnings.append(f"PatientSize {value:g} m is implausible; height ignored")
    return None


def _weight_kg(ds: Dataset, warnings: list[str]) -> float | None:
    value = _number(ds, "PatientWeight")
    if value is not None and not 1 <= value <= 400:
        warnings.append(f"PatientWeight {value:g} kg is implausible; weight ignored")
        return None
    return value


def metadata_from_header(ds: Dataset, warnings: list[str] | None = None) -> CTMetadata:
    """Patient and acquisition facts from one CT image header; implausible values noted in `warnings`."""
    notes = warnings if warnings is not None else []
    sex = (_text(ds, "PatientSex") or "").upper()
    return CTMetadata(
        patient_id=_text(ds, "PatientID"),
        patient_sex=sex if sex in ("M", "F") else None,
        patient_age_years=_age_years(_text(ds, "PatientAge")),
        patient_height_m=_height_m(ds, notes),
        patient_weight_kg=_weight_kg(ds, notes),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        kvp=_number(ds, "KVP"),
        manufacturer=_text(ds, "Manufacturer"),
        manufacturer_model=_text(ds, "ManufacturerModelName"),
        study_date=_text(ds, "StudyDate"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        series_description=_text(ds, "SeriesDescription"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        slice_thickness_mm=_number(ds, "SliceThickness"),
        convolution_kernel=_text(ds, "ConvolutionKernel"),
    )


def _check_uniform(files: list[DicomFile]) -> None:
    """Refuse a series whose images differ in pixel size or pixel encoding: it is read with the first
    image's values, which would silently misread (or mismeasure) the others."""
    first = files[0]
    spacing = float_list(first.ds, "PixelSpacing")
    for f in files[1:]:
        other = float_list(f.ds, "PixelSpacing")
        if (
            spacing
            and other
            and (len(other) != len(spacing) or np.max(np.abs(np.subtract(other, spacing))) > 1e-3)
        ):
            raise InputError(
                f"the images of one series have different PixelSpacing ({spacing} in {first.path}, "
                f"{other} in {f.path}); areas would be wrong"
            )
        for keyword in ("PixelRepresentation", "BitsAllocated", "BitsStored"):
            if f.ds.get(keyword) != first.ds.get(keyword):
                raise InputError(
                    f"the images of one series differ in {keyword} ({first.ds.get(keyword)} in {first.path}, "
                    f"{f.ds.get(keyword)} in {f.path}); their pixel values cannot be read alike"
                )


def _check_one_patient(files: list[DicomFile], warnings: list[str]) -> None:
    """Refuse a series whose images name different patients (a mis-merged export: the L3 slice could be
    another patient's) or different studies (a series belongs to one study: its UID reused by another, as
    anonymisers and copied exports do, and the files of two studies, two patients without PatientID or
    with one placeholder such as ANONYMOUS, were read as one CT); warn when they name different frames of
    reference (positions may not compare)."""
    first = files[0]
    for keyword, whose in (("PatientID", "patients"), ("StudyInstanceUID", "studies")):
        value = raw_text(first.ds, keyword)
        other = next((f for f in files[1:] if (raw_text(f.ds, keyword) or value) != value), None)
        if value and other is not None:
            raise InputError(
                f"the images of one series belong to different {whose} ({keyword} differs between "
                f"{first.path} and {other.path}); separate the {whose}' images before analysing"
            )
    frames = {raw_text(f.ds, "FrameOfReferenceUID") for f in files} - {None}
    if len(frames) > 1:
        warnings.append(
            f"the images of the series name {len(frames)} frames of reference: their positions may not be "
            "comparable; check the slice order on the QC picture"
        )


def _read_series(files: list[DicomFile], warnings: list[str]) -> CTVolume:
    _check_uniform(files)
    _check_one_patient(files, warnings)
    files, points, direction = _order_slices(files, warnings)
    first = files[0].ds
    normal = direction[:, 2]
    proj = points @ normal
    if len(files) > 1:
        dz = _check_spacing(proj, warnings)
        _check_tilt(files, points, normal, warnings)
    else:
        dz = _number(first, "SpacingBetweenSlices") or _number(first, "SliceThickness") or 1.0
    spacing_yx = float_list(first, "PixelSpacing")
    if spacing_yx is None or len(spacing_yx) != 2 or min(spacing_yx) <= 0:
        raise InputError(f"{files[0].path} has no valid PixelSpacing; areas cannot be measured")
    hu = to_hu(files, warnings)
    origin = np.asarray(points[0], dtype=float)
    flip = (False, False)
    plane = plane_of_normal(normal)
    if plane != "axial":
        warnings.append(
            f"the series is {plane}, not axial: it was read as acquired (slices are {plane} planes); "
            "L3 analysis needs an axial series"
        )
    else:
        direction, origin, flip = turn_axial_to_standard(hu, direction, origin, spacing_yx, warnings)
    return CTVolume(
        hu=hu,
        spacing=(dz, spacing_yx[0], spacing_yx[1]),
        origin=tuple(float(v) for v in origin),
        direction=direction,
        metadata=metadata_from_header(first, warnings),
        source_kind="dicom",
        slice_positions=proj,
        dicom_headers=[f.ds for f in files],
        warnings=warnings,
        stored_flip=flip,
    )
