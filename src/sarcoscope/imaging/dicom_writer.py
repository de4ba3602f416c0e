"""Write a HU volume as a CT Image Storage series (one file per slice).

Used by the phantom generator (synthetic CT with exact labels), by tests of the reader, and to hand a
resampled or edited volume to a PACS. The files are plain, valid CT images that `read_ct` reads back
exactly (bit-exact when the HU values are integers and the slope is 1).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from sarcoscope.imaging.volume import CTMetadata

#: Accepted `transfer_syntax` names (case-insensitive) and the UID each one writes.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit little endian": ExplicitVRLittleEndian,
    "implicit little endian": ImplicitVRLittleEndian,
    "jpeg2000-lossless": JPEG2000Lossless,
    "jpeg-ls-lossless": JPEGLSLossless,
    "rle": RLELossless,
}


def _ds_number(value: float) -> str:
    """Format a number as a DICOM DS string (at most 16 characters)."""
    for digits in (12, 10, 8, 6):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {value!r} as a DICOM decimal string")


def _resolve_transfer_syntax(name: str) -> UID:
    key = name.strip().lower()
    if key not in TRANSFER_SYNTAXES:
        raise ValueError(f"unknown transfer syntax {name!r}; choose one of {sorted(TRANSFER_SYNTAXES)}")
    uid = TRANSFER_SYNTAXES[key]
    if uid.is_compressed:
        encoder = get_encoder(uid)
        if not encoder.is_available:
            missing = "; ".join(encoder.missing_dependencies) or "no encoder plugin"
            raise ValueError(f"cannot write {name!r} ({uid.name}): {missing}")
    return uid


def _stored_values(hu: np.ndarray, slope: float, intercept: float) -> tuple[np.ndarray, int]:
    """HU -> stored integers (int16 when they fit, else uint16) and the PixelRepresentation."""
    stored = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16), 1
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16), 0
    raise ValueError(
        f"HU range {hu.min()}..{hu.max()} does not fit 16-bit storage with slope {slope} and "
        f"intercept {intercept}; choose another rescale"
    )


def _uid(seed: int | None, *parts: object) -> UID:
    """Random UID, or a reproducible one derived from `seed` and `parts`."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=["sarcoscope", str(seed), *map(str, parts)])


