"""Defects a new user hit in the web app (issue #15), at the API level: each test failed before its fix."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from fastapi.testclient import TestClient
from test_api import put_patient
from web_synth import multipart, synthetic_hu, write_series

from sarcoscope.conventions import TISSUE_TITLES
from sarcoscope.export.overlay import legend_labels
from sarcoscope.export.report import mode_text
from sarcoscope.store import is_dicom_uid
from sarcoscope.web.analysis import build_result, selection_from_localization
from sarcoscope.web.wording import has_cli_words


def _blank_uids(files: list[Path]) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = ""
        ds.SeriesInstanceUID = ""
        ds.save_as(f)


def test_series_with_empty_uids_is_accepted_with_stable_generated_uids(
    client: TestClient, series: list[Path]
) -> None:
    _blank_uids(series)
    r = client.post("/api/studies", files=multipart(series))
    assert r.status_code == 201, r.text
    study = r.json()
    assert is_dicom_uid(study["series_uid"])
    assert any("generated UIDs" in w and study["series_uid"] in w for w in study["warnings"])
    again = client.post("/api/studies", files=multipart(series))
    assert again.status_code == 409 and study["series_uid"] in again.json()["detail"]  # same UID again
    sid = study["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    analysis = client.get(f"/api/studies/{sid}/analysis").json()
    assert any("generated UIDs" in w for w in analysis["warnings"])
    seg = client.get(f"/api/studies/{sid}/export/dicom-seg")
    assert seg.status_code == 200, seg.text
    ds = pydicom.dcmread(io.BytesIO(seg.content))
    assert is_dicom_uid(ds.StudyInstanceUID) and ds.StudyInstanceUID in " ".join(study["warnings"])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == study["series_uid"]


def test_series_with_empty_sop_instance_uids_is_stored_with_generated_ones(
    client: TestClient, series: list[Path]
) -> None:
    """The JPEG 2000 real series has empty SOP Instance UIDs: it was refused ("malformed") although
    `sarcoscope analyze` reads it. Each slice gets its file meta's UID or one made from its bytes."""
    for k, f in enumerate(series):
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = ""
        ds.StudyInstanceUID = ""
        if k % 2:  # half without a usable file meta UID either, and without a SOP Class UID
            ds.file_meta.MediaStorageSOPInstanceUID = ""
            ds.SOPClassUID = ""
        ds.save_as(f)
    r = client.post("/api/studies", files=multipart(series))
    assert r.status_code == 201, r.text
    study = r.json()
    warning = " ".join(study["warnings"])
    assert f"SOP Instance UID of {len(series)} of {len(series)} slices" in warning
    again = client.post("/api/studies", files=multipart(series))
    assert again.status_code == 409  # the generated UIDs are stable: a duplicate is recognised
    sid = study["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "range", "first": 0, "last": len(series) - 1})
    r = client.get(f"/api/studies/{sid}/dicom", params={"deidentify": "false"})
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        stored = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist()]
    sops = [ds.SOPInstanceUID for ds in stored]
    assert all(is_dicom_uid(u) for u in sops) and len(set(sops)) == len(series)
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in stored)
    assert {ds.SOPClassUID for ds in stored} == {"1.2.840.10008.5.1.4.1.1.2"}  # CT Image Storage
    assert len({ds.StudyInstanceUID for ds in stored}) == 1 and stored[0].StudyInstanceUID in warning
    assert {ds.SeriesInstanceUID for ds in stored} == {study["series_uid"]}
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    assert client.get(f"/api/studies/{sid}/export/dicom-seg").status_code == 200


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _segmented(client: TestClient, series: list[Path], selection: dict) -> str:
    sid = client.post("/api/studies", files=multipart(series)).json()["id"]
    assert client.put(f"/api/studies/{sid}/selection", json=selection).is_success
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    return sid


def test_messages_name_ui_controls_not_cli_options(client: TestClient, series: list[Path]) -> None:
    sid = _segmented(client, series, {"mode": "slice", "first": 5})
    localized = client.post(f"/api/studies/{sid}/localize").json()["localization"]
    assert "error" in localized  # a 12-slice synthetic block has no spine to count
    assert not has_cli_words(localized["error"]) and "L3 selection tab" in localized["error"]
    texts = _strings(client.get(f"/api/studies/{sid}/analysis").json())
    assert texts and not [t for t in texts if has_cli_words(t)]
    assert any("enter Height (cm) in the Patient card" in t for t in texts)
    html = client.get(f"/api/studies/{sid}/export/html").text
    assert not has_cli_words(html.split("<style>")[0] + html.split("</style>")[1])


