"""NIfTI -> CTVolume, reoriented like a DICOM axial series (x -> left, y -> posterior, z -> superior)."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from pathlib import Path

import nibabel as nib
import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.imaging.volume import (
    AIR_HU,
    CTMetadata,
    CTVolume,
    check_hounsfield,
    fill_to_air,
    index_ranges,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: What nibabel says when it sets zero voxel sizes to 1 mm as it loads a header.
_ZERO_PIXDIM = "pixdim[1,2,3] should be non-zero"

logger = logging.getLogger(__name__)
#: The header fixes nibabel reports while the file being loaded here is read (None: no file is).
_header_fixes: ContextVar[list[str] | None] = ContextVar("nibabel_header_fixes", default=None)


class _HeaderFixes(logging.Handler):
    """nibabel reports the header values it fixes ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1")
    through a stderr handler of its own: a stray line beside our one message. This handler replaces it: a
    fix becomes a warning (or the refusal) of the file being loaded, anything else goes to our log."""

    def emit(self, record: logging.LogRecord) -> None:
        fixes = _header_fixes.get()
        if fixes is None:
            logger.log(record.levelno, "nibabel: %s", record.getMessage())
        else:
            fixes.append(record.getMessage())


nib.imageglobals.logger.handlers[:] = [_HeaderFixes()]
nib.imageglobals.logger.propagate = False  # said once, by the handler


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


def _load(path: Path, warnings: list[str]) -> nib.Nifti1Image:
    """nib.load, with the header values nibabel fixed in `warnings`; refuses a transform that cannot place
    the voxels: one that is not finite (nibabel's reorientation failed with "SVD did not converge"), or a
    qform scaled by zero voxel sizes, which nibabel sets to 1 mm (a guessed pixel size)."""
    fixes: list[str] = []
    token = _header_fixes.set(fixes)
    try:
        img = nib.load(str(path))
    finally:
        _header_fixes.reset(token)
    warnings.extend(f"{path.name}: nibabel fixed its header: {fix}" for fix in fixes)
    header = img.header
    sform, qform = int(header.get("sform_code", 0)), int(header.get("qform_code", 0))
    if sform == 0 and qform > 0 and any(_ZERO_PIXDIM in fix for fix in fixes):
        raise InputError(
            f"{path} has voxel sizes (pixdim) of 0, and its spatial transform (qform) is scaled by them: the "
            "pixel size is unknown"
        )
    if (sform > 0 or qform > 0) and not np.all(np.isfinite(img.affine)):
        raise InputError(
            f"{path} has a spatial transform with values that are not numbers (NaN or infinite): its voxels "
            "cannot be placed or measured"
        )
    return img


def read_nifti_array(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2-D or 3-D NIfTI file's values in the CTVolume layout (z, y, x), and its (y, x) pixel spacing in mm.

    For label maps and training images: they need the pixel grid, not the geometry `read_nifti` records.
    """
    notes: list[str] = []
    try:
        img = nib.as_closest_canonical(_load(path, notes))  # axes point to R, A, S
        data = np.asarray(img.dataobj)
    except InputError:
        raise
    except Exception as exc:  # nibabel and gzip raise many types for broken files
        raise InputError(f"Cannot read NIfTI file {path}: {exc}") from None
    for note in notes:
        logger.warning("%s", note)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise InputError(f"NIfTI file {path} must be 2-D or 3-D, got shape {data.shape}.")
    zooms = img.header.get_zooms()
    return ras_to_layout(data), (float(zooms[1]), float(zooms[0]))


def _without_transform(
    img: nib.Nifti1Image, path: Path, pixel_spacing: tuple[float, float] | None, warnings: list[str]
) -> nib.Nifti1Image:
    """Check the header's spatial transform; an image without one gets the user's pixel spacing.

    With qform_code and sform_code both 0 the header defines no geometry and nibabel falls back to pixdim,
    which tools that drop the transform often leave at 1 mm: refused rather than measured at a guessed
    scale, unless the user gives the spacing.
    """
    header = img.header
    has_transform = int(header.get("qform_code", 0)) > 0 or int(header.get("sform_code", 0)) > 0
    if not isinstance(header, nib.Nifti1Header) or has_transform:
        if pixel_spacing is not None:
            zooms = header.get_zooms()
            raise InputError(
                f"{path} defines its own pixel spacing ({float(zooms[1]):g} x {float(zooms[0]):g} mm); "
                "--pixel-spacing is only for NIfTI files without a spatial transform"
            )
        return img
    pixdim = header["pixdim"]
    if pixel_spacing is None:
        raise InputError(
            f"{path} has no spatial transform (qform_code and sform_code are 0), so its pixel size is "
            f"unknown (pixdim says {float(pixdim[2]):g} x {float(pixdim[1]):g} mm, often a placeholder); "
            "give the true spacing with --pixel-spacing ROW COL (mm)"
        )
    row, col = pixel_spacing
    dz = float(pixdim[3]) if np.isfinite(pixdim[3]) and pixdim[3] > 0 else 1.0
    warnings.append(
        f"pixel spacing {row:g} x {col:g} mm (rows x columns) given by the user: {path.name} has no spatial "
        f"transform; slice spacing {dz:g} mm and orientation taken from the header without verification"
    )
    affine = np.diag([-col, row, dz, 1.0])  # nibabel's convention for images without a transform
    return nib.Nifti1Image(np.asanyarray(img.dataobj), affine)


def read_nifti(path: Path, pixel_spacing: tuple[float, float] | None = None) -> CTVolume:
    """Read a 3D NIfTI CT (values taken as HU) into the CTVolume layout; record LPS direction and origin.

    `pixel_spacing` (rows, columns in mm) is required for, and only accepted for, a file whose header has
    no spatial transform; the report then says that the spacing was given by the user.
    """
    warnings: list[str] = []
    try:
        img = _without_transform(_load(path, warnings), path, pixel_spacing, warnings)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) == 2:
            img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., np.newaxis], img.affine, img.header)
        if len(img.shape) != 3:
            raise InputError(f"{path} is a {len(img.shape)}D NIfTI image; a 3D CT volume is needed")
        if 0 in img.shape:
            raise InputError(f"{path} holds no voxels (shape {tuple(img.shape)})")
        source_axes = nib.aff2axcodes(img.affine)
        canonical = nib.as_closest_canonical(img)  # axes point to R, A, S
        data = np.asanyarray(canonical.dataobj)
    except InputError:
        raise
    except Exception as exc:  # nibabel and gzip raise many types for broken files
        reason = " ".join(str(exc).split())  # nibabel's messages span lines
        raise InputError(f"cannot read NIfTI file {path}: {reason}") from exc
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
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InputError(
            f"{path} has a sheared or degenerate affine (its axes are not perpendicular): the voxels are not "
            "boxes, so areas cannot be measured; resample it to an orthogonal grid first"
        )
    origin = lps[:3, 3]
    if hu.dtype.kind == "f":  # resampling tools write NaN outside the field of view
        missing = ~np.isfinite(hu)
        if missing.any():
            hu[missing] = AIR_HU
            where = index_ranges(np.flatnonzero(missing.any(axis=(1, 2))))
            warnings.append(
                f"{int(missing.sum())} voxels without a value (NaN, infinite) in slice(s) {where} set to "
                f"{AIR_HU} HU"
            )
    n_low = int(np.count_nonzero(hu < AIR_HU))
    if n_low:
        np.maximum(hu, AIR_HU, out=hu)
        if n_low > 0.001 * hu.size:
            warnings.append(f"{n_low} voxels below {AIR_HU} HU (outside the field of view) set to {AIR_HU}")
    check_hounsfield(hu, f"the values of {path.name}", warnings)
    fill_to_air(hu, warnings)  # after: a mask's or a normalised image's 0 border is no fill
    normal = direction[:, 2]
    positions = (origin @ normal) + np.arange(hu.shape[0]) * zooms[2]
    return CTVolume(
        hu=hu,
        spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        metadata=CTMetadata(),
        source_kind="nifti",
        source_axes=source_axes,
        source_path=str(path),
        slice_positions=positions,
        warnings=warnings,
        pixel_spacing_given=pixel_spacing is not None,  # _without_transform refused it for any other file
    )
