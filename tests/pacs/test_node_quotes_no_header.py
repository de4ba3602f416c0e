"""`sarcoscope listen` logs (and writes into a series' error.txt) why an image was refused or a series failed
without quoting a header value: an invalid UID's text, or an unexpected exception's (pydicom's ValueError
for a malformed value quotes it), may be anything of the header, the patient's name too."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pydicom
import pytest
from received import Received

from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom

NAME = "Jansen^Piet"


def _node_and_files(tmp_path: Path) -> tuple[Node, list[Path]]:
    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    node = Node(ListenSettings(out=tmp_path / "node", settle=0.0, engine="threshold"))
    node.incoming.mkdir(parents=True)
    node.results.mkdir()
    return node, sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))


def _node_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "sarcoscope.pacs.node")


def test_an_image_with_an_invalid_uid_is_refused_without_quoting_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node, files = _node_and_files(tmp_path)
    image = Received(files[0])
    image.dataset.StudyInstanceUID = NAME
    with caplog.at_level(logging.INFO):
        assert node._on_store(image) == 0xA900
    logged = _node_log(caplog)
    assert "refused an image without valid UIDs" in logged and "Jansen" not in logged


def test_an_unexpected_error_fails_the_series_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, files = _node_and_files(tmp_path)
    for f in files:
        assert node._on_store(Received(f)) == 0

    def malformed(*_: object, **__: object) -> None:
        raise ValueError(f"Invalid value for VR PN: '{NAME}'")

    monkeypatch.setattr("sarcoscope.pipeline.analyze", malformed)
    with caplog.at_level(logging.INFO):
        assert node.process_settled(now=time.monotonic() + 1) == 1
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert node.failed == [uid]
    error = (node.results / uid / "error.txt").read_text()
    for text in (_node_log(caplog), error):
        assert "internal error ValueError" in text and "Jansen" not in text
    assert "Traceback" in _node_log(caplog) and "Traceback" not in error  # the frames for the log only
