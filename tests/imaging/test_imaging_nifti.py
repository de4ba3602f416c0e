"""NIfTI reorientation: an asymmetric pattern lands at the same anatomical corner whatever the storage."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sarcoscope.errors import InputError
from sarcoscope.imaging import CTVolume, read_ct, write_dicom_series

SHAPE = (10, 12, 8)  # voxels along R, A, S in the RAS reference array
ZOOMS = (0.8, 0.9, 2.5)


def _ras_reference() -> np.ndarray:
    """Air with markers at the Left-Posterior-Superior and Right-Anterior-Inferior corners (RAS+: index
    i grows toward the patient's right, j toward anterior, k toward superior)."""
    data = np.full(SHAPE, -1000, dtype=np.int16)
    data[-1, :, :] = 0  # a soft-tissue wall on the patient's right side
    data[-1, -1, 0] = 100  # right, anterior, inferior
    data[0, 0, -1] = 500  # left, posterior, superior
    return data


def _expected_corners(hu: np.ndarray) -> None:
    # CTVolume layout: x toward left, y toward posterior, z toward superior
    nz, ny, nx = hu.shape
    assert hu.shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert hu[nz - 1, ny - 1, nx - 1] == 500  # superior, posterior, left
    assert hu[0, 0, 0] == 100  # inferior, anterior, right
    assert np.all(hu[:, :, 0] >= 0)  # the right-side wall is at x = 0


def test_ras_nifti(tmp_path: Path) -> None:
    affine = np.diag([*ZOOMS, 1.0])
    affine[:3, 3] = (-4.0, -5.0, 30.0)
    nib.save(nib.Nifti1Image(_ras_reference(), affine), tmp_path / "ras.nii.gz")
    vol = read_ct(tmp_path / "ras.nii.gz")
    _expected_corners(vol.hu)
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    # voxel (0,0,0) is the RAS voxel (9, 11, 0): RAS (-4+9*0.8, -5+11*0.9, 30) -> LPS negates x and y
    assert vol.origin == pytest.approx((-(-4 + 9 * 0.8), -(-5 + 11 * 0.9), 30.0))
    # the affine maps voxel indices to the same physical point as the NIfTI affine
    ras_point = affine @ np.array([0, 0, 7, 1.0])  # the 500 marker
    lps = vol.affine_lps @ np.array([SHAPE[0] - 1, SHAPE[1] - 1, 7, 1.0])  # (x, y, z) indices
    np.testing.assert_allclose(lps[:3], ras_point[:3] * [-1, -1, 1])


@pytest.mark.parametrize("codes", [("L", "A", "S"), ("L", "P", "S"), ("S", "R", "P"), ("A", "I", "L")])
def test_other_storage_orientations(tmp_path: Path, codes: tuple[str, str, str]) -> None:
    """Store the same anatomy in another axis order/direction; the reader must undo it exactly."""
    ras = _ras_reference()
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), target)
    data = nib.orientations.apply_orientation(ras, transform)
    ras_affine = np.diag([*ZOOMS, 1.0])
    affine = ras_affine @ nib.orientations.inv_ornt_aff(transform, ras.shape)
    assert nib.aff2axcodes(affine) == codes
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "img.nii")
    vol = read_ct(tmp_path / "img.nii")
    _expected_corners(vol.hu)
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert vol.source_axes == codes  # the label map is written back in this order (export.nifti)


@pytest.mark.parametrize("axes", [("R", "R", "S"), ("L", "A"), ("X", "A", "S"), ("S", "I", "A")])
def test_a_volume_refuses_source_axes_that_are_not_three_anatomical_axes(axes: tuple[str, ...]) -> None:
    geometry = {"spacing": (2.5, 0.9, 0.8), "origin": (0.0, 0.0, 0.0), "direction": np.eye(3)}
    with pytest.raises(ValueError, match="source_axes"):
        CTVolume(hu=np.zeros((2, 4, 4), np.int16), **geometry, source_axes=axes)  # type: ignore[arg-type]


def test_nifti_and_dicom_agree(tmp_path: Path) -> None:
    """A volume written as DICOM (LPS) and as NIfTI (RAS) of the same anatomy reads back identically."""
    ras = _ras_reference()
    hu_zyx = ras[::-1, ::-1, :].transpose(2, 1, 0)
    write_dicom_series(hu_zyx, (2.5, 0.9, 0.8), tmp_path / "dcm", origin=(1.0, 2.0, 3.0))
    dicom = read_ct(tmp_path / "dcm")
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip = np.array([[-1.0, 0, 0, SHAPE[0] - 1], [0, -1.0, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(ras, lps_to_ras @ dicom.affine_lps @ flip), tmp_path / "same.nii.gz")
    nifti = read_ct(tmp_path / "same.nii.gz")
    np.testing.assert_array_equal(nifti.hu, dicom.hu)
    np.testing.assert_allclose(nifti.affine_lps, dicom.affine_lps, atol=1e-5)


def test_float_and_scaled_nifti(tmp_path: Path) -> None:
    data = _ras_reference().astype(np.float32) + 0.5
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "f.nii.gz")
    vol = read_ct(tmp_path / "f.nii.gz")
    assert vol.hu.dtype == np.float32 and vol.hu.max() == 500.5


def test_nan_voxels_become_air_with_a_warning(tmp_path: Path) -> None:
    data = _ras_reference().astype(np.float32)
    data[:2, :, :] = np.nan  # e.g. outside the field of view after resampling
    data[2, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    vol = read_ct(tmp_path / "nan.nii.gz")
    assert np.isfinite(vol.hu).all() and vol.hu[:, :, -2:].max() == -1024  # left side (x toward left)
    assert any(f"{2 * 12 * 8 + 1} voxels without a value" in w for w in vol.warnings)


def test_bad_nifti(tmp_path: Path) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match=r"broken\.nii\.gz"):
        read_ct(tmp_path / "broken.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match="4D"):
        read_ct(tmp_path / "4d.nii")


def _zero_voxel_sizes(path: Path, qform_only: bool) -> Path:
    """_ras_reference as an uncompressed NIfTI whose header stores pixdim[1..3] as 0 (nibabel sets them to 1
    as it loads the header, and would not write them)."""
    img = nib.Nifti1Image(_ras_reference(), np.diag([*ZOOMS, 1.0]))
    if qform_only:
        img.set_qform(img.affine, code=1)
        img.set_sform(None, code=0)
    nib.save(img, path)
    data = bytearray(path.read_bytes())
    data[80:92] = bytes(12)  # pixdim[1], [2], [3]: float32 at byte 76 + 4 i
    path.write_bytes(bytes(data))
    return path


def test_nibabels_header_fixes_are_warnings_or_refusals_not_stray_lines(tmp_path: Path, capfd) -> None:
    """nibabel printed "pixdim[1,2,3] should be non-zero; setting 0 dims to 1" to stderr itself; with a
    qform, which pixdim scales, the CT was then measured with 1 mm pixels."""
    vol = read_ct(_zero_voxel_sizes(tmp_path / "sform.nii", qform_only=False))  # the sform sets the size
    assert vol.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert "sform.nii: nibabel fixed its header: pixdim[1,2,3] should be non-zero; setting 0 dims to 1" in (
        vol.warnings
    )
    with pytest.raises(InputError) as refused:
        read_ct(_zero_voxel_sizes(tmp_path / "qform.nii", qform_only=True))
    assert str(refused.value) == (
        f"{tmp_path / 'qform.nii'} has voxel sizes (pixdim) of 0, and its spatial transform (qform) is "
        "scaled by them: the pixel size is unknown"
    )
    assert capfd.readouterr() == ("", "")
