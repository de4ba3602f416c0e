"""Outputs of one analysis: report.json (+ JSON Schema), metrics.csv, overlay.png, NIfTI labels, DICOM SEG."""

from sarcoscope.export.nifti import label_nifti
from sarcoscope.export.overlay import render_overlay
from sarcoscope.export.report import REPORT_SCHEMA, build_report, metrics_csv, report_schema
from sarcoscope.export.seg import build_dicom_seg
from sarcoscope.export.writer import OUTPUT_FILES, write_outputs

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
