"""`listen --push-to` a PACS that does not take DICOM SEG (many do not): the node says which object the
peer does not accept and sends nothing of the set, rather than "internal error ValueError: No presentation
context …" after some objects went out. The peer is a pynetdicom Storage SCP on 127.0.0.1 that accepts the
SR and the secondary capture only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from orthanc_server import free_port
from sarcoscope.errors import InputError
from sarcoscope.pacs.node import Peer, send_c_store
from sarcoscope.phantom.io import write_phantom
from sarcoscope.pipeline import analyze


@pytest.fixture
def peer() -> Iterator[tuple[Peer, list[pydicom.Dataset]]]:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

    received: list[pydicom.Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="NOSEGPACS")
    for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
        ae.add_supported_context(sop_class)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield Peer("NOSEGPACS", "127.0.0.1", port), received
    finally:
        server.shutdown()


def test_a_peer_that_does_not_take_seg_gets_nothing_and_a_clear_error(
    peer: tuple[Peer, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    from sarcoscope.export.writer import dicom_result_files

    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    analyze(tmp_path / "phantom" / "dicom", out_dir=tmp_path / "out", engine="threshold")
    files = dicom_result_files(tmp_path / "out")
    assert sorted(pydicom.dcmread(f).Modality for f in files) == ["OT", "SEG", "SR"]
    node, received = peer
    with pytest.raises(InputError, match="does not accept Segmentation Storage") as refused:
        send_c_store(files, node, "SARCOSCOPE")
    assert "nothing was sent" in str(refused.value)
    assert received == []  # not the SR and capture without their SEG
