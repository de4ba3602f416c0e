"""NIfTI -> CTVolume, reoriented like a DICOM axial series (x -> left, y -> posterior, z -> superior)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.imaging.volume import AIR_HU, CTMetadata, CTVolume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _hu_array(data: np.ndarray) -> np.ndarray:
    """int16 when every value is an integer inside the int16 range, else float32."""
    if data.size and np.issubdtype(data.dtype, np.integer):
        if data.min() >= -32768 and data.max() <= 32767:
            return data.astype(np.int16, copy=False)
        return data.astype(np.float32)
    data = data.astype(np.float32, copy=False)
    integral = np.all(np.isfinite(data)) and np.array_equal(data, np.rint(data))
    if integral and data.min() >= -32768 and data.max() <= 32767:
        return data.astype(np.int16)
    return data


def ras_to_layout(data: np.ndarray) -> np.ndarray:
    """Canonical RAS (i, j, k) array -> (z, y, x) with x toward the patient's left and y toward posterior."""
    return np.ascontiguousarray(data[::-1, ::-1, ...].transpose(2, 1, 0))


def read_nifti_array(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D or 3-D NIfTI file's values in the CTVolume layout (z, y, x), and its (y, x) pixel spacing in mm.

    For label maps and training images: they need the pixel grid, not the geometry `read_nifti` records.
    """
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))  # axes point to R, A, S
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel and gzip raise many types for broken files
        raise InputError(f"Cannot read NIfTI file {path}: {exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise InputError(f"NIfTI file {path} must be 2-D or 3-D, got shape {data.shape}.")
    zooms = img.header.get_zooms()
    return ras_to_layout(data), (float(zooms[1]), float(zooms[0]))


def read_nifti(path: Path) -> CTVolume:
    """Read a 3D NIfTI CT (values taken as HU) into the CTVolume layout; record LPS direction and origin."""
    try:
        img = nib.load(str(path))
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) == 2:
            img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., np.newaxis], img.affine, img.header)
        if len(img.shape) != 3:
            raise InputError(f"{path} is a {len(img.shape)}D NIfTI image; a 3D CT volume is needed")
        canonical = nib.as_closest_canonical(img)  # axes point to R, A, S
        data = np.asanyarray(canonical.dataobj)
    except InputError:
        raise
    except Exception as exc:  # nibabel and gzip raise many types for broken files
        raise InputError(f"cannot read NIfTI file {path}: {exc}") from exc
    if data.dtype.kind not in "iuf":
        raise InputError(f"{path} holds {data.dtype} values, not CT numbers")
    ni, nj, _ = data.shape
    hu = ras_to_layout(_hu_array(data))
    flip = np.array([[-1.0, 0, 0, ni - 1], [0, -1.0, 0, nj - 1], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ canonical.affine @ flip
    zooms = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(zooms <= 0):
        raise InputError(f"{path} has a degenerate affine (zero voxel size)")
    direction = lps[:3, :3] / zooms
    origin = lps[:3, 3]
    warnings: list[str] = []
    if hu.dtype.kind == "f":  # resampling tools write NaN outside the field of view
        missing = ~np.isfinite(hu)
        if missing.any():
            hu[missing] = AIR_HU
            warnings.append(f"{int(missing.sum())} voxels without a value (NaN, infinite) set to {AIR_HU} HU")
    n_low = int(np.count_nonzero(hu < AIR_HU))
    if n_low:
        np.maximum(hu, AIR_HU, out=hu)
        if n_low > 0.001 * hu.size:
            warnings.append(f"{n_low} voxels below {AIR_HU} HU (outside the field of view) set to {AIR_HU}")
    if not np.any(hu <= -900):
        warnings.append(f"{path.name}: no voxel at or below -900 HU (no air); check that the values are HU")
    normal = direction[:, 2]
    positions = (origin @ normal) + np.arange(hu.shape[0]) * zooms[2]
    return CTVolume(
        hu=hu,
        spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        metadata=CTMetadata(),
        source_kind="nifti",
        source_path=str(path),
        slice_positions=positions,
        warnings=warnings,
    )
