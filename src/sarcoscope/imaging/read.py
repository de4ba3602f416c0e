"""One entry point for every CT input: DICOM folder, single DICOM file, zip of DICOM, NIfTI."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sarcoscope.errors import InputError
from sarcoscope.imaging.archive import extract_zip
from sarcoscope.imaging.dicom_reader import SeriesInfo, list_dicom_series, read_dicom
from sarcoscope.imaging.nifti import is_nifti, read_nifti
from sarcoscope.imaging.volume import CTVolume


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input not found: {p}")
    return p


@contextmanager
def _extracted(archive: Path) -> Iterator[Path]:
    """Extract a zip to a temporary folder; messages about the folder name the zip instead."""
    with tempfile.TemporaryDirectory(prefix="sarcoscope-zip-") as tmp:
        try:
            extract_zip(archive, Path(tmp))
            yield Path(tmp)
        except InputError as exc:
            raise InputError(str(exc).replace(tmp, f"zip {archive}")) from exc


def read_ct(path: str | Path, series_uid: str | None = None) -> CTVolume:
    """Read a CT as HU (z, y, x); oddities go into `volume.warnings`, unusable input raises InputError.

    Accepts a folder of DICOM files (searched recursively; the axial CT series with most slices is read
    unless `series_uid` is given), one DICOM file, a .zip of DICOM files, or a .nii/.nii.gz file.
    """
    p = _existing(path)
    if p.is_file() and is_nifti(p):
        return read_nifti(p)
    if p.is_file() and p.suffix.lower() == ".zip":
        with _extracted(p) as tmp:
            niftis = [f for f in tmp.rglob("*") if f.is_file() and is_nifti(f)]
            if len(niftis) == 1 and not list_dicom_series(tmp):
                volume = read_nifti(niftis[0])
            else:
                volume = read_dicom(tmp, series_uid, detach=True)
            volume.source_path = str(p)
            volume.warnings = [w.replace(str(tmp), f"zip {p.name}") for w in volume.warnings]
            return volume
    if p.is_dir() and not any(p.iterdir()):
        raise InputError(f"folder {p} is empty")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"file {p} is empty")
    return read_dicom(p, series_uid)


def list_series(path: str | Path) -> list[SeriesInfo]:
    """The CT image series in an input (axial with most slices first): what `read_ct` can choose from."""
    p = _existing(path)
    if p.is_file() and is_nifti(p):
        volume = read_nifti(p)
        return [
            SeriesInfo(
                series_uid="",
                description=p.name,
                n_slices=volume.n_slices,
                modality="CT",
                orientation=volume.orientation,
                rows=volume.shape[1],
                columns=volume.shape[2],
                note="NIfTI file",
            )
        ]
    if p.is_file() and p.suffix.lower() == ".zip":
        with _extracted(p) as tmp:
            return list_dicom_series(tmp)
    return list_dicom_series(p)
