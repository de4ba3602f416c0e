"""Importing labels made elsewhere as a label version: the project's own exports round-trip, Slice-O-Matic
TAG and tissue PNGs land on the selected slice, and a file that does not fit is refused with the reason."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from test_api import get_labels, segmented, upload
from web_synth import SHAPE

from sarcoscope.web.wording import has_cli_words


def _import(client: TestClient, sid: str, files: list[tuple[str, bytes]], **params: object):
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"/api/studies/{sid}/labels/import", files=parts, params=params)


def test_exports_import_back_as_new_versions_with_the_same_pixels(
    client: TestClient, series: list[Path]
) -> None:
    sid, _ = segmented(client, series, 4, 6)
    labels, _, indices = get_labels(client, sid)
    seg = client.get(f"/api/studies/{sid}/export/dicom-seg").content
    r = _import(client, sid, [("case.seg.dcm", seg)], base_version=1)
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert (v2["version"], v2["parent_version"], v2["source"], v2["indices"]) == (2, 1, "import", [4, 5, 6])
    assert v2["author"] == "local" and v2["note"] == "imported from case.seg.dcm, mapping sarcoscope"
    np.testing.assert_array_equal(get_labels(client, sid)[0], labels)

    nifti = gzip.decompress(client.get(f"/api/studies/{sid}/export/nifti", params={"version": 1}).content)
    r = _import(client, sid, [("labels.nii", nifti)], base_version=2)
    assert r.status_code == 201, r.text
    got, version, got_indices = get_labels(client, sid)
    assert version == 3 and got_indices == indices
    np.testing.assert_array_equal(got, labels)
    actions = [e["action"] for e in client.get(f"/api/studies/{sid}/audit").json()]
    assert actions.count("labels-import") == 2
    assert client.get(f"/api/studies/{sid}").json()["status"] == "edited"


def test_slice_o_matic_tag_and_tissue_pngs_for_the_selected_slice(
    client: TestClient, series: list[Path], write_tag, alberta_tags, tmp_path: Path
) -> None:
    sid = upload(client, series)["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 7})
    labels = np.zeros(SHAPE[1:], np.uint8)
    labels[10:30, 10:40], labels[40:50, 20:30], labels[60:70, :], labels[80:85, 80:90] = 1, 2, 3, 4
    tag = write_tag(tmp_path / "slice7.tag", alberta_tags(labels)).read_bytes()

    # Tags are not project ids: without the mapping the file is refused and nothing is saved.
    r = _import(client, sid, [("slice7.tag", tag)])
    assert r.status_code == 422 and "Give its label mapping" in r.json()["detail"]
    r = _import(client, sid, [("slice7.tag", tag)], mapping="slice-o-matic-alberta")
    assert r.status_code == 201, r.text
    assert r.json()["indices"] == [7] and r.json()["note"].endswith("mapping slice-o-matic-alberta")
    np.testing.assert_array_equal(get_labels(client, sid)[0], labels[np.newaxis])

    pngs = []
    for name, label in (("muscle", 1), ("Subcutaneous fat", 2), ("vat", 3), ("imat", 4)):
        buf = io.BytesIO()
        Image.fromarray(((labels == label) * 255).astype(np.uint8)).save(buf, format="PNG")
        pngs.append((f"{name}.png", buf.getvalue()))
    r = _import(client, sid, pngs, base_version=1)
    assert r.status_code == 201, r.text
    assert r.json()["note"].startswith("imported from muscle.png + Subcutaneous fat.png")
    np.testing.assert_array_equal(get_labels(client, sid)[0], labels[np.newaxis])


def test_labels_are_not_made_for_a_selection_changed_since_the_page_showed_it(
    client: TestClient, series: list[Path], write_tag, alberta_tags, tmp_path: Path
) -> None:
    """Import and Segment made their labels for the selection stored when the request came, not the one the
    user had on screen: after a colleague (or another tab) moved the L3 selection, a Slice-O-Matic file of
    the slice the user chose went onto the other slice (a TAG carries no position) and was measured there as
    L3. The page now sends the selection it shows; another stored one is refused (409) and nothing made."""
    sid = upload(client, series)["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 7})
    labels = np.zeros(SHAPE[1:], np.uint8)
    labels[10:30, 10:40], labels[60:70, :] = 1, 3
    tag = write_tag(tmp_path / "slice7.tag", alberta_tags(labels)).read_bytes()
    bob = TestClient(client.app)
    assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
    base = bob.get(f"/api/studies/{sid}").json()["selection_version"]  # a change of another's names it
    r = bob.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 8, "base_version": base})
    assert r.status_code == 200

    r = _import(client, sid, [("slice7.tag", tag)], mapping="slice-o-matic-alberta", first=7, last=7)
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith("The L3 selection was changed (in another tab or by another user)")
    assert "to slice 8; you chose slice 7" in r.json()["detail"]
    r = client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold", "first": 7, "last": 7})
    assert r.status_code == 409 and "you chose slice 7" in r.json()["detail"]
    assert client.get(f"/api/studies/{sid}/versions").json() == []

    again = {"mode": "slice", "first": 7, "base_version": base + 1}
    assert client.put(f"/api/studies/{sid}/selection", json=again).status_code == 200  # chosen again
    r = _import(client, sid, [("slice7.tag", tag)], mapping="slice-o-matic-alberta", first=7, last=7)
    assert r.status_code == 201 and r.json()["indices"] == [7], r.text
    r = client.post(
        f"/api/studies/{sid}/segment", json={"engine": "threshold", "base_version": 1, "first": 7, "last": 7}
    )
    assert r.status_code == 200 and r.json()["indices"] == [7], r.text


def test_files_that_do_not_fit_the_study_are_refused(
    client: TestClient, series: list[Path], write_tag, tmp_path: Path
) -> None:
    sid = upload(client, series)["id"]
    tag = write_tag(tmp_path / "a.tag", np.zeros(SHAPE[1:], np.uint8)).read_bytes()
    r = _import(client, sid, [("a.tag", tag)], mapping="slice-o-matic-alberta")
    assert r.status_code == 409 and "Select the L3" in r.json()["detail"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "range", "first": 4, "last": 6})
    r = _import(client, sid, [("a.tag", tag)], mapping="slice-o-matic-alberta")
    assert r.status_code == 422
    assert r.json()["detail"] == "Label map a.tag has 1 slice(s) but the study's CT has 12 (3 asked)."
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    small = write_tag(tmp_path / "b.tag", np.zeros((64, 96), np.uint8)).read_bytes()
    r = _import(client, sid, [("b.tag", small)], mapping="slice-o-matic-alberta")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("the study's CT has shape (12, 96, 96) but label map b.tag has")
    for mapping in ("no-such-mapping", "/etc/passwd"):  # only built-in mappings: no server paths
        r = _import(client, sid, [("a.tag", tag)], mapping=mapping)
        assert r.status_code == 422 and "Unknown label mapping" in r.json()["detail"]
    r = _import(client, sid, [("notes.txt", b"hello")])
    assert r.status_code == 422 and "notes.txt is not a label file" in r.json()["detail"]
    r = _import(client, sid, [("../../x.png", b"1"), ("sat.png", b"2")])  # the base name only; not PNGs
    assert r.status_code == 422 and r.json()["detail"].startswith("Cannot read PNG label map tissue masks/")
    r = _import(client, sid, [("muscle.png", b"1"), ("c.tag", b"2")])
    assert r.status_code == 422 and "named by their tissue" in r.json()["detail"]
    r = _import(client, sid, [("<script>.tag", b"1")])
    assert r.status_code == 422 and "not accepted" in r.json()["detail"]
    r = _import(client, sid, [("liver.png", b"1"), ("sat.png", b"2")])
    assert r.status_code == 422 and "'liver' is not a tissue name" in r.json()["detail"]
    assert "/tmp" not in r.json()["detail"] and "data" not in r.json()["detail"]
    # the reasons name the page's controls, not the command line's options
    odd = write_tag(tmp_path / "odd.tag", np.full(SHAPE[1:], 77, np.uint8)).read_bytes()
    r = _import(client, sid, [("odd.tag", odd)], mapping="slice-o-matic-alberta")
    detail = r.json()["detail"]
    assert r.status_code == 422 and "unknown label id(s) 77" in detail and not has_cli_words(detail)
    assert detail.endswith("Choose the file's Mapping under Import labels.")
    r = _import(client, sid, [("ct.dcm", series[5].read_bytes())])
    detail = r.json()["detail"]
    assert r.status_code == 422 and "not a DICOM SEG" in detail and not has_cli_words(detail)
    assert client.get(f"/api/studies/{sid}/versions").json() == []  # nothing was saved
    assert _import(client, sid, [("a.tag", tag)], mapping="slice-o-matic-alberta").status_code == 201
    r = _import(client, sid, [("a.tag", tag)], mapping="slice-o-matic-alberta")  # based on no version
    assert r.status_code == 409 and r.json()["latest_version"] == 1
    assert list((client.app.state.ctx.store.data_dir / "tmp").iterdir()) == []  # uploads cleaned up
