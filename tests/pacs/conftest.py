"""The PACS tests' shared fixtures: a throw-away Orthanc per test module, a small CT series, and a small disk
for the full-disk cases (a tmpfs mounted in the test's folder; skips where one cannot be mounted, i.e. not
as root) with a way to fill it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from orthanc_server import Orthanc, start_orthanc
from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.pacs.node import Peer


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A throw-away Orthanc (with DICOMweb) for the module's tests."""
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    """A 12-slice CT series of soft tissue in air (enough for the web app to import it)."""
    hu = np.full((12, 64, 64), -1000, np.int16)
    hu[:, 8:56, 8:56] = 40
    return write_dicom_series(hu, (3.0, 4.0, 4.0), tmp_path / "series", metadata=CTMetadata(patient_id="P-1"))


def _one_slice_ct(folder: Path, patient_id: str) -> list[Path]:
    """One axial slice of an elliptic body (fat ring, muscle ring, fat inside) as a CT study of its own in
    `folder`: L3 needs no localiser, so the threshold engine analyses it at once."""
    yy, xx = np.mgrid[:96, :96]
    r = np.sqrt(((yy - 48) / 34.0) ** 2 + ((xx - 48) / 44.0) ** 2)
    hu = np.full((1, 96, 96), -1000, np.int16)
    hu[0][r < 1.0] = -100
    hu[0][r < 0.85] = 50
    hu[0][r < 0.72] = -90
    return write_dicom_series(hu, (3.0, 4.0, 4.0), folder, metadata=CTMetadata(patient_id=patient_id))


@pytest.fixture
def one_slice_ct() -> Callable[[Path, str], list[Path]]:
    return _one_slice_ct


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until `disk` is full; return it (delete it to make room again)."""
    with (disk / "filler").open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return disk / "filler"


@pytest.fixture
def fill_disk() -> Callable[[Path], Path]:
    return _fill


@pytest.fixture
def dropping() -> Iterator[Peer]:
    """A port whose connection requests go unanswered: its listener's queue is full and never accepted (as
    a firewall drops them)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # takes the one place in the queue
        yield Peer("PACS", "127.0.0.1", listener.getsockname()[1])
