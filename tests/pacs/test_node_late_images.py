"""`sarcoscope listen` with a scanner that pauses in the middle of a series (longer than --settle): the
late images make the whole series analysed again while the analysed images are kept (`late_window`);
later, a fragment is refused instead of replacing the series' results; a restarted node does not analyse
an analysed series again. Runs the node's receiving and analysing code without the network."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from received import Received

from sarcoscope.pacs.node import ANALYSED_MARKER, ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A phantom series (L3 in view), ordered from the feet up."""
    out = tmp_path_factory.mktemp("phantom")
    write_phantom(out, seed=1, shape_xy=128, slice_thickness_mm=5.0)
    files = sorted((out / "dicom").glob("*.dcm"))
    return sorted(
        files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
    )


def _node(out: Path, late_window: float) -> Node:
    node = Node(ListenSettings(out=out, settle=0.0, engine="threshold", late_window=late_window))
    node.incoming.mkdir(parents=True, exist_ok=True)
    node.results.mkdir(exist_ok=True)
    return node


def _slices(out: Path) -> int:
    return json.loads((out / "report.json").read_text())["input"]["shape_zyx"][0]


def test_late_images_within_the_window_make_the_whole_series_analysed_again(
    series: list[Path], tmp_path: Path
) -> None:
    node = _node(tmp_path / "node", late_window=600.0)
    for f in series[:-20]:
        assert node._on_store(Received(f)) == 0
    assert node.process_settled(now=1e6) == 1
    uid = node.analysed[0]
    out = node.results / uid
    assert _slices(out) == len(series) - 20
    folder = next(node.incoming.glob(f"*/{uid}"))
    assert (folder / ANALYSED_MARKER).is_file()  # kept for late images, not analysed at a restart
    restarted = _node(tmp_path / "node", late_window=600.0)
    restarted._resume()
    assert restarted.process_settled(now=time.monotonic()) == 0 and folder.is_dir()
    for f in series[-20:]:  # the scanner sends the rest
        assert node._on_store(Received(f)) == 0
    assert node.process_settled(now=2e6) == 1
    assert node.analysed == [uid, uid] and _slices(out) == len(series)
    assert not (out / "error.txt").exists()
    node.process_settled(now=2e6 + 600)  # the window passes: the images are deleted
    assert not folder.exists()


def test_a_fragment_after_the_window_does_not_replace_the_results(series: list[Path], tmp_path: Path) -> None:
    node = _node(tmp_path / "node", late_window=0.0)
    for f in series[:-20]:
        node._on_store(Received(f))
    node.process_settled(now=1e6)
    node.process_settled(now=1e6)  # the window (0 s) passed: deleted
    uid = node.analysed[0]
    out = node.results / uid
    report = (out / "report.json").read_bytes()
    assert not any(node.incoming.glob(f"*/{uid}"))
    for f in series[-20:]:
        node._on_store(Received(f))
    node.process_settled(now=2e6)
    assert node.failed == [uid] and (out / "report.json").read_bytes() == report
    assert "20 images of this series arrived after it was analysed with" in (out / "error.txt").read_text()
    fragment = next(node.incoming.glob(f"*/{uid}"))
    assert len(list(fragment.glob("*.dcm"))) == 20  # kept: the whole series sent again joins them
    for f in series:
        node._on_store(Received(f))
    node.process_settled(now=3e6)
    assert node.analysed == [uid, uid] and _slices(out) == len(series)


def test_images_arriving_during_the_analysis_are_analysed_after_a_restart(
    series: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sarcoscope.pipeline

    node = _node(tmp_path / "node", late_window=600.0)
    for f in series[:-20]:
        node._on_store(Received(f))
    analyze = sarcoscope.pipeline.analyze

    def analyze_while_the_scanner_sends(*args: Any, **kwargs: Any) -> Any:
        result = analyze(*args, **kwargs)
        for f in series[-20:]:  # they arrive after the analysis read the folder
            assert node._on_store(Received(f)) == 0
        return result

    monkeypatch.setattr(sarcoscope.pipeline, "analyze", analyze_while_the_scanner_sends)
    node.process_settled(now=1e6)
    monkeypatch.undo()
    uid = node.analysed[0]
    assert _slices(node.results / uid) == len(series) - 20
    # the node stops before it analyses the series again: started again, it analyses the whole series
    # instead of keeping results of a part of it and deleting the rest
    restarted = _node(tmp_path / "node", late_window=600.0)
    restarted._resume()
    assert restarted.process_settled(now=time.monotonic() + 1) == 1
    assert restarted.analysed == [uid] and _slices(restarted.results / uid) == len(series)
