"""`sarcoscope listen` while the PACS is down: the results that could not be sent are kept and sent again,
as they are, a while later and by a restarted node, so they reach the PACS once it is back (they waited for
a restart, and a restarted node analysed the series anew: new UIDs, so what a PACS had taken of a partly
sent set was there twice). While the PACS stays down they were sent again every `retry_send` seconds for as
long as the node ran, without end: after `send_attempts` attempts the node now gives up, error.txt says so,
the results stay, and a restarted node tries once more. The PACS is a real Orthanc, started on the node's
--push-to port after the first attempts. Skips without Orthanc."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from received import Received

from orthanc_server import Orthanc, free_port, start_orthanc
from sarcoscope.pacs.node import ListenSettings, Node, Peer
from sarcoscope.phantom.io import write_phantom


def _node(out: Path, port: int, send_attempts: int = 288) -> Node:
    peer = Peer("ORTHANC", "127.0.0.1", port)
    settings = ListenSettings(
        out=out, settle=0.0, engine="threshold", push_to=peer, retry_send=60.0, send_attempts=send_attempts
    )
    node = Node(settings)
    node.incoming.mkdir(parents=True, exist_ok=True)
    node.results.mkdir(exist_ok=True)
    return node


def _received(tmp_path: Path, send_attempts: int = 288) -> tuple[Node, str, int]:
    """A node that received a phantom series and sends to a PACS that is down: it, the study, the port."""
    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    files = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    port = free_port()
    node = _node(tmp_path / "node", port, send_attempts)
    for f in files:
        assert node._on_store(Received(f)) == 0
    return node, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), port


def _stored(orthanc: Orthanc, study: str) -> list[str]:
    """The SOP Instance UIDs Orthanc holds of the study."""
    return sorted(
        str(ds.SOPInstanceUID)
        for s in orthanc.series_of(study)
        for ds in orthanc.instances_of(study, s["0020000E"]["Value"][0])
    )


def test_results_not_sent_are_sent_again_once_the_pacs_is_back(tmp_path: Path) -> None:
    node, study, port = _received(tmp_path)
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


def test_results_not_sent_are_given_up_after_the_attempts_and_kept(tmp_path: Path) -> None:
    node, study, port = _received(tmp_path, send_attempts=3)
    start = time.monotonic()
    node.process_settled(now=start)  # the PACS is down: attempt 1
    (uid,) = node.failed
    error = node.results / uid / "error.txt"
    assert "sent again in 60 s (attempt 1 of 3)" in " ".join(error.read_text().split())
    node.process_settled(now=start + 61)
    node.process_settled(now=start + 122)  # attempt 3: the last
    assert node.failed == [uid] * 3
    told = " ".join(error.read_text().split())
    assert "Not sent after 3 attempts" in told and "restart the node" in told
    for later in (183, 244, 3600):  # no more attempts
        node.process_settled(now=start + later)
    assert node.failed == [uid] * 3 and node.analysed == []
    made = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in (node.results / uid).glob("*.dcm"))
    assert len(made) == 3  # kept
    with start_orthanc(tmp_path / "orthanc", dicom_port=port) as orthanc:
        node.process_settled(now=start + 7200)  # the PACS is back; the node still does not try
        assert orthanc.series_of(study) == []
        restarted = _node(tmp_path / "node", port, send_attempts=3)  # what error.txt says to do
        restarted._resume()
        restarted.process_settled(now=time.monotonic())
        assert restarted.analysed == [uid] and not error.exists()
        assert _stored(orthanc, study) == made


def test_listen_refuses_no_attempts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sarcoscope.cli import app

    args = ["listen", "-o", str(tmp_path / "node"), "--engine", "threshold", "--send-attempts", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "--send-attempts must be 1 or more" in " ".join(result.output.split())
