"""Reading CT (DICOM series, zip, single slice, NIfTI) into one CTVolume; reconstructions and windowing."""

from sarcoscope.imaging.dicom_writer import write_dicom_series
from sarcoscope.imaging.volume import CTMetadata, CTVolume

__all__ = ["CTMetadata", "CTVolume", "write_dicom_series"]
