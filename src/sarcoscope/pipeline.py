"""The main job: CT in, L3 body composition out. The CLI, web app and batch runner all call `analyze`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sarcoscope import __version__
from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_MID, HURanges
from sarcoscope.errors import LevelError
from sarcoscope.fileio import check_output_folder, check_outside_input
from sarcoscope.imaging.volume import CTVolume, index_ranges
from sarcoscope.level.selection import L3Selection, manual_range, manual_slice, single_slice_input
from sarcoscope.memory import release_freed_memory
from sarcoscope.results import AnalysisResult
from sarcoscope.segmentation.base import DEFAULT_ENGINE

if TYPE_CHECKING:
    from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
    from sarcoscope.segmentation.body import SliceBodies
    from sarcoscope.segmentation.quality import QualityAssessment

#: Called with a stage name ("read", "localize", "segment", "measure", "write") as each stage starts.
ProgressCallback = Callable[[str], None]


def select_l3(
    volume: CTVolume,
    *,
    slice_index: int | None = None,
    slice_range: tuple[int, int] | None = None,
    convention: str = L3_MID,
) -> L3Selection:
    """Manual slice or range when given; a one-slice input as is; otherwise the automatic localizer.

    Only axial slices are measured: a sagittal or coronal image has no L3 cross-section, whatever is
    chosen."""
    if not volume.is_axial:
        raise LevelError(
            f"The series is {volume.orientation}, not axial: muscle and fat are measured on axial slices "
            "through L3, which this series does not have. Choose the axial series (--series; "
            "`sarcoscope series` lists them) or reconstruct axial slices."
        )
    if slice_index is not None:
        return manual_slice(slice_index, volume.n_slices)
    if slice_range is not None:
        return manual_range(slice_range[0], slice_range[1], volume.n_slices)
    if volume.n_slices == 1:
        return single_slice_input()
    from sarcoscope.level import locate_l3, selection_from_localization

    return selection_from_localization(locate_l3(volume), convention=convention)


def require_body(volume: CTVolume, indices: list[int]) -> SliceBodies:
    """Refuse slices without a body before any engine sees them: an engine may label an empty slice as
    "no tissue" (zero areas, a silent wrong result), and an engine's message counts the slices it was
    given, not the volume's. Returns the slices' bodies (for `volume.hu[indices]`), which the engines
    reuse."""
    from sarcoscope.errors import SegmentationError
    from sarcoscope.segmentation.body import BODY_THRESHOLD_HU, SliceBodies
    from sarcoscope.segmentation.threshold import ThresholdParams

    bodies = SliceBodies(volume.hu[indices], volume.pixel_spacing)
    min_cm2 = ThresholdParams().min_body_area_cm2
    pixel_cm2 = volume.pixel_spacing[0] * volume.pixel_spacing[1] / 100.0
    empty = [i for k, i in enumerate(indices) if bodies[k][0].sum() * pixel_cm2 < min_cm2]
    if not empty:
        return bodies
    which = f"slice {empty[0]}" if len(empty) == 1 else f"slices {index_ranges(empty)}"
    message = (
        f"no body found in {which} (of 0-{volume.n_slices - 1}): no object above {BODY_THRESHOLD_HU:g} HU "
        f"larger than {min_cm2:g} cm²"
    )
    missing = [w for w in volume.warnings if "without a value (NaN" in w]
    raise SegmentationError(message + (f"; note: {missing[0]}" if missing else ""))


def analyze(
    ct: str | Path | CTVolume,
    *,
    out_dir: str | Path | None = None,
    slice_index: int | None = None,
    slice_range: tuple[int, int] | None = None,
    series_uid: str | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    engine: str = DEFAULT_ENGINE,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    sex: str | None = None,
    cutoff_set: str | None = None,
    convention: str = L3_MID,
    hu_ranges: HURanges = DEFAULT_HU_RANGES,
    progress: ProgressCallback | None = None,
    deidentification: DeidentificationPolicy | None = None,
    quality: bool = True,
    label_order: str = "sarcoscope",
) -> AnalysisResult:
    """Analyse one CT at L3 and, when `out_dir` is given, write the report files there atomically (an
    analysis into an `out_dir` another one is writing raises OutputError before any work).

    `ct` is a DICOM folder / zip / single file, a NIfTI file, or an already loaded CTVolume. Patient facts
    given here override those found in the DICOM header; missing ones leave dependent values "not computed".
    With `deidentification`, every written file is de-identified by that policy (see export.write_outputs);
    `label_order` chooses the label ids of labels.nii.gz (export.label_tables.LABEL_ORDERS).
    `quality` scores every analysed slice's segmentation (segmentation.quality; it runs a second engine).
    `pixel_spacing` (rows, columns in mm) is for a NIfTI file without a spatial transform (see read_ct).
    """
    from sarcoscope.composition import (
        PatientInfo,
        assess,
        available_cutoff_sets,
        average_compositions,
        measure_slice,
    )
    from sarcoscope.composition.assessment import height_m_from_cm
    from sarcoscope.errors import CompositionError
    from sarcoscope.imaging import read_ct
    from sarcoscope.segmentation import get_engine
    from sarcoscope.segmentation.base import segment_slices
    from sarcoscope.segmentation.quality import image_warnings

    def stage(name: str) -> None:
        if progress is not None:
            progress(name)

    # what the user gave is checked before the work (an analysis can take minutes), and the output folder
    # is held until its outputs are in (a second analysis into it at once is refused before its work)
    held = contextlib.ExitStack()
    if out_dir is not None:
        from sarcoscope.export.writer import check_replaceable, output_lock

        check_output_folder(Path(out_dir), replaced=True)
        check_replaceable(Path(out_dir))
        if not isinstance(ct, CTVolume):
            check_outside_input(Path(out_dir), Path(ct))
        held.enter_context(output_lock(Path(out_dir)))
    with held:
        PatientInfo(height_m=height_m_from_cm(height_cm), weight_kg=weight_kg, sex=sex)
        if cutoff_set is not None and cutoff_set not in available_cutoff_sets():
            raise CompositionError(
                f"Unknown cutoff set '{cutoff_set}'. Available: {', '.join(available_cutoff_sets())}."
            )
        seg_engine = get_engine(engine, hu_ranges=hu_ranges)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        stage("read")
        volume = (
            ct
            if isinstance(ct, CTVolume)
            else read_ct(ct, series_uid=series_uid, pixel_spacing=pixel_spacing)
        )
        timings["read"] = time.perf_counter() - t

        t = time.perf_counter()
        stage("localize")
        selection = select_l3(volume, slice_index=slice_index, slice_range=slice_range, convention=convention)
        timings["localize"] = time.perf_counter() - t
        release_freed_memory()

        t = time.perf_counter()
        stage("segment")
        bodies = require_body(volume, selection.indices)
        hu_slices = bodies.slices
        slice_quality: QualityAssessment | None = None
        if quality:
            from sarcoscope.segmentation.quality import segment_with_quality

            labels, slice_quality = segment_with_quality(
                seg_engine, hu_slices, volume.pixel_spacing, hu_ranges=hu_ranges, bodies=bodies
            )
        else:
            labels = segment_slices(seg_engine, hu_slices, volume.pixel_spacing, bodies=bodies)
        timings["segment"] = time.perf_counter() - t
        release_freed_memory()

        t = time.perf_counter()
        stage("measure")
        per_slice = [
            measure_slice(h, lab, volume.pixel_spacing) for h, lab in zip(hu_slices, labels, strict=True)
        ]
        average = average_compositions(per_slice)
        md = volume.metadata
        patient = PatientInfo.from_metadata(md, height_cm=height_cm, weight_kg=weight_kg, sex=sex)
        assessment = assess(average, patient, cutoff_set)
        timings["measure"] = time.perf_counter() - t

        warnings = list(volume.warnings)
        warnings += [f"{f['flag']}: {f['reason']}" for f in selection.flags]
        warnings += list(patient.reasons.values())  # DICOM patient facts that were unusable, and why
        if md.contrast_agent:
            warnings.append(
                f"Contrast-enhanced CT ({md.contrast_agent}): contrast raises muscle attenuation, and "
                "myosteatosis cutoffs depend on contrast phase and kVp; interpret HU-based results "
                "accordingly."
            )
        warnings += image_warnings(hu_slices, labels, volume.pixel_spacing, bodies)
        review = slice_quality.warning(selection.indices) if slice_quality is not None else None
        if review:
            warnings.append(review)
        result = AnalysisResult(
            volume=volume,
            selection=selection,
            engine=seg_engine.name,
            model_id=seg_engine.model_id,
            labels=labels,
            slices=per_slice,
            average=average,
            assessment=assessment,
            hu_ranges=hu_ranges,
            software_version=__version__,
            warnings=warnings,
            timings=timings,
            quality=slice_quality,
        )
        if out_dir is not None:
            from sarcoscope.export import write_outputs

            t = time.perf_counter()
            stage("write")
            result.outputs = write_outputs(result, Path(out_dir), deidentification, label_order)
            timings["write"] = time.perf_counter() - t
        return result
