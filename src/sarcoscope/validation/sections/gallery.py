"""The gallery: the worst cases drawn with reference and prediction, to see what a low score means."""

from __future__ import annotations

import numpy as np

from sarcoscope.imaging import read_ct
from sarcoscope.imaging.labelmaps import LabelGrid, LabelMapping, read_label_map
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.validation import document as d
from sarcoscope.validation import plots
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import ScoredCase


def add_gallery(
    out: ReportFolder,
    cases: list[ScoredCase],
    size: int,
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    engine: SegmentationEngine | None,
) -> None:
    """The worst cases by class-aware M+S+V Dice, re-read from disk (the first pass keeps only numbers)."""
    if size <= 0:
        return
    worst = sorted(cases, key=lambda c: c.metrics["msv_mean_dice"])[:size]
    out.doc.add(d.Heading(f"Worst {len(worst)} cases"))
    out.doc.add(
        d.Paragraph(
            "Ranked by the mean Dice of muscle, SAT and VAT. Look here first when a site is flagged: a "
            "consistent contour offset or a structure included on one side only is a labelling convention, "
            "not a model error."
        )
    )
    for c in worst:
        volume = read_ct(c.image_path) if c.image_path is not None else None
        grid = LabelGrid.of_volume(volume) if volume is not None else None
        ref = read_label_map(c.ref_path, ref_map, grid).labels
        pred = (
            np.load(c.pred_path) if engine is not None else read_label_map(c.pred_path, pred_map, grid).labels
        )
        image = np.asarray(volume.hu) if volume is not None else None
        k = int(np.argmax((pred != ref).reshape(pred.shape[0], -1).sum(axis=1)))
        path = plots.gallery_figure(
            c.case_id,
            pred[k],
            ref[k],
            None if image is None else image[k],
            c.metrics,
            out.figdir / f"gallery_{c.case_id}.png",
        )
        slice_note = f" (slice {k})" if pred.shape[0] > 1 else ""
        out.doc.add(d.Figure(path, f"{c.case_id}{slice_note}" + (f", site {c.site}" if c.site else "")))
