"""Reading CT (DICOM series, zip, single slice, NIfTI) into one CTVolume; reconstructions and windowing."""

from sarcoscope.imaging.volume import CTMetadata, CTVolume

__all__ = ["CTMetadata", "CTVolume"]
