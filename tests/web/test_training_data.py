"""The learning loop's web side: which label versions are a person's, the training-data export, the models
API and the model choice recorded with a segmentation."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from test_api import get_labels, segmented
from web_synth import SPACING, synthetic_hu, write_series

from fresh_process import running_process
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, load_model_card
from sarcoscope.segmentation.refine import REFINEMENT_VERSION
from sarcoscope.store.models import LabelVersion
from sarcoscope.training.data import EXPORT_MANIFEST, find_pairs, read_image, read_labels
from sarcoscope.web.training_data import collect_training_data

SHIPPED = load_model_card(DEFAULT_MODEL_DIR)["model_id"]


def save(client: TestClient, sid: str, labels: np.ndarray, base: int) -> int:
    r = client.post(f"/api/studies/{sid}/labels", params={"base_version": base}, content=labels.tobytes())
    assert r.status_code == 201, r.text
    return r.json()["version"]


def corrected_store(client: TestClient, tmp_path: Path) -> dict[str, np.ndarray]:
    """Four studies, three patients; returns the labels a person corrected, by study id.

    A: segmented, corrected (v2)                        -> v2
    B: same patient as A, corrected (v2), segmented again (v3), the automatic v1 restored (v4) -> v2
    C: segmented, saved without a change (v2)           -> nothing (identical to the automatic labels)
    D: only segmented                                   -> nothing
    """
    corrected = {}
    for name, seed, patient in (("A", 1, "PAT-1"), ("B", 2, "PAT-1"), ("C", 3, "PAT-2"), ("D", 4, "PAT-3")):
        sid, _ = segmented(client, write_series(tmp_path / name, seed=seed, patient_id=patient), 4, 6)
        labels, version, _ = get_labels(client, sid)
        if name in "AB":
            labels[:, 10:20, 10:20] = 1  # a person paints muscle
            corrected[sid] = labels.copy()
            save(client, sid, labels, version)
        if name == "B":
            assert client.post(f"/api/studies/{sid}/segment", json={"base_version": 2}).is_success
            r = client.post(f"/api/studies/{sid}/versions/1/restore", json={"base_version": 3})
            assert r.status_code == 201, r.text
        if name == "C":
            save(client, sid, labels, version)
    return corrected


def test_export_holds_the_latest_person_corrected_version_per_study(
    client: TestClient, tmp_path: Path
) -> None:
    corrected = corrected_store(client, tmp_path)
    r = client.get("/api/training-data")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    data = tmp_path / "export"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        zf.extractall(data)
    manifest = json.loads((data / EXPORT_MANIFEST).read_text())
    assert {c["study_id"]: c["label_version"] for c in manifest["cases"]} == dict.fromkeys(corrected, 2)
    assert {c["source"] for c in manifest["cases"]} == {"edit"} and manifest["skipped"] == []

    # the DATA layout `sarcoscope train` reads: HU of the labelled slices, the corrected labels, the patient
    pairs = find_pairs(data)
    assert len(pairs) == 2
    patients = set()
    for case, image, label in pairs:
        entry = next(c for c in manifest["cases"] if c["case"] == case)
        hu, spacing, patient = read_image(image)
        assert spacing == SPACING[1:] and entry["slices"] == [4, 5, 6]
        np.testing.assert_array_equal(read_labels(label, None), corrected[entry["study_id"]])
        seed = 1 if np.array_equal(hu, synthetic_hu(1)[4:7]) else 2
        np.testing.assert_array_equal(hu, synthetic_hu(seed)[4:7])
        patients.add(patient)
    # both studies are of PAT-1: one pseudonym, which is not the PatientID itself
    assert len(patients) == 1 and "PAT-1" not in next(iter(patients))
    assert "PAT-1" not in json.dumps(manifest)
    audit = [e["action"] for e in client.get("/api/audit").json()]
    assert "export-training-data" in audit
    for sid in corrected:  # and each study's own trail says its images left, with what
        (event,) = [
            e for e in client.get(f"/api/studies/{sid}/audit").json() if e["action"] == "export-training-data"
        ]
        assert event["details"] == {"label_version": 2, "slices": [4, 5, 6]}


def test_an_export_is_audited_whole_or_not_made(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export's events (its own and each study's) are one transaction, written before the data leaves:
    when one of them cannot be written, none is and no export is answered, never an export half-audited."""
    corrected = corrected_store(client, tmp_path)
    store = client.app.state.ctx.store  # type: ignore[attr-defined]
    last = sorted(corrected)[-1]
    audit_event = type(store)._audit

    def failing(s: object, actor: str, action: str, study_id: str | None, *args: object) -> object:
        if action == "export-training-data" and study_id == last:
            raise RuntimeError("the audit log cannot be written")
        return audit_event(s, actor, action, study_id, *args)

    monkeypatch.setattr(type(store), "_audit", staticmethod(failing))
    r = TestClient(client.app, raise_server_exceptions=False).get("/api/training-data")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    monkeypatch.undo()
    assert [e for e in store.audit_events() if e.action == "export-training-data"] == []
    assert client.get("/api/training-data").status_code == 200  # once it can be audited
    assert len([e for e in store.audit_events() if e.action == "export-training-data"]) == 1 + len(corrected)


