"""`sarcoscope listen --keep-images` keeps every analysed series' images; a restarted node must not take them
for series it has not analysed: analysing them again would send a second SEG, SR and QC capture (new UIDs)
into the PACS for every series it ever received, at every restart. Results are stored in a real Orthanc.
Skips without Orthanc."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
from received import Received

from orthanc_server import Orthanc
from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


def _node(out: Path, orthanc: Orthanc) -> Node:
    node = Node(
        ListenSettings(
            out=out, settle=0.0, engine="threshold", push_dicomweb=orthanc.dicomweb, keep_images=True
        )
    )
    node.incoming.mkdir(parents=True, exist_ok=True)
    node.results.mkdir(exist_ok=True)
    return node


def test_a_restart_does_not_analyse_and_send_kept_series_again(tmp_path: Path, orthanc: Orthanc) -> None:
    write_phantom(tmp_path / "phantom", seed=3, shape_xy=96, slice_thickness_mm=5.0)
    files = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    node = _node(tmp_path / "node", orthanc)
    for f in files:
        assert node._on_store(Received(f)) == 0
    assert node.process_settled(now=time.monotonic() + 1) == 1
    (uid,) = node.analysed
    assert len(list(next(node.incoming.glob(f"*/{uid}")).glob("*.dcm"))) == len(files)  # kept
    results = sorted(s["00080060"]["Value"][0] for s in orthanc.series_of(study))
    assert results == ["OT", "SEG", "SR"]
    restarted = _node(tmp_path / "node", orthanc)
    restarted._resume()
    assert restarted.process_settled(now=time.monotonic() + 1) == 0
    assert sorted(s["00080060"]["Value"][0] for s in orthanc.series_of(study)) == results  # no copies
