"""read_ct on the real CT in ../shared/data: JPEG 2000 series, GE implicit-VR series, L3 slices, NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from sarcoscope.imaging import coronal, read_ct


def test_jpeg2000_series(shared_data: Path) -> None:
    folder = shared_data / "real" / "dicom_series" / "ts_thoracoabdominal_j2k"
    vol = read_ct(folder)
    assert vol.shape == (20, 512, 512) and vol.hu.dtype == np.int16
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert np.all(np.diff(vol.slice_positions) == pytest.approx(2.0))
    assert vol.warnings == []
    # plausible HU: air outside, soft tissue inside the body, dense bone present
    assert vol.hu.min() == -1024 and 1000 < vol.hu.max() < 3100
    centre = vol.hu[:, 200:300, 200:300]
    assert -100 < np.median(centre) < 100
    # array order follows ImagePositionPatient, whatever the file names and InstanceNumbers say
    z_by_file = {}
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        z_by_file[float(ds.ImagePositionPatient[2])] = f
    assert sorted(z_by_file) == pytest.approx(list(vol.slice_positions))
    top = pydicom.dcmread(z_by_file[max(z_by_file)])
    np.testing.assert_array_equal(vol.hu[-1], top.pixel_array.astype(np.int16) - 1024)
    assert vol.metadata.manufacturer == "SIEMENS" and vol.metadata.kvp == 120.0
    assert vol.metadata.slice_thickness_mm == 3.0  # overlapping: 3 mm thick every 2 mm


def test_ge_implicit_vr_with_outside_of_field(shared_data: Path) -> None:
    vol = read_ct(shared_data / "real" / "dicom_series" / "dcmqi_ct3slice")
    assert vol.shape == (3, 512, 512)
    assert vol.spacing == pytest.approx((1.0, 0.810547, 0.810547))
    assert vol.hu.min() == -1024  # the -3024 HU disc outside the reconstruction circle became air
    assert vol.hu[:, 0, 0].tolist() == [-1024] * 3
    assert any("padding" in w for w in vol.warnings)
    assert any("1 not DICOM" in w for w in vol.warnings)  # the .nrrd label map beside the slices
    assert (vol.metadata.patient_sex, vol.metadata.patient_age_years) == ("M", 60.0)
    body = vol.hu[1, 200:300, 200:300]
    assert -50 < np.median(body) < 150  # liver dome soft tissue


@pytest.mark.parametrize("case", ["EMC041", "EMC101"])
def test_single_l3_slice(shared_data: Path, case: str) -> None:
    path = shared_data / "real" / "l3_slices" / "images" / f"L3_{case}.dcm"
    vol = read_ct(path)
    ds = pydicom.dcmread(path)
    assert vol.n_slices == 1 and vol.is_axial
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.hu[0], np.maximum(expected, -1024))
    assert len(vol.dicom_headers) == 1 and "PixelData" not in vol.dicom_headers[0]


def test_totalsegmentator_example_nifti(shared_data: Path) -> None:
    vol = read_ct(shared_data / "real" / "volumes" / "ts_example" / "example_ct.nii.gz")
    # NIfTI RAS (122 x, 101 y, 112 z) -> (z, y, x) = (112, 101, 122), 3 mm isotropic
    assert vol.shape == (112, 101, 122) and vol.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(vol.direction, np.eye(3), atol=1e-6)
    assert vol.is_axial and vol.source_kind == "nifti"
    # anatomy: the spine is posterior (high y) and central in x; the table/air is at the back edge
    bone = vol.hu[73] > 250
    ys, xs = np.nonzero(bone)
    assert np.median(ys) > 101 * 0.55 and abs(np.median(xs) - 61) < 10
    # superior is up in the coronal reconstruction: the last array slice (most superior) is row 0
    np.testing.assert_array_equal(coronal(vol, y=60)[0], vol.hu[-1, 60, :])