def test_export_names_label_authors_by_pseudonym_and_holds_no_save_time(
    client: TestClient, tmp_path: Path
) -> None:
    """The export is de-identified and made to leave the server: a staff member's user name is personal
    data the training does not need (the store keeps it, found by study and label version), and a save
    time would bound the study date the de-identification removes."""
    corrected = corrected_store(client, tmp_path)  # A and B corrected by the same user
    sid, _ = segmented(client, write_series(tmp_path / "E", seed=5, patient_id="PAT-4"), 4, 6)
    labels, version, _ = get_labels(client, sid)
    labels[:, 10:20, 10:20] = 1
    save(client, sid, labels, version)
    store = client.app.state.ctx.store
    with store.session() as s:  # corrected by another member of staff
        s.execute(update(LabelVersion).where(LabelVersion.study_id == sid).values(author="dr. Jansen"))

    r = client.get("/api/training-data")
    assert r.status_code == 200
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read(EXPORT_MANIFEST))
    authors = {c["study_id"]: c["author"] for c in manifest["cases"]}
    assert set(authors) == {*corrected, sid}
    first, second = (authors[i] for i in corrected)
    assert first == second and {first, authors[sid]} == {"annotator-1", "annotator-2"}
    assert "Jansen" not in json.dumps(manifest) and "local" not in authors.values()
    # no time of a case (the export's own time stays: it names no patient)
    assert [k for c in manifest["cases"] for k in c if "utc" in k or "time" in k] == []
    assert not any(re.search(r"\d{4}-\d\d-\d\dT", str(v)) for c in manifest["cases"] for v in c.values())


def test_export_leaves_out_a_series_whose_pixels_may_show_the_name(
    client: TestClient, tmp_path: Path
) -> None:
    """The export names patients by pseudonym only, so a series marked BurnedInAnnotation YES is left out
    (named in the manifest's skipped list), as the de-identified downloads refuse it."""
    files = write_series(tmp_path / "burned", seed=5, patient_id="PAT-9")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(f)
    sid, _ = segmented(client, files, 4, 6)
    labels, version, _ = get_labels(client, sid)
    labels[:, 10:20, 10:20] = 1
    save(client, sid, labels, version)
    corrected = corrected_store(client, tmp_path)
    r = client.get("/api/training-data")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        manifest = json.loads(zf.read(EXPORT_MANIFEST))
        names = zf.namelist()
    assert {c["study_id"] for c in manifest["cases"]} == set(corrected)
    (skipped,) = manifest["skipped"]
    assert skipped["study_id"] == sid and "BurnedInAnnotation is YES" in skipped["reason"]
    assert not any(sid[:12] in name for name in names)


