"""write_dicom_series: valid CT files that read_ct reads back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_encoder

from sarcoscope.imaging import CTMetadata, read_ct, write_dicom_series
from sarcoscope.imaging.dicom_writer import TRANSFER_SYNTAXES


def test_round_trip_is_exact_with_geometry(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(volume_hu, (2.5, 0.8, 0.7), tmp_path, origin=(-10.0, 20.0, -50.0))
    assert [p.name for p in paths] == [f"CT{k:04d}.dcm" for k in range(1, 7)]
    vol = read_ct(tmp_path)
    assert vol.hu.dtype == np.int16
    np.testing.assert_array_equal(vol.hu, volume_hu)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert vol.origin == pytest.approx((-10.0, 20.0, -50.0))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    np.testing.assert_allclose(vol.slice_positions, -50.0 + 2.5 * np.arange(6))
    assert vol.warnings == []
    assert vol.is_axial


def test_tags_and_metadata(tmp_path: Path, volume_hu: np.ndarray) -> None:
    meta = CTMetadata(
        patient_id="P7",
        patient_sex="F",
        patient_age_years=63,
        patient_height_m=1.62,
        patient_weight_kg=58.5,
        contrast_agent="Omnipaque",
        kvp=100,
        manufacturer="ACME",
        convolution_kernel="B30f",
    )
    paths = write_dicom_series(volume_hu, (3.0, 0.7, 0.7), tmp_path, metadata=meta, seed=4)
    headers = [pydicom.dcmread(p) for p in paths]
    ds = headers[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Modality == "CT" and list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert (ds.PatientSex, ds.PatientAge, float(ds.PatientSize), float(ds.PatientWeight)) == (
        "F",
        "063Y",
        1.62,
        58.5,
    )
    assert float(ds.SliceThickness) == 3.0 and float(ds.RescaleIntercept) == -1024.0
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, 7))
    read = read_ct(tmp_path).metadata
    assert (read.patient_sex, read.patient_age_years, read.patient_height_m, read.patient_weight_kg) == (
        "F",
        63.0,
        1.62,
        58.5,
    )
    assert (read.contrast_agent, read.kvp, read.manufacturer, read.convolution_kernel) == (
        "Omnipaque",
        100.0,
        "ACME",
        "B30f",
    )
    # the same seed gives the same UIDs (reproducible phantoms)
    again = write_dicom_series(volume_hu, (3.0, 0.7, 0.7), tmp_path / "again", metadata=meta, seed=4)
    assert pydicom.dcmread(again[0]).SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("syntax", ["jpeg2000-lossless", "rle", "jpeg-ls-lossless", "implicit little endian"])
def test_compressed_round_trip(tmp_path: Path, volume_factory, syntax: str) -> None:
    uid = TRANSFER_SYNTAXES[syntax]
    if uid.is_compressed and not get_encoder(uid).is_available:
        pytest.skip(f"no {uid.name} encoder installed")
    hu = volume_factory(nz=2, ny=40, nx=32)
    paths = write_dicom_series(hu, (1.0, 1.0, 1.0), tmp_path, transfer_syntax=syntax)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID.is_compressed == (
        syntax != "implicit little endian"
    )
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)


def test_float_slope_quantises_within_half_a_step(tmp_path: Path) -> None:
    hu = np.linspace(-1024, 2000, 2 * 8 * 8).reshape(2, 8, 8)
    write_dicom_series(hu, (1.0, 1.0, 1.0), tmp_path, rescale=(0.5, -1024.0))
    vol = read_ct(tmp_path)
    assert vol.hu.dtype == np.float32
    assert np.abs(vol.hu - hu).max() <= 0.25 + 1e-6


def test_shuffled_names_without_instance_number(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(
        volume_hu, (2.0, 1.0, 1.0), tmp_path, shuffle_names=True, include_instance_number=False, seed=3
    )
    names = [p.name for p in paths]
    assert names != sorted(names) and all("." not in n for n in names)
    assert "InstanceNumber" not in pydicom.dcmread(paths[0])
    np.testing.assert_array_equal(read_ct(tmp_path).hu, volume_hu)


def test_bad_arguments(tmp_path: Path) -> None:
    good = np.zeros((2, 4, 4), np.int16)
    with pytest.raises(ValueError, match="transfer syntax"):
        write_dicom_series(good, (1, 1, 1), tmp_path, transfer_syntax="jpeg-xl")
    with pytest.raises(ValueError, match="16-bit"):
        write_dicom_series(good.astype(np.int32) + 70000, (1, 1, 1), tmp_path)
    with pytest.raises(ValueError, match="spacing"):
        write_dicom_series(good, (0, 1, 1), tmp_path)
    with pytest.raises(ValueError, match="32x32"):
        write_dicom_series(good, (1, 1, 1), tmp_path, transfer_syntax="jpeg2000-lossless")
    with pytest.raises(ValueError, match="NaN"):
        write_dicom_series(np.full((1, 2, 2), np.nan), (1, 1, 1), tmp_path)
