"""`sarcoscope listen`: real CT images sent by pynetdicom's C-STORE SCU to the node on 127.0.0.1 are analysed
once their series settles, and the SEG, SR and QC capture arrive in a real Orthanc, by C-STORE and by
STOW-RS, in the source patient's study. A series that cannot be analysed is recorded, and the node goes on.
Skips without Orthanc or the shared data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from orthanc_server import Orthanc, ct_files, free_port
from sarcoscope.cli import app
from sarcoscope.errors import InputError
from sarcoscope.pacs.node import ListenSettings, Node, Peer, parse_peer

runner = CliRunner()


def _single_slice_study(source: Path, tag: str) -> pydicom.Dataset:
    """One real CT slice as a study of its own (new UIDs): a single slice is analysed as it is."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[tag, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[tag, "series"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[tag, "sop"])
    return ds


def _send(datasets: list[pydicom.Dataset], port: int, calling: str = "SENDER") -> list[int]:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, [str(ds.file_meta.TransferSyntaxUID) for ds in datasets[:1]])
    assoc = ae.associate("127.0.0.1", port, ae_title="SARCOSCOPE")
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


@pytest.fixture
def node(tmp_path: Path, orthanc: Orthanc) -> Iterator[Node]:
    settings = ListenSettings(
        out=tmp_path / "node",
        port=free_port(),
        settle=0.5,
        engine="threshold",
        push_to=Peer(orthanc.aet, "127.0.0.1", orthanc.dicom_port),
        push_dicomweb=orthanc.dicomweb,
        allowed_aets=["SENDER"],
        late_window=0.0,  # analysed series' images are deleted at once (tests/pacs/test_node_late_images.py)
    )
    listening = Node(settings)
    listening.start()
    thread = threading.Thread(target=listening.run, kwargs={"poll": 0.1}, daemon=True)
    thread.start()
    yield listening
    listening.stop()
    thread.join(30)


def _wait(node: Node, n: int) -> None:
    deadline = time.monotonic() + 120
    while len(node.analysed) + len(node.failed) < n:
        assert time.monotonic() < deadline, "the node did not finish in time"
        time.sleep(0.2)


def test_received_series_are_analysed_and_results_sent_back(
    node: Node, orthanc: Orthanc, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files = ct_files(shared_data)
    single = _single_slice_study(files[1], "sarcoscope-test-node")
    whole = [pydicom.dcmread(f) for f in files]  # 3 slices, 2 mm: too short to find L3, and no --slice
    assert _send([single, *whole], node.settings.port) == [0, 0, 0, 0]
    assert _send([single], node.settings.port, calling="INTRUDER") == []  # not an allowed AE title
    _wait(node, 2)
    assert node.analysed == [single.SeriesInstanceUID]
    assert node.failed == [whole[0].SeriesInstanceUID]
    error = (node.results / whole[0].SeriesInstanceUID / "error.txt").read_text()
    assert "Use --slice/--range" in error and str(node.incoming) not in error
    assert (node.incoming / whole[0].StudyInstanceUID / whole[0].SeriesInstanceUID).is_dir()  # kept
    deadline = time.monotonic() + 10
    while (node.incoming / single.StudyInstanceUID).exists():  # analysed: deleted by the next pass
        assert time.monotonic() < deadline, "the analysed series' images were not deleted"
        time.sleep(0.1)
    assert (node.results / single.SeriesInstanceUID / "report.json").is_file()
    assert node.settings.out.stat().st_mode & 0o777 == 0o700  # patient data: owner only
    # the log names series, not every image (highdicom names each source image making the SEG and SR)
    assert single.SOPInstanceUID not in caplog.text and single.SeriesInstanceUID in caplog.text
    # a node started again on the same folder analyses what was left in incoming/ (here: fails again)
    restarted = Node(ListenSettings(out=node.settings.out, port=free_port(), settle=0.5, engine="threshold"))
    restarted.start()
    try:
        assert restarted.process_settled(now=time.monotonic() + 1) == 1
        assert restarted.failed == [whole[0].SeriesInstanceUID]
    finally:
        restarted.shutdown()
    # sent twice (C-STORE and STOW-RS) with the same UIDs: Orthanc holds one of each, in the source study
    series = orthanc.series_of(single.StudyInstanceUID)
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["OT", "SEG", "SR"]
    for s in series:
        (ds,) = orthanc.instances_of(single.StudyInstanceUID, s["0020000E"]["Value"][0])
        assert (ds.PatientID, str(ds.PatientName)) == (single.PatientID, str(single.PatientName))
    (seg,) = orthanc.instances_of(
        single.StudyInstanceUID,
        next(s for s in series if s["00080060"]["Value"][0] == "SEG")["0020000E"]["Value"][0],
    )
    source_ref = seg.ReferencedSeriesSequence[0]
    assert source_ref.SeriesInstanceUID == single.SeriesInstanceUID
    assert source_ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == single.SOPInstanceUID


def test_peer_and_option_errors(tmp_path: Path) -> None:
    assert parse_peer("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104)
    for bad in ("PACS@host", "@host:104", "PACS@host:70000", "A_TITLE_LONGER_THAN_16@h:1"):
        with pytest.raises(InputError, match="AE_TITLE@host:port"):
            parse_peer(bad)
    result = runner.invoke(app, ["listen", "-o", str(tmp_path / "n"), "--push-to", "nonsense"])
    assert result.exit_code == 1 and "AE_TITLE@host:port" in " ".join(result.output.split())
    result = runner.invoke(app, ["listen", "-o", str(tmp_path / "n"), "--settle", "-1"])
    assert result.exit_code == 1 and "--settle" in result.output
