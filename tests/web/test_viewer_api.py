"""The viewer's data routes: the whole HU volume as de-identified int16 NIfTI, a slice's body mask, and the
orientation letters of the server's images."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import upload
from web_synth import SHAPE, SPACING, multipart, synthetic_hu, turned

from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.web import WebSettings, create_app, render


def test_volume_nifti_is_the_hu_volume_without_patient_data(client: TestClient, series: list[Path]) -> None:
    sid = upload(client, series)["id"]
    r = client.get(f"/api/studies/{sid}/volume.nii.gz")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert f'filename="{sid}.nii.gz"' in r.headers["content-disposition"]
    raw = gzip.decompress(r.content)
    img = nib.Nifti1Image.from_bytes(raw)
    assert img.get_data_dtype() == np.int16
    data = np.asanyarray(img.dataobj)
    assert data.shape == (SHAPE[2], SHAPE[1], SHAPE[0])  # (x, y, z): voxel indices are the API's
    np.testing.assert_array_equal(data.transpose(2, 1, 0), synthetic_hu(0))
    assert np.allclose(np.abs(np.diag(img.affine))[:3], (SPACING[2], SPACING[1], SPACING[0]))
    assert img.header["scl_slope"] in (0, 1) or np.isnan(img.header["scl_slope"])
    # nothing of the patient: web_synth writes PAT-001, sex F, 2024-01-31, "synthetic"
    for needle in (b"PAT-001", b"20240131", b"synthetic"):
        assert needle not in raw
    assert bytes(img.header["descrip"]).rstrip(b"\0") == b"CT HU (sarcoscope viewer)"
    assert client.get(f"/api/studies/{sid}/volume.nii.gz").content == r.content  # the cached file
    # unknown study: 404 with a reason; stored images gone: 409 with a reason
    missing = client.get("/api/studies/" + "0" * 32 + "/volume.nii.gz")
    assert missing.status_code == 404 and "No study" in missing.json()["detail"]
    ctx = client.app.state.ctx
    for name in ("hu.npy", "viewer.nii.gz"):
        (ctx.store.cache_dir(sid) / name).unlink()
    ctx.volumes.drop(sid)
    gone = client.get(f"/api/studies/{sid}/volume.nii.gz")
    assert gone.status_code == 409 and "not available" in gone.json()["detail"]


def test_volume_and_body_need_the_login_of_other_study_routes(tmp_path: Path, series: list[Path]) -> None:
    token = "correct-horse-battery"
    app = create_app(WebSettings(data_dir=tmp_path / "d", token=token, token_user="dr.bob"))
    bearer = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as c:
        sid = c.post("/api/studies", files=multipart(series), headers=bearer).json()["id"]
        for path in (f"/api/studies/{sid}/volume.nii.gz", f"/api/studies/{sid}/body/5"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers=bearer).status_code == 200
    app.state.ctx.store.close()


def test_body_mask_of_a_slice(client: TestClient, series: list[Path]) -> None:
    sid = upload(client, series)["id"]
    r = client.get(f"/api/studies/{sid}/body/5")
    assert r.status_code == 200 and r.headers["x-shape"] == "96,96"
    mask = np.frombuffer(r.content, np.uint8).reshape(96, 96).astype(bool)
    hu = synthetic_hu(0)[5]
    # the ellipse (SAT outward) is the body, air around it is not
    assert mask[48, 48] and mask[48, 10] and not mask[2, 2] and not mask[48, 1]
    assert abs(int(mask.sum()) - int((hu > -500).sum())) <= 0.02 * mask.sum()
    assert client.get(f"/api/studies/{sid}/body/12").status_code == 404


def test_serve_prints_urls_a_browser_can_open() -> None:
    """`serve --host 0.0.0.0` printed http://0.0.0.0:8000/, which no browser opens (defect 9)."""
    import socket

    from sarcoscope.web.app import browser_urls

    assert browser_urls("127.0.0.1", 8000) == ["http://127.0.0.1:8000/"]
    assert browser_urls("::1", 8000) == ["http://[::1]:8000/"]
    for wildcard in ("0.0.0.0", "::"):
        urls = browser_urls(wildcard, 8000)
        assert urls[0] == f"http://{socket.getfqdn()}:8000/" and "localhost:8000" in urls[1]
        assert not any("0.0.0.0" in u or "[::]" in u for u in urls)


