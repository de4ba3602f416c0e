"""Multi-frame (Enhanced / Legacy Converted Enhanced) CT: one file holds the whole series.

highdicom assembles the frames into a volume (geometry from the functional groups, rescale applied);
this module maps it onto the CTVolume layout used for single-frame series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from sarcoscope.errors import InputError
from sarcoscope.imaging.volume import (
    AIR_HU,
    CTMetadata,
    CTVolume,
    check_hounsfield,
    fill_to_air,
    plane_of_normal,
    turn_axial_to_standard,
)


def frame_count(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def orientation_cosines(ds: Dataset) -> list[float] | None:
    """ImageOrientationPatient of a multi-frame image (shared, else first per-frame functional group)."""
    for group_seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(group_seq)
        if not groups:
            continue
        plane = groups[0].get("PlaneOrientationSequence")
        if plane and "ImageOrientationPatient" in plane[0]:
            return [float(v) for v in plane[0].ImageOrientationPatient]
    return None


def read_multiframe(path: Path, metadata: CTMetadata, warnings: list[str]) -> CTVolume:
    """Read one multi-frame CT file into a CTVolume (array order along the slice normal).

    `dicom_headers` stays None: there are no per-slice headers to reference.
    """
    import highdicom as hd  # imported here: it costs ~0.25 s and enhanced CT is the exception

    from sarcoscope.imaging.highdicom_tables import use_module_table

    use_module_table()

    try:
        image = hd.imread(str(path))
        volume = image.get_volume(dtype=np.float32)
    except Exception as exc:  # highdicom raises several types for frames that do not form one volume
        raise InputError(f"cannot read the multi-frame CT {path} as one volume: {exc}") from exc
    affine = np.asarray(volume.affine, dtype=float)
    slice_step, row_step, col_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    dz, dy, dx = (float(np.linalg.norm(v)) for v in (slice_step, row_step, col_step))
    x_dir, y_dir = col_step / dx, row_step / dy
    normal = np.cross(x_dir, y_dir)
    array = np.asarray(volume.array, dtype=np.float32)
    origin = affine[:3, 3]
    if float(slice_step @ normal) < 0:  # store slices ascending along the normal, like single-frame series
        array = array[::-1]
        origin = origin + slice_step * (array.shape[0] - 1)
    n_low = int(np.count_nonzero(array < AIR_HU))
    np.maximum(array, AIR_HU, out=array)
    if n_low > 0.001 * array.size:
        warnings.append(
            f"{n_low} pixels below {AIR_HU} HU (outside the scanner's field of view) set to {AIR_HU}"
        )
    check_hounsfield(array, f"the frames of {path.name}", warnings)
    fill_to_air(array, warnings)  # after: a mask's or a normalised image's 0 border is no fill
    if np.array_equal(array, np.rint(array)) and array.max(initial=0) <= 32767:
        hu = array.astype(np.int16)
    else:
        hu = np.ascontiguousarray(array)
    direction = np.column_stack([x_dir, y_dir, normal])
    flip = (False, False)
    if plane_of_normal(normal) == "axial":
        direction, origin, flip = turn_axial_to_standard(hu, direction, origin, (dy, dx), warnings)
    return CTVolume(
        hu=hu,
        spacing=(dz, dy, dx),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        metadata=metadata,
        source_kind="dicom",
        source_path=str(path),
        slice_positions=float(origin @ normal) + dz * np.arange(hu.shape[0]),
        warnings=warnings,
        stored_flip=flip,
    )
