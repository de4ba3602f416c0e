"""Reading CT (DICOM series, zip, single slice, NIfTI) into one CTVolume; reconstructions and windowing.

The names below import their module on first use (sarcoscope.lazy): `sarcoscope.imaging.volume` and
`.views` (numpy only) do not load pydicom and nibabel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sarcoscope.lazy import attributes

if TYPE_CHECKING:
    from sarcoscope.imaging.dicom_reader import SeriesInfo
    from sarcoscope.imaging.dicom_writer import write_dicom_series
    from sarcoscope.imaging.read import list_series, read_ct
    from sarcoscope.imaging.views import (
        WINDOW_PRESETS,
        body_centre,
        coronal,
        display_aspect,
        display_extent,
        sagittal,
        window,
    )
    from sarcoscope.imaging.volume import CTMetadata, CTVolume

__all__ = [
    "WINDOW_PRESETS",
    "CTMetadata",
    "CTVolume",
    "SeriesInfo",
    "body_centre",
    "coronal",
    "display_aspect",
    "display_extent",
    "list_series",
    "read_ct",
    "sagittal",
    "window",
    "write_dicom_series",
]
__getattr__ = attributes(
    __name__,
    {
        "WINDOW_PRESETS": "views",
        "CTMetadata": "volume",
        "CTVolume": "volume",
        "SeriesInfo": "dicom_reader",
        "body_centre": "views",
        "coronal": "views",
        "display_aspect": "views",
        "display_extent": "views",
        "list_series": "read",
        "read_ct": "read",
        "sagittal": "views",
        "window": "views",
        "write_dicom_series": "dicom_writer",
    },
)
