"""`sarcoscope listen` and a sender that stops half way (an A-ABORT, a dropped connection): the images of the
series received until then may be a part of it, so the node does not analyse them as the series (nor send
results made from them into the PACS); the series sent again in an association that ends normally is
analysed whole. Real associations from pynetdicom's SCU to the node on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from orthanc_server import free_port
from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom(out, seed=2, shape_xy=96, slice_thickness_mm=5.0)
    return [pydicom.dcmread(f) for f in sorted((out / "dicom").glob("*.dcm"))]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    listening = Node(ListenSettings(out=tmp_path / "node", port=free_port(), settle=0.0, engine="threshold"))
    listening.start()
    yield listening
    listening.shutdown()


def _send(node: Node, datasets: list[pydicom.Dataset], abort: bool) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="SCANNER")
    # pynetdicom's 30 s defaults: on a loaded CI machine a store answered later was taken for a lost one
    # ("Received unexpected C-STORE service message") and the test failed on its own sender
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(CTImageStorage, str(datasets[0].file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", node.settings.port, ae_title=node.settings.aet)
    assert assoc.is_established
    assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * len(datasets)
    if abort:
        assoc.abort()
    else:
        assoc.release()
    deadline = time.monotonic() + 30  # the node's side of the association ends in its own thread
    while node._server.active_associations:
        assert time.monotonic() < deadline, "the node did not end the association"
        time.sleep(0.05)


def test_a_series_from_an_aborted_association_is_not_analysed_until_sent_again(
    node: Node, series: list[pydicom.Dataset]
) -> None:
    uid = str(series[0].SeriesInstanceUID)
    _send(node, series[len(series) // 3 :], abort=True)  # L3 among them
    node.process_settled(now=time.monotonic() + 1)
    assert node.analysed == [] and node.failed == [uid]
    assert not (node.results / uid / "report.json").exists()
    error = (node.results / uid / "error.txt").read_text()
    assert "was aborted" in error and f"after {len(series) - len(series) // 3} images" in error
    # a restarted node does not take the part for the series either
    restarted = Node(ListenSettings(out=node.settings.out, port=free_port(), settle=0.0, engine="threshold"))
    restarted._resume()
    restarted.process_settled(now=time.monotonic() + 1)
    assert restarted.analysed == [] and restarted.failed == [uid]
    # the sender sends the whole series again: analysed with every image
    _send(node, series, abort=False)
    assert node.process_settled(now=time.monotonic() + 1) == 1
    assert node.analysed == [uid] and not (node.results / uid / "error.txt").exists()
    report = json.loads((node.results / uid / "report.json").read_text())
    assert report["input"]["shape_zyx"][0] == len(series)


def test_a_study_resumed_after_an_abort_is_analysed_whole(
    node: Node, series: list[pydicom.Dataset], tmp_path: Path
) -> None:
    """A PACS sends a study's series in one association and, after an abort in the second, resumes where it
    stopped (Orthanc's retried store job): the first series, complete before the abort and not sent again,
    is analysed too, once the study's transfer ends normally."""
    write_phantom(tmp_path / "second", seed=1, shape_xy=96, slice_thickness_mm=5.0)
    second = [pydicom.dcmread(f) for f in sorted((tmp_path / "second" / "dicom").glob("*.dcm"))]
    for ds in second:  # the same patient's study
        ds.StudyInstanceUID, ds.PatientID = series[0].StudyInstanceUID, series[0].PatientID
    first_uid, second_uid = str(series[0].SeriesInstanceUID), str(second[0].SeriesInstanceUID)
    half = len(second) // 2
    _send(node, [*series, *second[:half]], abort=True)
    node.process_settled(now=time.monotonic() + 1)
    assert node.analysed == [] and sorted(node.failed) == sorted([first_uid, second_uid])
    _send(node, second[half:], abort=False)  # the rest of the study
    node.process_settled(now=time.monotonic() + 1)
    assert sorted(node.analysed) == sorted([first_uid, second_uid])
    report = json.loads((node.results / second_uid / "report.json").read_text())
    assert report["input"]["shape_zyx"][0] == len(second)
