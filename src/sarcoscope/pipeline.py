"""The main job: CT in, L3 body composition out. The CLI, web app and batch runner all call `analyze`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sarcoscope.conventions import HURanges
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level.selection import L3Selection

if TYPE_CHECKING:
    from sarcoscope.composition import Assessment, SliceComposition


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
