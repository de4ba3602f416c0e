"""The QC picture (overlay.png) as a DICOM secondary capture in the source study, so a radiologist sees it
in any PACS viewer next to the CT (highdicom's SCImage).

Patient and study attributes are copied from the analysed CT's header (de-identified the SEG's way when
asked), never filled with placeholders: a source without them gives no secondary capture and a warning. The
image gets its own series and SOP instance UIDs (new, or derived from `uid_seed`); it is an RGB picture made
by a workstation (conversion type WSD), with the date and time it was made (the de-identified study date
and time when de-identified).
PatientOrientation describes the left panel, the axial slice in radiological view (patient left towards
the picture's right, posterior down), which is the one a reader checks first.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np

from sarcoscope.export.overlay import overlay_pixels
from sarcoscope.export.seg import derived_uid, give_character_set, hide_creation_time, prepared_sources
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.imaging.deidentify.refusals import shows_burned_in

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

SC_SERIES_NUMBER = 9903
#: Without these the picture would not land in the patient's study; they are copied, never invented.
PATIENT_STUDY = ("PatientID", "StudyInstanceUID")


def build_qc_capture(
    result: AnalysisResult,
    overlay: Path | np.ndarray,
    deidentification: DeidentificationPolicy | None = None,
    uid_seed: str | None = None,
) -> tuple[hd.sc.SCImage | None, str | None]:
    """The secondary capture of the QC picture `overlay` (overlay.png or its `overlay_pixels`) for
    `result`'s study and None, or a note on what it left empty (see seg.prepared_sources); (None, reason)
    when it cannot be made. `uid_seed`: see seg.derived_uid."""
    headers = result.volume.dicom_headers
    if not headers:
        return None, "QC secondary capture not written: the input was not DICOM"
    shown = int(result.selection.indices[len(result.selection.indices) // 2])
    sources, message = prepared_sources(headers, [shown], deidentification)
    if sources is None:
        return None, f"QC secondary capture not written: {message}"
    source = sources[0]
    missing = [k for k in PATIENT_STUDY if not str(source.get(k) or "").strip()]
    if missing:
        return None, f"QC secondary capture not written: the source CT lacks {', '.join(missing)}"
    pixels = overlay if isinstance(overlay, np.ndarray) else overlay_pixels(overlay)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
            sc = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=pixels,
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=derived_uid(uid_seed, "sc-series"),
                series_number=SC_SERIES_NUMBER,
                sop_instance_uid=derived_uid(uid_seed, "sc-instance"),
                instance_number=1,
                manufacturer="sarcoscope",
                patient_orientation=("L", "P"),
                transfer_syntax_uid="1.2.840.10008.1.2.1",
            )
    except Exception as exc:  # an optional output: any refusal becomes a report warning, never a failed run
        return None, f"QC secondary capture not written: highdicom refused it ({type(exc).__name__}: {exc})"
    give_character_set(sc, headers[shown])
    sc.ConversionType = "WSD"
    sc.Modality = "OT"
    sc.SeriesDescription = f"sarcoscope L3 QC picture ({result.engine})"
    sc.ImageComments = "L3 tissue overlay made by sarcoscope; not for primary diagnosis"
    sc.BurnedInAnnotation = "YES"  # areas, slice numbers and software version are drawn into the picture
    now = _dt.datetime.now()
    for date, time in (("SeriesDate", "SeriesTime"), ("ContentDate", "ContentTime")):
        setattr(sc, date, now.strftime("%Y%m%d"))
        setattr(sc, time, now.strftime("%H%M%S"))
    if deidentification is not None:  # the picture shows the series' pixels, any text burned into them too
        hide_creation_time(sc, source, deidentification, burned_in=shows_burned_in(headers))
        sc.DateOfSecondaryCapture, sc.TimeOfSecondaryCapture = source.StudyDate, source.StudyTime
    return sc, message


def write_qc_capture(
    result: AnalysisResult,
    overlay: Path | np.ndarray,
    path: Path,
    deidentification: DeidentificationPolicy | None = None,
    uid_seed: str | None = None,
) -> str | None:
    """Write the secondary capture to `path` when it can be made; return a warning: why not, or what it
    left empty."""
    sc, message = build_qc_capture(result, overlay, deidentification, uid_seed)
    if sc is not None:
        sc.save_as(path)
    return message
