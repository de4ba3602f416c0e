"""`sarcoscope listen` receiving two studies whose series share a SeriesInstanceUID (an anonymiser or a copied
export reusing it): the results folder was named by the series UID alone, so the second study's results were
written over the first's, and results of the first that had not been sent yet were later sent, from that
folder, as the second's objects into the first study. Each study's series now has its own results folder.
Runs the node's receiving and analysing code without the network."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from received import Received

from sarcoscope.pacs.node import ListenSettings, Node
from sarcoscope.phantom.io import write_phantom


def test_two_studies_sharing_a_series_uid_keep_their_own_results(tmp_path: Path) -> None:
    write_phantom(tmp_path / "phantom", seed=1, shape_xy=96, slice_thickness_mm=5.0)
    first = sorted((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    series = str(pydicom.dcmread(first[0], stop_before_pixels=True).SeriesInstanceUID)
    second_study = generate_uid()
    second = []
    for k, f in enumerate(first):  # the same series UID in another study, of another patient
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.PatientID = second_study, "OTHER-PATIENT"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        second.append(tmp_path / "second" / f"{k:03d}.dcm")
        second[-1].parent.mkdir(exist_ok=True)
        ds.save_as(second[-1], enforce_file_format=True)
    node = Node(ListenSettings(out=tmp_path / "node", settle=0.0, engine="threshold", late_window=600))
    node.incoming.mkdir(parents=True, exist_ok=True)
    node.results.mkdir(exist_ok=True)
    for files in (first, second):
        for f in files:
            assert node._on_store(Received(f)) == 0
        assert node.process_settled(now=time.monotonic() + 1) == 1
    studies = {}
    for report in sorted(node.results.glob("*/report.json")):
        metadata = json.loads(report.read_text())["input"]["metadata"]
        studies[report.parent.name] = metadata["study_instance_uid"]
    first_study = str(pydicom.dcmread(first[0], stop_before_pixels=True).StudyInstanceUID)
    assert studies == {series: first_study, f"{series}_{second_study}": second_study}
