"""Issue 18, speed: `sarcoscope serve` is ready without the heavy imports, which the requests that need them
make (the segmentation engine in the background once the L3 view opens); the viewer's volume file is the
one export.nifti would write, made faster."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import upload

import sarcoscope.segmentation
from sarcoscope.errors import SegmentationError
from sarcoscope.imaging import read_ct
from sarcoscope.web import WebSettings, create_app
from sarcoscope.web.settings import check_engine
from sarcoscope.web.volumes import _write_viewer_nifti

#: What the server's start must not import (torch never; the others when a request needs them).
HEAVY = ("torch", "scipy", "onnxruntime", "highdicom", "matplotlib", "nibabel", "pydicom", "requests")

#: `sarcoscope serve` up to the point where uvicorn would listen, then what it had imported.
SERVE_UNTIL_LISTENING = f"""
import sys
import uvicorn

def listen(self, *args, **kwargs):
    print("loaded:", ",".join(m for m in {HEAVY!r} if m in sys.modules))

uvicorn.Server.run = listen
from sarcoscope.cli import main
sys.argv = ["sarcoscope", "serve", "--data-dir", sys.argv[1], "--port", "8765", *sys.argv[2:]]
main()
"""


def _serve_until_listening(data: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """SERVE_UNTIL_LISTENING in a fresh process without the caller's SARCOSCOPE_* settings; it succeeded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SARCOSCOPE_")}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_UNTIL_LISTENING, str(data), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_serve_starts_without_heavy_imports(tmp_path: Path) -> None:
    done = _serve_until_listening(tmp_path / "data")
    assert "loaded: \n" in done.stdout, done.stdout
    # the de-identification key is made at the first de-identified download (test_api), not at the start
    assert (tmp_path / "data" / "server.lock").exists()
    assert not (tmp_path / "data" / "deidentification.key").exists()


def test_a_server_with_a_pacs_starts_without_the_dicom_client(tmp_path: Path) -> None:
    """Its address and waits are checked at the start without the DICOMweb client: checking the waits
    imported pacs.dicomweb and pydicom with it. requests comes with the login's token file check."""
    done = _serve_until_listening(tmp_path / "data", "--dicomweb-url", "http://pacs.example:8042/dicom-web")
    assert "loaded: requests\n" in done.stdout, done.stdout


def test_engine_names_are_checked_at_start_without_building_the_engine() -> None:
    check_engine("threshold")
    check_engine("unet")
    with pytest.raises(SegmentationError, match="Unknown segmentation engine"):
        check_engine("nope")
    with pytest.raises(SegmentationError, match="no trained model"):
        check_engine("threshold:some-model")
    with pytest.raises(SegmentationError, match="installed model id"):
        check_engine("unet:no-such-model")


def test_the_l3_view_prepares_the_engine_once_in_the_background(
    tmp_path: Path, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    monkeypatch.setattr(sarcoscope.segmentation, "get_engine", built.append)
    for prerender in (False, True):
        settings = WebSettings(
            data_dir=tmp_path / f"d{prerender}", default_engine="threshold", prerender=prerender
        )
        app = create_app(settings)
        with TestClient(app) as client:
            sid = upload(client, series)["id"]
            assert client.get("/api/models").status_code == 200
            assert client.post(f"/api/studies/{sid}/localize", json={}).status_code == 200
            app.state.ctx.jobs.wait()
        app.state.ctx.store.close()
        assert built == (["threshold"] if prerender else [])


def _grid_nifti_file(hu: np.ndarray, affine_lps: np.ndarray) -> bytes:
    """The viewer file as it was made before issue 18's speed work: float rounding, a C-ordered copy of
    the transposed volume, the whole file in memory."""
    import nibabel as nib

    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)
    img = nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = b"CT HU (sarcoscope viewer)"
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as gz:
        gz.write(img.to_bytes())
    return out.getvalue()


def test_the_viewer_volume_is_the_file_export_nifti_makes(tmp_path: Path, series: list[Path]) -> None:
    volume = read_ct(series[0].parent)
    assert volume.hu.dtype == np.int16
    fractional = dataclasses.replace(volume, hu=volume.hu.astype(np.float32) + 0.4)  # e.g. a float NIfTI
    for i, case in enumerate((volume, fractional)):
        _write_viewer_nifti(tmp_path / f"v{i}.nii.gz", case)
        written = gzip.decompress((tmp_path / f"v{i}.nii.gz").read_bytes())
        assert written == gzip.decompress(_grid_nifti_file(case.hu, case.affine_lps))
