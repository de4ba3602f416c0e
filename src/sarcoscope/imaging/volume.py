"""The one in-memory form of a CT that every stage works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarcoscope.errors import InputError

#: HU given to voxels outside the scanner's field of view and to padding (air).
AIR_HU = -1024
#: Plausible in-plane pixel spacing of a CT (mm); outside it the header (or the user) is wrong.
PIXEL_SPACING_RANGE_MM = (0.05, 10.0)


def index_ranges(indices: Any) -> str:
    """Slice indices as compact text for messages: [3, 4, 5, 9] -> "3-5, 9"."""
    runs: list[list[int]] = []
    for value in sorted({int(i) for i in indices}):
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def slices_text(first: int, last: int) -> str:
    """A span of slices as messages name it: "slice 5", "slices 4–6"."""
    return f"slice {first}" if first == last else f"slices {first}–{last}"


def image_numbers(volume: CTVolume) -> list[int] | None:
    """Each slice's DICOM Instance Number, in array order: the "image 38" a PACS viewer shows for it, which
    the slice index (from 0, counted from the feet) is not; None unless every slice has its own (a NIfTI
    input, a series without Instance Numbers or with repeated ones)."""
    if volume.instance_numbers is not None:
        return list(volume.instance_numbers)
    headers = volume.dicom_headers or []
    numbers: list[int] = []
    for ds in headers:
        try:
            numbers.append(int(ds.get("InstanceNumber")))
        except (TypeError, ValueError):
            return None
    if len(numbers) != volume.n_slices or len(set(numbers)) != len(numbers):
        return None
    return numbers


def image_text(numbers: Sequence[int | None] | None, lead: str = " · ") -> str:
    """The image numbers (image_numbers) of the slices named beside, as the web app's imageText says them:
    " · image 38" or " · images 35–42"; "" when they are not known (None, or a slice without one)."""
    if not numbers or any(n is None for n in numbers):
        return ""
    lo, hi = min(numbers), max(numbers)  # type: ignore[type-var]
    return f"{lead}image {lo}" if lo == hi else f"{lead}images {lo}–{hi}"


#: A fill is one exact value covering this share of a slice's border pixels (and connected to them).
_FILL_BORDER_SHARE = 0.25
#: ... and over this share of the slice (outside a circle inscribed in the image: 21 %).
_FILL_AREA_SHARE = 0.02


def fill_to_air(hu: np.ndarray, warnings: list[str]) -> None:
    """Make air (in place) a constant fill around the image that is not air: tools that resample or rotate
    CT (SimpleITK's Resample, scipy) fill what lies outside the original field with 0 by default, and a
    band of 0 HU round the body is read as soft tissue. On the nine real L3 slices with the area outside
    the reconstruction circle set to 0 HU, the U-Net's muscle Dice fell 0.981 -> 0.964 (its leave-one-out
    models 0.946 -> 0.931). A fill is told from the image by being one exact value, not air, at a corner and
    over a quarter or more of the slice's border, and the region of that value connected to the border is
    changed (real air, even outside the field, is noisy or already AIR_HU)."""
    changed, slices = 0, []
    for k, one in enumerate(hu):
        # a fill covers the corners (what lies outside a field of view, a rotation's or a larger grid's)
        corners = {v for v in (one[0, 0], one[0, -1], one[-1, 0], one[-1, -1]) if v > -900}
        if not corners:
            continue
        border = np.concatenate([one[0], one[-1], one[1:-1, 0], one[1:-1, -1]])
        fills = [v for v in corners if np.count_nonzero(border == v) >= _FILL_BORDER_SHARE * border.size]
        if not fills:
            continue
        from scipy import ndimage as ndi  # only for an image with a fill (its import alone takes 0.15 s)

        value = fills[0]
        same = one == value
        labels, _ = ndi.label(same, structure=np.ones((3, 3), bool))
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        fill = np.isin(labels, edge[edge > 0])
        if np.count_nonzero(fill) < _FILL_AREA_SHARE * one.size or not ndi.binary_erosion(fill).any():
            continue  # a line of one value along an edge (a synthetic wall) is not a field's fill
        one[fill] = AIR_HU
        changed += int(np.count_nonzero(fill))
        slices.append(k)
    if changed:
        warnings.append(
            f"{changed} pixels of a constant fill around the image (as resampling tools write outside the "
            f"field of view) in slice(s) {index_ranges(slices)} set to {AIR_HU} HU (air)"
        )


def check_hounsfield(hu: np.ndarray, what: str, warnings: list[str]) -> None:
    """Refuse values that are not Hounsfield units: a CT holds air (about -1000 HU) around the body, in the
    lungs or the bowel, or as the scanner's padding. A normalised (0-1) image, a mask or a wrong rescale has
    none, and analysing it would give numbers that look like results. Slices without any air, in a series
    that has it, are named in a warning (one slice's rescale may be wrong)."""
    # the readers have raised everything below AIR_HU (padding, out of field) to it; counted slice by slice,
    # as a mask of the whole volume would be the peak of a long series' reading (300 slices: 79 MB)
    air = np.array([np.count_nonzero(s <= -900) for s in hu])
    if air.sum() < 0.001 * hu.size:
        raise InputError(
            f"{what} do not look like Hounsfield units: no air near -1000 (values {float(hu.min()):g} to "
            f"{float(hu.max()):g}); a normalised image, a mask or a wrong rescale cannot be measured"
        )
    airless = np.flatnonzero(air == 0)
    if airless.size:
        warnings.append(
            f"slice(s) {index_ranges(airless)} hold no air (about -1000 HU) while the others do: their "
            "values may not be Hounsfield units (check RescaleSlope/RescaleIntercept); do not measure them"
        )


@dataclass
class CTMetadata:
    """Patient and acquisition facts read from the input (None when absent)."""

    patient_id: str | None = None
    patient_sex: str | None = None  # "M" | "F" | None
    patient_age_years: float | None = None
    patient_height_m: float | None = None  # DICOM PatientSize is in metres
    patient_weight_kg: float | None = None
    contrast_agent: str | None = None  # ContrastBolusAgent; None = not recorded
    kvp: float | None = None
    manufacturer: str | None = None
    manufacturer_model: str | None = None
    study_date: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    series_description: str | None = None
    frame_of_reference_uid: str | None = None
    slice_thickness_mm: float | None = None
    convolution_kernel: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: The three anatomical axes, each as its two nibabel axis codes.
_AXIS_PAIRS = ("LR", "PA", "IS")


@dataclass
class CTVolume:
    """A CT as a HU array with its geometry.

    Array axes are (z, y, x). For an axial series read from DICOM, x follows the row direction, y the column
    direction and z the slice normal, ordered by ImagePositionPatient projected on that normal (ascending,
    so for a standard supine axial series z runs inferior -> superior, y anterior -> posterior and x patient
    right -> left). NIfTI inputs are reoriented to the same LPS-like layout.
    """

    hu: np.ndarray  # (z, y, x), int16 or float32, Hounsfield units; outside-of-field set to -1024
    spacing: tuple[float, float, float]  # (z, y, x) in mm; z = median slice-centre distance
    origin: tuple[float, float, float]  # patient LPS position (mm) of voxel (0, 0, 0)
    direction: np.ndarray  # 3x3; columns are the LPS unit vectors of the x, y and z array axes
    metadata: CTMetadata = field(default_factory=CTMetadata)
    source_kind: str = "unknown"  # "dicom" | "nifti" | "array"
    source_path: str | None = None
    #: Position (mm) of each slice along the slice normal; uneven gaps are reported in `warnings`.
    slice_positions: np.ndarray | None = None
    #: For DICOM input: one header per slice (pixel data removed), in array order; used to reference the
    #: source images from DICOM SEG and to re-export selected slices.
    dicom_headers: list[Any] | None = None
    warnings: list[str] = field(default_factory=list)
    #: (rows, columns) reversed against the DICOM files' pixel arrays: axial images stored upside down or
    #: mirrored (a prone patient) are turned to the standard layout when read; see `stored_layout`.
    stored_flip: tuple[bool, bool] = (False, False)
    #: The in-plane pixel spacing was given by the user (a NIfTI file without a spatial transform), not read
    #: from the file; the report says so.
    pixel_spacing_given: bool = False
    #: For NIfTI input: the file's voxel axes as nibabel axis codes (("R", "A", "S") for TotalSegmentator's
    #: files), so that a label map written on its grid keeps the file's voxel order, not this volume's.
    source_axes: tuple[str, str, str] | None = None
    #: Each slice's DICOM Instance Number in array order, when known without `dicom_headers` (the web app's
    #: cache keeps them): see `image_numbers`, which reads them from the headers otherwise.
    instance_numbers: list[int] | None = None

    def __post_init__(self) -> None:
        if self.source_axes is not None:
            pairs = sorted(next((p for p in _AXIS_PAIRS if c in p), "?") for c in self.source_axes)
            if pairs != sorted(_AXIS_PAIRS):
                raise ValueError(
                    f"source_axes must name L/R, P/A and I/S once each, not {self.source_axes!r}"
                )
        numbers = self.instance_numbers
        if numbers is not None and (len(numbers) != self.n_slices or len(set(numbers)) != len(numbers)):
            raise ValueError(
                f"instance_numbers must give each of the {self.n_slices} slices its own number, "
                f"not {len(numbers)} numbers ({len(set(numbers))} different)"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """In-plane (y, x) spacing in mm."""
        return (self.spacing[1], self.spacing[2])

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping (x, y, z) voxel indices to patient LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction @ np.diag([self.spacing[2], self.spacing[1], self.spacing[0]])
        a[:3, 3] = self.origin
        return a

    def stored_layout(self, array: np.ndarray) -> np.ndarray:
        """A (..., y, x) array of this volume's layout in the DICOM files' pixel layout, or one in the files'
        layout in this volume's (a flip undoes itself): what a DICOM SEG or a per-slice label file holds."""
        flip_y, flip_x = self.stored_flip
        out = array[..., ::-1, :] if flip_y else array
        return out[..., :, ::-1] if flip_x else out

    def axial(self, index: int) -> np.ndarray:
        return self.hu[index]

    @property
    def orientation(self) -> str:
        """Plane of the array's slices: "axial", "coronal" or "sagittal" (closest to the slice normal)."""
        return plane_of_normal(np.asarray(self.direction, dtype=float)[:, 2])

    @property
    def is_axial(self) -> bool:
        """True when `hu[k]` are axial planes; stages that need axial slices (L3) refuse otherwise."""
        return self.orientation == "axial"


def plane_of_normal(normal: np.ndarray) -> str:
    """Name the anatomical plane whose normal is closest to `normal` (an LPS vector)."""
    axis = int(np.argmax(np.abs(np.asarray(normal, dtype=float))))
    return ("sagittal", "coronal", "axial")[axis]


def stored_flip_of(row: Sequence[float], column: Sequence[float]) -> tuple[bool, bool]:
    """(rows, columns) to reverse to bring axial images whose rows and columns run along these LPS
    directions (ImageOrientationPatient) to the standard layout."""
    return bool(float(column[1]) < -0.9), bool(float(row[0]) < -0.9)


def turn_axial_to_standard(
    hu: np.ndarray,
    direction: np.ndarray,
    origin: np.ndarray,
    spacing_yx: Sequence[float],
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool]]:
    """Flip (in place) axial images stored upside down or mirrored into the standard layout (rows toward
    the patient's left, columns toward posterior), which the localizer and the engines expect.

    A prone patient's images are stored with the back at the top: read as stored, the U-Net measured a
    phantom's muscle 22 % low. Returns the new direction, the origin (the new first pixel's position) and
    the flips, with which a DICOM SEG is written back in the files' layout.
    """
    direction = direction.copy()
    flip_y, flip_x = stored_flip_of(direction[:, 0], direction[:, 1])
    for axis, flipped, step in ((1, flip_y, spacing_yx[0]), (0, flip_x, spacing_yx[1])):
        if flipped:
            origin = origin + (hu.shape[2 - axis] - 1) * step * direction[:, axis]
            direction[:, axis] = -direction[:, axis]
    if flip_y or flip_x:
        for k in range(hu.shape[0]):  # slice by slice: no second copy of the volume
            hu[k] = hu[k, :: -1 if flip_y else 1, :: -1 if flip_x else 1].copy()
        stored = {
            (True, True): "rotated by 180° (the back at the top, as for a prone patient)",
            (True, False): "upside down (columns toward anterior)",
            (False, True): "mirrored (rows toward the patient's right)",
        }[(flip_y, flip_x)]
        warnings.append(
            f"the axial images are stored {stored}; they were turned to the standard orientation for the "
            "analysis (a DICOM SEG keeps the files' layout)"
        )
    if not (direction[0, 0] > 0.9 and direction[1, 1] > 0.9):
        warnings.append(
            "axial images are not in the standard orientation (rows toward patient left, columns toward "
            "posterior); the array is kept as stored"
        )
    return direction, origin, (flip_y, flip_x)
