"""Outputs of one analysis: report.json (+ JSON Schema), metrics.csv, overlay.png, NIfTI labels, DICOM SEG.

The names below import their module on first use (sarcoscope.lazy): `sarcoscope.export.nifti` alone (the
web viewer's volume) does not load highdicom and the other writers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sarcoscope.lazy import attributes

if TYPE_CHECKING:
    from sarcoscope.export.nifti import label_nifti
    from sarcoscope.export.overlay import render_overlay
    from sarcoscope.export.report import REPORT_SCHEMA, build_report, metrics_csv, report_schema
    from sarcoscope.export.seg import build_dicom_seg
    from sarcoscope.export.writer import OUTPUT_FILES, write_outputs

#: The SEG's note in the report of a non-DICOM input: here, so that the writer says it without importing
#: highdicom (export.seg, which returns it too).
SEG_NOT_DICOM = "DICOM SEG not written: the input was not DICOM (see labels.nii.gz)"

__all__ = [
    "OUTPUT_FILES",
    "REPORT_SCHEMA",
    "build_dicom_seg",
    "build_report",
    "label_nifti",
    "metrics_csv",
    "render_overlay",
    "report_schema",
    "write_outputs",
]
__getattr__ = attributes(
    __name__,
    {
        "OUTPUT_FILES": "writer",
        "REPORT_SCHEMA": "report",
        "build_dicom_seg": "seg",
        "build_report": "report",
        "label_nifti": "nifti",
        "metrics_csv": "report",
        "render_overlay": "overlay",
        "report_schema": "report",
        "write_outputs": "writer",
    },
)
