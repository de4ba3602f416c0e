"""write_outputs: every file, report.json last, no half-written or mixed folders."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fresh_process import running_process
from sarcoscope.errors import OutputError
from sarcoscope.export import OUTPUT_FILES, report_schema, write_outputs
from sarcoscope.export import writer as writer_module
from sarcoscope.fileio import check_output_folder


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.endswith(".partial")]


def test_writes_everything_for_dicom_input(make_result, tmp_path) -> None:
    out = tmp_path / "case1"
    paths = write_outputs(make_result((4, 5, 6), dicom=True), out)
    assert set(paths) == set(OUTPUT_FILES)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert report["outputs"] == OUTPUT_FILES
    assert nib.load(paths["labels_nifti"]).shape == (80, 64, 3)
    assert _leftovers(tmp_path) == []


def test_non_dicom_input_skips_seg_with_warning(make_result, tmp_path) -> None:
    result = make_result((5,))
    paths = write_outputs(result, tmp_path / "out")
    assert "dicom_seg" not in paths
    assert not any("DICOM SEG" in w for w in result.warnings)  # no news on the console for NIfTI input
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert any("DICOM SEG not written: the input was not DICOM" in w for w in report["warnings"])


def test_skipped_dicom_objects_are_said_in_the_result_once(make_result, tmp_path) -> None:
    """The console prints result.warnings: a SEG, SR and capture that could not be made must be there, as in
    the report, and not twice when the result is written again."""
    result = make_result((5,), dicom=True)
    del result.volume.dicom_headers[5].SOPInstanceUID
    before = list(result.warnings)
    write_outputs(result, tmp_path / "out")
    added = result.warnings[len(before) :]
    assert [w.split(":")[0] for w in added] == [
        "DICOM SEG not written",
        "DICOM SR not written",
        "QC secondary capture not written",
    ]
    assert "source CT image number 6 lacks SOPInstanceUID" in added[0]  # named by its InstanceNumber
    paths = write_outputs(result, tmp_path / "again")
    assert result.warnings[len(before) :] == added
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert report["warnings"] == result.warnings


def test_rerun_replaces_previous_outputs_without_mixing(make_result, tmp_path) -> None:
    out = tmp_path / "out"
    write_outputs(make_result((5,), dicom=True), out)
    (out / "notes.txt").write_text("user file")
    first = json.loads((out / "report.json").read_text())
    paths = write_outputs(make_result((4, 5)), out)  # second run: not DICOM, a range
    report = json.loads(paths["report"].read_text())
    assert report["l3"]["slice_indices"] == [4, 5] and first["l3"]["slice_indices"] == [5]
    assert not (out / OUTPUT_FILES["dicom_seg"]).exists()  # stale SEG of the first run removed
    assert (out / "notes.txt").read_text() == "user file"  # other files are left alone
    assert nib.load(out / "labels.nii.gz").shape[2] == 2
    assert _leftovers(tmp_path) == []


def test_files_named_like_outputs_that_no_analysis_wrote_are_refused_not_replaced(
    make_result, tmp_path
) -> None:
    # a case folder's own label map (reference labels beside ct.nii.gz) was replaced by the analysis's
    out = tmp_path / "case"
    out.mkdir()
    (out / "labels.nii.gz").write_bytes(b"reference labels")
    (out / "metrics.csv").write_text("my metrics")
    with pytest.raises(OutputError, match=r"holds labels\.nii\.gz, metrics\.csv that no analysis wrote"):
        write_outputs(make_result((5,)), out)
    assert (out / "labels.nii.gz").read_bytes() == b"reference labels"
    assert (out / "metrics.csv").read_text() == "my metrics"
    assert _leftovers(tmp_path) == [] and sorted(p.name for p in out.iterdir()) == [
        "labels.nii.gz",
        "metrics.csv",
    ]


def test_failure_leaves_previous_run_intact(make_result, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    write_outputs(make_result((5,)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer_module, "render_overlay", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_outputs(make_result((4, 5, 6)), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        write_outputs(make_result((5,)), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_failure_while_swapping_leaves_previous_set(make_result, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    write_outputs(make_result((5,)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "_exchange", failing)
    with pytest.raises(OutputError, match="No space left"):
        write_outputs(make_result((4, 5)), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old set, whole
    assert _leftovers(tmp_path) == []


def test_fallback_swap_without_exchange(make_result, tmp_path, monkeypatch) -> None:
    """Without renameat2 the old folder is renamed aside, then the new one in: same result."""
    out = tmp_path / "out"
    write_outputs(make_result((5,), dicom=True), out)
    (out / "notes.txt").write_text("user file")
    monkeypatch.setattr(writer_module, "_exchange", lambda a, b: False)
    write_outputs(make_result((4, 5)), out)
    assert json.loads((out / "report.json").read_text())["l3"]["slice_indices"] == [4, 5]
    assert not (out / OUTPUT_FILES["dicom_seg"]).exists()
    assert (out / "notes.txt").read_text() == "user file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_old_set_left_aside_by_a_killed_fallback_swap_is_restored(make_result, tmp_path) -> None:
    """Killed between the fallback's two renames: the next write puts the old set back before anything."""
    out = tmp_path / "out"
    write_outputs(make_result((5,)), out)
    aside = tmp_path / ".out.0123456789ab.old"
    out.rename(aside)
    (tmp_path / ".out.ba9876543210.partial").mkdir()  # the killed run's new set, maybe incomplete
    writer_module._recover(out)
    assert json.loads((out / "report.json").read_text())["l3"]["slice_indices"] == [5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_what_a_killed_run_left_beside_another_folder_is_not_taken(make_result, tmp_path) -> None:
    """The clean-up matched `.case.*.*`, so a write into `case` took what a killed write into `case.2` left
    beside it: that case's old set was moved in as this one's (two patients' results mixed) and its new
    set, half-written by a run still going, deleted. Only this folder's own leftovers are touched."""
    write_outputs(make_result((5,)), tmp_path / "case.2")
    (tmp_path / "case.2" / "notes.txt").write_text("case.2's notes")
    aside = tmp_path / ".case.2.0123456789ab.old"
    (tmp_path / "case.2").rename(aside)
    partial = tmp_path / ".case.2.ba9876543210.partial"
    partial.mkdir()
    write_outputs(make_result((4, 5)), tmp_path / "case")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == sorted(
        set(OUTPUT_FILES.values()) - {"labels.seg.dcm", "report.sr.dcm", "report.qc.dcm"}
    )
    assert aside.is_dir() and partial.is_dir()
    write_outputs(make_result((6,)), tmp_path / "case.2")  # its own next write puts its old set back first
    assert (tmp_path / "case.2" / "notes.txt").read_text() == "case.2's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "case.2"]


def test_the_unfinished_set_of_a_killed_run_is_removed_by_the_next_write_beside_it_and_a_running_ones_is_not(
    make_result, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run writes its set into `.out.<random>.partial` beside `out` and swaps it in; one killed (kill -9,
    the out-of-memory killer, a batch worker) left that folder of a patient's results until the next run
    into the same `out`, so for good where each case has its own folder (batch). Any write beside it now
    removes it once nobody holds its lock file, and leaves a running one's; the log names no folder."""
    parent = tmp_path / "cases"
    pickled = tmp_path / "result.pkl"
    pickled.write_bytes(pickle.dumps(make_result((5,), dicom=True)))
    writing = (
        "import pickle, sys\n"
        "from pathlib import Path\n"
        "from sarcoscope.export import writer\n"
        "real = writer._write_all\n"
        "def stop(result, tmp, *args):\n"
        "    done = real(result, tmp, *args)\n"
        "    print(tmp, flush=True)\n"
        "    sys.stdin.read()\n"
        "    return done\n"
        "writer._write_all = stop\n"
        f"result = pickle.loads(Path({str(pickled)!r}).read_bytes())\n"
        f"writer.write_outputs(result, Path({str(parent / 'p1')!r}))\n"
    )
    with running_process(writing) as (writer, said):
        partial = Path(said)
        assert (
            partial.parent == parent and partial.name.startswith(".p1.") and partial.name.endswith(".partial")
        )
        assert (partial / "report.json").is_file()
        write_outputs(make_result((4,)), parent / "p2")
        assert (partial / "report.json").is_file()  # its writer runs
        writer.kill()
        writer.wait()
    with caplog.at_level(logging.INFO, logger="sarcoscope.fileio"):
        write_outputs(make_result((4,)), parent / "p3")
    assert sorted(p.name for p in parent.iterdir()) == ["p2", "p3"]
    said_removed = [r.getMessage() for r in caplog.records if "unfinished" in r.getMessage()]
    assert said_removed == ["Removed 1 unfinished output folder(s) that stopped runs left."]


def test_output_folder_checked_before_work(tmp_path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_folder(blocker)
    with pytest.raises(OutputError, match=r"file\.txt is not a folder"):
        check_output_folder(blocker / "sub" / "out")
    check_output_folder(tmp_path / "new" / "out")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing created by the check


def test_a_rerun_keeps_the_folders_permissions_and_its_link(make_result, tmp_path) -> None:
    out = tmp_path / "private"
    out.mkdir(mode=0o700)
    (out / "notes.txt").write_text("user file")
    write_outputs(make_result((5,)), out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700 and (out / "report.json").is_file()
    write_outputs(make_result((5,)), out)  # a rerun swaps a new folder in: still private
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(out)
    write_outputs(make_result((4,)), link)  # into the folder the link names; the link stays a link
    assert link.is_symlink() and json.loads((out / "report.json").read_text())["l3"]["slice_indices"] == [4]
    assert (out / "notes.txt").read_text() == "user file" and _leftovers(tmp_path) == []


def test_a_private_folders_new_set_is_private_while_it_is_written(make_result, tmp_path, monkeypatch) -> None:
    # the new set is written beside the folder, in its parent (often readable by others), and swapped in:
    # while it is written, and after a kill -9 until the next run, it must be as private as the folder
    out = tmp_path / "private"
    out.mkdir(mode=0o700)
    modes = []
    write_all = writer_module._write_all

    def spy(result, tmp, *args):
        modes.append(stat.S_IMODE(tmp.stat().st_mode))
        return write_all(result, tmp, *args)

    monkeypatch.setattr(writer_module, "_write_all", spy)
    umask = os.umask(0o022)
    try:
        write_outputs(make_result((5,)), out)
        write_outputs(make_result((5,)), tmp_path / "new")
    finally:
        os.umask(umask)
    assert modes[0] == 0o700 and stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755  # a new folder: the usual permissions


def test_a_rerun_keeps_the_folders_group(make_result, tmp_path) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    other = next((g for g in os.getgroups() if g != out.stat().st_gid), None)
    try:
        os.chown(out, -1, other if other is not None else 65534)
    except OSError:
        pytest.skip("this user cannot give a folder another group")
    out.chmod(0o2770)  # setgid: new files get the folder's group
    group = out.stat().st_gid
    write_outputs(make_result((5,)), out)
    write_outputs(make_result((5,)), out)  # a rerun swaps a new folder in: the colleagues' group stays
    assert out.stat().st_gid == group and stat.S_IMODE(out.stat().st_mode) == 0o2770


def test_a_mount_point_inside_the_folder_is_refused(make_result, tmp_path, monkeypatch) -> None:
    # The folder is replaced as a whole: a mounted drive inside it would have its files moved and deleted.
    out = tmp_path / "out"
    write_outputs(make_result((5,)), out)
    (out / "drive").mkdir()
    (out / "drive" / "data.txt").write_text("on another file system")
    monkeypatch.setattr(writer_module.os.path, "ismount", lambda p: Path(p).name == "drive")
    with pytest.raises(OutputError, match="mount point"):
        write_outputs(make_result((4,)), out)
    assert (out / "drive" / "data.txt").is_file() and _leftovers(tmp_path) == []
    assert json.loads((out / "report.json").read_text())["l3"]["slice_indices"] == [5]


def test_the_working_folder_is_refused_before_work(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for folder in (Path("."), tmp_path, tmp_path.parent, Path.home()):
        with pytest.raises(OutputError, match="folder of their own"):
            check_output_folder(folder, replaced=True)
        check_output_folder(folder)  # a folder that only gets new entries (batch) may be any of them
    check_output_folder(Path("results"), replaced=True)


def test_output_path_that_is_a_file(make_result, tmp_path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_outputs(make_result((5,)), target)


def test_real_single_slice_end_to_end(shared_data, tmp_path, dicom_volume, result_for) -> None:
    """A real de-identified L3 slice with its reference labels: every output, SEG included, schema-valid."""
    volume = dicom_volume([shared_data / "real/l3_slices/images/L3_EMC100.dcm"])
    labels = np.load(shared_data / "real/l3_slices/labels/EMC100.npy")[None]
    paths = write_outputs(result_for(volume, [0], labels), tmp_path / "emc100")
    assert set(paths) == set(OUTPUT_FILES)
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(report, report_schema())
    assert report["assessment"]["smi"]["status"] == "not computed"  # de-identified: no height
    muscle = report["average"]["tissues"]["muscle"]
    assert muscle["pixels"] == int(np.count_nonzero(labels == 1))


def test_the_same_result_located_again_has_the_same_dicom_uids(make_result, tmp_path) -> None:
    """The automatic L3 records how long it took (report l3.details.seconds); that entered the fingerprint
    the SEG, SR and QC capture UIDs are derived from, so every rerun of `analyze --push` on the same study
    (automatic L3, the default) stored a second copy of each in the PACS. A longer search is the same result;
    another L3 is not."""
    from dataclasses import replace

    first = make_result(dicom=True, details={"l3_mid": 5, "seconds": 0.61})

    def relocated(**details: float) -> object:
        return replace(first, selection=replace(first.selection, details=first.selection.details | details))

    uids = {}
    again = {"first": first, "slower": relocated(seconds=0.93), "other": relocated(l3_mid=6)}
    for name, result in again.items():
        out = write_outputs(result, tmp_path / name)
        uids[name] = {kind: pydicom.dcmread(out[kind]).SOPInstanceUID for kind in ("dicom_seg", "dicom_sr")}
    assert uids["slower"] == uids["first"]
    assert uids["other"]["dicom_seg"] != uids["first"]["dicom_seg"]


def test_what_each_output_freed_is_handed_back_before_the_next_is_made(
    make_result, tmp_path, monkeypatch
) -> None:
    """Issue 18: the write stage was a 130-slice analysis's peak, as what the overlay's drawing and the QC
    capture freed stayed resident under the next outputs (BENCHMARKS.md, 2026-12-07). The capture's
    pixels are read back before the drawing's memory is handed back, and the capture is made before the
    SEG; the report still lists it last."""
    done: list[object] = []
    read = writer_module.overlay_pixels
    monkeypatch.setattr(writer_module, "overlay_pixels", lambda png: done.append("read") or read(png))
    monkeypatch.setattr(
        writer_module,
        "release_freed_memory",
        lambda: done.append(sorted(p.name for p in tmp_path.rglob("*") if p.name in OUTPUT_FILES.values())),
    )
    outputs = write_outputs(make_result((4, 5, 6), dicom=True), tmp_path / "out")
    drawn = ["metrics.csv", "overlay.png"]
    captured = sorted([*drawn, "labels.nii.gz", "labels.ctbl", "labels.itksnap.txt", "report.qc.dcm"])
    assert done == ["read", drawn, captured]
    assert list(outputs)[-3:] == ["dicom_sr", "qc_capture", "report"]
