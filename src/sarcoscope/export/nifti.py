"""The label map as NIfTI, on the CT's own voxel grid so it overlays the CT in any viewer (ITK-SNAP, Slicer).

The file is a sub-volume: the axial slices from the first to the last analysed slice (slices inside that span
that were not analysed are 0). Voxel (i, j, k) of the file is CT voxel (x=i, y=j, z=first+k). The affine
is the CT's LPS affine (CTVolume.affine_lps) shifted to the first slice and converted to NIfTI's RAS+ world
by negating its first two rows (L->R, P->A); qform and sform both carry it with code 1 (scanner).
A CT read from NIfTI gets its labels in that file's own voxel order (CTVolume.source_axes): code that
indexes the CT's array with the labels' (no viewer) finds the same voxels, not a mirror image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from sarcoscope.export.label_tables import SARCOSCOPE, check_order, relabel

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def label_subvolume(result: AnalysisResult) -> tuple[np.ndarray, int]:
    """Labels (z, y, x) spanning the analysed slices, and the CT slice index of its first slice."""
    indices = [int(i) for i in result.selection.indices]
    first, last = min(indices), max(indices)
    _, ny, nx = result.volume.shape
    sub = np.zeros((last - first + 1, ny, nx), dtype=np.uint8)
    for k, idx in enumerate(indices):
        sub[idx - first] = result.labels[k]
    return sub, first


def label_affine_ras(result: AnalysisResult, first_slice: int) -> np.ndarray:
    """4x4 RAS affine of the sub-volume starting at CT slice `first_slice`."""
    affine = np.array(result.volume.affine_lps, dtype=float)
    affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * first_slice
    return LPS_TO_RAS @ affine


def grid_nifti(array_zyx: np.ndarray, affine_ras: np.ndarray) -> nib.Nifti1Image:
    """A (z, y, x) array as NIfTI-1 on the CT's grid: voxel (i, j, k) = (x, y, z), the RAS affine as qform
    and sform (code 1, scanner), millimetres. Shared by the label map and the web viewer's volume.

    No copy: NIfTI's Fortran order of the transposed view is the array's own memory, which nibabel writes
    as it is (a C-ordered copy of a 300-slice volume cost 150 MB and half a second)."""
    img = nib.Nifti1Image(array_zyx.transpose(2, 1, 0), affine_ras)
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header.set_xyzt_units(xyz="mm")
    return img


def label_nifti(result: AnalysisResult, order: str = SARCOSCOPE) -> nib.Nifti1Image:
    """NIfTI-1 image of the analysed label map, aligned with the CT, uint8 with the ids of label order
    `order` (conventions.Label ids by default; see export.label_tables)."""
    table = check_order(order)
    sub, first = label_subvolume(result)
    sub = relabel(sub, order)
    img = grid_nifti(sub, label_affine_ras(result, first))
    if result.volume.source_axes is not None:
        to_source = nib.orientations.ornt_transform(
            nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(result.volume.source_axes)
        )
        img = img.as_reoriented(to_source)
        img.set_qform(img.affine, code=1)  # as_reoriented leaves the qform out and codes the sform "aligned"
        img.set_sform(img.affine, code=1)
    ids = " ".join(f"{i}={name}" for i, name in sorted(table.values()))
    img.header["descrip"] = ids.encode()[:80]
    return img
