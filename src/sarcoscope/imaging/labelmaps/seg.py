"""DICOM SEG label maps: segments named by number, label or SNOMED codes, frames placed on the image's
slices by the SOP Instance UIDs they reference (highdicom)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.sr.codedict import codes

from sarcoscope.conventions import TISSUES
from sarcoscope.errors import LabelMapError
from sarcoscope.imaging.labelmaps.grid import LabelGrid
from sarcoscope.imaging.labelmaps.mappings import LabelMapping

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

#: tissue -> (segmented property type, anatomic region), as the project's DICOM SEG export codes them:
#: SNOMED has no pre-coordinated visceral or intermuscular fat, so the adipose tissues differ by region.
SEGMENT_CODES: dict[str, tuple[Code, Code]] = {
    "muscle": (codes.SCT.SkeletalMuscle, codes.SCT.Abdomen),
    "sat": (codes.SCT.AdiposeTissue, codes.SCT.SubcutaneousTissue),
    "vat": (codes.SCT.AdiposeTissue, codes.SCT.AbdominalCavityStructure),
    "imat": (codes.SCT.AdiposeTissue, codes.SCT.SkeletalMuscleStructure),
}


def _code_key(code: Any) -> tuple[str, str]:
    return (str(code.scheme_designator), str(code.value))


def coded_tissue(description: Any) -> int | None:
    """Project id from a segment's property type and anatomic region codes (None when they do not say)."""
    prop = _code_key(description.segmented_property_type)
    regions = {_code_key(r) for r in description.anatomic_regions}
    if prop == _code_key(codes.SCT.SkeletalMuscle):
        return int(TISSUES["muscle"])
    found = [
        name
        for name, (kind, region) in SEGMENT_CODES.items()
        if prop == _code_key(kind) and _code_key(region) in regions
    ]
    return int(TISSUES[found[0]]) if len(found) == 1 else None


def read_dicom_seg(
    path: Path, mapping: LabelMapping, grid: LabelGrid | None, slices: Sequence[int] | None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Project ids (n, y, x) on the asked slices of `grid` (or the SEG's own volume without a grid)."""
    import highdicom as hd
    import pydicom

    from sarcoscope.imaging.highdicom_tables import use_module_table

    use_module_table()
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ValueError...
        raise LabelMapError(f"Cannot read DICOM file {path}: {exc}") from None
    if getattr(header, "Modality", None) != "SEG":
        raise LabelMapError(
            f"{path} is a DICOM {getattr(header, 'Modality', 'file without Modality')}, not a DICOM SEG; "
            "label folders hold label maps (images go to --images)."
        )
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom raises ValueError/AttributeError for malformed SEGs
        raise LabelMapError(f"Cannot read DICOM SEG {path}: {exc}") from None
    lut = _segment_lut(seg, mapping, path)
    try:
        if grid is None:
            volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.int64)
            spacing = volume.spacing  # (slice, row, column) mm
            return lut[volume.array], (float(spacing[1]), float(spacing[2]))
        uids = _wanted_uids(seg, grid, slices, path)
        frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False, dtype=np.int64)
    except LabelMapError:
        raise
    except Exception as exc:  # highdicom raises ValueError/RuntimeError for irregular geometry, overlaps
        raise LabelMapError(f"Cannot read DICOM SEG {path} as a label map: {exc}") from None
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    return lut[frames], (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1]))


def _segment_lut(seg: Any, mapping: LabelMapping, path: Path) -> np.ndarray:
    """Segment number -> project id; a segment nobody can name is an error that says how to name it."""
    numbers = seg.get_segment_numbers()
    lut = np.zeros(max(numbers, default=0) + 1, dtype=np.uint8)
    unknown = []
    for number in numbers:
        desc = seg.get_segment_description(number)
        prop = getattr(desc.segmented_property_type, "meaning", "")
        target = mapping.segment_id(number, desc.segment_label, prop, coded_tissue(desc))
        if target is None:
            unknown.append(f"{number} '{desc.segment_label}' ({prop})")
        else:
            lut[number] = target
    if unknown:
        raise LabelMapError(
            f"{path}: unknown DICOM SEG segment(s) {'; '.join(unknown)}. Add them to a mapping YAML under "
            "segment_labels or segment_numbers."
        )
    return lut


def _wanted_uids(seg: Any, grid: LabelGrid, slices: Sequence[int] | None, path: Path) -> list[str]:
    """The SOP Instance UIDs of the asked slices; each must be one the SEG references."""
    if grid.sop_uids is None:
        raise LabelMapError(
            f"DICOM SEG {path} is placed on its image by the DICOM slices it references, but {grid.name} was "
            "not read from DICOM."
        )
    wanted = grid.wanted(slices)
    referenced = {str(sop) for _, _, sop in seg.get_source_image_uids()}
    missing = [i for i in wanted if grid.sop_uids[i] not in referenced]
    if missing:
        shown = ", ".join(f"{i} ({grid.sop_uids[i]})" for i in missing[:3])
        raise LabelMapError(
            f"DICOM SEG {path} does not reference slice(s) {shown}{' ...' if len(missing) > 3 else ''} of "
            f"{grid.name}: it was made for other images."
        )
    return [grid.sop_uids[i] for i in wanted]