def test_deidentified_reports_name_the_pages_controls_not_cli_options(
    client: TestClient, series: list[Path]
) -> None:
    from pypdf import PdfReader

    sid = _segmented(client, series, {"mode": "slice", "first": 5})
    # entered, so that de-identification removes them (a BMI never computed says what is missing instead)
    facts = {"height_cm": 170, "weight_kg": 70, "sex": "F"}
    assert put_patient(client, sid, facts).is_success
    deid = {"deidentify": True}
    report = client.get(f"/api/studies/{sid}/export/json", params=deid).json()
    assert not [t for t in _strings(report) if has_cli_words(t)]
    assert report["assessment"]["bmi"]["reason"].endswith("(an export with de-identify unticked keeps it)")
    html = client.get(f"/api/studies/{sid}/export/html", params=deid).text
    assert not has_cli_words(html.split("<style>")[0] + html.split("</style>")[1])
    assert "de-identify unticked" in html
    pdf = client.get(f"/api/studies/{sid}/export/pdf", params=deid).content
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert not has_cli_words(text) and "de-identify unticked" in text


def test_a_hand_chosen_slice_outside_l3_carries_its_level_and_a_warning(
    client: TestClient, series: list[Path]
) -> None:
    sid = _segmented(client, series, {"mode": "slice", "first": 2})
    vertebrae = {
        "T12": {"first": 0, "last": 3, "center": 2, "complete": False},
        "L1": {"first": 4, "last": 7, "center": 5, "complete": True},
        "L3": {"first": 8, "last": 11, "center": 9, "complete": False},
    }
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    ctx.store.update_study(sid, "test", "localize", None, localization={"vertebrae": vertebrae, "l3_mid": 9})
    analysis = client.get(f"/api/studies/{sid}/analysis").json()
    assert analysis["levels"] == {"2": "T12"}
    assert analysis["warnings"][0].startswith("Not L3 according to the automatic localizer (slice 2 in T12)")
    assert "slice 2 in T12" in client.get(f"/api/studies/{sid}/export/html").text
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 9})
    client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold", "base_version": 1})
    at_l3 = client.get(f"/api/studies/{sid}/analysis").json()
    assert at_l3["levels"] == {"9": "L3"} and not any("Not L3" in w for w in at_l3["warnings"])


def test_the_proposed_selection_is_the_single_mid_l3_slice_like_the_cli() -> None:
    loc = {"l3_mid": 41, "l3_lower_endplate": 37, "l3_upper_endplate": 45}
    assert selection_from_localization(loc, 80) == {"mode": "slice", "first": 41, "last": 41}
    assert selection_from_localization({"l3_mid": None}, 80) is None
    assert mode_text([41]) == "single slice 41" and mode_text([37, 38, 39]) == "average of 3 slices (37–39)"


def test_printable_report_states_what_it_used(client: TestClient, series: list[Path]) -> None:
    sid = _segmented(client, series, {"mode": "range", "first": 4, "last": 6})
    put_patient(client, sid, {"height_cm": 172, "weight_kg": 68.5, "sex": "M"})
    html = client.get(f"/api/studies/{sid}/export/html").text
    assert "sex M (user) · height 172.0 cm (user) · weight 68.5 kg (user)" in html
    assert "Average of 3 slices (4–6)" in html
    head = re.search(r"<h2>Per slice</h2><table><tr>(.*?)</tr>", html)
    assert head is not None
    cells = re.findall(r"<th[^>]*>", head.group(1))
    assert cells[0] == "<th>" and set(cells[1:]) == {"<th class=n>"}  # numbers and headings both right
    first_row = re.search(r"</tr><tr><td>4 · image 5</td>(.*?)</tr>", html.split("<h2>Per slice</h2>")[1])
    assert first_row is not None and len(re.findall("<td", first_row.group(1))) == len(cells) - 1


def test_overlay_legend_gives_the_range_average_the_report_gives(
    client: TestClient, series: list[Path]
) -> None:
    sid = _segmented(client, series, {"mode": "range", "first": 3, "last": 7})
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    study = ctx.store.get_study(sid)
    row = ctx.store.get_version(sid, None)
    labels = ctx.store.load_labels(sid, row.version).labels.copy()
    labels[0][labels[0] == 2] = 1  # the first slice's SAT painted as muscle: the slices now differ
    result = build_result(study, row, labels, ctx.volumes.get(study))
    muscle = result.average.tissues["muscle"].area_cm2
    assert muscle != result.slices[2].tissues["muscle"].area_cm2
    assert legend_labels(result)[0] == f"{TISSUE_TITLES['muscle']}: {muscle:.1f} cm²"


