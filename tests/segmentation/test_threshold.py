"""The classical "threshold" engine on synthetic slices with exact labels and on phantom slices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from sarcoscope.conventions import HURanges, Label
from sarcoscope.errors import SegmentationError
from sarcoscope.segmentation import SegmentationEngine, get_engine
from sarcoscope.segmentation.threshold import ThresholdEngine, ThresholdParams
from sarcoscope.validation.metrics import dice


@pytest.fixture(scope="module")
def engine() -> ThresholdEngine:
    return ThresholdEngine()


def test_registered_and_implements_the_interface():
    eng = get_engine("threshold")
    assert isinstance(eng, ThresholdEngine)
    assert isinstance(eng, SegmentationEngine)
    assert eng.name == "threshold"
    assert eng.model_id.startswith("threshold-v")
    assert "muscle=-29..150" in eng.model_id and "vat=-190..-30" in eng.model_id


def test_model_id_names_custom_hu_ranges_and_parameters():
    assert "vat=-150..-50" in ThresholdEngine(HURanges.slice_o_matic_vat()).model_id
    assert "vat=-150..-50" in get_engine("threshold", hu_ranges=HURanges.slice_o_matic_vat()).model_id
    assert "params=" not in ThresholdEngine().model_id
    tuned = ThresholdEngine(params=ThresholdParams(n_rays=360)).model_id
    assert "params=" in tuned and tuned == ThresholdEngine(params=ThresholdParams(n_rays=360)).model_id


def test_synthetic_slice_labels_and_tissues(engine, abdomen):
    hu, truth, masks = abdomen()
    out = engine.segment(hu[None], (0.75, 0.75))
    assert out.shape == (1, *hu.shape) and out.dtype == np.uint8
    labels = out[0]
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    # the SAT ring between skin and muscle wall is found, and everything is told apart from organs
    assert dice(labels, truth, Label.SAT) > 0.99
    assert dice(labels, truth, Label.VAT) > 0.98
    assert dice(labels, truth, Label.MUSCLE) > 0.97
    pocket = truth == Label.IMAT
    assert (labels[pocket] == Label.IMAT).mean() > 0.8
    # nothing outside the body, the table included
    assert not labels[masks["table"]].any()
    assert not labels[~masks["body"]].any()


def test_skin_line_reading_as_fat_is_sat(engine, abdomen):
    """The reference labels' thresholds decide partial volume, at the skin too: fat-HU skin is SAT."""
    hu, truth, masks = abdomen()
    body = masks["body"]
    rim = body & ~ndi.binary_erosion(body, structure=np.ones((3, 3), bool))  # the outermost pixel ring
    hu = hu.copy()
    hu[rim] = -120.0  # the skin blurred into the air outside
    labels = engine.segment(hu[None], (0.75, 0.75))[0]
    assert (labels[rim] == Label.SAT).mean() > 0.99
    assert dice(labels, truth, Label.MUSCLE) > 0.97


def test_table_touching_the_body_is_not_body(engine, abdomen):
    hu, truth, masks = abdomen(table_gap_mm=0.0)
    labels = engine.segment(hu[None], (0.75, 0.75))[0]
    assert not labels[masks["table"]].any()
    assert dice(labels, truth, Label.SAT) > 0.99


@pytest.mark.parametrize(
    ("spacing", "size"), [((0.55, 0.55), (640, 640)), ((1.0, 1.0), (384, 384)), ((0.6, 0.9), (600, 400))]
)
def test_pixel_spacing_is_honoured(engine, abdomen, spacing, size):
    """The same anatomy on other grids (incl. anisotropic pixels) gives the same tissue areas."""
    hu, truth, _ = abdomen(spacing, size)
    labels = engine.segment(hu[None], spacing)[0]
    pixel_cm2 = spacing[0] * spacing[1] / 100.0
    for label in (Label.MUSCLE, Label.SAT, Label.VAT):
        assert dice(labels, truth, label) > 0.97
        area, true_area = (labels == label).sum() * pixel_cm2, (truth == label).sum() * pixel_cm2
        assert area == pytest.approx(true_area, rel=0.03)


def test_stack_is_segmented_slice_by_slice(engine, abdomen):
    a, _, _ = abdomen(seed=1)
    b, _, _ = abdomen(seed=2)
    out = engine.segment(np.stack([a, b]), (0.75, 0.75))
    assert out.shape == (2, *a.shape)
    np.testing.assert_array_equal(out[1], engine.segment(b[None], (0.75, 0.75))[0])


def test_slice_without_body_raises(engine, abdomen):
    hu, _, _ = abdomen()
    empty = np.full_like(hu, -1024.0)
    with pytest.raises(SegmentationError, match="no body found in slice 1"):
        engine.segment(np.stack([hu, empty]), (0.75, 0.75))
    table_only = empty.copy()
    table_only[400:404, :] = 200.0
    with pytest.raises(SegmentationError, match="no body found in slice 0"):
        engine.segment(table_only[None], (0.75, 0.75))


def test_bad_input_raises(engine, abdomen):
    hu, _, _ = abdomen()
    with pytest.raises(SegmentationError, match=r"shape \(n, y, x\)"):
        engine.segment(hu, (0.75, 0.75))
    with pytest.raises(SegmentationError, match="pixel spacing"):
        engine.segment(hu[None], (0.0, 0.75))


def test_custom_vat_window_is_applied(abdomen):
    hu, _, _ = abdomen(noise_hu=25.0)
    ranges = HURanges.slice_o_matic_vat()
    labels = ThresholdEngine(ranges).segment(hu[None], (0.75, 0.75))[0]
    vat_hu = hu[labels == Label.VAT]
    assert vat_hu.size and vat_hu.min() >= -150 and vat_hu.max() <= -50
    sat_hu = hu[labels == Label.SAT]
    assert sat_hu.min() < -150 or sat_hu.max() > -50  # SAT keeps the default window


def test_phantom_slices(engine):
    """Phantom slices (thin to obese, contrast phases, table, bowel): loose floors, the phantom evolves."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    for seed in (0, 1, 2):
        ph = phantom.make_slice(seed)
        labels = engine.segment(ph.hu[None], ph.pixel_spacing)[0]
        assert dice(labels, ph.labels, Label.MUSCLE) > 0.85, seed
        assert dice(labels, ph.labels, Label.SAT) > 0.88, seed
        assert dice(labels, ph.labels, Label.VAT) > 0.6, seed
        assert dice(labels, ph.labels, (Label.MUSCLE, Label.SAT, Label.VAT)) > 0.88, seed