def test_a_new_versions_overlay_is_rendered_once_in_the_background(
    client: TestClient, series: list[Path]
) -> None:
    """Defect 10: every HTML export re-rendered the QC picture (5.5 s median with 8 users)."""
    import time

    sid = upload(client, series)["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    cache = client.app.state.ctx.store.cache_dir(sid)
    deadline = time.monotonic() + 60
    while not list(cache.glob("overlay-v1-*.png")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (made,) = cache.glob("overlay-v1-*.png")
    stamp = made.stat().st_mtime_ns
    png = client.get(f"/api/studies/{sid}/export/overlay")
    html = client.get(f"/api/studies/{sid}/export/html")
    assert png.status_code == html.status_code == 200
    assert png.content == made.read_bytes() and made.stat().st_mtime_ns == stamp
    assert list(cache.glob("overlay-*.png")) == [made]
    assert (cache / "viewer.nii.gz").exists()  # made after the upload, before the viewer asked


def test_the_whole_volume_leaving_the_server_is_in_the_audit_log(
    client: TestClient, series: list[Path]
) -> None:
    """The viewer's volume is every slice of the patient's CT, an attachment any signed-in script can fetch:
    like a DICOM download or an export, who fetched it and when is recorded (a request refused is not)."""
    sid = upload(client, series)["id"]
    assert client.get(f"/api/studies/{sid}/volume.nii.gz").status_code == 200
    assert client.get("/api/studies/" + "0" * 32 + "/volume.nii.gz").status_code == 404
    events = [e for e in client.get(f"/api/studies/{sid}/audit").json() if e["action"] == "download-volume"]
    assert len(events) == 1 and events[0]["actor"] == "local" and events[0]["client"] and events[0]["at"]


STANDARD = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}
AS_NAMED = {"axial": "axial", "coronal": "coronal", "sagittal": "sagittal"}


def test_the_letters_of_the_server_images_follow_the_series_direction() -> None:
    """The server's images are the voxels' grid as stored; their letters were fixed (R/L, A/P, S/I) whatever
    the series' direction, wrong on a mirrored or quarter-turned one, and an oblique one said nothing."""
    assert render.orientation(np.eye(3)) == {
        "tilt_degrees": 0.0,
        "oblique": False,
        "letters": STANDARD,
        "planes": AS_NAMED,
    }
    # mirrored and upside down (rows toward the patient's right, columns toward anterior; slices still up)
    flipped = render.orientation(np.diag([-1.0, -1.0, 1.0]))["letters"]
    assert flipped["axial"] == {"left": "L", "right": "R", "top": "P", "bottom": "A"}
    assert flipped["coronal"] == {"left": "L", "right": "R", "top": "S", "bottom": "I"}
    assert flipped["sagittal"] == {"left": "P", "right": "A", "top": "S", "bottom": "I"}
    # slices stored head to feet: the reconstructions' top row is the last slice, the most inferior
    assert render.orientation(np.diag([1.0, 1.0, -1.0]))["letters"]["coronal"]["top"] == "I"
    # a 20° gantry tilt: the nearest body axes' letters, said to be approximate
    tilted = render.orientation(turned(20, 0))
    assert tilted == {"tilt_degrees": 20.0, "oblique": True, "letters": STANDARD, "planes": AS_NAMED}
    # rows toward posterior, columns toward the patient's right (a quarter turn), tilted 20°
    quarter = render.orientation(turned(20, 90))
    assert quarter["tilt_degrees"] == 20.0
    assert quarter["letters"] == {
        "axial": {"left": "A", "right": "P", "top": "L", "bottom": "R"},
        "coronal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
        "sagittal": {"left": "L", "right": "R", "top": "S", "bottom": "I"},
    }
    # the rows of test_e2e_oblique's series run 24.8° off the body's axes; 3° and less is not oblique
    assert render.orientation(turned(20, 15))["tilt_degrees"] == 24.8
    assert render.orientation(turned(3, 0))["oblique"] is False
    assert render.orientation(turned(3.2, 0))["oblique"] is True


def test_the_server_images_are_named_by_the_plane_they_show() -> None:
    """The server's images are the voxels' grid as stored: on a quarter-turned series the image captioned
    'Coronal' (a reconstruction at one voxel row) showed a sagittal plane (lettered A/P, S/I) and the
    'Sagittal' one a coronal plane. Each is named by the body plane nearest its own."""
    assert render.orientation(np.eye(3))["planes"] == AS_NAMED
    assert render.orientation(np.diag([-1.0, -1.0, -1.0]))["planes"] == AS_NAMED
    assert render.orientation(turned(20, 0))["planes"] == AS_NAMED
    swapped = {"axial": "axial", "coronal": "sagittal", "sagittal": "coronal"}
    assert render.orientation(turned(0, 90))["planes"] == swapped
    assert render.orientation(turned(20, 90))["planes"] == swapped
    assert (
        render.orientation(turned(20, 40))["planes"] == AS_NAMED
    )  # nearer the named planes than the swapped
    assert render.orientation(turned(20, 50))["planes"] == swapped
    # a 60° gantry tilt: the slices are nearer the coronal plane than the axial, the "coronal" image the axial
    steep = render.orientation(turned(60, 0))["planes"]
    assert steep == {"axial": "coronal", "coronal": "axial", "sagittal": "sagittal"}


def test_a_study_says_its_orientation(client: TestClient, tmp_path: Path) -> None:
    """GET /api/studies/{id} (and every answer that shows one study) carries the letters of its images;
    the list does not read each study's geometry for them."""
    meta = CTMetadata(patient_id="PAT-OBL", series_description="oblique")
    files = write_dicom_series(
        synthetic_hu(), SPACING, tmp_path / "obl", direction=turned(20, 90), metadata=meta
    )
    uploaded = upload(client, files)
    assert uploaded["orientation"]["tilt_degrees"] == 20.0
    sid = uploaded["id"]
    client.app.state.ctx.volumes.drop(sid)  # read from the stored geometry, not the volume in memory
    shown = client.get(f"/api/studies/{sid}").json()["orientation"]
    assert shown == render.orientation(turned(20, 90))
    assert shown["letters"]["axial"] == {"left": "A", "right": "P", "top": "L", "bottom": "R"}
    assert shown["planes"] == {"axial": "axial", "coronal": "sagittal", "sagittal": "coronal"}
    put = client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert put.json()["orientation"] == shown
    assert "orientation" not in client.get("/api/studies").json()[0]


def test_an_answer_showing_one_study_reads_its_stored_geometry_once(
    client: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study's volume.json (its orientation) is read once per answer that shows one study whose volume is
    not in memory, and not at all for the list."""
    sid = upload(client, series)["id"]
    client.app.state.ctx.volumes.drop(sid)  # as after a restart
    reads: list[str] = []
    read_text = Path.read_text

    def counted(path: Path, *args: object, **kwargs: object) -> str:
        reads.append(path.name)
        return read_text(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counted)
    assert client.get(f"/api/studies/{sid}").json()["orientation"] == render.orientation(np.eye(3))
    assert reads.count("volume.json") == 1
    put = client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert put.status_code == 200 and reads.count("volume.json") == 2
    assert len(client.get("/api/studies").json()) == 1 and reads.count("volume.json") == 2
