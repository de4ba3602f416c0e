"""The pixel grid a label map must fit, and the one rule that places a label file's slices on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sarcoscope.errors import LabelMapError

if TYPE_CHECKING:
    from sarcoscope.imaging.volume import CTVolume


@dataclass(frozen=True)
class LabelGrid:
    """A CT image's axial pixel grid: (slices, rows, columns), and each slice's DICOM SOP Instance UID.

    Label maps are placed on the image's own pixel array (rows and columns as in the DICOM file); DICOM SEG
    frames are placed by the SOP Instance UIDs they reference, so a SEG needs `sop_uids`.
    """

    shape: tuple[int, int, int]
    sop_uids: tuple[str, ...] | None = None
    name: str = "the image"  # how messages name the image
    #: (rows, columns) of the image reversed against its files' pixel arrays (CTVolume.stored_flip)
    stored_flip: tuple[bool, bool] = (False, False)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ValueError(f"A label grid has 3 positive sizes (slices, rows, columns), not {self.shape}.")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.sop_uids is not None:
            uids = tuple(str(u) for u in self.sop_uids)
            if len(uids) != self.shape[0] or len(set(uids)) != len(uids) or not all(uids):
                raise ValueError(f"A label grid of {self.shape[0]} slice(s) needs as many distinct SOP UIDs.")
            object.__setattr__(self, "sop_uids", uids)

    @classmethod
    def of_volume(cls, volume: CTVolume, name: str | None = None) -> LabelGrid:
        """The grid of a CT read by `read_ct` (with SOP UIDs when it was read from DICOM)."""
        headers = volume.dicom_headers
        uids = tuple(str(h.SOPInstanceUID) for h in headers) if headers else None
        name = name or f"image {Path(volume.source_path or '?').name}"
        return cls(volume.shape, uids, name, volume.stored_flip)

    def wanted(self, slices: Sequence[int] | None) -> list[int]:
        """The slice indices asked for (all when None), checked against the grid."""
        if slices is None:
            return list(range(self.shape[0]))
        out = [int(i) for i in slices]
        bad = [i for i in out if not 0 <= i < self.shape[0]]
        if bad or not out:
            raise ValueError(f"Slices {bad or out} are not in {self.name} (0..{self.shape[0] - 1}).")
        return out


def fit_to_grid(
    labels: np.ndarray,
    grid: LabelGrid | None,
    slices: Sequence[int] | None,
    path: Path,
    files_layout: bool = True,
) -> np.ndarray:
    """`labels` (n, y, x) on the asked slices of `grid`; refused with the file named when they do not fit.

    A label file holds either every slice of the image (the asked ones are taken) or exactly the asked
    slices, in order; its rows and columns must be the image's. With `files_layout` its pixels are laid out
    as in the image's DICOM files (a SEG's frames, TAG, PNG, .npy), and are turned as the image was when
    read; a NIfTI label map is already in the image's layout.
    """
    if grid is None:
        return labels
    if files_layout:
        flip_y, flip_x = grid.stored_flip
        labels = labels[:, :: -1 if flip_y else 1, :: -1 if flip_x else 1]
    wanted = grid.wanted(slices)
    if labels.shape[1:] != grid.shape[1:]:
        raise LabelMapError(
            f"{grid.name} has shape {grid.shape} but label map {path.name} has {labels.shape} (n, y, x): "
            "a label map must be on its image's pixel grid (the rows and columns of the DICOM slice)."
        )
    if labels.shape[0] == len(wanted):
        return labels
    if labels.shape[0] == grid.shape[0]:
        return labels[wanted]
    asked = "" if len(wanted) == grid.shape[0] else f" ({len(wanted)} asked)"
    raise LabelMapError(
        f"Label map {path.name} has {labels.shape[0]} slice(s) but {grid.name} has {grid.shape[0]}{asked}."
    )
