"""A cancelled job (SIGTERM, SIGHUP) unwinds like Ctrl-C: temporary copies of a patient's images go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

CHILD = """
import sys, time
from pathlib import Path
import typer
from sarcoscope.cli.common import run
from sarcoscope.errors import stop_cleanly_on_signals
from sarcoscope.imaging.read import _extracted

stop_cleanly_on_signals()

def read_slowly():
    with _extracted(Path(sys.argv[1])) as folder:
        print(folder, flush=True)
        time.sleep(60)

try:
    run(read_slowly)  # as every command body runs
except typer.Exit as exc:  # what typer does with it
    sys.exit(exc.exit_code)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_termination_removes_the_extracted_zip(tmp_path: Path, sig: signal.Signals) -> None:
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("IM0001.dcm", b"not a real image, only a file to extract")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(archive)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    folder = Path(child.stdout.readline().decode().strip())
    assert (folder / "IM0001.dcm").is_file() and folder.parent == tmp
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + sig
    assert f"terminated by {sig.name}" in err.decode()
    assert not folder.exists() and list(tmp.iterdir()) == []
