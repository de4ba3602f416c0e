"""The result of one analysis, in its own module so `export` (which consumes it) need not import `pipeline`
(which produces it and calls `export`): the arrows point one way, pipeline -> export -> results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sarcoscope.composition import Assessment, SliceComposition
    from sarcoscope.conventions import HURanges
    from sarcoscope.imaging.volume import CTVolume
    from sarcoscope.level.selection import L3Selection
    from sarcoscope.segmentation.quality import QualityAssessment


@dataclass
class AnalysisResult:
    """Everything one analysis produced; `export.write_outputs` turns it into files."""

    volume: CTVolume
    selection: L3Selection
    engine: str
    model_id: str
    labels: np.ndarray  # uint8 (len(selection.indices), y, x), one label map per analysed slice
    slices: list[SliceComposition]  # one per analysed slice, same order as selection.indices
    average: SliceComposition  # mean over the analysed slices (== slices[0] for one slice)
    assessment: Assessment
    hu_ranges: HURanges
    software_version: str
    warnings: list[str] = field(default_factory=list)
    #: Who edited the labels by hand after the engine made them (None: the engine's labels as they are);
    #: the DICOM SEG then says SEMIAUTOMATIC and names the editor.
    editor: str | None = None
    #: Wall-clock seconds per stage, for benchmarks and the batch runner's logs.
    timings: dict[str, float] = field(default_factory=dict)
    #: Files written by `analyze(out_dir=...)`, by kind ("report", "metrics", "overlay", ...).
    outputs: dict[str, Path] = field(default_factory=dict)
    #: Per-slice segmentation quality (segmentation.quality); None when not computed.
    quality: QualityAssessment | None = None
