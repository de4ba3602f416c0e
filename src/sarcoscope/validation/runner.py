"""`run_validation`: score predictions against references and write the report folder in one call.

The folder is built beside `out_dir` and swapped in at the end, so an interrupted run never leaves a
half-written report where the last good one was.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarcoscope import __version__
from sarcoscope.conventions import TISSUE_TITLES, TISSUES
from sarcoscope.errors import SarcoscopeError, ValidationInputError
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.validation import document as d
from sarcoscope.validation import plots
from sarcoscope.validation.io import (
    DEFAULT_STRIP_PREFIXES,
    DEFAULT_STRIP_SUFFIXES,
    IMAGE_EXTENSIONS,
    LABEL_EXTENSIONS,
    index_folder,
    match_cases,
    read_label_map,
    resolve_spacing,
)
from sarcoscope.validation.l3 import compare_l3, read_l3_csv, summarize_l3
from sarcoscope.validation.mappings import LabelMapping, load_mapping
from sarcoscope.validation.metrics import N_LABELS, case_metrics, confusion_matrix
from sarcoscope.validation.stats import (
    IOU_BINS,
    Summary,
    bland_altman,
    compare_sites,
    icc,
    iou_bin_counts,
    summarize,
)

#: Smallest median difference that may flag a site (besides significance): Dice points, area-error points.
SITE_MIN_EFFECT = {"dice": 0.02, "area_err_pct": 5.0}
L3_TABLE_ROWS = 20
MSV_COLUMNS = {"msv": "M+S+V (union)", "msv_mean": "M+S+V (mean of 3)"}


@dataclass
class ValidationReport:
    """What a validation run found; every number is also in the CSV files of `out_dir`."""

    out_dir: Path
    n_cases: int
    tissues: tuple[str, ...]
    per_case: list[dict[str, Any]]
    dice_summary: dict[str, Summary]
    flagged_sites: dict[str, list[str]]
    l3_summary: dict[str, float] | None
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class _Case:
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


def _read_table(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ValidationInputError(f"Cannot read {what} file {path}: {exc}") from None
    if not rows or not set(required) <= set(rows[0]):
        raise ValidationInputError(f"{what} file {path}: needs a header with columns {', '.join(required)}.")
    return rows


def _read_sites(path: Path) -> tuple[dict[str, str], set[str]]:
    """case id -> site, and the sites marked internal (optional column `internal`: yes/true/1)."""
    sites: dict[str, str] = {}
    internal: set[str] = set()
    marks: dict[str, set[bool]] = {}
    for i, row in enumerate(_read_table(path, ("case_id", "site"), "Sites"), start=2):
        case, site = (row["case_id"] or "").strip(), (row["site"] or "").strip()
        if not case or not site:
            raise ValidationInputError(f"{path} line {i}: empty case_id or site.")
        if case in sites:
            raise ValidationInputError(f"{path} line {i}: case {case} appears twice.")
        sites[case] = site
        flag = (row.get("internal") or "").strip().lower() in ("1", "yes", "true", "y")
        if flag:
            internal.add(site)
        marks.setdefault(site, set()).add(flag)
    mixed = sorted(s for s, m in marks.items() if len(m) > 1)
    if mixed:
        raise ValidationInputError(
            f"{path}: site(s) {', '.join(mixed)} are marked internal on some rows only."
        )
    return sites, internal


def _read_heights(path: Path) -> dict[str, float]:
    """case id -> height in metres, from a `height_m` or `height_cm` column (blank = unknown)."""
    rows = _read_table(path, ("case_id",), "Patients")
    col = "height_m" if "height_m" in rows[0] else "height_cm" if "height_cm" in rows[0] else None
    if col is None:
        raise ValidationInputError(f"Patients file {path}: needs a height_m or height_cm column.")
    out: dict[str, float] = {}
    for i, row in enumerate(rows, start=2):
        text = (row.get(col) or "").strip()
        if not text:
            continue
        try:
            h = float(text) / (100.0 if col == "height_cm" else 1.0)
        except ValueError:
            raise ValidationInputError(f"{path} line {i}: height '{text}' is not a number.") from None
        if not 0.5 <= h <= 2.5:
            raise ValidationInputError(f"{path} line {i}: height {h:.2f} m is implausible (check the unit).")
        out[(row["case_id"] or "").strip()] = h
    return out


def _read_image(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    try:
        from sarcoscope.imaging import read_ct  # type: ignore[attr-defined]
    except ImportError:
        raise ValidationInputError(
            "Reading images needs sarcoscope.imaging.read_ct, which this installation does not provide."
        ) from None
    volume = read_ct(path)
    return np.asarray(volume.hu), volume.pixel_spacing


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})


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
    Raises ValidationInputError for unmatched ids, shape/spacing mismatches and unknown label ids.
    """
    out_dir = Path(out_dir).resolve()
    segmentation = ref_dir is not None
    if segmentation and (pred_dir is None) == (engine is None):
        raise ValidationInputError("Give either a prediction folder or --engine with --images, not both.")
    if engine is not None and images_dir is None:
        raise ValidationInputError("--engine needs --images (the CT images to segment).")
    if not segmentation and (ref_l3_csv is None or pred_l3_csv is None):
        raise ValidationInputError("Nothing to validate: give a reference folder, or both L3 files.")
    if (ref_l3_csv is None) != (pred_l3_csv is None):
        raise ValidationInputError("L3 validation needs both --ref-l3 and --pred-l3.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    pred_store = (
        staging / "predictions" if keep_predictions else Path(tempfile.mkdtemp(prefix="sarcoscope-pred-"))
    )
    try:
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
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, backup)
        os.replace(staging, out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if not keep_predictions:
            shutil.rmtree(pred_store, ignore_errors=True)
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
    warn: list[str] = []
    doc = d.Document(title)
    figdir = staging / "figures"
    figdir.mkdir()
    files: list[str] = []
    tissues = tuple(t for t in TISSUES if t in ref_map.tissues and t in pred_map.tissues)
    settings: dict[str, Any] = {
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
    cases: list[_Case] = []
    dice_summary: dict[str, Summary] = {}
    flagged: dict[str, list[str]] = {}
    if ref_dir is not None:
        if "imat" in pred_map.tissues and "imat" not in ref_map.tissues:
            warn.append(
                f"The reference convention '{ref_map.name}' has no IMAT class but the predictions have: "
                "predicted IMAT pixels count as 'other' in the muscle/VAT scores. Merge them explicitly "
                "(--pred-labels sarcoscope-imat-as-muscle or sarcoscope-imat-as-vat)."
            )
        site_of, internal_sites = _read_sites(Path(sites_csv)) if sites_csv is not None else ({}, set())
        cases = _score_cases(
            pred_store,
            pred_dir,
            ref_dir,
            ref_map,
            pred_map,
            images_dir,
            engine,
            site_of,
            patients_csv,
            pixel_spacing,
            strip,
            allow_unmatched,
            tissues,
            warn,
        )
        dice_summary, flagged = _segmentation_sections(
            doc,
            staging,
            figdir,
            files,
            cases,
            tissues,
            internal_sites,
            ref_map,
            pred_map,
            engine,
            gallery_size,
            alpha,
            warn,
        )
    l3_summary = None
    if ref_l3_csv is not None and pred_l3_csv is not None:
        l3_summary = _l3_section(doc, staging, figdir, files, ref_l3_csv, pred_l3_csv, allow_unmatched)
    if warn:
        doc.blocks.insert(
            0, d.Paragraph("**Warnings:** " + " ".join(f"({i}) {w}" for i, w in enumerate(warn, 1)))
        )
    settings["warnings"] = warn
    (staging / "settings.json").write_text(json.dumps(settings, indent=2, allow_nan=False), encoding="utf-8")
    files.append("settings.json")
    doc.add(d.Heading("Files"))
    doc.add(
        d.Paragraph("Every number above is in these CSV files: " + ", ".join(f"`{f}`" for f in files) + ".")
    )
    (staging / "report.md").write_text(d.to_markdown(doc, staging), encoding="utf-8")
    (staging / "report.html").write_text(d.to_html(doc), encoding="utf-8")
    return ValidationReport(
        out_dir=staging,
        n_cases=len(cases),
        tissues=tissues,
        per_case=[{"case_id": c.case_id, "site": c.site, **c.metrics} for c in cases],
        dice_summary=dice_summary,
        flagged_sites=flagged,
        l3_summary=l3_summary,
        warnings=warn,
        files=["report.md", "report.html", *files],
    )


def _score_cases(
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
) -> list[_Case]:
    """First pass: read, check and score every case; keep numbers only (memory stays flat for big cohorts)."""
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
    heights = _read_heights(Path(patients_csv)) if patients_csv is not None else {}
    cases: list[_Case] = []
    no_spacing: list[str] = []
    for case in case_ids:
        ref = read_label_map(refs[case], ref_map, case)
        image, img_spacing = (None, None)
        if images:
            image, img_spacing = _read_image(images[case])
            if image is not None and image.shape != ref.labels.shape:
                raise ValidationInputError(
                    f"Case {case}: image {images[case].name} has shape {image.shape} but the label maps have "
                    f"{ref.labels.shape}; give images on the label maps' grid (e.g. the L3 slices)."
                )
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
            pm = read_label_map(preds[case], pred_map, case)
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
            _Case(
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


def _bins_row_block(values: dict[str, list[float]]) -> tuple[list[list[object]], list[dict[str, Any]]]:
    """Table 3 layout: one row per IoU bin, count (ratio) per column; plus long-format CSV rows."""
    counts = {col: iou_bin_counts(v) for col, v in values.items()}
    rows, csv_rows = [], []
    for name, _, _ in IOU_BINS:
        row: list[object] = [name]
        for col in values:
            c, r = counts[col][name]
            row.append(f"{c} ({100 * r:.1f} %)" if not math.isnan(r) else "–")
            csv_rows.append({"column": col, "iou_bin": name, "count": c, "ratio": r})
        rows.append(row)
    rows.append(["n", *[sum(c for c, _ in counts[col].values()) for col in values]])
    return rows, csv_rows


def _column_titles(tissues: Sequence[str]) -> dict[str, str]:
    return {**{t: TISSUE_TITLES[t] for t in tissues}, **MSV_COLUMNS}


def _iou_values(cases: Sequence[_Case], tissues: Sequence[str]) -> dict[str, list[float]]:
    cols = [*tissues, *MSV_COLUMNS]
    return {c: [k.metrics[f"{c}_iou"] for k in cases] for c in cols}


def _segmentation_sections(
    doc: d.Document,
    staging: Path,
    figdir: Path,
    files: list[str],
    cases: list[_Case],
    tissues: tuple[str, ...],
    internal_sites: set[str],
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    engine: SegmentationEngine | None,
    gallery_size: int,
    alpha: float,
    warn: list[str],
) -> tuple[dict[str, Summary], dict[str, list[str]]]:
    ids = [c.case_id for c in cases]
    sites = [c.site for c in cases]
    has_sites = any(sites)
    titles = _column_titles(tissues)
    source = f"engine `{engine.name}` (model `{engine.model_id}`)" if engine else "the prediction folder"
    doc.add(
        d.Paragraph(
            f"{len(cases)} cases; predictions from {source}; reference labels read with mapping "
            f"`{ref_map.name}`, predictions with `{pred_map.name}`; tissues evaluated: "
            f"{', '.join(tissues)}. Software version {__version__}."
        )
    )
    doc.add(
        d.Paragraph(
            "Definitions: Dice = 2|P∩R|/(|P|+|R|), IoU = |P∩R|/|P∪R|; when both prediction and reference "
            "lack a tissue the case scores 1 (correct absence), when only one has it, 0. M+S+V (union) "
            "scores muscle, SAT and VAT as one foreground; M+S+V (mean of 3) averages the three tissue "
            "scores. IoU bins: [0.9, 1.0], [0.8, 0.9), [0.7, 0.8), < 0.7. Areas are per slice."
        )
    )
    # Per-case CSV.
    present = {k for c in cases for k in c.metrics}
    order = [f"{col}_{m}" for col in ("msv", "msv_mean") for m in ("dice", "iou")]
    for t in tissues:
        order += [f"{t}_{m}" for m in ("dice", "iou", "pixels_pred", "pixels_ref", "area_pred_cm2")]
        order += [f"{t}_{m}" for m in ("area_ref_cm2", "area_err_cm2", "area_err_pct", "hu_pred", "hu_ref")]
        order.append(f"{t}_hu_diff")
    metric_keys = [k for k in [*order, "smi_pred", "smi_ref"] if k in present]
    per_case = [
        {
            "case_id": c.case_id,
            "site": c.site,
            "ref_file": c.ref_path.name,
            "pred_file": c.pred_path.name,
            "n_slices": c.n_slices,
            "pixel_spacing_y_mm": c.spacing[0] if c.spacing else math.nan,
            "pixel_spacing_x_mm": c.spacing[1] if c.spacing else math.nan,
            "height_m": c.height_m if c.height_m is not None else math.nan,
            **c.metrics,
        }
        for c in cases
    ]
    _write_csv(staging / "per_case.csv", per_case, [*per_case[0].keys()][:8] + metric_keys)
    files.append("per_case.csv")

    # Dice summary.
    doc.add(d.Heading("Dice summary"))
    dice_summary: dict[str, Summary] = {}
    summary_rows = []
    for col in titles:
        s = summarize([c.metrics[f"{col}_dice"] for c in cases], ids)
        dice_summary[col] = s
        summary_rows.append({"group": "all", "column": col, **asdict(s)})
        if has_sites:
            for site in sorted(set(sites)):
                sub = [c for c in cases if c.site == site]
                ss = summarize([c.metrics[f"{col}_dice"] for c in sub], [c.case_id for c in sub])
                summary_rows.append({"group": site, "column": col, **asdict(ss)})
    doc.add(
        d.Table(
            ["tissue", "n", "mean", "SD", "median", "IQR", "worst", "worst case"],
            [
                [titles[col], s.n, s.mean, s.sd, s.median, f"{s.q1:.3f}–{s.q3:.3f}", s.worst, s.worst_case]
                for col, s in dice_summary.items()
            ],
        )
    )
    _write_csv(staging / "dice_summary.csv", summary_rows)
    files.append("dice_summary.csv")
    dice_values = {titles[c]: np.array([k.metrics[f"{c}_dice"] for k in cases]) for c in titles}
    fig = plots.dice_boxplot(dice_values, sites if has_sites else None, figdir / "dice_boxplot.png")
    doc.add(d.Figure(fig, "Dice per tissue" + (" and site" if has_sites else "")))

    # Paper tables.
    internal = [c for c in cases if c.site in internal_sites] if internal_sites else cases
    label = "internal cases" if internal_sites else "all cases"
    doc.add(d.Heading(f"Table 3 layout: IoU bins per tissue ({label})"))
    rows, csv_rows = _bins_row_block(_iou_values(internal, tissues))
    doc.add(d.Table(["IoU", *titles.values()], rows, "count (ratio) of cases per IoU bin"))
    _write_csv(staging / "table3_iou_bins.csv", csv_rows)
    files.append("table3_iou_bins.csv")
    if has_sites:
        _site_tables(doc, staging, files, cases, tissues, internal_sites)

    # Site comparison.
    flagged = _site_comparison(doc, staging, figdir, files, cases, tissues, alpha, warn) if has_sites else {}

    # Area / HU / SMI agreement.
    _agreement_section(doc, staging, figdir, files, cases, tissues, sites if has_sites else None)

    # Confusion.
    doc.add(d.Heading("Which tissue is mistaken for which"))
    names = ["other", *TISSUES]
    total_cm = np.sum([c.confusion for c in cases], axis=0)
    rows_sum = total_cm.sum(axis=1)
    cm_rows = []
    for i, n in enumerate(names):
        for j, m in enumerate(names):
            frac = total_cm[i, j] / rows_sum[i] if rows_sum[i] else math.nan
            cm_rows.append(
                {"reference": n, "predicted": m, "pixels": int(total_cm[i, j]), "fraction_of_reference": frac}
            )
    _write_csv(staging / "confusion_matrix.csv", cm_rows)
    files.append("confusion_matrix.csv")
    doc.add(
        d.Table(
            ["reference \\ predicted", *names],
            [
                [
                    n,
                    *[
                        f"{100 * total_cm[i, j] / rows_sum[i]:.1f} %" if rows_sum[i] else "–"
                        for j in range(N_LABELS)
                    ],
                ]
                for i, n in enumerate(names)
            ],
            "Pixels of each reference label (rows, all cases pooled), by predicted label.",
        )
    )
    doc.add(d.Figure(plots.confusion_plot(total_cm, figdir / "confusion.png"), "Confusion between tissues"))

    # Gallery.
    _gallery(doc, figdir, cases, gallery_size, ref_map, pred_map, engine)
    return dice_summary, flagged


def _site_tables(
    doc: d.Document,
    staging: Path,
    files: list[str],
    cases: list[_Case],
    tissues: tuple[str, ...],
    internal_sites: set[str],
) -> None:
    titles = _column_titles(tissues)
    site_list = sorted({c.site for c in cases})
    doc.add(d.Heading("Table 5 layout: IoU bins of M+S+V (union) per site"))
    rows, csv_rows = [], []
    for site in site_list:
        sub = [c for c in cases if c.site == site]
        values = _iou_values(sub, tissues)
        counts = iou_bin_counts(values["msv"])
        rows.append([site, len(sub), *[f"{n} ({100 * r:.1f} %)" for n, r in counts.values()]])
        for col, v in values.items():
            for name, (n, r) in iou_bin_counts(v).items():
                csv_rows.append(
                    {"site": site, "n": len(sub), "column": col, "iou_bin": name, "count": n, "ratio": r}
                )
    doc.add(d.Table(["site", "n", *[name for name, _, _ in IOU_BINS]], rows))
    _write_csv(staging / "table5_sites_iou_bins.csv", csv_rows)
    files.append("table5_sites_iou_bins.csv")
    if not internal_sites:
        doc.add(
            d.Paragraph(
                "Table 6 layout (pooled external sites) is Table 3 above, as no site is marked internal "
                "(sites file column `internal`)."
            )
        )
        return
    external = [c for c in cases if c.site not in internal_sites]
    ext_sites = sorted({c.site for c in external})
    doc.add(d.Heading(f"Table 6 layout: IoU bins pooled over the external sites ({', '.join(ext_sites)})"))
    rows6, csv6 = _bins_row_block(_iou_values(external, tissues))
    doc.add(d.Table(["IoU", *titles.values()], rows6, "count (ratio) of cases per IoU bin, sites pooled"))
    _write_csv(staging / "table6_pooled_iou_bins.csv", csv6)
    files.append("table6_pooled_iou_bins.csv")


def _site_comparison(
    doc: d.Document,
    staging: Path,
    figdir: Path,
    files: list[str],
    cases: list[_Case],
    tissues: tuple[str, ...],
    alpha: float,
    warn: list[str],
) -> dict[str, list[str]]:
    """Flag sites whose Dice or area bias differs from the other sites (possible labelling difference)."""
    sites = [c.site for c in cases]
    values: dict[str, list[float]] = {}
    effect: dict[str, float] = {}
    for t in tissues:
        values[f"{t}_dice"] = [c.metrics[f"{t}_dice"] for c in cases]
        values[f"{t}_area_err_pct"] = [c.metrics[f"{t}_area_err_pct"] for c in cases]
        effect[f"{t}_dice"] = SITE_MIN_EFFECT["dice"]
        effect[f"{t}_area_err_pct"] = SITE_MIN_EFFECT["area_err_pct"]
    tests, pairs = compare_sites(values, sites, min_effect=effect, alpha=alpha)
    _write_csv(
        staging / "site_comparison.csv",
        [{**asdict(t), "differs_from": ";".join(t.differs_from)} for t in tests],
    )
    _write_csv(staging / "site_pairs.csv", [asdict(q) for q in pairs])
    files += ["site_comparison.csv", "site_pairs.csv"]
    counts = {s: sites.count(s) for s in set(sites)}
    small = sorted(s for s, n in counts.items() if n < 3)
    if small:
        warn.append(
            f"Site(s) {', '.join(small)} have fewer than 3 cases and were not compared with the others."
        )
    flagged: dict[str, list[str]] = {}
    for t in tests:
        if t.flagged:
            unit = "" if t.metric.endswith("dice") else " %"
            flagged.setdefault(t.site, []).append(
                f"{t.metric} median {t.median_site:.3f}{unit} vs {t.median_others:.3f}{unit} at the other "
                f"sites (differs from {', '.join(t.differs_from)})"
            )
    doc.add(d.Heading("Per-site comparison"))
    doc.add(
        d.Paragraph(
            "Every pair of sites is compared on per-case Dice and signed area error per tissue (two-sided "
            f"Mann–Whitney U, Holm-adjusted over all tests, alpha {alpha}); a pair differs when the "
            f"difference is significant and at least {SITE_MIN_EFFECT['dice']} Dice or "
            f"{SITE_MIN_EFFECT['area_err_pct']:g} area-% points between medians. A site is flagged when it "
            "differs from more than half of the other sites: a systematic difference at one site is the "
            "signature of a different labelling convention (as in the paper's first external attempt), to "
            "be checked on the gallery before blaming the model."
        )
    )
    med = {(t.site, t.metric): t.median_site for t in tests}
    doc.add(
        d.Table(
            ["site", "n", *[f"{t} Dice" for t in tissues], *[f"{t} area err %" for t in tissues], "flagged"],
            [
                [
                    s,
                    sum(x == s for x in sites),
                    *[med[(s, f"{t}_dice")] for t in tissues],
                    *[med[(s, f"{t}_area_err_pct")] for t in tissues],
                    "YES" if s in flagged else "no",
                ]
                for s in sorted(set(sites))
            ],
            "medians per site",
        )
    )
    if flagged:
        for site, reasons in flagged.items():
            extra = _site_confusion_note(cases, site)
            doc.add(d.Paragraph(f"**Site {site} flagged:** " + "; ".join(reasons) + "." + extra))
            warn.append(
                f"Site {site} differs systematically from the others (possible labelling difference)."
            )
    else:
        doc.add(d.Paragraph("No site differs significantly from the others."))
    return flagged


def _site_confusion_note(cases: list[_Case], site: str) -> str:
    """The reference -> predicted confusion most over-represented at the site, in words."""
    names = ["other", *TISSUES]

    def fractions(group: list[_Case]) -> np.ndarray:
        cm = np.sum([c.confusion for c in group], axis=0).astype(float)
        rows = cm.sum(axis=1, keepdims=True)
        return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)

    fs = fractions([c for c in cases if c.site == site])
    fr = fractions([c for c in cases if c.site != site])
    excess = fs - fr
    np.fill_diagonal(excess, -np.inf)
    i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if excess[i, j] <= 0.02:
        return ""
    return (
        f" At this site {100 * fs[i, j]:.1f} % of the reference {names[i]} pixels are predicted as "
        f"{names[j]} (elsewhere {100 * fr[i, j]:.1f} %)."
    )


def _agreement_section(
    doc: d.Document,
    staging: Path,
    figdir: Path,
    files: list[str],
    cases: list[_Case],
    tissues: tuple[str, ...],
    sites: list[str] | None,
) -> None:
    doc.add(d.Heading("Agreement of areas, attenuation and SMI"))
    have_cm2 = all(c.spacing is not None for c in cases)
    quantities: list[tuple[str, str, str]] = []  # (title, pred key, ref key)
    for t in tissues:
        if have_cm2:
            quantities.append((f"{t} area (cm²)", f"{t}_area_pred_cm2", f"{t}_area_ref_cm2"))
        else:
            quantities.append((f"{t} area (pixels)", f"{t}_pixels_pred", f"{t}_pixels_ref"))
    for t in tissues:
        if f"{t}_hu_pred" in cases[0].metrics:
            quantities.append((f"{t} mean HU", f"{t}_hu_pred", f"{t}_hu_ref"))
    smi_cases = [c for c in cases if "smi_ref" in c.metrics]
    rows, panels, csv_rows = [], [], []
    for title, kp, kr in quantities:
        p = np.array([c.metrics[kp] for c in cases])
        r = np.array([c.metrics[kr] for c in cases])
        rows.append(_agreement_row(title, p, r, csv_rows))
        panels.append((title, p, r, bland_altman(p, r)))
    if smi_cases:
        p = np.array([c.metrics["smi_pred"] for c in smi_cases])
        r = np.array([c.metrics["smi_ref"] for c in smi_cases])
        rows.append(_agreement_row("SMI (cm²/m²)", p, r, csv_rows))
        ba_sites = [c.site for c in smi_cases] if sites else None
        fig = plots.bland_altman_plot(
            [("SMI (cm²/m²)", p, r, bland_altman(p, r))], ba_sites, figdir / "bland_altman_smi.png"
        )
    doc.add(
        d.Table(
            [
                "quantity",
                "n",
                "mean ref",
                "mean pred",
                "mean |error|",
                "bias",
                "95 % LoA",
                "ICC(2,1)",
                "ICC(3,1)",
            ],
            rows,
            "Bias = mean(prediction − reference); LoA = bias ± 1.96 SD; ICC(2,1) absolute agreement "
            "(two-way random, single measurement), ICC(3,1) consistency.",
        )
    )
    _write_csv(staging / "agreement.csv", csv_rows)
    files.append("agreement.csv")
    doc.add(
        d.Figure(plots.bland_altman_plot(panels, sites, figdir / "bland_altman.png"), "Bland–Altman plots")
    )
    if smi_cases:
        doc.add(d.Figure(fig, "Bland–Altman plot of SMI"))
    else:
        reason = (
            "no pixel spacing"
            if not have_cm2
            else "no heights (give --patients with a height_m or height_cm column)"
        )
        doc.add(d.Paragraph(f"SMI agreement: not computed ({reason})."))


def _agreement_row(title: str, p: np.ndarray, r: np.ndarray, csv_rows: list[dict[str, Any]]) -> list[object]:
    ba = bland_altman(p, r)
    ic = icc(np.column_stack([p, r]))
    ok = ~(np.isnan(p) | np.isnan(r))
    mae = float(np.abs(p[ok] - r[ok]).mean()) if ok.any() else math.nan
    csv_rows.append(
        {
            "quantity": title,
            "mean_ref": float(np.nanmean(r)) if ok.any() else math.nan,
            "mean_pred": float(np.nanmean(p)) if ok.any() else math.nan,
            "mean_abs_error": mae,
            **asdict(ba),
            "icc2_1": ic["icc2_1"],
            "icc3_1": ic["icc3_1"],
        }
    )
    row = csv_rows[-1]
    return [
        title,
        ba.n,
        row["mean_ref"],
        row["mean_pred"],
        mae,
        ba.bias,
        f"{ba.loa_low:.2f} to {ba.loa_high:.2f}",
        ic["icc2_1"],
        ic["icc3_1"],
    ]


def _gallery(
    doc: d.Document,
    figdir: Path,
    cases: list[_Case],
    size: int,
    ref_map: LabelMapping,
    pred_map: LabelMapping,
    engine: SegmentationEngine | None,
) -> None:
    """The worst cases by class-aware M+S+V Dice, re-read from disk (the first pass keeps only numbers)."""
    if size <= 0:
        return
    worst = sorted(cases, key=lambda c: c.metrics["msv_mean_dice"])[:size]
    doc.add(d.Heading(f"Worst {len(worst)} cases"))
    doc.add(
        d.Paragraph(
            "Ranked by the mean Dice of muscle, SAT and VAT. Look here first when a site is flagged: a "
            "consistent contour offset or a structure included on one side only is a labelling convention, "
            "not a model error."
        )
    )
    for c in worst:
        ref = read_label_map(c.ref_path, ref_map, c.case_id).labels
        pred = np.load(c.pred_path) if engine is not None else read_label_map(c.pred_path, pred_map).labels
        image = _read_image(c.image_path)[0] if c.image_path is not None else None
        k = int(np.argmax((pred != ref).reshape(pred.shape[0], -1).sum(axis=1)))
        path = plots.gallery_figure(
            c.case_id,
            pred[k],
            ref[k],
            None if image is None else image[k],
            c.metrics,
            figdir / f"gallery_{c.case_id}.png",
        )
        slice_note = f" (slice {k})" if pred.shape[0] > 1 else ""
        doc.add(d.Figure(path, f"{c.case_id}{slice_note}" + (f", site {c.site}" if c.site else "")))


def _l3_section(
    doc: d.Document,
    staging: Path,
    figdir: Path,
    files: list[str],
    ref_csv: str | Path,
    pred_csv: str | Path,
    allow_unmatched: bool,
) -> dict[str, float]:
    rows = compare_l3(
        read_l3_csv(Path(pred_csv), allow_missing=True),
        read_l3_csv(Path(ref_csv)),
        allow_unmatched=allow_unmatched,
    )
    summary = summarize_l3(rows)
    _write_csv(staging / "l3_per_case.csv", rows)
    _write_csv(staging / "l3_summary.csv", [summary])
    files += ["l3_per_case.csv", "l3_summary.csv"]
    doc.add(d.Heading("L3 localization"))
    doc.add(
        d.Table(
            [
                "n",
                "not found",
                "mean |error| mm",
                "SD",
                "median mm",
                "max mm",
                "exact slice",
                "within 5 mm",
                "within 10 mm",
            ],
            [
                [
                    int(summary["n"]),
                    int(summary["not_found"]),
                    summary.get("mean_abs_error_mm"),
                    summary.get("sd_abs_error_mm"),
                    summary.get("median_abs_error_mm"),
                    summary.get("max_abs_error_mm"),
                    summary.get("exact_slice"),
                    summary.get("within_5mm"),
                    summary.get("within_10mm"),
                ]
            ],
            "Error = predicted − reference L3 position, over the cases where L3 was found; exact/within: "
            "fractions of all cases (not found = miss).",
        )
    )
    worst = sorted(rows, key=lambda r: -abs(r["error_mm"]) if r["found"] else -math.inf)[:L3_TABLE_ROWS]
    doc.add(
        d.Table(
            ["case", "reference slice", "predicted slice", "error (slices)", "error (mm)"],
            [
                [
                    r["case_id"],
                    r["ref_slice"],
                    r["pred_slice"] if r["found"] else "not found",
                    r["error_slices"],
                    r["error_mm"],
                ]
                for r in worst
            ],
            f"Cases by decreasing |error| (not found first; at most {L3_TABLE_ROWS}; all in "
            "l3_per_case.csv).",
        )
    )
    errs = np.array([float(r["error_mm"]) for r in rows if r["found"]])
    doc.add(d.Figure(plots.l3_error_plot(errs, figdir / "l3_errors.png"), "L3 localization errors"))
    return summary
