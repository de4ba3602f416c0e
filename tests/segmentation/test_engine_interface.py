"""The engine interface's optional inputs (base.SegmentationEngine.segment: `bodies`, `observe`): every engine
declaring one gets it, a plugin's as well as this package's, and an engine declaring none still works."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sarcoscope.conventions import Label
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.segmentation import base
from sarcoscope.segmentation.base import segment_slices
from sarcoscope.segmentation.body import SliceBodies
from sarcoscope.segmentation.quality import NETWORK_SIGNALS, segment_with_quality


def _slice() -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """One 96² slice of 1 mm pixels, soft tissue (a body of 64 cm²) in air, and a label map of muscle in its
    middle."""
    hu = np.full((1, 96, 96), -1000.0, np.float32)
    hu[0, 8:88, 8:88] = 40.0
    labels = np.zeros(hu.shape, np.uint8)
    labels[0, 30:66, 30:66] = Label.MUSCLE
    return hu, (1.0, 1.0), labels


class _Plugin:
    """A third-party engine declaring both optional inputs: it keeps the bodies it is given, and shows
    `probabilities` (the one-hot of its labels, a network sure of every pixel) to `observe`."""

    name, model_id = "plugin", "plugin-1"

    def __init__(self, labels: np.ndarray, network: bool = False) -> None:
        self.labels, self.network = labels, network
        self.bodies: SliceBodies | None = None

    def segment(
        self,
        slices: np.ndarray,
        pixel_spacing: tuple[float, float],
        *,
        bodies: SliceBodies | None = None,
        observe: base.PassObserver | None = None,
    ) -> np.ndarray:
        self.bodies = bodies
        if self.network and observe is not None:
            probabilities = np.moveaxis(np.eye(5, dtype=np.float32)[self.labels], -1, 1)
            observe(0, probabilities, probabilities)
        return self.labels


class _Options:
    """An engine taking whatever keywords it is given."""

    name, model_id = "options", "options-1"

    def __init__(self, labels: np.ndarray) -> None:
        self.labels, self.options = labels, {}

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float], **options: Any) -> np.ndarray:
        self.options = options
        return self.labels


class _Plain:
    """An engine written before the optional inputs: two arguments only."""

    name, model_id = "plain", "plain-1"

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        return self.labels


def test_a_plugin_engine_and_its_second_opinion_get_the_bodies_found_already() -> None:
    """Only this package's engines were given them (segment_with_bodies chose by class); a plugin's found
    each slice's body again."""
    hu, spacing, labels = _slice()
    bodies = SliceBodies(hu, spacing)
    engine, other = _Plugin(labels), _Plugin(labels)
    out, qa = segment_with_quality(engine, hu, spacing, second_opinion=other, bodies=bodies)
    assert out is labels and engine.bodies is bodies and other.bodies is bodies
    assert qa.slices[0].signals["engine_muscle_dice"] == 1.0


def test_a_plugin_network_engine_gets_the_network_signals() -> None:
    """Only the U-Net engine was given `observe`; another network's slices had no network signals."""
    hu, spacing, labels = _slice()
    _, qa = segment_with_quality(_Plugin(labels, network=True), hu, spacing, second_opinion=_Plain(labels))
    assert qa.slices[0].signals == {
        "expected_muscle_dice": 1.0,
        "mirror_muscle_dice": 1.0,
        "engine_muscle_dice": 1.0,
        "engine_muscle_area_diff": 0.0,
    }
    assert not set(NETWORK_SIGNALS) & set(qa.unavailable)
    # one that does not show its probabilities has none, with the reason
    _, silent = segment_with_quality(_Plugin(labels), hu, spacing, second_opinion=_Plain(labels))
    assert silent.unavailable["expected_muscle_dice"] == "the 'plugin' engine has no network probabilities"


def test_an_engine_gets_the_optional_inputs_it_declares() -> None:
    hu, spacing, labels = _slice()
    bodies = SliceBodies(hu, spacing)

    def observe(start: int, plain: np.ndarray, mirrored: np.ndarray) -> None: ...

    options = _Options(labels)
    assert segment_slices(options, hu, spacing, bodies=bodies, observe=observe) is labels
    assert options.options == {"bodies": bodies, "observe": observe}
    assert segment_slices(_Plain(labels), hu, spacing, bodies=bodies, observe=observe) is labels


def test_analyze_gives_a_registered_engine_the_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's own call (no quality score) gives them too."""
    from sarcoscope.pipeline import analyze

    hu, spacing, labels = _slice()
    engine = _Plugin(labels)
    monkeypatch.setitem(base._ENGINES, "plugin", lambda **options: engine)
    volume = CTVolume(hu=hu, spacing=(3.0, *spacing), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    analyze(volume, slice_index=0, engine="plugin", quality=False)
    assert engine.bodies is not None and engine.bodies.of(hu, spacing)
