"""The "threshold" engine on the real L3 slices with reference labels (../shared/data).

The floors sit a little below the Dice measured when the method was tuned (see the segmentation report), so
that a regression fails. These five cases are the development set; held-out cases are scored elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from sarcoscope.conventions import Label
from sarcoscope.segmentation.threshold import ThresholdEngine
from sarcoscope.validation.metrics import dice

#: case -> Dice floors (muscle, SAT, VAT, IMAT)
FLOORS: dict[str, tuple[float, float, float, float]] = {
    "EMC101": (0.93, 0.95, 0.95, 0.78),
    "EMC100": (0.88, 0.95, 0.93, 0.71),
    "EMC172": (0.93, 0.96, 0.93, 0.62),
    "EMC052": (0.95, 0.96, 0.90, 0.64),
    "EMC041": (0.86, 0.93, 0.71, 0.70),
}


def _read(shared: Path, case: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    folder = shared / "real" / "l3_slices"
    ds = pydicom.dcmread(folder / "images" / f"L3_{case}.dcm")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return hu, spacing, np.load(folder / "labels" / f"{case}.npy")


@pytest.fixture(scope="module")
def engine() -> ThresholdEngine:
    return ThresholdEngine()


@pytest.mark.parametrize("case", sorted(FLOORS))
def test_real_slice_dice_floors(shared_data: Path, engine: ThresholdEngine, case: str):
    hu, spacing, ref = _read(shared_data, case)
    labels = engine.segment(hu[None], spacing)[0]
    assert labels.shape == ref.shape
    scores = [dice(labels, ref, t) for t in (Label.MUSCLE, Label.SAT, Label.VAT, Label.IMAT)]
    for name, score, floor in zip(("muscle", "SAT", "VAT", "IMAT"), scores, FLOORS[case], strict=True):
        assert score >= floor, f"{case} {name} Dice {score:.3f} < floor {floor}"
    # the labels obey the HU windows exactly, like the reference protocol
    assert np.all(hu[labels == Label.MUSCLE] >= -29) and np.all(hu[labels == Label.MUSCLE] <= 150)
    fat = np.isin(labels, (Label.SAT, Label.VAT, Label.IMAT))
    assert np.all(hu[fat] >= -190) and np.all(hu[fat] <= -30)