def test_a_study_deleted_during_the_export_is_left_out(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export lists the studies, then reads each: one deleted in between is left out (not even its id
    in the skipped list), not the whole export answered 404."""
    corrected = corrected_store(client, tmp_path)
    gone = sorted(corrected)[0]
    store = client.app.state.ctx.store  # type: ignore[attr-defined]
    list_versions = store.list_versions

    def deleted_first(study_id: str) -> list[LabelVersion]:
        if study_id == gone:
            store.delete_study(study_id, "someone else")
        return list_versions(study_id)

    monkeypatch.setattr(store, "list_versions", deleted_first)
    r = client.get("/api/training-data")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        manifest = json.loads(zf.read(EXPORT_MANIFEST))
        names = zf.namelist()
    assert {c["study_id"] for c in manifest["cases"]} == set(corrected) - {gone}
    assert manifest["skipped"] == [] and not any(gone[:12] in name for name in names)


def test_a_study_whose_stored_files_cannot_be_read_is_left_out_naming_no_path(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One corrected study lost a stored DICOM file (a disk error), another its image cache: the export
    stopped at the first with a 500 whose traceback named the file, i.e. the patient's original Study,
    Series and SOP Instance UIDs, in the server's log, and nobody got training data. Both are left out, the
    reason (in the manifest that leaves the server, and in the log) names neither a UID nor the data folder,
    and the other studies are exported."""
    corrected = corrected_store(client, tmp_path)
    sid, _ = segmented(client, write_series(tmp_path / "E", seed=5, patient_id="PAT-4"), 4, 6)
    labels, version, _ = get_labels(client, sid)
    labels[:, 10:20, 10:20] = 1
    save(client, sid, labels, version)
    ctx = client.app.state.ctx
    damaged, uncached = sid, sorted(corrected)[0]
    study = ctx.store.get_study(damaged)
    sorted(ctx.store.series_dir(study).iterdir())[0].unlink()
    (ctx.store.cache_dir(uncached) / "volume.json").unlink()
    for gone in (damaged, uncached):
        ctx.volumes.drop(gone)
    r = client.get("/api/training-data")
    assert r.status_code == 200, r.text
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read(EXPORT_MANIFEST))
    assert {c["study_id"] for c in manifest["cases"]} == set(corrected) - {uncached}
    reasons = {s["study_id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {damaged, uncached}
    assert "cannot be read (No such file or directory)" in reasons[damaged]
    logged = " ".join(r.getMessage() for r in caplog.records if r.name.endswith("training_data"))
    assert damaged in logged and uncached in logged
    for text in (json.dumps(manifest), logged):
        assert study.study_uid not in text and study.series_uid not in text
        assert str(ctx.store.data_dir) not in text


def test_a_full_disk_during_the_export_is_507_in_the_web_app_and_an_output_error_in_the_cli(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the export writes its second case: the web app answered 500 "Internal server
    error (OSError)" with a traceback, and `sarcoscope train --from-store` said "internal error ... This is
    a bug in sarcoscope" (exit 70). It is 507 by the system's reason (no server folder), and in the CLI an
    OutputError (exit 1); nothing of the export is left in either."""
    import errno

    from sarcoscope.errors import OutputError
    from sarcoscope.web import training_data

    corrected_store(client, tmp_path)
    store = client.app.state.ctx.store
    url = None if store.engine.dialect.name == "sqlite" else store.engine.url.render_as_string(False)
    written: list[Path] = []
    real_save = np.save

    def filling(path: Path, array: np.ndarray) -> None:
        if len(written) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(Path(path))
        real_save(path, array)

    monkeypatch.setattr(training_data.np, "save", filling)
    r = client.get("/api/training-data")
    assert r.status_code == 507, r.text
    detail = r.json()["detail"]
    assert "No space left on device" in detail and str(store.data_dir) not in detail
    assert list((store.data_dir / "tmp").iterdir()) == []
    written.clear()
    with pytest.raises(OutputError, match="No space left on device"):
        collect_training_data(store.data_dir, tmp_path / "out" / "data", "tester", database_url=url)
    assert list((tmp_path / "out").iterdir()) == []


def test_the_unfinished_export_of_a_killed_run_is_removed_by_the_next_export_beside_it_not_a_running_ones(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An export (patients' de-identified slices and labels) is written into `.<dest>.partial` beside `dest`
    and renamed; one killed (kill -9, the out-of-memory killer) left it until the next export to that same
    `dest`, so for good (`train --from-store -o OUT` makes OUT/data once). Any export beside it, from the
    store or from an export, now removes it once nobody holds its lock file, and leaves a running one's;
    the log says a count, no name."""
    corrected_store(client, tmp_path)
    store = client.app.state.ctx.store
    url = None if store.engine.dialect.name == "sqlite" else store.engine.url.render_as_string(False)
    zipped, exported = tmp_path / "export.zip", tmp_path / "exported"
    zipped.write_bytes(client.get("/api/training-data").content)
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(exported)
    runs = tmp_path / "runs"
    from_store = (  # stopped after its first case
        "import sys\n"
        "from pathlib import Path\n"
        "from sarcoscope.web import training_data\n"
        "real = training_data._write_case\n"
        "def stop(*args):\n"
        "    case = real(*args)\n"
        "    print(args[-1], flush=True)\n"
        "    sys.stdin.read()\n"
        "    return case\n"
        "training_data._write_case = stop\n"
        f"training_data.collect_training_data(Path({str(store.data_dir)!r}), Path({str(runs / 'p1')!r}), "
        f"'tester', {url!r})\n"
    )
    from_export = (  # stopped once the export is copied
        "import shutil, sys\n"
        "from pathlib import Path\n"
        "from sarcoscope.web.training_data import collect_training_data\n"
        "real = shutil.copytree\n"
        "def stop(src, dst, *args, **kwargs):\n"
        "    done = real(src, dst, *args, **kwargs)\n"
        "    if str(dst).endswith('.partial'):\n"
        "        print(dst, flush=True)\n"
        "        sys.stdin.read()\n"
        "    return done\n"
        "shutil.copytree = stop\n"
        f"collect_training_data(Path({str(exported)!r}), Path({str(runs / 'p2')!r}), 'tester')\n"
    )
    with (
        running_process(from_store) as (first, said_first),
        running_process(from_export) as (second, said_second),
        caplog.at_level(logging.INFO, logger="sarcoscope.fileio"),
    ):
        partials = Path(said_first), Path(said_second)
        for partial, name in zip(partials, ("p1", "p2"), strict=True):
            assert partial.parent == runs and partial.name.startswith(f".{name}.")
            assert partial.name.endswith(".partial")
        assert len(list((partials[0] / "labels").iterdir())) == 1
        assert (partials[1] / EXPORT_MANIFEST).is_file()
        collect_training_data(store.data_dir, runs / "p3", "tester", database_url=url)
        assert all(p.is_dir() for p in partials)  # their writers run
        first.kill()
        first.wait()
        earlier = runs / ".p4.partial"  # an earlier version's, without a lock file: it went as now
        (earlier / "images").mkdir(parents=True)
        collect_training_data(store.data_dir, runs / "p4", "tester", database_url=url)
        assert not partials[0].exists() and not earlier.exists() and partials[1].is_dir()
        second.kill()
        second.wait()
        collect_training_data(zipped, runs / "p5", "tester")
    assert sorted(p.name for p in runs.iterdir()) == ["p3", "p4", "p5"]
    umask = os.umask(0o077)
    os.umask(umask)
    usual = 0o777 & ~umask  # a new folder, as before: the user's usual permissions
    assert [stat.S_IMODE((runs / name).stat().st_mode) for name in ("p3", "p5")] == [usual] * 2
    said_removed = [r.getMessage() for r in caplog.records if r.name == "sarcoscope.fileio"]
    assert said_removed == ["Removed 1 unfinished output folder(s) that stopped runs left."] * 2


def test_collect_reads_the_store_or_an_export_and_refuses_other_folders(
    client: TestClient, tmp_path: Path
) -> None:
    corrected_store(client, tmp_path)
    store = client.app.state.ctx.store
    data_dir = store.data_dir
    # the store's own database: SQLite in the data folder, or the PostgreSQL the tests run on
    url = None if store.engine.dialect.name == "sqlite" else store.engine.url.render_as_string(False)
    manifest = collect_training_data(data_dir, tmp_path / "from-store", "tester", database_url=url)
    assert len(manifest["cases"]) == 2
    zipped = tmp_path / "export.zip"
    zipped.write_bytes(client.get("/api/training-data").content)
    assert collect_training_data(zipped, tmp_path / "from-zip", "tester")["cases"] == manifest["cases"]
    copied = collect_training_data(tmp_path / "from-zip", tmp_path / "from-folder", "tester")
    assert copied["cases"] == manifest["cases"]
    with pytest.raises(Exception, match="already exists"):
        collect_training_data(data_dir, tmp_path / "from-zip", "tester")
    with pytest.raises(Exception, match="neither a web app data folder"):
        collect_training_data(tmp_path / "A", tmp_path / "other", "tester")
    assert not (tmp_path / "other").exists()


def test_export_without_corrections_is_a_clear_422(client: TestClient, series: list[Path]) -> None:
    segmented(client, series)
    r = client.get("/api/training-data")
    assert r.status_code == 422 and "nothing to train on" in r.json()["detail"]
    assert str(client.app.state.ctx.store.data_dir) not in r.text  # the server's folder is not the client's


def test_models_api_and_the_chosen_model_is_recorded(client: TestClient, series: list[Path]) -> None:
    body = client.get("/api/models").json()
    assert body["default"] == SHIPPED
    assert [(m["id"], m["default"], m["shipped"]) for m in body["models"]] == [(SHIPPED, True, True)]
    assert "Dice" in body["models"][0]["validation"]
    assert set(client.get("/api/config").json()["model_engines"]) == {"unet", "unet-raw"}

    sid, _ = segmented(client, series)
    r = client.post(
        f"/api/studies/{sid}/segment", json={"engine": "unet", "model": SHIPPED, "base_version": 1}
    )
    assert r.status_code == 200, r.text
    assert r.json()["model_id"] == f"{SHIPPED}+refine-v{REFINEMENT_VERSION}+mirror"
    versions = client.get(f"/api/studies/{sid}/versions").json()
    assert versions[0]["model_id"] == r.json()["model_id"]
    for payload, message in (
        ({"engine": "unet", "model": "not-installed"}, "No installed model 'not-installed'"),
        ({"engine": "unet", "model": "/etc"}, "No installed model"),
        ({"engine": "threshold", "model": SHIPPED}, "takes no model"),
    ):
        r = client.post(f"/api/studies/{sid}/segment", json={**payload, "base_version": 2})
        assert r.status_code == 422 and message in r.json()["detail"], r.text