def _base_dataset(
    metadata: CTMetadata,
    *,
    study_uid: UID,
    series_uid: UID,
    frame_uid: UID,
    series_description: str,
    thickness: float,
    spacing_yx: tuple[float, float],
    direction: np.ndarray,
    shape_yx: tuple[int, int],
    slope: float,
    intercept: float,
    pixel_representation: int,
    padding_value: int | None,
) -> Dataset:
    """Everything that is identical for every slice of the series."""
    now = _dt.datetime.now(_dt.UTC)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    axial = abs(direction[2, 2]) >= max(abs(direction[0, 2]), abs(direction[1, 2]))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if axial else "OTHER"]
    ds.SOPClassUID = CTImageStorage
    study_date = metadata.study_date or now.strftime("%Y%m%d")
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = now.strftime("%H%M%S")
    ds.SeriesTime = ds.StudyTime
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = metadata.manufacturer or "sarcoscope"
    if metadata.manufacturer_model:
        ds.ManufacturerModelName = metadata.manufacturer_model
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = ""
    ds.PatientID = metadata.patient_id or "ANONYMOUS"
    ds.PatientBirthDate = ""
    ds.PatientSex = metadata.patient_sex if metadata.patient_sex in ("M", "F") else ""
    if metadata.patient_age_years is not None:
        ds.PatientAge = f"{min(int(metadata.patient_age_years), 999):03d}Y"
    if metadata.patient_height_m is not None:
        ds.PatientSize = _ds_number(metadata.patient_height_m)
    if metadata.patient_weight_kg is not None:
        ds.PatientWeight = _ds_number(metadata.patient_weight_kg)
    ds.ContrastBolusAgent = metadata.contrast_agent or ""
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = _ds_number(thickness)
    ds.KVP = _ds_number(metadata.kvp) if metadata.kvp is not None else ""
    if metadata.convolution_kernel:
        ds.ConvolutionKernel = metadata.convolution_kernel
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = [_ds_number(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(shape_yx[0]), int(shape_yx[1])
    ds.PixelSpacing = [_ds_number(spacing_yx[0]), _ds_number(spacing_yx[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = pixel_representation
    if padding_value is not None:
        ds.PixelPaddingValue = int(padding_value)
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = _ds_number(intercept)
    ds.RescaleSlope = _ds_number(slope)
    ds.RescaleType = "HU"
    return ds


def write_dicom_series(
    hu: np.ndarray,
    spacing_zyx: Sequence[float],
    out_dir: str | Path,
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: np.ndarray | None = None,
    metadata: CTMetadata | None = None,
    series_description: str | None = None,
    transfer_syntax: str = "explicit little endian",
    include_instance_number: bool = True,
    rescale: tuple[float, float] = (1.0, -1024.0),
    padding_value: int | None = None,
    shuffle_names: bool = False,
    seed: int | None = None,
) -> list[Path]:
    """Write `hu` (z, y, x) as one CT image file per slice in `out_dir`; return the paths in slice order.

    `origin` is the LPS position (mm) of voxel (0, 0, 0) and `direction` the 3x3 matrix whose columns are the
    LPS directions of the x, y, z array axes (default identity: a supine axial series, z inferior->superior).
    Stored value = round((HU - intercept) / slope) with `rescale=(slope, intercept)`. `padding_value` is a
    *stored* value written as PixelPaddingValue (e.g. -2000 with intercept -1024 marks HU -3024 as padding).
    `shuffle_names` gives file names whose order is unrelated to the slice order (to test readers);
    `seed` makes UIDs and names reproducible. Metadata fields that are set become the matching tags
    (PatientSex/Age/Size/Weight, ContrastBolusAgent, KVP, UIDs...). Files are written atomically.
    """
    volume = np.asarray(hu)
    if volume.ndim == 2:
        volume = volume[np.newaxis]
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(f"hu must be a non-empty (z, y, x) array, got shape {np.shape(hu)}")
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ValueError(f"hu must be real numbers, got dtype {volume.dtype}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("hu contains NaN or infinite values")
    dz, dy, dx = (float(s) for s in spacing_zyx)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"spacing must be positive, got {tuple(spacing_zyx)}")
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope == 0:
        raise ValueError("rescale slope must not be 0")
    axes = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if axes.shape != (3, 3) or not np.allclose(axes.T @ axes, np.eye(3), atol=1e-4):
        raise ValueError("direction must be a 3x3 orthonormal matrix (columns: x, y, z axes in LPS)")
    ts_uid = _resolve_transfer_syntax(transfer_syntax)
    if ts_uid == JPEG2000Lossless and min(volume.shape[1:]) < 32:
        raise ValueError(
            "JPEG 2000 encoding (openjpeg, 6 wavelet levels) needs images of at least 32x32 pixels"
        )
    meta = metadata or CTMetadata()

    stored, pixel_representation = _stored_values(volume, slope, intercept)
    study_uid = UID(meta.study_instance_uid) if meta.study_instance_uid else _uid(seed, "study")
    series_uid = UID(meta.series_instance_uid) if meta.series_instance_uid else _uid(seed, "series")
    frame_uid = UID(meta.frame_of_reference_uid) if meta.frame_of_reference_uid else _uid(seed, "frame")
    base = _base_dataset(
        meta,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_uid,
        series_description=series_description or meta.series_description or "sarcoscope CT",
        thickness=meta.slice_thickness_mm or dz,
        spacing_yx=(dy, dx),
        direction=axes,
        shape_yx=stored.shape[1:],
        slope=slope,
        intercept=intercept,
        pixel_representation=pixel_representation,
        padding_value=padding_value,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = stored.shape[0]
    order = np.arange(n)
    if shuffle_names:
        order = np.random.default_rng(seed).permutation(n)
    width = max(4, len(str(n)))
    origin_v = np.asarray(origin, dtype=float)
    normal = axes[:, 2]
    paths: list[Path] = []
    for k in range(n):
        ds = base.copy()
        sop_uid = _uid(seed, "sop", series_uid, k)
        ds.SOPInstanceUID = sop_uid
        if include_instance_number:
            ds.InstanceNumber = k + 1
        position = origin_v + k * dz * normal
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.SliceLocation = _ds_number(float(position @ normal))
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = "SARCOSCOPE"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if ts_uid.is_compressed:
            ds.compress(ts_uid, encoding_plugin="", generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = ts_uid
        # Shuffled names carry no extension either, as many PACS exports do.
        name = f"IM{order[k] + 1:0{width}d}" if shuffle_names else f"CT{k + 1:0{width}d}.dcm"
        path = out / name
        tmp = out / f".{name}.tmp"
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        os.replace(tmp, path)
        paths.append(path)
    return paths
