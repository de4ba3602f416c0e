"""Reading CT (DICOM series, zip, single slice, NIfTI) into one CTVolume; reconstructions and windowing."""

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
