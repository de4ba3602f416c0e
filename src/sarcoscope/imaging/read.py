"""One entry point for every CT input: DICOM folder, single DICOM file, zip of DICOM, NIfTI."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sarcoscope.errors import InputError
from sarcoscope.fileio import images_temp_dir
from sarcoscope.imaging.archive import extract_zip
from sarcoscope.imaging.dicom_reader import SeriesInfo, list_dicom_series, read_dicom, read_dicom_surveyed
from sarcoscope.imaging.nifti import is_nifti, read_nifti
from sarcoscope.imaging.volume import PIXEL_SPACING_RANGE_MM, CTVolume


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input not found: {p}")
    try:
        str(p).encode("utf-8")
    except UnicodeEncodeError:  # a name in another encoding (shares, USB exports): no output could name it
        raise InputError(
            f"The path {str(p)!a} is not valid UTF-8 (a file name in another encoding); rename it."
        ) from None
    return p


@contextmanager
def _extracted(archive: Path) -> Iterator[Path]:
    """Extract a zip to a temporary folder; messages about the folder name the zip instead."""
    with images_temp_dir("zip") as tmp:
        try:
            extract_zip(archive, Path(tmp))
            yield Path(tmp)
        except InputError as exc:
            raise InputError(str(exc).replace(tmp, f"zip {archive}")) from exc


def check_pixel_spacing(spacing: tuple[float, float], where: str) -> None:
    """Refuse a pixel spacing no CT has: every area would be wrong by its square."""
    lo, hi = PIXEL_SPACING_RANGE_MM
    if not all(math.isfinite(v) and lo <= v <= hi for v in spacing):
        raise InputError(
            f"{where}: pixel spacing {spacing[0]:g} x {spacing[1]:g} mm is not plausible for CT "
            f"(expected {lo:g} to {hi:g} mm)"
        )


def read_ct(
    path: str | Path, series_uid: str | None = None, pixel_spacing: tuple[float, float] | None = None
) -> CTVolume:
    """Read a CT as HU (z, y, x); oddities go into `volume.warnings`, unusable input raises InputError.

    Accepts a folder of DICOM files (searched recursively; the axial CT series with most slices is read
    unless `series_uid` is given), one DICOM file, a .zip of DICOM files, or a .nii/.nii.gz file.
    `pixel_spacing` (rows, columns in mm) is for a NIfTI file without a spatial transform only.
    """
    p = _existing(path)
    if pixel_spacing is not None:
        check_pixel_spacing(pixel_spacing, "--pixel-spacing")
    volume = _read(p, series_uid, pixel_spacing)
    if pixel_spacing is not None and volume.source_kind != "nifti":
        raise InputError(
            f"{p} is DICOM, which defines its own pixel spacing; --pixel-spacing is only for NIfTI files "
            "without a spatial transform"
        )
    if series_uid is not None and volume.source_kind == "nifti":  # it would be ignored: not what was asked
        raise InputError(f"{p} is NIfTI, which holds one series; --series is only for DICOM input")
    check_pixel_spacing(volume.pixel_spacing, str(p))
    return volume


def _read(p: Path, series_uid: str | None, pixel_spacing: tuple[float, float] | None) -> CTVolume:
    if p.is_file() and is_nifti(p):
        return read_nifti(p, pixel_spacing)
    if p.is_file() and p.suffix.lower() == ".zip":
        with _extracted(p) as tmp:
            niftis = [f for f in tmp.rglob("*") if f.is_file() and is_nifti(f)]
            if len(niftis) == 1 and not list_dicom_series(tmp):
                volume = read_nifti(niftis[0], pixel_spacing)
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


def read_ct_surveyed(
    folder: Path, series_uid: str | None = None
) -> tuple[CTVolume, list[SeriesInfo], list[Path]]:
    """`read_ct` of a folder of DICOM files, with every CT series there and the files that reading any of
    them needs, from one reading of the headers (see dicom_reader.read_dicom_surveyed)."""
    p = _existing(folder)
    volume, infos, files = read_dicom_surveyed(p, series_uid)
    check_pixel_spacing(volume.pixel_spacing, str(p))
    return volume, infos, files


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