def test_a_level_nobody_checked_is_said_to_be_unchecked(client: TestClient, series: list[Path]) -> None:
    """Without a localization (not run, or failed: a short series, a single slice) the analysed slice was
    shown as "Single L3 slice" with cutoffs and no caveat, though it may be anywhere (the real 20-slice
    series: a liver-level slice)."""
    sid = _segmented(client, series, {"mode": "slice", "first": 5})
    unchecked = "The level was not checked: the automatic L3 localization"
    warnings = client.get(f"/api/studies/{sid}/analysis").json()["warnings"]
    assert warnings[0].startswith(f"{unchecked} was not run.") and "that slice 5 is at L3" in warnings[0]
    # a few slices: the localizer did not fail, it had too little to count on
    assert client.post(f"/api/studies/{sid}/localize").json()["localization"]["too_short"]
    warnings = client.get(f"/api/studies/{sid}/analysis").json()["warnings"]
    assert warnings[0].startswith(f"{unchecked} needs more slices.")
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    ctx.store.update_study(sid, "test", "localize", None, localization={"error": "no spine"})
    assert client.get(f"/api/studies/{sid}/analysis").json()["warnings"][0].startswith(f"{unchecked} failed.")
    assert f"{unchecked} failed." in client.get(f"/api/studies/{sid}/export/html").text
    l3 = {"L3": {"first": 3, "last": 8, "center": 5, "complete": True}}
    ctx.store.update_study(sid, "test", "localize", None, localization={"vertebrae": l3, "l3_mid": 5})
    assert not any("level" in w for w in client.get(f"/api/studies/{sid}/analysis").json()["warnings"])


def test_the_report_names_dicom_facts_as_dicom_not_as_entered(client: TestClient, series: list[Path]) -> None:
    """The upload copies the header's facts into the Patient card; the report called them "(user)", as if
    someone had entered (and checked) them."""
    sid = _segmented(client, series, {"mode": "slice", "first": 5})  # the series' header: sex F, no height

    def sources() -> dict[str, str]:
        report = client.get(f"/api/studies/{sid}/export/json").json()
        return report["assessment"]["patient"]["sources"]

    assert sources() == {"sex": "DICOM"}
    r = put_patient(client, sid, {"height_cm": 172.0, "sex": "F"})
    assert r.status_code == 200
    assert sources() == {"height_m": "user", "sex": "DICOM"}
    assert "sex F (DICOM) · height 172.0 cm (user)" in client.get(f"/api/studies/{sid}/export/html").text
    put_patient(client, sid, {"height_cm": 172.0, "sex": "M"})
    assert sources() == {"height_m": "user", "sex": "user"}


def test_upload_messages_name_no_cli_options(client: TestClient, tmp_path: Path) -> None:
    """Two series in one zip: the warning said "choose one with --series, or series_uid= in Python"; a
    NIfTI file without a spatial transform was refused with "--pixel-spacing ROW COL"."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, seed in (("a", 4), ("b", 5)):
            for f in write_series(tmp_path / name, seed=seed):
                zf.write(f, f"{name}/{f.name}")
    r = client.post("/api/studies", files=[("files", ("two.zip", buffer.getvalue(), "application/zip"))])
    assert r.status_code == 201, r.text
    warning = next(w for w in r.json()["warnings"] if "2 CT series found" in w)
    assert not has_cli_words(warning) and "choose it in Series" in warning
    sid = r.json()["id"]
    client.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
    assert client.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
    assert not [w for w in client.get(f"/api/studies/{sid}/analysis").json()["warnings"] if has_cli_words(w)]
    image = nib.Nifti1Image(np.transpose(synthetic_hu(6), (2, 1, 0)), np.eye(4))
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, tmp_path / "no-transform.nii.gz")
    upload = ("no-transform.nii.gz", (tmp_path / "no-transform.nii.gz").read_bytes(), "application/gzip")
    r = client.post("/api/studies", files=[("files", upload)])
    assert r.status_code == 422 and "no spatial transform" in r.json()["detail"]
    assert not has_cli_words(r.json()["detail"])
    # two patients' series in one upload are refused (one would have been picked), in the page's words
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, seed, patient in (("a", 4, "PAT-A"), ("b", 5, "PAT-B")):
            for f in write_series(tmp_path / f"p-{name}", seed=seed, patient_id=patient):
                zf.write(f, f"{name}/{f.name}")
    upload = ("two-patients.zip", buffer.getvalue(), "application/zip")
    r = client.post("/api/studies", files=[("files", upload)])
    detail = r.json()["detail"]
    assert r.status_code == 422 and "CT series of 2 patients" in detail, detail
    assert not has_cli_words(detail) and "upload each patient's images on their own" in detail


def test_series_without_sop_class_is_refused_with_its_reason_not_a_server_error(
    client: TestClient, series: list[Path]
) -> None:
    """No SOP Class UID in the images nor their file meta, and UIDs the upload replaces: storing the copy
    with the stand-ins written in failed in pydicom (500, AttributeError). The reader refuses the series."""
    for f in series:
        ds = pydicom.dcmread(f)
        del ds.SOPClassUID
        del ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID = ""
        ds.save_as(f, enforce_file_format=False)
    r = client.post("/api/studies", files=multipart(series))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "no SOP Class UID" in detail and any(f.name in detail for f in series) and "/" not in detail
    assert client.get("/api/studies").json() == []
