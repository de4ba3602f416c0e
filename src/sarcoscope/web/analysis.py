"""Measurements of a stored label version, and the `AnalysisResult` that the export writers take.

The analysis panel asks for the latest version after every save; results are cached per
(study, version, patient facts), which are immutable, so repeated views cost nothing.
The segmentation quality score (segmentation.quality) of a version is computed when the server segments
it (its second opinion, another whole engine, in the background after the segment request's answer; the
analysis waits for it) and stored with the version (the same after a restart, for every server process), as
is why it failed. A version with none stored (segmented before scores were stored, its score failed, its
study deleted while it was computed) is scored again on request, or on its study's restore, by running its
engine again: only when that gives the same labels. It rates an engine's output, so hand-edited and imported
versions have none; the panel shows the score of the engine's version an edit started from, labelled so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sarcoscope import __version__
from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_MID, L3_RANGE
from sarcoscope.errors import frames_of
from sarcoscope.imaging.volume import image_numbers
from sarcoscope.level.selection import L3Selection
from sarcoscope.results import AnalysisResult
from sarcoscope.segmentation import quality as segmentation_quality
from sarcoscope.segmentation.quality import QualityAssessment, image_warnings, score_text
from sarcoscope.store import LabelVersion, Study
from sarcoscope.store.labels import VersionSummary
from sarcoscope.web.wording import for_ui, report_for_ui

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the export and imaging packages (highdicom, pydicom, nibabel) load on first use
    from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
    from sarcoscope.imaging.volume import CTVolume
    from sarcoscope.web.volumes import VolumeCache


def selection_from_localization(loc: dict[str, Any], n_slices: int) -> dict[str, Any] | None:
    """The single mid-L3 slice the localizer proposes, as `sarcoscope analyze` measures by default (the
    published cutoffs are for one L3 slice; averaging the L3 range is the user's explicit choice).
    None when L3 was not found."""
    mid = loc.get("l3_mid")
    if mid is None or not 0 <= int(mid) < n_slices:
        return None
    return {"mode": "slice", "first": int(mid), "last": int(mid)}


def level_of(loc: dict[str, Any] | None, index: int) -> str | None:
    """The vertebra the localizer puts slice `index` in (None: not localized, or between vertebrae)."""
    for name, v in ((loc or {}).get("vertebrae") or {}).items():
        if int(v["first"]) <= index <= int(v["last"]):
            return str(name)
    return None


def level_warning(loc: dict[str, Any] | None, indices: list[int]) -> str | None:
    """A caveat when the localizer puts any analysed slice outside L3, or could not say (not run, or
    failed: a short series, a single slice), as the cutoffs are L3 values."""
    if not loc or "error" in loc:
        slices = f"slice {indices[0]} is" if len(indices) == 1 else f"slices {indices[0]}–{indices[-1]} are"
        why = "was not run" if not loc else "needs more slices" if loc.get("too_short") else "failed"
        return (
            f"The level was not checked: the automatic L3 localization {why}. "
            "The sarcopenia and myosteatosis cutoffs were derived at L3: make sure that "
            f"{slices} at L3 before using them."
        )
    if not loc.get("vertebrae"):
        return None
    outside = {i: level_of(loc, i) for i in indices}
    outside = {i: name for i, name in outside.items() if name != "L3"}
    if not outside:
        return None
    where = ", ".join(
        f"slice {i} in {name}" if name else f"slice {i} between vertebrae" for i, name in outside.items()
    )
    return (
        f"Not L3 according to the automatic localizer ({where}): the sarcopenia and myosteatosis cutoffs "
        "were derived at L3, so interpret the classification with care."
    )


#: Why a patient fact is unknown, naming the web app's controls (see wording.for_ui).
_UNKNOWN = {
    "height_m": "height unknown: enter Height (cm) in the Patient card",
    "weight_kg": "weight unknown: enter Weight (kg) in the Patient card",
    "sex": "sex unknown: choose Sex in the Patient card",
}


def _source(given: float | str | None, dicom: float | str | None) -> str | None:
    """Where a patient fact came from, for the report. The upload copies the DICOM header's facts into the
    study's (the Patient card shows them), so a fact equal to the header's is the header's, not the user's."""
    if given is None:
        return None if dicom is None else "DICOM"
    if isinstance(given, str) or isinstance(dicom, str) or dicom is None:
        return "DICOM" if given == dicom else "user"
    return "DICOM" if math.isclose(given, dicom, rel_tol=1e-6) else "user"


def _patient_info(study: Study, volume: CTVolume) -> Any:
    from sarcoscope.composition import PatientInfo

    md = volume.metadata
    header_cm = None if md.patient_height_m is None else md.patient_height_m * 100.0
    dicom = {"height_cm": header_cm, "weight_kg": md.patient_weight_kg, "sex": md.patient_sex}
    # The upload copies the header's facts into the study's, which the Patient card shows and edits: a fact
    # left empty there is unknown (cleared: the header's was wrong), not the header's again. Only a study
    # without facts (none copied) falls back to the header.
    p = dict(study.patient) if study.patient is not None else dicom
    sources = {}
    for key, name in (("height_m", "height_cm"), ("weight_kg", "weight_kg"), ("sex", "sex")):
        if p.get(name) is not None and (source := _source(p.get(name), dicom[name])) is not None:
            sources[key] = source
    height_cm = p.get("height_cm")
    return PatientInfo(
        height_m=height_cm / 100.0 if height_cm is not None else None,
        weight_kg=p.get("weight_kg"),
        sex=p.get("sex") or None,
        age_years=md.patient_age_years,
        sources=sources,
        reasons=dict(_UNKNOWN),
    )


def build_result(
    study: Study,
    version: LabelVersion,
    labels: np.ndarray,
    volume: CTVolume,
    quality: QualityAssessment | None = None,
) -> AnalysisResult:
    """An AnalysisResult for a stored label version, as `analyze` would have produced it; `quality` is the
    version's (AnalysisCache.assessment), for the exports that carry it."""
    from sarcoscope.composition import assess, average_compositions, measure_slice

    indices = list(version.indices)
    hu = np.asarray(volume.hu[indices])
    per_slice = [measure_slice(h, lab, volume.pixel_spacing) for h, lab in zip(hu, labels, strict=True)]
    average = average_compositions(per_slice)
    patient = _patient_info(study, volume)
    cutoff = (study.patient or {}).get("cutoff_set")
    assessment = assess(average, patient, cutoff) if cutoff else assess(average, patient)
    loc = study.localization or {}
    selection = L3Selection(
        indices=indices,
        mode="range" if len(indices) > 1 else "slice",
        convention=L3_RANGE if len(indices) > 1 else L3_MID,
        # the version's slices, not the study's Slice/Range choice of now (the lines may have moved since)
        method=f"web app (label version {version.version})",
        confidence=loc.get("confidence"),
        flags=list(loc.get("flags") or []),
    )
    model_id = version.model_id or "manual"
    if version.source != "segment":
        # the editor goes in `editor` (named in the SEG unless de-identified), never in the model id, which
        # every export carries as it is
        model_id = f"{model_id} + manual edits (label version {version.version})"
    warnings = [for_ui(w) for w in volume.warnings]
    off_level = level_warning(study.localization, indices)
    if off_level is not None:
        warnings.insert(0, off_level)
    if volume.metadata.contrast_agent:
        warnings.append(
            f"Contrast-enhanced CT ({volume.metadata.contrast_agent}): interpret HU-based results with the "
            "contrast phase in mind."
        )
    warnings += image_warnings(hu, labels, volume.pixel_spacing)
    review = quality.warning(indices) if quality is not None else None
    if review:  # as `analyze` warns in report.json
        warnings.append(review)
    return AnalysisResult(
        volume=volume,
        selection=selection,
        engine=version.engine or "manual",
        model_id=model_id,
        labels=labels,
        slices=per_slice,
        average=average,
        assessment=assessment,
        hu_ranges=DEFAULT_HU_RANGES,
        software_version=__version__,
        warnings=warnings,
        editor=version.author if version.source != "segment" else None,
        quality=quality,
    )


def not_an_engines(row: LabelVersion | VersionSummary) -> str:
    """Why a label version that no engine made has no quality score."""
    why = {
        "edit": "was edited by hand",
        "import": "was imported from a file",
        "restore": "restores an earlier version",
    }.get(row.source, f"comes from '{row.source}'")
    return (
        f"label version {row.version} {why}, not made by an engine here: the score rates an engine's "
        "segmentation (its own inference of the slices), so it is not scored"
    )


class NotScorable(Exception):
    """Why a version cannot be scored again (AnalysisCache.score_again), in words without patient data."""


def _failure(exc: BaseException) -> str:
    """Why a score failed, as stored with the version and shown: no exception text (it may quote a header
    value, pydicom's ValueError for a malformed one), only its kind, unless the reason is ours."""
    if isinstance(exc, NotScorable):
        return str(exc)
    return f"an error while computing it ({type(exc).__name__}; the server log says where)"


class AnalysisCache:
    """JSON analyses keyed by (study, version, patient facts); a small LRU, thread-safe."""

    #: Quality blocks kept in memory (of the versions this process scored most recently).
    QUALITY_SIZE = 4096

    def __init__(self, store: Any, volumes: VolumeCache, size: int = 64) -> None:
        self.store = store
        self.volumes = volumes
        self.size = size
        #: (study id, rest of key) -> the analysis without its quality block (`quality` adds it)
        self._items: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        #: The quality of each version this process scored (a str: why the score failed), of the most recent
        #: QUALITY_SIZE: a version read before its score was stored has it here.
        self._quality: OrderedDict[tuple[str, int], QualityAssessment | str] = OrderedDict()
        #: Versions whose quality block is being computed (score_later), set when it is kept.
        self._scoring: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def score_later(self, row: LabelVersion, score: Callable[[], QualityAssessment]) -> Callable[[], None]:
        """The job that computes the quality of a version the server just segmented, `score()`, and stores
        it with the version (Store.keep_quality), or why it failed, to run in the background: `quality` and
        `assessment` wait for it meanwhile."""
        study_id, version = row.study_id, row.version
        key, done = (study_id, version), threading.Event()
        with self._lock:
            self._scoring[key] = done

        def job() -> None:
            quality: QualityAssessment | str | None = None
            try:
                quality = score()
                self.store.keep_quality(study_id, version, row.sha256, quality.to_dict())
            except BaseException as exc:  # a library's exit too: whatever ends it, the analysis must not wait
                # on it; its text may quote a header value (pydicom's ValueError for a malformed one)
                what = "failed" if quality is None else "was not stored (shown until this process ends)"
                failed = f"The quality score of {study_id} version {version} {what} ({type(exc).__name__})"
                log.error("%s\n%s", failed, frames_of(exc))
                if quality is None:  # said with the version, to every server process and after a restart
                    quality = _failure(exc)
                    try:
                        self.store.keep_quality(study_id, version, row.sha256, {"failed": quality})
                    except Exception as stored:
                        log.error("Why it failed was not stored either (%s)", type(stored).__name__)
            finally:
                with self._lock:
                    if self._scoring.pop(key, None) is done:  # not dropped meanwhile (the study deleted)
                        self._quality[key] = quality
                        while len(self._quality) > self.QUALITY_SIZE:
                            self._quality.popitem(last=False)
                done.set()

        return job

    def _known(
        self, study_id: str, row: LabelVersion | VersionSummary, *, wait: bool = True
    ) -> QualityAssessment | str:
        """The quality of a segmented version (after its background job ended, unless not `wait`), or why
        there is none."""
        key = (study_id, row.version)
        with self._lock:
            scoring = self._scoring.get(key)
        if scoring is not None:
            if not wait:
                return "the server is computing it (after segmenting): the list read again shows it"
            scoring.wait()
        with self._lock:
            known = self._quality.get(key)
        stored = row.quality
        if stored is not None and "failed" not in stored:
            try:
                return QualityAssessment.from_dict(stored)
            except ValueError as exc:
                return f"the score stored with this version cannot be shown: {exc}"
        if isinstance(known, QualityAssessment):  # this row read before it was stored (or not stored: logged)
            return known
        if known is not None or stored is not None:
            return f"the quality score failed: {known if known is not None else stored['failed']}"
        return (
            "no score is stored with this version: the server computes it after segmenting, which had not "
            "ended, or the version was segmented before scores were stored"
        )

    def assessment(self, study_id: str, row: LabelVersion) -> QualityAssessment | None:
        """The quality of a label version, for its exports (None: there is none, `quality` says why)."""
        if row.source != "segment":
            return None
        known = self._known(study_id, row)
        return None if isinstance(known, str) else known

    def quality(self, study_id: str, row: LabelVersion) -> dict[str, Any]:
        """The quality block of a label version, or why there is none: for a version the server segmented
        with no score stored, that it can be scored again (`can_score`: POST .../quality); for an edit or
        a restore of an engine's version, that version's score (`engine_version`, its labels the same or
        not)."""
        if row.source != "segment":
            block: dict[str, Any] = {"status": "not computed", "reason": not_an_engines(row)}
            origin = self._engine_origin(study_id, row)
            known = None if origin is None else self._known(study_id, origin, wait=False)
            if origin is not None and isinstance(known, QualityAssessment) and known.score is not None:
                block["engine_version"] = {
                    "version": origin.version,
                    "same_labels": origin.sha256 == row.sha256 and list(origin.indices) == list(row.indices),
                    "threshold": segmentation_quality.REVIEW_THRESHOLD,
                    "score": known.score,
                    "score_text": score_text(known.score),
                    "flagged": known.flagged,
                }
            return block
        known = self._known(study_id, row)
        if isinstance(known, str):
            stored = row.quality is not None and "failed" not in row.quality  # of another QUALITY_VERSION
            return {"status": "not computed", "reason": known, "can_score": not stored}
        block = known.as_dict(row.indices)
        # as the CLI and reports print it
        return block if known.score is None else {**block, "score_text": score_text(known.score)}

    def _engine_origin(self, study_id: str, row: LabelVersion) -> LabelVersion | None:
        """The version an engine made here that a hand-made version comes from: one of the same labels (a
        restore, or an import of its export), else an edit's base, followed back through edits; None when
        none (an import of other labels: they are the file's)."""
        rows = {v.version: v for v in self.store.list_versions(study_id)}

        def same_labels(v: LabelVersion) -> LabelVersion | None:
            if v.source == "segment":
                return v
            same = [
                r
                for r in rows.values()
                if r.source == "segment" and r.sha256 == v.sha256 and list(r.indices) == list(v.indices)
            ]
            return max(same, key=lambda r: r.version, default=None)

        at = row
        while (origin := same_labels(at)) is None and at.source == "edit" and at.parent_version in rows:
            at = rows[at.parent_version]
        return origin

    def score_again(self, study: Study, row: LabelVersion) -> QualityAssessment:
        """The quality of a version the server segmented, computed again: its engine (and model) run on its
        slices again, scored as when it was segmented. NotScorable when that engine is not here or now gives
        other labels (another model or software version): its score would rate other labels."""
        from sarcoscope.segmentation import get_engine
        from sarcoscope.segmentation.quality import segment_then_score
        from sarcoscope.store.labels import encode_labels

        name, made_by = row.engine or "", row.model_id or row.engine
        try:
            engine = get_engine(name)
            if (
                engine.model_id != row.model_id and ":" not in name
            ):  # a model of the registry, not the default
                engine = get_engine(f"{name}:{str(row.model_id).split('+')[0]}")
        except Exception as exc:
            raise NotScorable(
                f"the engine that made it ({made_by}) cannot run here ({type(exc).__name__})"
            ) from exc
        if engine.model_id != row.model_id:
            raise NotScorable(
                f"the engine that made it ({made_by}) is not on this server (it has {engine.model_id})"
            )
        volume = self.volumes.get(study)
        labels, score = segment_then_score(
            engine, np.asarray(volume.hu[list(row.indices)]), volume.pixel_spacing
        )
        if encode_labels(np.ascontiguousarray(labels, np.uint8))[1] != row.sha256:
            raise NotScorable(
                f"{made_by} now segments these slices differently from when it made this version: a score "
                "would rate other labels"
            )
        return score()

    def scoring(self, study_id: str, version: int) -> bool:
        """Whether this process is computing the quality of that version."""
        with self._lock:
            return (study_id, version) in self._scoring

    def listed(self, study_id: str, latest: VersionSummary | None) -> dict[str, Any]:
        """The quality of a study's latest label version, `latest`, as the study list shows it (to find the
        studies to review first): its score, as printed, and flag, or why there is none. From the score
        stored with the version, without its labels, and without waiting for one being computed."""
        if latest is None:
            return {"status": "not computed", "reason": "no label version yet: nothing segmented to score"}
        if latest.source != "segment":
            return {"status": "not computed", "reason": not_an_engines(latest)}
        known = self._known(study_id, latest, wait=False)
        if isinstance(known, str):
            return {"status": "not computed", "reason": known}
        if known.score is None:
            why = "; ".join(known.unavailable.values()) or "the version has no slices"
            return {
                "status": "not computed",
                "reason": f"none of the score's signals could be computed: {why}",
            }
        return {
            "status": "computed",
            "version": latest.version,
            "threshold": segmentation_quality.REVIEW_THRESHOLD,  # read when used, as as_dict does
            "score": known.score,
            "score_text": score_text(known.score),  # as the CLI, the panel and the reports print it
            "flagged": known.flagged,
        }

    def drop(self, study_id: str) -> None:
        """Forget a deleted study's analyses and quality blocks (they hold its measurements and, in the
        keys, the patient's height, weight and sex)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == study_id]:
                del self._items[key]
            for qkey in [k for k in self._quality if k[0] == study_id]:
                del self._quality[qkey]
            for qkey in [k for k in self._scoring if k[0] == study_id]:
                del self._scoring[qkey]

    def get(self, study: Study, version: int | None) -> dict[str, Any]:
        from sarcoscope.export.report import mode_text

        row = self.store.get_version(study.id, version)
        # the localizer's levels name the analysed slices ("Not L3"): a new localization is a new analysis
        key = (study.id, json.dumps([row.version, study.patient, study.localization], sort_keys=True))
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
        if cached is not None:  # its quality block read again: stored since by another server process
            return {**cached, "quality": self.quality(study.id, row)}
        stack = self.store.load_labels(study.id, row.version)
        result = build_result(study, row, stack.labels, self.volumes.get(study))
        numbers = image_numbers(result.volume)
        shown = None if numbers is None else [numbers[i] for i in row.indices]
        payload = {
            "version": row.version,
            "indices": list(row.indices),
            "average": result.average.as_dict(),
            "per_slice": [
                {"index": i, "image_number": None if shown is None else shown[k], **c.as_dict()}
                for k, (i, c) in enumerate(zip(row.indices, result.slices, strict=True))
            ],
            "assessment": result.assessment.as_dict(),
            "warnings": result.warnings,
            "mode": mode_text(list(row.indices), shown),
            "levels": {str(i): level_of(study.localization, i) for i in row.indices},
            "engine": result.engine,
            "model_id": result.model_id,
        }
        with self._lock:
            self._items[key] = payload
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return {**payload, "quality": self.quality(study.id, row)}


#: Locks for writing cached overlays (striped by file: one picture is rendered once, others in parallel).
_OVERLAY_LOCKS = [threading.Lock() for _ in range(32)]


def overlay_png(store: Any, study_id: str, row: LabelVersion, result: AnalysisResult) -> bytes:
    """The QC overlay of a label version as PNG bytes, rendered once and kept in the study's cache folder.

    A version's labels never change; the key covers the rest the picture shows (slices, mode, engine,
    localizer marks, software version), so a re-localized study gets a new picture."""
    from sarcoscope.export.overlay import render_overlay
    from sarcoscope.store.files import atomic_private_file

    sel = result.selection
    shown = [
        row.version,
        list(sel.indices),
        sel.method,
        sel.convention,
        result.engine,
        result.software_version,
    ]
    key = hashlib.sha256(json.dumps([*shown, sel.details], sort_keys=True, default=str).encode()).hexdigest()
    path = store.cache_dir(study_id) / f"overlay-v{row.version}-{key[:16]}.png"
    with store.using_files(study_id), _OVERLAY_LOCKS[int(key[:8], 16) % len(_OVERLAY_LOCKS)]:
        if not path.exists():
            with atomic_private_file(path) as f:
                render_overlay(result, f)
        return path.read_bytes()


#: Export format -> (file suffix, media type).
EXPORTS: dict[str, tuple[str, str]] = {
    "dicom-seg": (".seg.dcm", "application/dicom"),
    "dicom-sr": (".sr.dcm", "application/dicom"),
    "dicom-qc": (".qc.dcm", "application/dicom"),
    "nifti": (".nii.gz", "application/gzip"),
    "csv": (".csv", "text/csv"),
    "json": (".json", "application/json"),
    "overlay": (".png", "image/png"),
    "html": (".html", "text/html"),
    "pdf": (".pdf", "application/pdf"),
}


class ExportFile(NamedTuple):
    data: bytes
    filename: str
    media_type: str
    #: a value of the source the DICOM object leaves empty, as unreadable (export.seg.prepared_sources)
    warning: str | None = None


def export_file(
    analyses: AnalysisCache,
    study: Study,
    version: int | None,
    fmt: str,
    deidentification: DeidentificationPolicy | None = None,
) -> ExportFile:
    """One output of a label version, written by the `export` stage.

    De-identified: the SEG, SR and reports as `export.write_outputs` makes them, and the overlay (and the
    HTML report and QC capture that show it) refused for a series with burned-in annotation. The SEG's UIDs
    are seeded by study, version and de-identification, so a separately exported SR references that SEG.
    The CSV and the reports carry the version's quality score (waited for while it is computed); the DICOM
    objects do not show it and leave it out of their UIDs' seed."""
    import nibabel as nib
    from fastapi import HTTPException

    from sarcoscope.export import build_report, label_nifti, metrics_csv
    from sarcoscope.export.report import report_json
    from sarcoscope.export.sc import write_qc_capture
    from sarcoscope.export.seg import build_dicom_seg
    from sarcoscope.export.sr import write_dicom_sr
    from sarcoscope.export.writer import result_fingerprint
    from sarcoscope.imaging.deidentify.refusals import refuse_burned_in

    store, volumes = analyses.store, analyses.volumes
    row = store.get_version(study.id, version)
    stack = store.load_labels(study.id, row.version)
    shows_pixels = deidentification is not None and fmt in ("overlay", "html", "pdf", "dicom-qc")
    dicom = fmt.startswith("dicom-")
    volume = volumes.with_headers(study) if dicom or shows_pixels else volumes.get(study)
    quality = None if dicom else analyses.assessment(study.id, row)
    result = build_result(study, row, stack.labels, volume, quality)
    suffix, media = EXPORTS[fmt]
    name = f"sarcoscope-{study.id[:8]}-v{row.version}{'-deid' if deidentification else ''}{suffix}"
    if shows_pixels:
        refuse_burned_in(volume.dicom_headers or [], deidentification)
    if fmt == "csv":
        return ExportFile(metrics_csv(result).encode(), name, media)
    if fmt == "json":
        report = report_for_ui(build_report(result, deidentification=deidentification))
        return ExportFile(report_json(report).encode(), name, media)
    with tempfile.TemporaryDirectory(dir=store.data_dir / "tmp") as tmp:
        path = Path(tmp) / f"out{suffix}"
        warning = None
        if fmt in ("html", "pdf", "overlay"):
            from sarcoscope.export.report_html import report_html
            from sarcoscope.export.report_pdf import report_pdf

            png = overlay_png(store, study.id, row, result)
            if fmt == "overlay":
                return ExportFile(png, name, media)
            report = report_for_ui(build_report(result, deidentification=deidentification))
            if fmt == "pdf":
                return ExportFile(report_pdf(report, png), name, media)
            return ExportFile(report_html(report, png, name).encode(), name, media)
        # the same object made again keeps its UIDs, so a PACS it is pushed to again holds it once: the SEG
        # is the version's labels; the SR and the capture also show the patient's facts, hence the result's
        # fingerprint (a height applied later makes a new SR). The study id is the server's own, so the
        # de-identified UIDs cannot be recomputed from the original study.
        seed = f"sarcoscope-web/{study.id}/{row.version}/{'deid' if deidentification else 'plain'}"
        if fmt in ("dicom-seg", "dicom-sr"):
            seg, warning = build_dicom_seg(result, deidentification, uid_seed=seed)
            if seg is not None and fmt == "dicom-seg":
                seg.save_as(path)
            elif seg is not None:
                sr_seed = f"{seed}/{result_fingerprint(result)}"
                warning = write_dicom_sr(result, seg, path, deidentification, uid_seed=sr_seed)
            if not path.exists():
                raise HTTPException(409, f"No {fmt.upper()} can be made for this study: {warning}")
        elif fmt == "dicom-qc":
            (Path(tmp) / "overlay.png").write_bytes(overlay_png(store, study.id, row, result))
            warning = write_qc_capture(
                result,
                Path(tmp) / "overlay.png",
                path,
                deidentification,
                uid_seed=f"{seed}/{result_fingerprint(result)}",
            )
            if not path.exists():
                raise HTTPException(409, f"No QC secondary capture can be made for this study: {warning}")
        elif fmt == "nifti":
            nib.save(label_nifti(result), path)
        return ExportFile(path.read_bytes(), name, media, warning)
