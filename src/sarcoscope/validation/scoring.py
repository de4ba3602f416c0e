"""Scoring every case: pair the files, read and check them, segment with an engine if asked, compute metrics.

Only numbers are kept per case (the label maps are re-read for the gallery), so memory stays flat for big
cohorts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.conventions import TISSUE_TITLES, TISSUES
from sarcoscope.errors import LabelMapError, SarcoscopeError, ValidationInputError
from sarcoscope.imaging import read_ct
from sarcoscope.imaging.labelmaps import LABEL_EXTENSIONS, LabelGrid, LabelMapping, read_label_map
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.validation.inputs import read_heights
from sarcoscope.validation.io import IMAGE_EXTENSIONS, index_folder, match_cases, resolve_spacing
from sarcoscope.validation.metrics import case_metrics, confusion_matrix

#: The pooled columns scored besides the tissues: M+S+V as one foreground, and the mean of the three.
MSV_COLUMNS = {"msv": "M+S+V (union)", "msv_mean": "M+S+V (mean of 3)"}


@dataclass
class ScoredCase:
    """One case's files and numbers (no pixel arrays)."""

    case_id: str
    ref_path: Path
    pred_path: Path
    image_path: Path | None
    site: str
    metrics: dict[str, float]
    confusion: np.ndarray  # (N_LABELS, N_LABELS) pixel counts, rows = reference
    spacing: tuple[float, float] | None
    n_slices: int
    height_m: float | None = None


def column_titles(tissues: Sequence[str]) -> dict[str, str]:
    """Column key -> title of every scored column: the tissues, then the pooled M+S+V columns."""
    return {**{t: TISSUE_TITLES[t] for t in tissues}, **MSV_COLUMNS}


def score_cases(
    *,
    pred_store: Path,
    pred_dir: Path | None,
    ref_dir: Path,
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    images_dir: Path | None,
    engine: SegmentationEngine | None,
    site_of: dict[str, str],
    patients_csv: str | Path | None,
    pixel_spacing: tuple[float, float] | None,
    strip: tuple[tuple[str, ...], tuple[str, ...]],
    allow_unmatched: bool,
    tissues: tuple[str, ...],
    warn: list[str],
) -> list[ScoredCase]:
    """Read, check and score every case; engine predictions are saved in `pred_store`."""
    prefixes, suffixes = strip
    refs = index_folder(ref_dir, strip_prefixes=prefixes, strip_suffixes=suffixes)
    images = (
        index_folder(
            images_dir,
            extensions=IMAGE_EXTENSIONS,
            include_dirs=True,
            strip_prefixes=prefixes,
            strip_suffixes=suffixes,
        )
        if images_dir is not None
        else {}
    )
    if engine is not None:
        case_ids = match_cases(images, refs, allow_unmatched=allow_unmatched)
        pred_store.mkdir(exist_ok=True)
        preds = {c: pred_store / f"{c}.npy" for c in case_ids}
    else:
        assert pred_dir is not None
        preds = index_folder(
            pred_dir, extensions=LABEL_EXTENSIONS, strip_prefixes=prefixes, strip_suffixes=suffixes
        )
        case_ids = match_cases(preds, refs, allow_unmatched=allow_unmatched)
        missing = [c for c in case_ids if images and c not in images]
        if missing:
            raise ValidationInputError(f"No image in {images_dir} for case(s): {', '.join(missing[:10])}.")
    skipped = sorted((set(refs) | set(preds if engine is None else images)) - set(case_ids))
    if skipped:
        warn.append(f"{len(skipped)} case(s) on one side only were not scored: {', '.join(skipped[:10])}.")
    if site_of:
        no_site = [c for c in case_ids if c not in site_of]
        if no_site:
            raise ValidationInputError(f"The sites file has no site for case(s): {', '.join(no_site[:10])}.")
    heights = read_heights(Path(patients_csv)) if patients_csv is not None else {}
    cases: list[ScoredCase] = []
    no_spacing: list[str] = []
    for case in case_ids:
        image, img_spacing, grid = None, None, None
        if images:
            volume = read_ct(images[case])
            image, img_spacing, grid = (
                np.asarray(volume.hu),
                volume.pixel_spacing,
                LabelGrid.of_volume(volume),
            )
        try:
            ref = read_label_map(refs[case], ref_map, grid)
        except LabelMapError as exc:
            raise LabelMapError(f"Case {case}: {exc}") from None
        if engine is not None:
            assert image is not None and img_spacing is not None
            try:
                raw = engine.segment(image, img_spacing)
            except SarcoscopeError as exc:
                raise type(exc)(f"Case {case}: {exc}") from None
            pred_labels = pred_map.apply(raw, f"engine '{engine.name}' output for {case}")
            np.save(preds[case], pred_labels)
            pred_spacing = img_spacing
        else:
            try:
                pm = read_label_map(preds[case], pred_map, grid)
            except LabelMapError as exc:
                raise LabelMapError(f"Case {case}: {exc}") from None
            pred_labels, pred_spacing = pm.labels, pm.pixel_spacing
        if pred_labels.shape != ref.labels.shape:
            raise ValidationInputError(
                f"Case {case}: prediction {preds[case].name} has shape {pred_labels.shape} but reference "
                f"{refs[case].name} has {ref.labels.shape} (n, y, x)."
            )
        spacing = resolve_spacing(
            case,
            [
                (refs[case].name, ref.pixel_spacing),
                (preds[case].name, pred_spacing),
                (images[case].name if images else "image", img_spacing),
            ],
            pixel_spacing,
        )
        if spacing is None:
            no_spacing.append(case)
        tissue_ids = {t: TISSUES[t] for t in tissues}
        metrics = case_metrics(
            pred_labels, ref.labels, pixel_spacing=spacing, image=image, tissues=tissue_ids
        )
        h = heights.get(case)
        if h is not None and "muscle_area_ref_cm2" in metrics:
            metrics["smi_ref"] = metrics["muscle_area_ref_cm2"] / h**2
            metrics["smi_pred"] = metrics["muscle_area_pred_cm2"] / h**2
        cm = confusion_matrix(pred_labels, ref.labels)
        cases.append(
            ScoredCase(
                case,
                refs[case],
                preds[case],
                images.get(case),
                site_of.get(case, ""),
                metrics,
                cm,
                spacing,
                int(ref.labels.shape[0]),
                h,
            )
        )
    if no_spacing:
        warn.append(
            f"No pixel spacing for {len(no_spacing)} case(s) ({', '.join(no_spacing[:5])}): areas in cm² and "
            "SMI were not computed for them (give --images or --pixel-spacing); area errors in % are exact."
        )
    return cases
