"""A throw-away Orthanc (with its DICOMweb plugin) on 127.0.0.1 for the PACS integration tests.

`start_orthanc` skips the calling test with a reason when Orthanc or the plugin is not installed (Debian:
orthanc orthanc-dicomweb; .ci/run installs them), or when it does not come up.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CT_SERIES = "real/dicom_series/dcmqi_ct3slice"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its REST root, its DICOMweb root, and its DICOM (C-STORE) port and AE title."""

    base: str
    dicomweb: str
    dicom_port: int
    aet: str

    def upload(self, files: list[Path]) -> str:
        """Store DICOM files through the REST API; return the first file's StudyInstanceUID."""
        for f in files:
            requests.post(f"{self.base}/instances", data=f.read_bytes(), timeout=30).raise_for_status()
        return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    def series_of(self, study_uid: str) -> list[dict]:
        """QIDO-RS series of a study (DICOM JSON)."""
        response = requests.get(f"{self.dicomweb}/studies/{study_uid}/series", timeout=30)
        return [] if response.status_code == 204 else list(response.json())

    def instances_of(self, study_uid: str, series_uid: str) -> list[pydicom.Dataset]:
        """Every stored instance of a series, read back through the REST API (not through our client)."""
        found = requests.post(
            f"{self.base}/tools/find",
            json={
                "Level": "Instance",
                "Query": {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid},
            },
            timeout=30,
        ).json()
        out = []
        for orthanc_id in found:
            raw = requests.get(f"{self.base}/instances/{orthanc_id}/file", timeout=30).content
            out.append(pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw)))
        return out


def ct_files(shared_data: Path) -> list[Path]:
    """The real three-slice CT series (dcmqi test data) every PACS test uploads."""
    return sorted((shared_data / CT_SERIES).glob("*.dcm"))


@contextlib.contextmanager
def start_orthanc(
    root: Path, aet: str = "ORTHANC", users: dict[str, str] | None = None, dicom_port: int | None = None
) -> Iterator[Orthanc]:
    """Run Orthanc with its database in `root` until the block ends; `users` (name: password) turns on
    HTTP basic authentication; `dicom_port`: its C-STORE port (a free one by default)."""
    binary = shutil.which("Orthanc")
    if binary is None or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc orthanc-dicomweb)")
    root.mkdir(parents=True, exist_ok=True)
    port, dicom_port = free_port(), dicom_port or free_port()
    config = {
        "Name": "sarcoscope-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    with (root / "orthanc.log").open("w") as log:
        process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    if requests.get(f"{base}/system", timeout=1).status_code in (200, 401):
                        break
                except requests.RequestException:
                    time.sleep(0.25)
            else:
                pytest.skip(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-500:]}")
            yield Orthanc(base, f"{base}/dicom-web", dicom_port, aet)
        finally:
            process.terminate()
            process.wait(timeout=30)
