"""Both engines on a real slice resampled to non-square pixels: the tissues keep their areas and overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

from sarcoscope.conventions import Label
from sarcoscope.segmentation import get_engine
from sarcoscope.training.data import find_pairs, read_image, read_labels
from sarcoscope.validation.metrics import dice


@pytest.mark.parametrize("engine_name", ["threshold", "unet"])
def test_non_square_pixels_give_the_same_muscle(shared_data: Path, engine_name: str):
    ((_, image, label),) = [p for p in find_pairs(shared_data / "real" / "l3_slices") if p[0] == "EMC101"]
    hu, spacing, _ = read_image(image)
    ref = read_labels(label, None)[0]
    engine = get_engine(engine_name)
    square = engine.segment(hu, spacing)[0]
    # the same field of view with 40 % wider pixels across (x) than along (y)
    cols = round(hu.shape[2] / 1.4)
    wide_spacing = (spacing[0], spacing[1] * hu.shape[2] / cols)
    wide_hu = resize(hu[0], (hu.shape[1], cols), order=1, anti_aliasing=True, preserve_range=True)
    wide = engine.segment(wide_hu[None].astype(np.float32), wide_spacing)[0]
    assert wide.shape == (hu.shape[1], cols)
    pixel = {"square": spacing[0] * spacing[1], "wide": wide_spacing[0] * wide_spacing[1]}
    for tissue in (Label.MUSCLE, Label.SAT, Label.VAT):
        area_square = np.count_nonzero(square == tissue) * pixel["square"]
        area_wide = np.count_nonzero(wide == tissue) * pixel["wide"]
        assert abs(area_wide - area_square) <= 0.04 * area_square, tissue
    back = resize(wide, square.shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    assert dice(back, ref, Label.MUSCLE) >= dice(square, ref, Label.MUSCLE) - 0.03
