"""Unenhanced CT is recognised from the blood in front of the spine, and there the U-Net is scored without
the threshold engine (which tells organs from the wall partly by their enhancement)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_unet import real_slice

from sarcoscope.phantom import make_slice
from sarcoscope.segmentation import contrast as contrast_module
from sarcoscope.segmentation.body import SliceBodies
from sarcoscope.segmentation.contrast import (
    ENHANCED_MIN_HU,
    UNENHANCED_MAX_HU,
    ContrastReading,
    read_contrast,
)
from sarcoscope.segmentation.quality import (
    NETWORK_SIGNALS,
    SIGNALS,
    segment_then_score,
    segment_with_quality,
    threshold_engine_unfit,
)
from sarcoscope.segmentation.unet import UNetEngine

SPACING = (0.8, 0.8)


def drawn_slice(blood_hu: float, gap_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A drawn L3 slice (HU, body mask) at 0.8 mm: fat body, a vertebral body (cancellous 180 HU in a 700 HU
    cortex, 44 x 34 mm) with psoas beside it (55 HU), and an aorta of 20 mm at `blood_hu`, `gap_mm` in front
    of the vertebra. Rows run from the front to the back."""
    rows, cols = np.indices((400, 400)) * 0.8
    body = ((rows - 160) / 120) ** 2 + ((cols - 160) / 150) ** 2 <= 1
    hu = np.where(body, -100.0, -1000.0)
    vertebra = ((rows - 210) / 17) ** 2 + ((cols - 160) / 22) ** 2
    hu[vertebra <= 1] = 700.0
    hu[vertebra <= 0.8] = 180.0
    for side in (-1, 1):
        hu[((rows - 205) / 14) ** 2 + ((cols - 160 - side * 36) / 12) ** 2 <= 1] = 55.0
    hu[(rows - (210 - 17 - gap_mm - 10)) ** 2 + (cols - 166) ** 2 <= 10**2] = blood_hu
    return hu.astype(np.float32), body


@pytest.mark.parametrize(
    ("blood", "phase"),
    [(45.0, "unenhanced"), (70.0, "unenhanced"), (90.0, "unknown"), (160.0, "enhanced"), (350.0, "enhanced")],
)
def test_the_blood_in_front_of_the_spine_tells_the_phase(blood: float, phase: str) -> None:
    # unenhanced blood 35-50 HU, muscle 40-60; portal-venous blood 120-200, arterial 200 and more
    hu, body = drawn_slice(blood)
    reading = read_contrast(hu, body, SPACING)
    assert reading.phase == phase
    # the brightest spot is the aorta (the psoas at 55 HU when the blood reads less)
    assert reading.blood_hu == max(blood, 55.0)
    # upside down (a prone patient, a flipped image) it reads the same: "in front" is towards the body's
    # centre
    assert read_contrast(hu[::-1], body[::-1], SPACING) == reading


def test_an_arterial_aorta_against_the_vertebra_is_not_taken_for_bone() -> None:
    hu, body = drawn_slice(350.0, gap_mm=0.0)
    assert read_contrast(hu, body, SPACING).phase == "enhanced"


def test_without_a_vertebral_body_the_phase_is_unknown() -> None:
    hu, body = drawn_slice(45.0)
    hu[hu > 150] = 55.0
    reading = read_contrast(hu, body, SPACING)
    assert reading == ContrastReading("unknown", None, "no vertebral body found")
    with pytest.raises(ValueError, match="needs the blood"):
        ContrastReading("unenhanced", None, "")


def test_phantoms_of_each_phase_read_as_rendered() -> None:
    """Phantom seeds whose bowel in front of the spine holds no oral contrast (with it they read "enhanced",
    the reading's safe side): unenhanced reads unenhanced, arterial and portal-venous enhanced."""
    for seed in (900, 901, 902):
        phases = {}
        for contrast in ("none", "arterial", "portal"):
            ph = make_slice(seed, contrast=contrast)
            body = SliceBodies(ph.hu[None], ph.pixel_spacing)[0][0]
            phases[contrast] = read_contrast(ph.hu, body, ph.pixel_spacing)
        assert phases["none"].phase == "unenhanced", seed
        assert phases["none"].blood_hu is not None and phases["none"].blood_hu <= UNENHANCED_MAX_HU
        assert phases["arterial"].phase == phases["portal"].phase == "enhanced", seed
        assert phases["portal"].blood_hu is not None and phases["portal"].blood_hu >= ENHANCED_MIN_HU


def test_on_unenhanced_ct_the_unet_is_scored_without_the_threshold_engine() -> None:
    net = UNetEngine()
    plain = make_slice(901, contrast="none")
    _, unenhanced = segment_with_quality(net, plain.hu[None], plain.pixel_spacing)
    assert unenhanced.used == list(NETWORK_SIGNALS) and unenhanced.second_opinion is None
    why = unenhanced.unavailable["engine_muscle_dice"]
    assert why.startswith("the threshold engine is no second opinion on unenhanced CT") and "HU" in why
    enhanced = make_slice(901, contrast="portal")
    _, portal = segment_with_quality(net, enhanced.hu[None], enhanced.pixel_spacing)
    assert portal.used == list(SIGNALS) and portal.second_opinion is not None and not portal.unavailable


def test_the_web_apps_answer_does_not_wait_for_the_blood_to_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """segment_then_score's labels (the web app's answer) come before the phase is read, which costs 35-50 ms
    a slice: it is read with the second opinion, after; the assessment is segment_with_quality's."""
    readings: list[str] = []

    def counted(*args: object) -> ContrastReading:
        reading = read_contrast(*args)  # type: ignore[arg-type]
        readings.append(reading.phase)
        return reading

    monkeypatch.setattr(contrast_module, "read_contrast", counted)
    plain = make_slice(901, contrast="none")
    labels, score = segment_then_score(UNetEngine(), plain.hu[None], plain.pixel_spacing)
    assert readings == []
    assessment = score()
    assert readings == ["unenhanced"]
    assert assessment.used == list(NETWORK_SIGNALS) and assessment.second_opinion is None
    same_labels, same = segment_with_quality(UNetEngine(), plain.hu[None], plain.pixel_spacing)
    assert np.array_equal(labels, same_labels) and assessment == same


REAL_CASES = ("EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172")


def test_no_real_slice_is_taken_for_unenhanced(shared_data: Path) -> None:
    """The nine real slices are all contrast-enhanced: each reads so, and keeps the threshold engine as the
    second opinion (so its score is what it was)."""
    for case in REAL_CASES:
        hu, spacing, _ = real_slice(shared_data, case)
        bodies = SliceBodies(hu[None], spacing)
        reading = read_contrast(hu, bodies[0][0], spacing)
        assert reading.phase == "enhanced" and reading.blood_hu is not None, (case, reading)
        assert threshold_engine_unfit(hu[None], spacing, bodies) is None, case


def test_coarse_pixels_are_not_read() -> None:
    # on 3 mm pixels the cortex blurs into gaps (the real ts_example volume: no vertebral body, or bone read)
    hu, body = drawn_slice(45.0)
    assert read_contrast(hu[::4, ::4], body[::4, ::4], (3.2, 3.2)).phase == "unknown"
