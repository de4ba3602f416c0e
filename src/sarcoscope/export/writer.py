"""Write every output of one analysis into a folder, atomically.

All files are first written into a fresh temporary folder beside `out_dir` (same file system). Then:
- if `out_dir` does not exist, the temporary folder is renamed to it (one atomic step);
- otherwise the previous report.json is removed first, the new files are moved in one by one with
  os.replace, outputs of the previous run that this run did not produce are removed, and report.json is moved
  in LAST.
report.json is therefore the commit marker: whenever it exists, every file beside it belongs to the same run;
a run that fails part-way leaves no report.json (and its temporary folder is removed).

De-identified (`deidentification` given): the SEG, SR, QC capture and report.json are de-identified
consistently (one pseudonym, the same remapped UIDs); overlay.png shows CT pixels, so a series with burned-in
annotation is refused before anything is written unless the policy accepts it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib

from sarcoscope.errors import OutputError
from sarcoscope.export.label_tables import (
    SARCOSCOPE,
    check_order,
    itksnap_label_description,
    slicer_color_table,
)
from sarcoscope.export.nifti import label_nifti
from sarcoscope.export.overlay import render_overlay
from sarcoscope.export.report import build_report, metrics_csv, report_json
from sarcoscope.export.sc import write_qc_capture
from sarcoscope.export.seg import build_dicom_seg
from sarcoscope.export.sr import write_dicom_sr
from sarcoscope.imaging.deidentify import DeidentificationPolicy, refuse_burned_in

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

#: Output kind -> file name. Every name any run may write, so stale files of a previous run can be removed.
OUTPUT_FILES: dict[str, str] = {
    "metrics": "metrics.csv",
    "overlay": "overlay.png",
    "labels_nifti": "labels.nii.gz",
    "slicer_colors": "labels.ctbl",
    "itksnap_labels": "labels.itksnap.txt",
    "dicom_seg": "labels.seg.dcm",
    "dicom_sr": "report.sr.dcm",
    "qc_capture": "report.qc.dcm",
    "report": "report.json",
}


def _write_all(
    result: AnalysisResult, tmp: Path, deidentification: DeidentificationPolicy | None, label_order: str
) -> dict[str, str]:
    written: dict[str, str] = {}
    warnings: list[str] = []
    (tmp / OUTPUT_FILES["metrics"]).write_text(metrics_csv(result), encoding="utf-8")
    written["metrics"] = OUTPUT_FILES["metrics"]
    render_overlay(result, tmp / OUTPUT_FILES["overlay"])
    written["overlay"] = OUTPUT_FILES["overlay"]
    nib.save(label_nifti(result, label_order), tmp / OUTPUT_FILES["labels_nifti"])
    written["labels_nifti"] = OUTPUT_FILES["labels_nifti"]
    for kind, text in (
        ("slicer_colors", slicer_color_table(label_order)),
        ("itksnap_labels", itksnap_label_description(label_order)),
    ):
        (tmp / OUTPUT_FILES[kind]).write_text(text, encoding="utf-8")
        written[kind] = OUTPUT_FILES[kind]
    seg, problem = build_dicom_seg(result, deidentification)
    if seg is None:
        warnings.append(str(problem))
    else:
        seg.save_as(tmp / OUTPUT_FILES["dicom_seg"])
        written["dicom_seg"] = OUTPUT_FILES["dicom_seg"]
    if result.volume.dicom_headers:  # the SR and the QC capture belong in the source's DICOM study
        for kind, problem in (
            ("dicom_sr", write_dicom_sr(result, seg, tmp / OUTPUT_FILES["dicom_sr"], deidentification)),
            (
                "qc_capture",
                write_qc_capture(
                    result, tmp / OUTPUT_FILES["overlay"], tmp / OUTPUT_FILES["qc_capture"], deidentification
                ),
            ),
        ):
            if problem is None:
                written[kind] = OUTPUT_FILES[kind]
            else:
                warnings.append(problem)
    written["report"] = OUTPUT_FILES["report"]
    report = build_report(result, outputs=written, extra_warnings=warnings, deidentification=deidentification)
    (tmp / OUTPUT_FILES["report"]).write_text(report_json(report), encoding="utf-8")
    return written


def write_outputs(
    result: AnalysisResult,
    out_dir: Path,
    deidentification: DeidentificationPolicy | None = None,
    label_order: str = SARCOSCOPE,
) -> dict[str, Path]:
    """Write report.json, metrics.csv, overlay.png, labels.nii.gz and, for DICOM input, labels.seg.dcm,
    report.sr.dcm and report.qc.dcm, de-identified with `deidentification` when given.

    Returns the written files by kind. A DICOM object that cannot be made is skipped with a warning in the
    report; any other failure raises and leaves `out_dir` without a (new or mixed) report.
    """
    out_dir = Path(out_dir)
    check_order(label_order)
    if deidentification is not None:
        refuse_burned_in(result.volume.dicom_headers or [], deidentification)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"Output path {out_dir} exists and is not a folder.")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp, which is private 0700) so the final folder gets the user's usual permissions
        tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.partial"
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc}") from exc
    try:
        written = _write_all(result, tmp, deidentification, label_order)
        if not out_dir.exists():
            os.replace(tmp, out_dir)
        else:
            _swap_into(tmp, out_dir, written)
    except OSError as exc:
        raise OutputError(f"Cannot write the outputs into {out_dir}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {kind: out_dir / name for kind, name in written.items()}


def _swap_into(tmp: Path, out_dir: Path, written: dict[str, str]) -> None:
    report = out_dir / OUTPUT_FILES["report"]
    with contextlib.suppress(FileNotFoundError):
        report.unlink()  # from here on, the folder has no report until the new one is complete
    for kind, name in written.items():
        if kind != "report":
            os.replace(tmp / name, out_dir / name)
    for kind, name in OUTPUT_FILES.items():
        if kind not in written:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()  # stale output of a previous run
    os.replace(tmp / OUTPUT_FILES["report"], report)
