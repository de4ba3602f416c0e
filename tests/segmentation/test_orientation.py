"""Slices upside down (a file whose orientation metadata is wrong) are segmented the right way up: read as
stored, the U-Net measured the real L3 slices' muscle 10-23 % off (Dice 0.63-0.71)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarcoscope.phantom import make_slice
from sarcoscope.segmentation import orientation
from sarcoscope.segmentation.body import SliceBodies, body_mask
from sarcoscope.segmentation.quality import image_warnings
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.training.data import find_pairs, read_image, read_labels
from sarcoscope.validation.metrics import case_metrics

REAL_CASES = ["EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172"]


def _real(shared_data: Path, case: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    ((_, image, label),) = [p for p in find_pairs(shared_data / "real" / "l3_slices") if p[0] == case]
    hu, spacing, _ = read_image(image)
    return hu[0], spacing, read_labels(label, None)[0]


def _upside_down(hu: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hu[::-1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_vertebra_lies_in_the_back_of_phantom_slices_and_in_the_front_turned(seed: int):
    ph = make_slice(seed, size=256)
    body = body_mask(ph.hu, ph.pixel_spacing)
    depth = orientation.vertebra_depth(ph.hu, body, ph.pixel_spacing)
    assert depth is not None and depth > 0.55
    turned = orientation.vertebra_depth(_upside_down(ph.hu), body[::-1], ph.pixel_spacing)
    assert turned == pytest.approx(1.0 - depth, abs=0.01)
    assert not orientation.upside_down(ph.hu[None], [body], ph.pixel_spacing)
    assert orientation.upside_down(_upside_down(ph.hu)[None], [body[::-1]], ph.pixel_spacing)


def test_a_slice_without_a_vertebra_is_not_called_upside_down():
    ph = make_slice(1, size=256)
    soft = np.minimum(ph.hu, 100).astype(ph.hu.dtype)  # no bone
    body = body_mask(soft, ph.pixel_spacing)
    assert orientation.vertebra_depth(soft, body, ph.pixel_spacing) is None
    assert not orientation.upside_down(soft[None], [body], ph.pixel_spacing)


def test_the_unet_labels_a_phantom_upside_down_as_the_right_way_up():
    ph = make_slice(2, size=256)
    engine = UNetEngine()
    plain = engine.segment(ph.hu[None], ph.pixel_spacing)[0]
    turned = engine.segment(_upside_down(ph.hu)[None], ph.pixel_spacing)[0]
    np.testing.assert_array_equal(turned[::-1], plain)
    # the probabilities too (validation and training read them)
    probs = engine.predict_proba(_upside_down(ph.hu)[None], ph.pixel_spacing)[0]
    np.testing.assert_allclose(
        probs[:, ::-1], engine.predict_proba(ph.hu[None], ph.pixel_spacing)[0], atol=1e-5
    )


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_l3_slices_upside_down_are_measured_as_the_right_way_up(shared_data: Path, case: str):
    hu, spacing, ref = _real(shared_data, case)
    engine = UNetEngine()
    plain = engine.segment(hu[None], spacing)
    turned = engine.segment(_upside_down(hu)[None], spacing)
    np.testing.assert_array_equal(turned[0][::-1], plain[0])
    metrics = case_metrics(turned, _upside_down(ref)[None], pixel_spacing=spacing)
    assert metrics["muscle_dice"] > 0.95  # read as stored: 0.63-0.71
    assert abs(metrics["muscle_area_err_pct"]) < 5.0  # read as stored: -23 to +16 %


def test_bowel_contrast_taken_for_the_vertebra_does_not_turn_a_slice_the_right_way_up():
    """On this phantom slice at 1.4 mm the largest bone-bright piece mid-body is oral contrast in the bowel,
    in the front: the anatomy alone calls it upside down; the network is surer of it as it is."""
    ph = make_slice(782, size=256, pixel_spacing=1.4)
    hu = ph.hu[None]
    bodies = SliceBodies(hu, ph.pixel_spacing)
    assert orientation.upside_down(hu, [bodies[0][0]], ph.pixel_spacing)
    labels = UNetEngine().segment(hu, ph.pixel_spacing, bodies=bodies)
    assert bodies.read_turned is False
    assert case_metrics(labels, ph.labels[None], pixel_spacing=ph.pixel_spacing)["muscle_dice"] > 0.9


@pytest.mark.parametrize("case", ["EMC040", "EMC051", "EMC100"])
def test_the_report_says_the_image_is_upside_down(shared_data: Path, case: str):
    hu, spacing, ref = _real(shared_data, case)
    engine = UNetEngine()
    for image, truth, turned in ((hu, ref, False), (_upside_down(hu), _upside_down(ref), True)):
        bodies = SliceBodies(image[None], spacing)
        labels = engine.segment(image[None], spacing, bodies=bodies)
        assert bodies.read_turned is turned
        said = orientation.UPSIDE_DOWN_WARNING in image_warnings(image[None], labels, spacing, bodies)
        assert said is turned
        assert case_metrics(labels, truth[None], pixel_spacing=spacing)["muscle_dice"] > 0.95
