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


EXITING = """
import atexit, sys, time
from sarcoscope.cli import main


class SlowTeardown:
    \"\"\"What Python's teardown of ~1000 modules takes after an analysis (half a second), made longer.\"\"\"

    def __del__(self):
        print("teardown", file=sys.stderr, flush=True)
        time.sleep(10)


DELAY = float(sys.argv[1])


def slow_exit_function():
    print("exit functions", file=sys.stderr, flush=True)
    time.sleep(DELAY)


keep = SlowTeardown()
atexit.register(slow_exit_function)
sys.argv = ["sarcoscope", "cutoffs"]  # a command that is done at once
main()
"""


@pytest.mark.parametrize(
    ("sig", "said"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated by SIGTERM")]
)
def test_a_signal_after_the_command_is_reported_as_at_any_other_moment(
    sig: signal.Signals, said: str
) -> None:
    """A Ctrl-C after the outputs were written ended the process without a word (exit -2): Python's teardown
    runs with the signals back at their default action. Now the exit functions run with signals held back,
    and the teardown is skipped."""
    child = subprocess.Popen(
        [sys.executable, "-c", EXITING, "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    assert child.stderr.readline() == b"exit functions\n"
    child.send_signal(sig)
    out, err = child.communicate(timeout=30)
    assert (child.returncode, err.decode()) == (128 + sig, f"{said}\n")
    assert b"Shipped cutoff sets" in out


def test_the_process_ends_without_the_teardown_that_signals_could_cut_short() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", EXITING, "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    assert child.stderr.readline() == b"exit functions\n"
    if child.stderr.readline() == b"teardown\n":  # before: the signal killed the process here
        child.send_signal(signal.SIGINT)
    child.communicate(timeout=30)
    assert child.returncode == 0
