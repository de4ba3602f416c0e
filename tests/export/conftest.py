"""Hand-built AnalysisResults (synthetic volumes, drawn labels, optional DICOM headers) for export tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sarcoscope.composition import PatientInfo, assess, average_compositions, measure_slice
from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_MID, L3_RANGE, Label
from sarcoscope.imaging.volume import CTMetadata, CTVolume
from sarcoscope.level.selection import L3Selection
from sarcoscope.results import AnalysisResult

SPACING = (2.5, 0.8, 0.7)  # z, y, x mm
SHAPE = (12, 64, 80)
ORIGIN = (-28.0, -25.6, -300.0)


def draw_labels(ny: int, nx: int, shift: int = 0) -> np.ndarray:
    """Concentric body: SAT ring, muscle ring, VAT core, a few IMAT pixels; `shift` varies slices."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot((yy - ny / 2) / (ny * 0.45), (xx - nx / 2) / (nx * 0.45))
    lab = np.zeros((ny, nx), np.uint8)
    lab[r < 1.0] = Label.SAT
    lab[r < 0.8 - 0.01 * shift] = Label.MUSCLE
    lab[r < 0.6] = Label.VAT
    lab[ny // 2, nx // 2 - 20 : nx // 2 - 17] = Label.IMAT
    return lab


def make_headers(volume: CTVolume, *, deidentified: bool = False) -> list[Dataset]:
    """One CT header per slice (no pixel data), consistent with the volume's geometry."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    headers = []
    nz, ny, nx = volume.shape
    for k in range(nz):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality = "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(ORIGIN[0]), float(ORIGIN[1]), float(ORIGIN[2] + k * SPACING[0])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[2]]
        ds.SliceThickness = SPACING[0]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if not deidentified:
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
                "Test^Case",
                "P1",
                "19600101",
                "M",
            )
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240101", "120000", "A1", "1"
            ds.ReferringPhysicianName = ""
        headers.append(ds)
    return headers


Factory = Callable[..., AnalysisResult]


@pytest.fixture
def make_result() -> Factory:
    def factory(
        indices: tuple[int, ...] = (5,),
        *,
        dicom: bool = False,
        deidentified: bool = False,
        shape: tuple[int, int, int] = SHAPE,
        patient: PatientInfo | None = None,
        details: dict | None = None,
    ) -> AnalysisResult:
        nz, ny, nx = shape
        rng = np.random.default_rng(1)
        full = np.stack([draw_labels(ny, nx, k % 3) for k in range(nz)])
        hu = np.where(full == Label.MUSCLE, 45.0, np.where(full > 0, -90.0, -1000.0))
        hu = (hu + rng.normal(0, 5, hu.shape)).astype(np.float32)
        volume = CTVolume(
            hu=hu,
            spacing=SPACING,
            origin=ORIGIN,
            direction=np.eye(3),
            metadata=CTMetadata(patient_sex="M", kvp=120.0, manufacturer="TEST", contrast_agent=None),
            source_kind="dicom" if dicom else "array",
            source_path="/data/case1" if dicom else None,
        )
        if dicom:
            volume.dicom_headers = make_headers(volume, deidentified=deidentified)
            volume.slice_positions = np.array([ORIGIN[2] + k * SPACING[0] for k in range(nz)])
        idx = list(indices)
        labels = full[idx]
        per = [measure_slice(hu[i], labels[k], volume.pixel_spacing) for k, i in enumerate(idx)]
        average = average_compositions(per)
        selection = L3Selection(
            indices=idx,
            mode="slice" if len(idx) == 1 else "range",
            convention=L3_MID if len(idx) == 1 else L3_RANGE,
            method="manual",
            details=details or {},
        )
        return AnalysisResult(
            volume=volume,
            selection=selection,
            engine="threshold",
            model_id="threshold-test",
            labels=labels,
            slices=per,
            average=average,
            assessment=assess(average, patient or PatientInfo(height_m=1.7, sex="M")),
            hu_ranges=DEFAULT_HU_RANGES,
            software_version="0.1.0",
            warnings=["test warning"],
        )

    return factory


def _volume_from_dicom_files(paths: list[Path]) -> CTVolume:
    """A CTVolume from real DICOM files, read here with pydicom so these tests do not depend on imaging/."""
    datasets = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    first = datasets[0]
    z = [float(d.ImagePositionPatient[2]) for d in datasets]
    dz = float(np.median(np.diff(z))) if len(z) > 1 else float(first.SliceThickness)
    headers = []
    for d in datasets:
        del d.PixelData
        headers.append(d)
    return CTVolume(
        hu=hu.astype(np.float32),
        spacing=(dz, float(first.PixelSpacing[0]), float(first.PixelSpacing[1])),
        origin=tuple(float(v) for v in first.ImagePositionPatient),
        direction=np.eye(3),
        metadata=CTMetadata(patient_sex=str(first.get("PatientSex") or "") or None),
        source_kind="dicom",
        slice_positions=np.array(z),
        dicom_headers=headers,
    )


def _result_for_volume(volume: CTVolume, indices: list[int], labels: np.ndarray) -> AnalysisResult:
    per = [measure_slice(volume.hu[i], labels[k], volume.pixel_spacing) for k, i in enumerate(indices)]
    average = average_compositions(per)
    return AnalysisResult(
        volume=volume,
        selection=L3Selection(
            indices=indices,
            mode="slice" if len(indices) == 1 else "range",
            convention=L3_MID if len(indices) == 1 else L3_RANGE,
            method="manual",
        ),
        engine="threshold",
        model_id="threshold-test",
        labels=labels,
        slices=per,
        average=average,
        assessment=assess(average, PatientInfo()),
        hu_ranges=DEFAULT_HU_RANGES,
        software_version="0.1.0",
    )


@pytest.fixture
def dicom_volume() -> Callable[[list[Path]], CTVolume]:
    """Read real DICOM files into a CTVolume (with pydicom here, independent of the imaging stage)."""
    return _volume_from_dicom_files


@pytest.fixture
def result_for() -> Callable[[CTVolume, list[int], np.ndarray], AnalysisResult]:
    """An AnalysisResult for given slices and labels of a volume (patient facts unknown)."""
    return _result_for_volume
