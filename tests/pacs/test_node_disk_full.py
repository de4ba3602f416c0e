"""`sarcoscope listen` on a full disk: a series whose results (and error.txt) cannot be written is one failed
series, said in the log, and the node goes on (it stopped with "internal error: OSError"); once there is room
again it analyses what it receives. The node's folder is on a small tmpfs, filled up; skips where tmpfs
cannot be mounted (not root)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from received import Received

from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


def test_a_full_disk_fails_the_series_and_the_node_goes_on(
    small_disk: Path, fill_disk: Callable[[Path], Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    files = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    node = Node(ListenSettings(out=small_disk / "node", settle=0.0, engine="threshold"))
    node.incoming.mkdir(parents=True)
    node.results.mkdir()
    for f in files:
        assert node._on_store(Received(f)) == 0
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    filler = fill_disk(small_disk)
    other = Received(files[0])
    other.dataset.StudyInstanceUID = other.dataset.SeriesInstanceUID = "1.2.3.4"  # its folder cannot be made
    assert node._on_store(other) == 0xA700  # out of resources: the sender keeps it and tries again later
    assert node.process_settled(now=time.monotonic() + 1) == 1
    assert node.failed == [uid] and node.analysed == []
    assert f"series {uid} not analysed or not sent" in caplog.text and "No space left" in caplog.text
    assert next(node.incoming.glob(f"*/{uid}")).is_dir()  # kept, analysed again at the next start
    filler.unlink()  # room again: the node still works
    assert node._on_store(Received(files[0])) == 0
    assert node.process_settled(now=time.monotonic() + 1) == 1
    assert node.analysed == [uid] and (node.results / uid / "report.json").is_file()
