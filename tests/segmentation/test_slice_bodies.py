"""The body of each analysed slice is found once (issue 18: it was found three times per slice, by the check
for empty slices, the U-Net and the quality score's threshold engine), with the same labels."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.phantom import make_slice
from sarcoscope.phantom.artefacts import add_arms
from sarcoscope.segmentation import body as body_module
from sarcoscope.segmentation.body import SliceBodies, body_and_limbs
from sarcoscope.segmentation.quality import segment_with_quality
from sarcoscope.segmentation.threshold import ThresholdEngine
from sarcoscope.segmentation.unet import UNetEngine


def _stack() -> tuple[np.ndarray, tuple[float, float]]:
    """Two int16 phantom slices of 512², the second with arms pressed on the trunk (limbs to cut off)."""
    a, b = make_slice(1, size=512), make_slice(4, size=512)
    return np.stack([a.hu, add_arms(b.hu, b.pixel_spacing)]).astype(np.int16), a.pixel_spacing


def _count_bodies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every `body_and_limbs` call, wherever it is called from."""
    calls: list[int] = []
    original = body_module.body_and_limbs

    def counted(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(body_module, "body_and_limbs", counted)
    monkeypatch.setattr("sarcoscope.segmentation.unet.body_and_limbs", counted, raising=False)
    return calls


def test_analyze_finds_each_slice_body_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sarcoscope.imaging.volume import CTVolume
    from sarcoscope.pipeline import analyze

    hu, spacing = _stack()
    volume = CTVolume(hu=hu, spacing=(3.0, *spacing), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    calls = _count_bodies(monkeypatch)
    result = analyze(volume, slice_range=(0, 1))
    assert result.quality is not None and result.quality.second_opinion is not None  # both engines ran
    assert len(calls) == 2


@pytest.mark.parametrize("engine", [ThresholdEngine(), UNetEngine()], ids=["threshold", "unet"])
def test_shared_bodies_give_the_labels_of_the_engine_alone(engine: ThresholdEngine | UNetEngine) -> None:
    hu, spacing = _stack()
    alone = engine.segment(hu, spacing)
    shared = SliceBodies(hu, spacing)
    assert np.array_equal(engine.segment(hu, spacing, bodies=shared), alone)
    assert np.array_equal(engine.segment(hu.astype(np.float32), spacing, bodies=shared), alone)
    # bodies of other slices, or of another pixel size, are not used
    other = SliceBodies(hu[::-1].copy(), spacing)
    assert np.array_equal(engine.segment(hu, spacing, bodies=other), alone)
    assert not SliceBodies(hu, (spacing[0] * 2, spacing[1])).of(hu, spacing)


def test_the_quality_score_shares_the_bodies_and_keeps_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    hu, spacing = _stack()
    net = UNetEngine()
    labels = net.segment(hu, spacing)
    other = ThresholdEngine().segment(hu, spacing)
    calls = _count_bodies(monkeypatch)
    shared_labels, qa = segment_with_quality(net, hu, spacing)
    assert len(calls) == 2  # one per slice, for both engines
    assert np.array_equal(shared_labels, labels)
    _, separate = segment_with_quality(net, hu, spacing, second_opinion=_Fixed(other))
    assert [s.signals for s in qa.slices] == [s.signals for s in separate.slices]


class _Fixed:
    """An engine that returns given labels (and takes no bodies)."""

    name, model_id = "fixed", "fixed-1"

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        return self.labels


def test_a_slice_body_asked_for_by_two_threads_is_found_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hu, spacing = _stack()
    calls = _count_bodies(monkeypatch)
    bodies = SliceBodies(hu, spacing)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    threads = [threading.Thread(target=lambda: results.append(bodies[1])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results[0] is results[1]
    expected = body_and_limbs(hu[1], spacing)
    assert all(np.array_equal(a, b) for a, b in zip(results[0], expected, strict=True))
