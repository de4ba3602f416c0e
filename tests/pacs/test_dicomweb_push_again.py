"""`sarcoscope analyze --push` run again on the same study (a rerun script, a user unsure whether the first
push went through): the PACS got a second SEG, SR and QC capture, new UIDs and the same numbers, every time.
The same result now has the same UIDs, and what the study already holds is not sent again (the console says
so); a different result (another slice) is new objects. Real series, real Orthanc. Skips without Orthanc."""

from __future__ import annotations

from pathlib import Path

import pydicom
from typer.testing import CliRunner

from orthanc_server import Orthanc, ct_files
from sarcoscope.cli import app

runner = CliRunner()


def _results_in(orthanc: Orthanc, study: str) -> dict[str, list[str]]:
    """The SOP Instance UIDs of the study's result objects in Orthanc, by modality."""
    held: dict[str, list[str]] = {}
    for series in orthanc.series_of(study):
        for ds in orthanc.instances_of(study, series["0020000E"]["Value"][0]):
            if ds.Modality != "CT":
                held.setdefault(str(ds.Modality), []).append(str(ds.SOPInstanceUID))
    return {modality: sorted(uids) for modality, uids in held.items()}


def test_pushing_the_same_result_again_stores_no_second_copy(
    orthanc: Orthanc, shared_data: Path, tmp_path: Path
) -> None:
    study = orthanc.upload(ct_files(shared_data))
    url = f"dicomweb+{orthanc.dicomweb}/studies/{study}"

    def push(out: Path, index: int) -> str:
        args = ["analyze", url, "-o", str(out), "--slice", str(index), "--engine", "threshold", "--push"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    first = push(tmp_path / "first", 1)
    assert "Stored 3 result object(s)" in first
    made = {str(pydicom.dcmread(f).SOPInstanceUID) for f in (tmp_path / "first").glob("*.dcm")}
    assert {k: len(v) for k, v in _results_in(orthanc, study).items()} == {"OT": 1, "SEG": 1, "SR": 1}
    again = push(tmp_path / "again", 1)  # another folder: nothing remembered locally
    assert "3 result object(s) were already in the study" in again and "Stored" not in again
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in (tmp_path / "again").glob("*.dcm")} == made
    held = _results_in(orthanc, study)
    assert {k: len(v) for k, v in held.items()} == {"OT": 1, "SEG": 1, "SR": 1}
    other = push(tmp_path / "other", 2)  # another slice: another result, stored beside the first
    assert "Stored 3 result object(s)" in other
    assert {k: len(v) for k, v in _results_in(orthanc, study).items()} == {"OT": 2, "SEG": 2, "SR": 2}
