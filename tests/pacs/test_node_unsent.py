"""`sarcoscope listen` while the PACS is down: the results that could not be sent are kept and sent again,
as they are, a while later and by a restarted node, so they reach the PACS once it is back (they waited for
a restart, and a restarted node analysed the series anew: new UIDs, so what a PACS had taken of a partly
sent set was there twice). The PACS is a real Orthanc, started on the node's --push-to port after the
first attempt. Skips without Orthanc."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from received import Received

from orthanc_server import free_port, start_orthanc
from sarcoscope.pacs.node import ListenSettings, Node, Peer
from sarcoscope.phantom.io import write_phantom


def _node(out: Path, port: int) -> Node:
    settings = ListenSettings(
        out=out, settle=0.0, engine="threshold", push_to=Peer("ORTHANC", "127.0.0.1", port), retry_send=60.0
    )
    node = Node(settings)
    node.incoming.mkdir(parents=True, exist_ok=True)
    node.results.mkdir(exist_ok=True)
    return node


def test_results_not_sent_are_sent_again_once_the_pacs_is_back(tmp_path: Path) -> None:
    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    files = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    port = free_port()
    node = _node(tmp_path / "node", port)
    for f in files:
        assert node._on_store(Received(f)) == 0
    start = time.monotonic()
    assert node.process_settled(now=start) == 1  # the PACS is down
    (uid,) = node.failed
    out = node.results / uid
    assert "refused the connection" in (out / "error.txt").read_text()
    made = {p.name: pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")}
    assert len(made) == 3
    report = (out / "report.json").stat().st_mtime_ns
    with start_orthanc(tmp_path / "orthanc", dicom_port=port) as orthanc:
        # a node started again sends the results it has, without analysing the series again
        restarted = _node(tmp_path / "node", port)
        restarted._resume()
        restarted.process_settled(now=time.monotonic())
        assert restarted.analysed == [uid] and (out / "report.json").stat().st_mtime_ns == report
        assert not (out / "error.txt").exists()
        # the first node, still running, sends them again after retry_send: the same objects
        node.process_settled(now=start + 30)
        assert node.analysed == []
        node.process_settled(now=start + 61)
        assert node.analysed == [uid]
        stored = {}
        for s in orthanc.series_of(study):
            (ds,) = orthanc.instances_of(study, s["0020000E"]["Value"][0])  # one each: no copies
            stored[str(ds.Modality)] = ds.SOPInstanceUID
        assert sorted(stored) == ["OT", "SEG", "SR"] and sorted(stored.values()) == sorted(made.values())
