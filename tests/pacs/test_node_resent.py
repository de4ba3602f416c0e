"""`sarcoscope listen` sent a series it has analysed and sent the results of, again, with the same images (a
PACS routing rule firing twice, a technologist sending the study again): the results stand, and the PACS
does not get a second SEG, SR and QC capture (new UIDs, the same numbers), neither while the images are kept
for late ones nor after they were deleted. Results are stored in a real Orthanc. Skips without Orthanc."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from received import Received

from orthanc_server import Orthanc
from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


def test_the_same_images_sent_again_leave_the_results_as_they_are(tmp_path: Path, orthanc: Orthanc) -> None:
    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    files = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    settings = ListenSettings(out=tmp_path / "node", settle=0.0, engine="threshold", late_window=600.0)
    settings.push_dicomweb = orthanc.dicomweb
    node = Node(settings)
    node.incoming.mkdir(parents=True)
    node.results.mkdir()

    def send_all() -> None:
        for f in files:
            assert node._on_store(Received(f)) == 0

    def results_in_orthanc() -> list[str]:
        return sorted(s["00080060"]["Value"][0] for s in orthanc.series_of(study))

    send_all()
    node.process_settled(now=time.monotonic())
    (uid,) = node.analysed
    report = (node.results / uid / "report.json").stat().st_mtime_ns
    assert results_in_orthanc() == ["OT", "SEG", "SR"]
    send_all()  # within the late window: the images are still there
    now = time.monotonic()
    node.process_settled(now=now)
    assert node.analysed == [uid] and results_in_orthanc() == ["OT", "SEG", "SR"]
    node.process_settled(now=now + 601)  # the window passes (now + 600 - now can round below 600): deleted
    assert not any(node.incoming.glob(f"*/{uid}"))
    send_all()  # later: the whole series again
    node.process_settled(now=time.monotonic())
    assert node.analysed == [uid] and results_in_orthanc() == ["OT", "SEG", "SR"]
    assert (node.results / uid / "report.json").stat().st_mtime_ns == report and node.failed == []
