"""write_gzip: one ordinary gzip member from chunks deflated in parallel. Lock files: one holder at a time.
Temporary folders of patient data: those of runs that died are removed by the next run."""

from __future__ import annotations

import fcntl
import gzip
import io
import logging
import os
import stat
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fresh_process import running_process
from sarcoscope.errors import OutputError
from sarcoscope.fileio import GZIP_CHUNK, LockHeld, claim_lock, holding_lock, images_temp_dir, write_gzip


def _ct_like_bytes() -> bytes:
    """Three and a half chunks of int16 'HU': air, a body, a repeating pattern that crosses chunk borders
    (the primed window must carry it over)."""
    rng = np.random.default_rng(7)
    n = (GZIP_CHUNK * 7) // 4  # int16: 3.5 chunks of bytes
    hu = np.full(n, -1000, np.int16)
    hu[n // 5 : n - n // 5] = rng.normal(40, 30, n - 2 * (n // 5)).astype(np.int16)
    hu[::997] = np.arange(len(hu[::997]), dtype=np.int16)
    return hu.tobytes()


@pytest.mark.parametrize("size", [0, 1, 100, GZIP_CHUNK - 1, GZIP_CHUNK, GZIP_CHUNK + 1])
def test_any_size_decompresses_to_the_data(size: int) -> None:
    data = bytes(np.random.default_rng(size).integers(0, 4, size, dtype=np.uint8))
    out = io.BytesIO()
    write_gzip(data, out)
    assert gzip.decompress(out.getvalue()) == data


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_large_file_is_one_gzip_member_whatever_the_threads(threads: int) -> None:
    data = _ct_like_bytes()
    out = io.BytesIO()
    write_gzip(memoryview(data), out, threads=threads)
    raw = out.getvalue()
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip: checks the CRC-32 and the length
    assert reader.decompress(raw) == data
    assert reader.eof and reader.unused_data == b""  # one member, nothing after it
    # as small as gzip's own at the same level (the primed window keeps matches across chunk borders)
    plain = gzip.compress(data, compresslevel=1, mtime=0)
    assert len(raw) <= len(plain) * 1.01


@pytest.mark.parametrize("proc", [True, False], ids=["linux", "without-proc"])
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_never_opens_the_umask_to_other_threads(
    tmp_path, monkeypatch, umask: int, proc: bool
) -> None:
    """Reading the umask must not set it to 0 even for a moment: a file another thread of the web server
    creates then (an upload, a label version) would be writable by everyone."""
    import os

    from sarcoscope import fileio

    real_umask = os.umask
    old = real_umask(umask)
    seen: list[int] = []

    def spy(mask: int) -> int:
        seen.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(fileio.os, "umask", spy)
    if not proc:
        monkeypatch.setattr(fileio, "_PROC_STATUS", tmp_path / "no-proc")
    try:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
        mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    finally:
        real_umask(old)
    assert mode == 0o666 & ~umask
    # every mask set on the way keeps at least the bits of the user's own
    assert all(mask & umask == umask for mask in seen), [oct(m) for m in seen]


def test_a_lock_file_removed_as_it_is_claimed_is_claimed_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock that removes its file as it lets go: a claim that opened the old file just before would hold a
    lock nobody else can see, beside a second claimant of the new file. It claims the new file instead."""
    path = tmp_path / "out.lock"
    holder = claim_lock(path)
    real_flock, calls = fcntl.flock, []

    def holder_lets_go_first(fd: int, operation: int) -> None:
        if not calls:  # the claim has opened the file; its holder lets go as holding_lock(remove=True) does
            calls.append(fd)
            path.unlink()
            os.close(holder)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", holder_lets_go_first)
    fd = claim_lock(path)
    monkeypatch.undo()
    assert os.path.samestat(os.fstat(fd), os.stat(path))
    with pytest.raises(LockHeld, match=str(os.getpid())):
        claim_lock(path)
    os.close(fd)


def test_a_held_lock_refuses_a_second_holder_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.lock"

    def busy(holder: str) -> str:
        return f"busy {holder}"

    with holding_lock(path, busy, remove=True):
        with pytest.raises(OutputError, match=busy(str(os.getpid()))), holding_lock(path, busy, remove=True):
            pass
        assert path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_claimed_on_a_full_disk_holds_and_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its holder's process id could not be written: the claim failed while keeping the file locked, and the
    next analysis in that process (the DICOM node's) was refused as 'another analysis' for ever."""
    import errno

    path = tmp_path / "out.lock"

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with holding_lock(path, str, remove=True), pytest.raises(LockHeld, match="unknown"):
        claim_lock(path)
    monkeypatch.undo()
    with holding_lock(path, lambda holder: f"busy {holder}", remove=True):
        assert path.read_text() == str(os.getpid())


def dead_pid() -> int:
    """The id of a process that has ended (and was waited for)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def left_folder(parent: Path, name: str) -> Path:
    """A temporary folder as a run left it, with a patient's file in it."""
    (parent / name).mkdir(mode=0o700)
    (parent / name / "IM0001.dcm").write_bytes(b"DICM")
    return parent / name


def test_images_temp_dir_removes_the_folders_of_this_users_runs_that_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A run killed (the out-of-memory killer, kill -9, a cluster's job kill) leaves its extracted zip or
    retrieved series in the temporary folder; only `analyze` and batch cases swept them, so a killed
    `deidentify`, `series` or `locate` left a patient's images there for good. Every images_temp_dir now
    sweeps first: the folders of this user's dead processes go (logged by name), a running process's, another
    user's and any other name stay."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = dead_pid()
    gone = [
        left_folder(tmp_path, f"sarcoscope-zip-{dead}-k2j4_9xq"),
        left_folder(tmp_path, f"sarcoscope-predictions-{dead}-a1"),
    ]
    kept = [
        left_folder(tmp_path, f"sarcoscope-dicomweb-{os.getpid()}-a1b2c3d4"),  # running (no lock file: older)
        left_folder(tmp_path, f"sarcoscope-zip-{dead}"),  # not a name images_temp_dir makes
        left_folder(tmp_path, f"sarcoscope-bug-{dead}-a1b2c3d4"),
    ]
    if os.getuid() == 0:  # another user's, whose process this one cannot see as theirs
        kept.append(left_folder(tmp_path, f"sarcoscope-zip-{dead}-otheruser"))
        os.chown(kept[-1], 12345, 12345)
    with caplog.at_level(logging.INFO, logger="sarcoscope.fileio"), images_temp_dir("zip") as made:
        assert Path(made).name.startswith(f"sarcoscope-zip-{os.getpid()}-") and Path(made).parent == tmp_path
    assert [p for p in gone if p.exists()] == [] and all(p.is_dir() for p in kept)
    said = [r.getMessage() for r in caplog.records if "temporary folder" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("Removed 2 temporary folder(s)")
    assert all(p.name in said[0] for p in gone) and "IM0001" not in said[0]
    with pytest.raises(ValueError, match="unknown kind"):
        images_temp_dir("images")


def making_images_temp_dir(tmp_path: Path, pid: int) -> str:
    """A script making an images_temp_dir in `tmp_path` with a patient's file in it, as a run whose process
    id reads `pid` here: a process in another PID namespace (another container sharing /tmp), whose id
    names here another process or none. It says the folder and holds it until it is killed."""
    return (
        "import os, sys, tempfile\n"
        f"tempfile.tempdir = {str(tmp_path)!r}\n"
        f"os.getpid = lambda: {pid}\n"
        "from sarcoscope.fileio import images_temp_dir\n"
        "folder = images_temp_dir('dicomweb')\n"
        "open(os.path.join(folder.name, 'IM0001.dcm'), 'wb').write(b'DICM')\n"
        "print(folder.name, flush=True)\n"
        "sys.stdin.read()\n"
    )


@pytest.mark.parametrize("seen_as", ["ended", "running"])
def test_a_running_makers_folder_stays_whatever_its_process_id_says_and_goes_once_it_is_killed(
    seen_as: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep judged a folder by the process id in its name: a run in another PID namespace (a Dask
    worker or the web server in another container sharing /tmp) looked ended, so its folder was removed
    while it read it; a folder whose id another process took since was kept for good. It now goes when its
    lock file, held by its maker from before it is made, can be taken: not while its maker runs, whatever
    its id says here, and once it is killed (kill -9), whatever process has that id now."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pid = dead_pid() if seen_as == "ended" else os.getpid()
    with running_process(making_images_temp_dir(tmp_path, pid)) as (maker, said):
        folder = Path(said)
        assert folder.name.startswith(f"sarcoscope-dicomweb-{pid}-") and folder.parent == tmp_path
        with images_temp_dir("zip"):
            pass
        assert (folder / "IM0001.dcm").is_file()
        maker.kill()
        maker.wait()
    with caplog.at_level(logging.INFO, logger="sarcoscope.fileio"), images_temp_dir("zip") as made:
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
        assert sorted(p.name for p in tmp_path.iterdir()) == [Path(made).name, f"{Path(made).name}.lock"]
    assert list(tmp_path.iterdir()) == []
    said_removed = [r.getMessage() for r in caplog.records if "temporary folder" in r.getMessage()]
    assert said_removed == [
        f"Removed 1 temporary folder(s) of stopped sarcoscope runs from {tmp_path}: {folder.name}"
    ]


def test_a_sweep_at_any_step_of_making_a_folder_removes_nothing_its_maker_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run's sweep may come between any two steps of making a folder: after its lock file is made
    (not yet held: the sweep removes it, and the maker makes it anew), after the folder is made. Its maker's
    process id reads as ended (another PID namespace): the folder it returns is there, with its lock file
    held. A lock file a maker killed before it made its folder left is removed."""
    from sarcoscope import fileio

    dead = dead_pid()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(os, "getpid", lambda: dead)
    killed_early = tmp_path / f"sarcoscope-zip-{dead}-k2j4_9xq.lock"
    killed_early.write_text(str(dead))
    real_mkstemp, real_mkdir, steps = tempfile.mkstemp, os.mkdir, []

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made = real_mkstemp(*args, **kwargs)
        steps.append(sorted(p.name for p in tmp_path.iterdir()))
        fileio.remove_dead_images()
        return made

    def mkdir(path: Any, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        steps.append(sorted(p.name for p in tmp_path.iterdir()))
        fileio.remove_dead_images()

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "mkdir", mkdir)
    made = images_temp_dir("dicomweb")
    monkeypatch.undo()
    name = Path(made.name).name
    assert name.startswith(f"sarcoscope-dicomweb-{dead}-") and Path(made.name).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.lock"]
    assert steps == [[f"{name}.lock"], [name, f"{name}.lock"]] and not killed_early.exists()
    with pytest.raises(LockHeld):
        claim_lock(tmp_path / f"{name}.lock")
    made.cleanup()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_removed_is_said_and_kept_for_the_next_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its removal is tried, not raised from (the run's work is done): a folder left is a warning naming it,
    and keeps its lock file, so the next sweep tries again once its maker has let go."""
    import shutil

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = images_temp_dir("zip")
    name = Path(made.name).name
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # a file it cannot remove
    with caplog.at_level(logging.WARNING, logger="sarcoscope.fileio"):
        made.cleanup()
    assert [r.getMessage() for r in caplog.records] == [
        f"Could not remove the temporary folder {made.name} (patient data): remove it."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.lock"]
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with images_temp_dir("zip") as later:
        assert sorted(p.name for p in tmp_path.iterdir()) == [Path(later).name, f"{Path(later).name}.lock"]
    assert list(tmp_path.iterdir()) == []


def test_an_unfinished_output_folder_that_cannot_be_removed_is_said_without_its_patient_like_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An output's unfinished copy `.<out>.<random>.partial` holds the output folder's name, often a
    patient's (batch case folders); the warning that it could not be removed named it, in logs that servers
    and Dask workers' log collectors keep and share. It says what it is and the folder it is in, and it is
    kept, with its lock file, for the next sweep, which says it the same way."""
    import shutil

    from sarcoscope.fileio import partial_beside, remove_left_partials

    cases = tmp_path / "cases"
    cases.mkdir()
    out = cases / "Doe^Jane"
    made = partial_beside(out)
    name = Path(made.name).name
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)  # a file it cannot remove
    with caplog.at_level(logging.WARNING, logger="sarcoscope.fileio"):
        made.cleanup()
        remove_left_partials(out)  # its writer has let go: the sweep tries again
    said = "Could not remove an unfinished copy of an output folder (a hidden `.<output>.<random>.partial`) "
    assert [r.getMessage() for r in caplog.records] == [f"{said}in {cases} (patient data): remove it."] * 2
    assert sorted(p.name for p in cases.iterdir()) == [name, f"{name}.lock"]
    monkeypatch.undo()
    remove_left_partials(out)
    assert list(cases.iterdir()) == []


def test_a_locked_temp_file_is_removed_only_once_its_writer_let_go_even_if_swept_as_it_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep (remove_left_files) may come between making the file and locking it: it removes that file,
    and the writer makes another. The file it returns is there and held: a sweep leaves it until it is
    closed, then removes it; one renamed into place meanwhile is not followed."""
    from sarcoscope.fileio import locked_temp_file, remove_left_files

    real_mkstemp, swept = tempfile.mkstemp, []

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        made = real_mkstemp(*args, **kwargs)
        if not swept:
            swept.append(remove_left_files([Path(made[1])]))
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    fd, name = locked_temp_file(tmp_path, ".recv-", ".tmp")
    monkeypatch.undo()
    assert swept == [1] and [p.name for p in tmp_path.iterdir()] == [Path(name).name]
    assert remove_left_files(tmp_path.glob(".recv-*.tmp")) == 0 and Path(name).is_file()
    os.close(fd)  # as its writer's end does (kill -9 included)
    assert remove_left_files(tmp_path.glob(".recv-*.tmp")) == 1 and list(tmp_path.iterdir()) == []
    fd, name = locked_temp_file(tmp_path, ".recv-", ".tmp")
    os.replace(name, tmp_path / "IM0001.dcm")
    os.close(fd)
    assert remove_left_files([Path(name), tmp_path / "missing.tmp"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["IM0001.dcm"]


def test_the_temporary_file_of_a_killed_atomic_write_is_removed_by_the_next_write_of_that_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """atomic_write writes `.<name>.<random>.tmp` beside the file and renames it over; a writer killed
    (kill -9, the out-of-memory killer: a batch's cohort table, a case's list of input files) left it, a
    patient's rows, for good. The next write of that file now removes it once its writer has let go of its
    lock, and leaves a running writer's; the log says a count, no name."""
    from sarcoscope.fileio import atomic_write, atomic_write_text

    table = tmp_path / "runs" / "cohort.csv"
    writing = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sarcoscope.fileio import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_text('case_id,patient\\nc1,Doe^Jane\\n')\n"
        "    print(tmp, flush=True)\n"
        "    sys.stdin.read()\n"
        f"atomic_write(Path({str(table)!r}), write)\n"
    )
    with running_process(writing) as (writer, said):
        left = Path(said)
        assert left.parent == table.parent and left.name.startswith(".cohort.csv.") and left.suffix == ".tmp"
        atomic_write_text(table, "case_id\nc2\n")  # another writer of the same file at once
        assert "Doe^Jane" in left.read_text()  # its writer runs
        writer.kill()
        writer.wait()
    other = table.parent / ".cohort.csv.notes.txt.tmp"  # not a name atomic_write makes
    other.write_text("kept")
    with caplog.at_level(logging.INFO, logger="sarcoscope.fileio"):
        atomic_write(table, lambda tmp: tmp.write_text("case_id\nc3\n"))
    assert sorted(p.name for p in table.parent.iterdir()) == [other.name, "cohort.csv"]
    assert table.read_text() == "case_id\nc3\n"
    said_removed = [r.getMessage() for r in caplog.records if "temporary file" in r.getMessage()]
    assert said_removed == ["Removed 1 unfinished temporary file(s) that stopped runs left."]
