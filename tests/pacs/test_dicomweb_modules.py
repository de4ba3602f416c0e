"""The DICOMweb code is three modules so that what needs no connection is read without the client's
libraries: addresses and searches (pacs.dicomweb_query) without requests, pydicom or dicomweb-client, the
login (pacs.dicomweb_auth) without pydicom. Checked on the modules a fresh process holds after the import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Imports the module named, then lists which of the client's libraries and modules the process holds.
LIST_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
wanted = ["requests", "pydicom", "dicomweb_client", "sarcoscope.pacs.dicomweb"]
print(json.dumps([m for m in wanted if m in sys.modules]))
"""


@pytest.mark.parametrize(
    ("module", "loaded"),
    [
        ("sarcoscope.pacs.dicomweb_query", []),
        ("sarcoscope.batch.cases", []),  # lists a cohort's cases, DICOMweb addresses among them
        ("sarcoscope.pacs.dicomweb_auth", ["requests"]),  # the bearer token is a requests auth
    ],
)
def test_addresses_and_the_login_are_read_without_the_client(module: str, loaded: list[str]) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SARCOSCOPE_")}
    env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [sys.executable, "-c", LIST_LOADED, module], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == loaded
