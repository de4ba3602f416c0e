"""write_phantom: files a user gets, readable by sarcoscope's own reader with the same geometry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sarcoscope.imaging import read_ct
from sarcoscope.phantom import make_volume, write_phantom

SMALL = {"shape_xy": 96, "slice_thickness_mm": 8.0, "coverage": "l3-only"}


def test_volume_dicom_and_nifti_agree(tmp_path: Path) -> None:
    info = write_phantom(tmp_path, kind="volume", fmt="both", seed=4, **SMALL)
    vol = make_volume(4, **SMALL)
    dcm, nii = read_ct(info["paths"]["dicom"]), read_ct(info["paths"]["nifti"])
    np.testing.assert_array_equal(dcm.hu, vol.hu)
    np.testing.assert_array_equal(nii.hu, vol.hu)
    np.testing.assert_allclose(dcm.spacing, vol.spacing, rtol=1e-6)
    np.testing.assert_allclose(nii.origin, dcm.origin, atol=1e-3)
    np.testing.assert_allclose(nii.direction, np.eye(3), atol=1e-6)
    # label maps on the same grid, stored (x, y, z) with a RAS affine
    lab = nib.load(info["paths"]["labels"])
    assert np.allclose(lab.affine, nib.load(info["paths"]["nifti"]).affine)
    np.testing.assert_array_equal(np.asarray(lab.dataobj).transpose(2, 1, 0), vol.labels)
    vert = np.asarray(nib.load(info["paths"]["vertebra_labels"]).dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(vert, vol.vertebra_labels)
    truth = json.loads(Path(info["paths"]["truth"]).read_text())
    assert truth["l3_mid_index"] == vol.truth["l3_mid_index"]
    assert truth["shape_zyx"] == list(vol.hu.shape)


def test_dicom_carries_patient_facts(tmp_path: Path) -> None:
    info = write_phantom(tmp_path, kind="volume", fmt="dicom", seed=5, **SMALL)
    first = sorted(Path(info["paths"]["dicom"]).iterdir())[0]
    ds = pydicom.dcmread(first)
    h = info["truth"]["habitus"]
    assert ds.PatientSex == h["sex"]
    assert float(ds.PatientSize) == pytest.approx(h["height_m"], abs=1e-3)
    assert float(ds.PatientWeight) == pytest.approx(h["weight_kg"], abs=0.1)
    assert h["weight_kg"] == pytest.approx(h["bmi"] * h["height_m"] ** 2, abs=0.1)
    assert not (tmp_path / "ct.nii.gz").exists()


def test_single_slice(tmp_path: Path) -> None:
    info = write_phantom(tmp_path, kind="slice", fmt="both", seed=6, size=128)
    ct = read_ct(info["paths"]["dicom"])
    assert ct.shape == (1, 128, 128)
    lab = np.asarray(nib.load(info["paths"]["labels"]).dataobj)
    assert lab.shape == (128, 128, 1) and set(np.unique(lab)) <= {0, 1, 2, 3, 4}
    assert "area_cm2" in json.loads(Path(info["paths"]["truth"]).read_text())


def test_out_of_field_padding_reads_back_as_air(tmp_path: Path) -> None:
    info = write_phantom(tmp_path, kind="slice", fmt="dicom", seed=6, size=128, out_of_field=True)
    ds = pydicom.dcmread(next(Path(info["paths"]["dicom"]).iterdir()))
    assert int(ds.PixelPaddingValue) == -2000 and ds.pixel_array[0, 0] == -2000
    ct = read_ct(info["paths"]["dicom"])
    assert ct.hu[0, 0, 0] == -1024 and ct.hu[0, 64, 64] > -1024


def test_bad_kind_or_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        write_phantom(tmp_path, kind="movie", seed=1)
    with pytest.raises(ValueError, match="fmt"):
        write_phantom(tmp_path, fmt="png", seed=1)
