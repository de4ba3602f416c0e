"""`run_validation`: score predictions against references and write the report folder in one call.

The report is built in a staging folder beside `out_dir` and its outputs moved in at the end (see
`placement`): a failed run never touches the last good report, and the other files of `out_dir` stay.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarcoscope import __version__
from sarcoscope.conventions import TISSUES
from sarcoscope.errors import ValidationInputError
from sarcoscope.fileio import LockedTempDir, images_temp_dir
from sarcoscope.imaging.labelmaps import LabelMapping, load_mapping
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.validation import document as d
from sarcoscope.validation.inputs import read_sites
from sarcoscope.validation.io import DEFAULT_STRIP_PREFIXES, DEFAULT_STRIP_SUFFIXES, some_ids
from sarcoscope.validation.placement import check_report_folder, discard, new_staging, place_report
from sarcoscope.validation.report_folder import ReportFolder
from sarcoscope.validation.scoring import ScoredCase, score_cases
from sarcoscope.validation.sections import agreement, gallery, iou_bins, l3, overlap, sites
from sarcoscope.validation.stats import IOU_BINS, AreaErrorSummary, Summary


@dataclass
class ValidationReport:
    """What a validation run found; every number is also in the CSV files of `out_dir`."""

    out_dir: Path
    n_cases: int
    tissues: tuple[str, ...]
    per_case: list[dict[str, Any]]
    dice_summary: dict[str, Summary]
    area_error: dict[str, AreaErrorSummary]
    flagged_sites: dict[str, list[str]]
    l3_summary: dict[str, float] | None
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _resolve_engine(engine: str | SegmentationEngine) -> SegmentationEngine:
    if isinstance(engine, str):
        from sarcoscope.segmentation import get_engine

        return get_engine(engine)
    return engine


def run_validation(
    pred_dir: str | Path | None,
    ref_dir: str | Path | None,
    out_dir: str | Path,
    *,
    sites_csv: str | Path | None = None,
    ref_mapping: str | Path | LabelMapping | None = None,
    pred_mapping: str | Path | LabelMapping | None = None,
    images_dir: str | Path | None = None,
    engine: str | SegmentationEngine | None = None,
    ref_l3_csv: str | Path | None = None,
    pred_l3_csv: str | Path | None = None,
    patients_csv: str | Path | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    strip_prefixes: Sequence[str] = DEFAULT_STRIP_PREFIXES,
    strip_suffixes: Sequence[str] = DEFAULT_STRIP_SUFFIXES,
    allow_unmatched: bool = False,
    gallery_size: int = 6,
    alpha: float = 0.05,
    keep_predictions: bool = True,
    title: str = "Segmentation validation report",
) -> ValidationReport:
    """Validate label maps (or an engine run on `images_dir`) against references; write `out_dir`.

    Either `pred_dir` or `engine` + `images_dir` gives the predictions; `ref_dir` the references.
    With only `ref_l3_csv` + `pred_l3_csv` (no label maps) the report covers L3 localization alone.
    In engine mode the label maps are saved in `out_dir/predictions/` unless `keep_predictions` is False.
    Raises ValidationInputError for unmatched ids, shape/spacing mismatches and unknown label ids, and
    OutputError (before any work) for an output folder the report cannot go to (`check_report_folder`).
    """
    segmentation = ref_dir is not None
    if segmentation and (pred_dir is None) == (engine is None):
        raise ValidationInputError("Give either a prediction folder or --engine with --images, not both.")
    if engine is not None and images_dir is None:
        raise ValidationInputError("--engine needs --images (the CT images to segment).")
    if not segmentation and (ref_l3_csv is None or pred_l3_csv is None):
        raise ValidationInputError("Nothing to validate: give a reference folder, or both L3 files.")
    if (ref_l3_csv is None) != (pred_l3_csv is None):
        raise ValidationInputError("L3 validation needs both --ref-l3 and --pred-l3.")
    folders = (pred_dir, ref_dir, images_dir)
    side_files = (sites_csv, patients_csv, ref_l3_csv, pred_l3_csv)
    out_dir = check_report_folder(out_dir, inputs=(*folders, *side_files), folders=folders)
    staging = new_staging(out_dir)
    pred_tmp: LockedTempDir | None = None
    try:
        if not keep_predictions:
            pred_tmp = images_temp_dir("predictions")
        pred_store = staging / "predictions" if pred_tmp is None else Path(pred_tmp.name)
        report = _run(
            staging=staging,
            pred_store=pred_store,
            pred_dir=Path(pred_dir) if pred_dir is not None else None,
            ref_dir=Path(ref_dir) if ref_dir is not None else None,
            sites_csv=sites_csv,
            ref_map=load_mapping(ref_mapping),
            pred_map=load_mapping(pred_mapping),
            images_dir=Path(images_dir) if images_dir is not None else None,
            engine=_resolve_engine(engine) if engine is not None else None,
            ref_l3_csv=ref_l3_csv,
            pred_l3_csv=pred_l3_csv,
            patients_csv=patients_csv,
            pixel_spacing=pixel_spacing,
            strip=(tuple(strip_prefixes), tuple(strip_suffixes)),
            allow_unmatched=allow_unmatched,
            gallery_size=gallery_size,
            alpha=alpha,
            title=title,
        )
        place_report(staging, out_dir)
    finally:
        discard(staging)  # on success: what is left of it, the old outputs moved aside
        if pred_tmp is not None:
            pred_tmp.cleanup()
    report.out_dir = out_dir
    return report


def _run(
    *,
    staging: Path,
    pred_store: Path,
    pred_dir: Path | None,
    ref_dir: Path | None,
    sites_csv: str | Path | None,
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    images_dir: Path | None,
    engine: SegmentationEngine | None,
    ref_l3_csv: str | Path | None,
    pred_l3_csv: str | Path | None,
    patients_csv: str | Path | None,
    pixel_spacing: tuple[float, float] | None,
    strip: tuple[tuple[str, ...], tuple[str, ...]],
    allow_unmatched: bool,
    gallery_size: int,
    alpha: float,
    title: str,
) -> ValidationReport:
    """The validation itself, in the order of the report: score the cases, then each section."""
    out = ReportFolder(staging, d.Document(title))
    out.figdir.mkdir()
    tissues = tuple(t for t in TISSUES if t in ref_map.tissues and t in pred_map.tissues)
    settings = _settings(ref_map, pred_map, tissues, engine, strip)
    cases: list[ScoredCase] = []
    dice_summary: dict[str, Summary] = {}
    area_error: dict[str, AreaErrorSummary] = {}
    flagged: dict[str, list[str]] = {}
    if ref_dir is not None:
        if "imat" in pred_map.tissues and "imat" not in ref_map.tissues:
            out.warnings.append(
                f"The reference convention '{ref_map.name}' has no IMAT class but the predictions have: "
                "predicted IMAT pixels count as 'other' in the muscle/VAT scores. Merge them explicitly "
                "(--pred-labels sarcoscope-imat-as-muscle or sarcoscope-imat-as-vat)."
            )
        site_of, internal_sites = read_sites(Path(sites_csv)) if sites_csv is not None else ({}, set())
        cases = score_cases(
            pred_store=pred_store,
            pred_dir=pred_dir,
            ref_dir=ref_dir,
            ref_map=ref_map,
            pred_map=pred_map,
            images_dir=images_dir,
            engine=engine,
            site_of=site_of,
            patients_csv=patients_csv,
            pixel_spacing=pixel_spacing,
            strip=strip,
            allow_unmatched=allow_unmatched,
            tissues=tissues,
            warn=out.warnings,
        )
        seen = seen_in_training(engine, [c.case_id for c in cases])
        if seen:
            out.warnings.append(
                f"{len(seen)} of the {len(cases)} cases ({some_ids(seen)}) were in the training data of the "
                f"model of engine '{engine.name}' (its model card's training cases): their scores measure "
                "how well it fits them, not how it does on new patients; validate on cases it has not seen."
            )
        has_sites = any(c.site for c in cases)
        overlap.add_overview(out, cases, tissues, ref_map, pred_map, engine)
        overlap.add_per_case_csv(out, cases, tissues)
        dice_summary = overlap.add_dice_summary(out, cases, tissues)
        area_error = overlap.add_area_error_summary(out, cases, tissues)
        iou_bins.add_table3(out, cases, tissues, internal_sites)
        if has_sites:
            iou_bins.add_site_tables(out, cases, tissues, internal_sites)
            flagged = sites.add_site_comparison(out, cases, tissues, alpha)
        agreement.add_agreement(out, cases, tissues, [c.site for c in cases] if has_sites else None)
        overlap.add_confusion(out, cases)
        gallery.add_gallery(out, cases, gallery_size, ref_map, pred_map, engine)
    l3_summary = None
    if ref_l3_csv is not None and pred_l3_csv is not None:
        l3_summary = l3.add_l3(out, ref_l3_csv, pred_l3_csv, allow_unmatched)
    _finish(out, settings)
    return ValidationReport(
        out_dir=staging,
        n_cases=len(cases),
        tissues=tissues,
        per_case=[{"case_id": c.case_id, "site": c.site, **c.metrics} for c in cases],
        dice_summary=dice_summary,
        area_error=area_error,
        flagged_sites=flagged,
        l3_summary=l3_summary,
        warnings=out.warnings,
        files=["report.md", "report.html", *out.files],
    )


def seen_in_training(engine: SegmentationEngine | None, case_ids: Sequence[str]) -> list[str]:
    """The cases among `case_ids` that the engine's model trained or early-stopped on, by its model card
    (`sarcoscope train` records the case ids, which are the file names' as validate reads them); [] for an
    engine without a card."""
    card = getattr(engine, "card", None)
    if not isinstance(card, dict):
        return []
    data = card.get("training_data") or {}
    used = {str(c) for part in ("train", "validation") for c in (data.get(part) or {}).get("data_cases", [])}
    return sorted(set(case_ids) & used)


def _settings(
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    tissues: tuple[str, ...],
    engine: SegmentationEngine | None,
    strip: tuple[tuple[str, ...], tuple[str, ...]],
) -> dict[str, Any]:
    """What the numbers depend on, for settings.json (the warnings are added when the report is done)."""
    return {
        "software_version": __version__,
        "reference_mapping": ref_map.name,
        "prediction_mapping": pred_map.name,
        "tissues": list(tissues),
        "engine": None if engine is None else {"name": engine.name, "model_id": engine.model_id},
        "iou_bins": [  # [name, lower bound inclusive, upper bound exclusive]; null = unbounded
            [name, lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]
            for name, lo, hi in IOU_BINS
        ],
        "empty_masks": "both empty -> Dice = IoU = 1; one side empty -> 0",
        "case_id_rule": {"strip_prefixes": list(strip[0]), "strip_suffixes": list(strip[1])},
        "icc": "ICC(2,1) two-way random, absolute agreement, single measurement (Shrout & Fleiss 1979)",
    }


def _finish(out: ReportFolder, settings: dict[str, Any]) -> None:
    """Warnings on top, settings.json, the list of files, then report.md and report.html."""
    warn = out.warnings
    if warn:
        out.doc.blocks.insert(
            0, d.Paragraph("**Warnings:** " + " ".join(f"({i}) {w}" for i, w in enumerate(warn, 1)))
        )
    settings["warnings"] = warn
    (out.root / "settings.json").write_text(json.dumps(settings, indent=2, allow_nan=False), encoding="utf-8")
    out.files.append("settings.json")
    out.doc.add(d.Heading("Files"))
    out.doc.add(
        d.Paragraph(
            "Every number above is in these CSV files: " + ", ".join(f"`{f}`" for f in out.files) + "."
        )
    )
    (out.root / "report.md").write_text(d.to_markdown(out.doc, out.root), encoding="utf-8")
    (out.root / "report.html").write_text(d.to_html(out.doc), encoding="utf-8")
