"""`read_label_map`: any supported label file -> project ids on its image's pixel grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import InputError, LabelMapError
from sarcoscope.fileio import read_npy
from sarcoscope.imaging.labelmaps.grid import LabelGrid, fit_to_grid
from sarcoscope.imaging.labelmaps.mappings import PROJECT_MAPPING, LabelMapping
from sarcoscope.imaging.labelmaps.png import is_tissue_png_folder, read_png, read_tissue_pngs
from sarcoscope.imaging.labelmaps.seg import read_dicom_seg
from sarcoscope.imaging.labelmaps.tag import read_tag
from sarcoscope.imaging.nifti import read_nifti_array

#: File endings of label maps; a folder of tissue PNGs is one too.
LABEL_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".npy", ".png", ".dcm", ".tag")


@dataclass(frozen=True)
class LabelMap:
    """One label file in project ids (n, y, x) uint8, with the in-plane spacing it states (None if none)."""

    path: Path
    labels: np.ndarray
    pixel_spacing: tuple[float, float] | None  # (y, x) mm

    def __post_init__(self) -> None:
        if self.labels.ndim != 3 or self.labels.dtype != np.uint8:
            raise ValueError(f"A label map is uint8 (n, y, x), not {self.labels.dtype} {self.labels.shape}.")


def label_extension(path: Path) -> str | None:
    """The label-map kind of a path: its extension, "folder" for a folder of tissue PNGs, None if neither."""
    if path.is_dir():
        return "folder" if is_tissue_png_folder(path) else None
    low = path.name.lower()
    return next((ext for ext in LABEL_EXTENSIONS if low.endswith(ext)), None)


def read_label_map(
    path: str | Path,
    mapping: LabelMapping,
    grid: LabelGrid | None = None,
    slices: Sequence[int] | None = None,
) -> LabelMap:
    """Read a label file and convert it to project ids through `mapping` (ids it does not list raise).

    With `grid` (the image the labels belong to) the result is on the asked `slices` of that grid (all
    when None) and a file that does not fit it is refused with its name; see `fit_to_grid`.
    """
    path = Path(path)
    kind = label_extension(path)
    spacing: tuple[float, float] | None = None
    if kind is None:
        raise LabelMapError(
            f"{path}: not a label map (expected {', '.join(LABEL_EXTENSIONS)} or a folder of tissue PNGs)."
        )
    if kind == ".dcm":
        labels, spacing = read_dicom_seg(path, mapping, grid, slices)
        return LabelMap(
            path, np.ascontiguousarray(fit_to_grid(labels.astype(np.uint8), grid, slices, path)), spacing
        )
    if kind == "folder":
        labels = read_tissue_pngs(path, mapping).astype(np.uint8)
        return LabelMap(path, np.ascontiguousarray(fit_to_grid(labels, grid, slices, path)), None)
    if kind in (".nii", ".nii.gz"):
        try:
            raw, spacing = read_nifti_array(path)
        except InputError as exc:
            raise LabelMapError(str(exc)) from None
    elif kind == ".npy":
        raw = read_npy(path, LabelMapError)
    elif kind == ".png":
        raw = read_png(path)
    else:
        if mapping.name == PROJECT_MAPPING:
            raise LabelMapError(
                f"{path} is a Slice-O-Matic TAG file: its tags are a protocol's own ids, not the project's. "
                "Give its label mapping (slice-o-matic-alberta, or a YAML file for other tags)."
            )
        raw = read_tag(path, grid.shape[1:] if grid is not None else None)
    if raw.ndim == 2:
        raw = raw[np.newaxis]
    if raw.ndim != 3:
        raise LabelMapError(f"{path}: expected a 2-D or 3-D label map, got shape {raw.shape}.")
    nifti = kind in (".nii", ".nii.gz")
    labels = fit_to_grid(mapping.apply(raw, str(path)), grid, slices, path, files_layout=not nifti)
    return LabelMap(path, np.ascontiguousarray(labels), spacing)
