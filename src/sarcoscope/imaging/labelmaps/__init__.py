"""Label maps made elsewhere, read onto their CT image's pixel grid in the project's label ids.

Formats: Slice-O-Matic `.tag` (the usual manual labels of sarcopenia cohorts), DICOM SEG (frames placed
by the SOP Instance UIDs they reference), NIfTI (reoriented like the CT), PNG (one PNG of ids, or a folder
of one binary PNG per tissue) and `.npy`. Every file goes through an explicit `LabelMapping` (built-ins
in `mappings/`, or a YAML file): an id the mapping does not list is an error, never silently background.
Given the image's `LabelGrid`, a file that does not fit it is refused with its name.

The names below import their module on first use (sarcoscope.lazy): listing the built-in mappings (the web
page's first request) does not load the readers' pydicom and nibabel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sarcoscope.lazy import attributes

if TYPE_CHECKING:
    from sarcoscope.imaging.labelmaps.grid import LabelGrid
    from sarcoscope.imaging.labelmaps.mappings import (
        PROJECT_MAPPING,
        LabelMapping,
        builtin_mappings,
        load_mapping,
    )
    from sarcoscope.imaging.labelmaps.png import is_tissue_png_folder
    from sarcoscope.imaging.labelmaps.read import LABEL_EXTENSIONS, LabelMap, label_extension, read_label_map

__all__ = [
    "LABEL_EXTENSIONS",
    "PROJECT_MAPPING",
    "LabelGrid",
    "LabelMap",
    "LabelMapping",
    "builtin_mappings",
    "is_tissue_png_folder",
    "label_extension",
    "load_mapping",
    "read_label_map",
]
__getattr__ = attributes(
    __name__,
    {
        "LABEL_EXTENSIONS": "read",
        "PROJECT_MAPPING": "mappings",
        "LabelGrid": "grid",
        "LabelMap": "read",
        "LabelMapping": "mappings",
        "builtin_mappings": "mappings",
        "is_tissue_png_folder": "png",
        "label_extension": "read",
        "load_mapping": "mappings",
        "read_label_map": "read",
    },
)
