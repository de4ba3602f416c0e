"""An upload of several series of one patient (an exam export): the series are listed, the CLI's default is
opened, and another series opens as a study of its own without uploading again."""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import delete_study
from web_synth import (
    ARTERIAL_STUDY_UID,
    multipart,
    synthetic_hu,
    write_exam,
    write_exam_of_two_studies,
    write_series,
    zip_bytes,
)

from sarcoscope.imaging import CTMetadata, list_series, write_dicom_series
from sarcoscope.web import create_app
from sarcoscope.web.wording import has_cli_words


def _all(files: dict[str, list[Path]]) -> list[Path]:
    return [f for paths in files.values() for f in paths]


def _patient_zip(files: list[Path], folder: Path) -> bytes:
    """The exam's files zipped below a folder named by the patient, as PACS exports often are."""
    patient_zip = io.BytesIO()
    with zipfile.ZipFile(patient_zip, "w") as zf:
        for f in files:
            zf.write(f, f"Jansen Piet 12345678/{f.relative_to(folder)}")
    return patient_zip.getvalue()


def _upload_exam(client: TestClient, tmp_path: Path, as_zip: bool = True) -> tuple[dict, Path]:
    folder = tmp_path / "exam"
    files = _all(write_exam(folder))
    body = (
        [("files", ("exam.zip", zip_bytes(files, folder), "application/zip"))] if as_zip else multipart(files)
    )
    r = client.post("/api/studies", files=body)
    assert r.status_code == 201, r.text
    return r.json(), folder


@pytest.mark.parametrize("as_zip", [True, False])
def test_the_upload_lists_its_series_and_opens_the_clis_default(
    client: TestClient, tmp_path: Path, as_zip: bool
) -> None:
    """The web app read the series with most slices and said only 'upload its files alone' of the others."""
    study, folder = _upload_exam(client, tmp_path, as_zip)
    default = list_series(folder)[0]  # what `sarcoscope analyze` reads
    assert study["series_uid"] == default.series_uid and study["series_description"] == "Abdomen PV 3.0"
    series = study["series"]
    assert [(s["description"], s["n_slices"], s["slice_thickness_mm"], s["phase"]) for s in series] == [
        ("Abdomen PV 3.0", 12, 3.0, "portal-venous"),
        ("Abdomen ART 6.0", 6, 6.0, "arterial"),
        ("Abdomen 9.0", 4, 9.0, None),  # the localizer image is no series to choose
    ]
    assert [s["default"] for s in series] == [True, False, False]
    assert [s["current"] for s in series] == [True, False, False]
    assert series[0]["study_id"] == study["id"] and series[1]["study_id"] is None
    assert all(s["reason"] is None for s in series)
    assert client.get(f"/api/studies/{study['id']}/series").json() == series
    several = next(w for w in study["warnings"] if "3 CT series found" in w)
    assert not has_cli_words(several) and "Series" in several
    skipped = next(w for w in study["warnings"] if "skipped 1 file" in w)  # the localizer
    assert skipped.startswith("skipped 1 file in the upload: 1 localizer")  # no server folder named
    data_dir = str(client.app.state.ctx.store.data_dir)
    assert not any(data_dir in w for w in study["warnings"])  # the server's folders are no user's words


@pytest.mark.parametrize("as_zip", [True, False])
def test_an_upload_parses_each_files_header_once(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_zip: bool
) -> None:
    """Reading the chosen series and then listing the upload's series parsed every file twice (about 1 s
    per 600 files); what the upload lists and keeps is the same (the tests above)."""
    from sarcoscope.imaging import dicom_reader

    read, parsed = dicom_reader._read_header, Counter[str]()

    def counted(path: Path) -> object:
        parsed[str(path)] += 1
        return read(path)

    monkeypatch.setattr(dicom_reader, "_read_header", counted)
    study, _ = _upload_exam(client, tmp_path, as_zip)
    assert len(study["series"]) == 3
    assert len(parsed) == 12 + 6 + 4 + 1 and set(parsed.values()) == {1}  # three series and the localizer


def test_another_series_opens_without_uploading_again(client: TestClient, tmp_path: Path) -> None:
    study, _ = _upload_exam(client, tmp_path)
    arterial = study["series"][1]
    r = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": arterial["series_uid"]})
    assert r.status_code == 201, r.text
    other = r.json()
    assert other["id"] != study["id"] and other["series_uid"] == arterial["series_uid"]
    assert (other["series_description"], other["n_slices"], other["spacing"][0]) == (
        "Abdomen ART 6.0",
        6,
        6.0,
    )
    assert [s["current"] for s in other["series"]] == [False, True, False]
    assert [s["study_id"] for s in other["series"]] == [study["id"], other["id"], None]
    assert client.get(f"/api/studies/{other['id']}/hu/5").status_code == 200  # its own images
    data_dir = str(client.app.state.ctx.store.data_dir)
    assert other["warnings"] and not any(data_dir in w for w in other["warnings"])
    # Chosen again (from either study): the same study, not a second one.
    for base in (study["id"], other["id"]):
        again = client.post(f"/api/studies/{base}/series", json={"series_uid": arterial["series_uid"]})
        assert again.status_code == 200 and again.json()["id"] == other["id"]
    back = client.post(f"/api/studies/{other['id']}/series", json={"series_uid": study["series_uid"]})
    assert back.status_code == 200 and back.json()["id"] == study["id"]
    assert len(client.get("/api/studies").json()) == 2
    missing = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": "1.2.3"})
    assert missing.status_code == 404 and "not in this study's upload" in missing.json()["detail"]


def test_a_failed_opening_leaves_the_series_to_open_again(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its files were moved into the study's folder before the study was added; a failure then (a full
    disk, a database error) deleted them with the half-made study."""
    study, _ = _upload_exam(client, tmp_path)
    store = client.app.state.ctx.store
    arterial = {"series_uid": study["series"][1]["series_uid"]}

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(store, "add_study", broken)
        failed = TestClient(client.app, raise_server_exceptions=False)
        assert failed.post(f"/api/studies/{study['id']}/series", json=arterial).status_code == 507
    r = client.post(f"/api/studies/{study['id']}/series", json=arterial)
    assert r.status_code == 201 and r.json()["n_slices"] == 6
    (kept,) = (store.data_dir / "uploads").iterdir()
    assert len(list(kept.rglob("*.dcm"))) == 4  # the arterial files left the kept upload with its study


def test_an_upload_whose_last_study_is_deleted_while_another_series_opens_keeps_its_series(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting the upload's only study found no other study of it and removed its kept series, while
    the arterial series (here of the patient's other study in the export) was being opened from them: its
    study was added pointing at an upload gone (its other series lost, its Series list empty), and the
    opening answered 500 writing the upload's list."""
    folder = tmp_path / "exam"
    files = write_exam_of_two_studies(folder)
    r = client.post(
        "/api/studies", files=[("files", ("exam.zip", zip_bytes(_all(files), folder), "application/zip"))]
    )
    assert r.status_code == 201, r.text
    study = r.json()
    store = client.app.state.ctx.store
    pv_study = store.get_study(study["id"]).study_uid
    assert store.ct_bucket(pv_study) != store.ct_bucket(ARTERIAL_STUDY_UID)  # no wait there
    (kept,) = (store.data_dir / "uploads").iterdir()
    add, adding = store.add_study, threading.Event()

    def add_late(*args: Any, **kwargs: Any) -> Any:
        adding.set()
        for _ in range(200):  # until the deletion removed the kept upload (unless it waits for this)
            if not kept.exists():
                break
            time.sleep(0.01)
        return add(*args, **kwargs)

    monkeypatch.setattr(store, "add_study", add_late)
    arterial = study["series"][1]["series_uid"]
    opener = TestClient(client.app, raise_server_exceptions=False)
    answer: dict[str, Any] = {}
    opening = threading.Thread(
        target=lambda: answer.update(
            r=opener.post(f"/api/studies/{study['id']}/series", json={"series_uid": arterial})
        )
    )
    opening.start()
    assert adding.wait(10)
    assert delete_study(client, study["id"]).status_code == 200
    opening.join(10)
    assert answer["r"].status_code == 201, answer["r"].text
    other = answer["r"].json()["id"]
    listed = client.get(f"/api/studies/{other}/series").json()
    assert [s["current"] for s in listed] == [False, True, False] and listed[1]["series_uid"] == arterial
    assert len(list(kept.rglob("*.dcm"))) == 4  # the 9 mm series, still to be opened


def test_kept_series_live_and_go_with_the_uploads_studies(client: TestClient, tmp_path: Path) -> None:
    """The other series stay through a restart's clean-up, and leave with the upload's last study."""
    study, _ = _upload_exam(client, tmp_path)
    store = client.app.state.ctx.store
    kept = list((store.data_dir / "uploads").iterdir())
    assert len(kept) == 1
    stored = [p for p in (kept[0] / "files").rglob("*") if p.is_file()]
    assert len(stored) == 6 + 4  # the arterial and 9 mm series' images: not the localizer, nor the PV series
    assert all(p.stat().st_mode & 0o077 == 0 for p in stored)
    assert store.remove_orphan_files() == [] and kept[0].is_dir()
    other = client.post(
        f"/api/studies/{study['id']}/series", json={"series_uid": study["series"][2]["series_uid"]}
    ).json()
    assert delete_study(client, other["id"]).status_code == 200
    assert kept[0].is_dir()  # the first study still offers the arterial series
    listed = client.get(f"/api/studies/{study['id']}/series").json()
    assert listed[2]["study_id"] is None and "deleted" in listed[2]["reason"]
    gone = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": listed[2]["series_uid"]})
    assert gone.status_code == 409 and "upload them again" in gone.json()["detail"]
    assert delete_study(client, study["id"]).status_code == 200
    assert list((store.data_dir / "uploads").iterdir()) == []


def test_a_series_that_is_not_axial_is_listed_but_not_opened(client: TestClient, tmp_path: Path) -> None:
    files = _all(write_exam(tmp_path / "exam"))
    sagittal = np.column_stack([[0.0, 1, 0], [0.0, 0, -1], [-1.0, 0, 0]])  # rows -> P, columns -> I
    meta = CTMetadata(patient_id="PAT-EXAM", series_description="Sagittal MPR")
    files += write_dicom_series(
        synthetic_hu(1), (4.0, 3.0, 4.0), tmp_path / "sag", direction=sagittal, metadata=meta
    )
    study = client.post("/api/studies", files=multipart(files)).json()
    (listed,) = [s for s in study["series"] if s["description"] == "Sagittal MPR"]
    assert listed["orientation"] == "sagittal" and "needs an axial series" in listed["reason"]
    r = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": listed["series_uid"]})
    assert r.status_code == 422 and "needs an axial series" in r.json()["detail"]
    assert len(client.get("/api/studies").json()) == 1


def test_a_single_series_upload_offers_no_other(client: TestClient, series: list[Path]) -> None:
    study = client.post("/api/studies", files=multipart(series)).json()
    assert study["series"] == [] and client.get(f"/api/studies/{study['id']}/series").json() == []
    r = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": study["series_uid"]})
    assert r.status_code == 404
    assert list((client.app.state.ctx.store.data_dir / "uploads").iterdir()) == []


def test_another_patients_series_are_not_kept_with_the_chosen_one(client: TestClient, tmp_path: Path) -> None:
    files = write_series(tmp_path / "a", seed=1, patient_id="PAT-A") + write_series(
        tmp_path / "b", seed=2, patient_id="PAT-B"
    )
    chosen = list_series(tmp_path / "a")[0].series_uid
    r = client.post("/api/studies", files=multipart(files), data={"series_uid": chosen})
    assert r.status_code == 201, r.text
    assert (
        r.json()["series"] == [] and list((client.app.state.ctx.store.data_dir / "uploads").iterdir()) == []
    )


def test_series_of_two_patients_without_patient_ids_are_not_kept_together(
    client: TestClient, tmp_path: Path
) -> None:
    """Without a PatientID the reader tells patients apart by their study (it refuses the upload unless a
    series is chosen); the kept upload took all such series for one patient's: the other patient's series
    was kept beside the chosen one, offered in its Series list (as the default) and opened as a study
    linked to it."""
    import pydicom

    def without_patient_id(files: list[Path]) -> list[Path]:
        for path in files:
            ds = pydicom.dcmread(path)
            del ds.PatientID
            ds.save_as(path)
        return files

    files = without_patient_id(write_series(tmp_path / "a", seed=1)) + without_patient_id(
        write_series(tmp_path / "b", seed=2)
    )
    refused = client.post("/api/studies", files=multipart(files))
    assert refused.status_code == 422 and "2 patients" in refused.json()["detail"]
    chosen = list_series(tmp_path / "a")[0].series_uid
    r = client.post("/api/studies", files=multipart(files), data={"series_uid": chosen})
    assert r.status_code == 201, r.text
    assert r.json()["series"] == []
    assert list((client.app.state.ctx.store.data_dir / "uploads").iterdir()) == []


def test_the_kept_series_are_stored_under_no_name_of_the_upload(client: TestClient, tmp_path: Path) -> None:
    """The other series of an upload were kept under the zip's own folders and file names, often the
    patient's ('uploads/<id>/files/Jansen Piet 12345678/CT abdomen/IM0001'), for as long as the upload's
    studies are kept: in every listing, backup catalogue and disk report of the data folder, and in the
    messages of a series opened from them. They are now numbered files; the series open as before."""
    folder = tmp_path / "exam"
    files = _all(write_exam(folder))
    r = client.post(
        "/api/studies", files=[("files", ("exam.zip", _patient_zip(files, folder), "application/zip"))]
    )
    assert r.status_code == 201, r.text
    study = r.json()
    data = client.app.state.ctx.store.data_dir
    stored = [p.relative_to(data).as_posix() for p in data.rglob("*")]
    kept = [p for p in stored if p.startswith("uploads/") and p.endswith(".dcm")]
    assert len(kept) == 6 + 4  # the arterial and 9 mm series' images
    names = {part for f in files for part in f.relative_to(folder).parts}  # the zip's folders and files
    assert not [p for p in stored if "Jansen" in p or set(Path(p).parts) & names]
    for entry in study["series"][1:]:
        r = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": entry["series_uid"]})
        assert r.status_code == 201 and r.json()["n_slices"] == entry["n_slices"], r.text


def test_series_kept_under_the_uploads_names_by_an_earlier_version_are_renamed_at_start(
    client: TestClient, tmp_path: Path
) -> None:
    """A data folder of an earlier version holds kept series under the zip's names: the next start numbers
    them, and they open as before."""
    study, _ = _upload_exam(client, tmp_path)
    store = client.app.state.ctx.store
    files = next((store.data_dir / "uploads").iterdir()) / "files"
    for n, path in enumerate(sorted(files.iterdir())):  # as an earlier version kept them
        old = files / "Jansen Piet 12345678" / f"series{n % 2}" / ("000000.dcm" if n == 3 else f"IM{n}")
        old = files / "Jansen_IM0" if n == 0 else old  # one beside the folders
        old.parent.mkdir(parents=True, exist_ok=True)
        path.rename(old)
    settings = client.app.state.ctx.settings
    client.app.state.ctx.store.close()  # the server stopped; started again on the same folder
    app = create_app(settings)
    with TestClient(app) as again:
        kept = sorted(p.relative_to(files).as_posix() for p in files.rglob("*"))
        assert kept == [f"{n:06d}.dcm" for n in range(10)]
        for entry in study["series"][1:]:
            r = again.post(f"/api/studies/{study['id']}/series", json={"series_uid": entry["series_uid"]})
            assert r.status_code == 201 and r.json()["n_slices"] == entry["n_slices"], r.text
    app.state.ctx.store.close()


def test_kept_files_already_numbered_are_only_listed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every start went through every kept file of every upload (a status read of each, then a count of
    each folder) to rename files this version never leaves named: a data folder's thousands of files made
    every start slower. A folder whose listing shows numbered files only is now left at that."""
    from types import SimpleNamespace

    from sarcoscope.web import uploads

    numbered, named = (tmp_path / "uploads" / u / "files" for u in ("a", "b"))
    for n in range(3):
        (numbered / f"{n:06d}.dcm").parent.mkdir(parents=True, exist_ok=True)
        (numbered / f"{n:06d}.dcm").write_bytes(b"a")
    (named / "Jansen").mkdir(parents=True)
    (named / "000000.dcm").write_bytes(b"b0")
    (named / "Jansen" / "IM1").write_bytes(b"b1")
    moved: list[Path] = []
    keep = uploads._keep_numbered
    monkeypatch.setattr(
        uploads, "_keep_numbered", lambda files, paths: (moved.append(files), keep(files, paths))
    )
    assert uploads.number_kept_files(SimpleNamespace(data_dir=tmp_path)) == 1  # type: ignore[arg-type]
    assert moved == [named]
    assert sorted(p.name for p in named.iterdir()) == ["000000.dcm", "000001.dcm"]
    assert (named / "000001.dcm").read_bytes() == b"b1"
    assert sorted(p.name for p in numbered.iterdir()) == ["000000.dcm", "000001.dcm", "000002.dcm"]


def test_a_full_disk_while_keeping_an_uploads_series_is_507_naming_no_folder_of_the_zip(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The other series of an upload come from the zip's own folders, often named by the patient; a full
    disk while they were kept raised OSError naming the folder ('No space left on device: .../Jansen Piet
    12345678/series1') through the app: a 500 whose traceback, with that path, went into the server's log."""
    from sarcoscope.web import uploads

    folder = tmp_path / "exam"
    files = _all(write_exam(folder))
    move = uploads.shutil.move

    def disk_full(source: Path, target: Path) -> Any:
        if "uploads" in str(target):  # a kept series' file, from the extracted zip
            raise OSError(errno.ENOSPC, "No space left on device", str(source))
        return move(source, target)

    monkeypatch.setattr(uploads.shutil, "move", disk_full)
    body = [("files", ("exam.zip", _patient_zip(files, folder), "application/zip"))]
    r = client.post("/api/studies", files=body)  # the test client raises what would reach the server's log
    assert r.status_code == 507, r.text
    assert "No space left on device" in r.json()["detail"] and "Jansen" not in r.text
    assert "Jansen" not in caplog.text
    assert client.get("/api/studies").json() == []
    data = client.app.state.ctx.store.data_dir
    assert [p for d in ("ct", "cache", "tmp", "uploads") for p in (data / d).iterdir()] == []


def test_a_full_disk_while_extracting_an_uploaded_zip_is_507_not_a_bad_zip(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills while the third file of an uploaded zip is extracted: that was answered 422 "cannot
    extract Jansen Piet 12345678/... from ...: [Errno 28] No space left on device", telling the user their
    file was bad (and naming the zip's folders and the server's). It is 507 by the system's reason only,
    with nothing of the extraction left and no study added; a real zip then uploads fine."""
    from sarcoscope.imaging import archive

    files = write_series(tmp_path / "series")
    opened: list[Path] = []

    class FillsUp(io.FileIO):
        def write(self, data: Any) -> int:
            if len(opened) >= 3:
                raise OSError(errno.ENOSPC, "No space left on device", self.name)
            return super().write(data)

    def open_filling(path: Path, mode: str = "r") -> io.FileIO:
        opened.append(Path(path))
        return FillsUp(path, mode)

    monkeypatch.setattr(archive, "open", open_filling, raising=False)
    body = [("files", ("exam.zip", _patient_zip(files, tmp_path / "series"), "application/zip"))]
    r = client.post("/api/studies", files=body)
    assert r.status_code == 507, r.text
    detail = r.json()["detail"]
    data = client.app.state.ctx.store.data_dir
    assert "No space left on device" in detail and "Jansen" not in detail and str(data) not in detail
    assert "Jansen" not in caplog.text
    assert len(opened) == 3 and not any(p.exists() for p in opened)
    assert client.get("/api/studies").json() == []
    assert [p for d in ("ct", "cache", "tmp", "uploads") for p in (data / d).iterdir()] == []
    monkeypatch.undo()
    assert client.post("/api/studies", files=body).status_code == 201


def test_another_patients_series_with_a_stored_series_uid_is_refused_without_naming_that_study(
    client: TestClient, tmp_path: Path
) -> None:
    """A series of patient B that reuses the SeriesInstanceUID of patient A's stored series (a copied or
    badly anonymised export) was answered 409 "already uploaded (study <A's>); open it instead": a link
    from B's files to A's study. It is refused, naming neither A's study nor A, and A's study is unchanged."""
    import pydicom

    first = client.post("/api/studies", files=multipart(write_series(tmp_path / "a", patient_id="PAT-A-1")))
    assert first.status_code == 201, first.text
    stored = first.json()
    other = write_series(tmp_path / "b", seed=5, patient_id="PAT-B-2")
    for f in other:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = stored["series_uid"]
        ds.save_as(f)
    r = client.post("/api/studies", files=multipart(other))
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "another patient" in detail and "open it" not in detail
    assert stored["id"] not in detail and "PAT-A-1" not in detail
    assert [s["id"] for s in client.get("/api/studies").json()] == [stored["id"]]
    assert client.get(f"/api/studies/{stored['id']}").json()["patient_id"] == "PAT-A-1"
    # the same patient's series uploaded again is still offered
    again = client.post("/api/studies", files=multipart(write_series(tmp_path / "a2", patient_id="PAT-A-1")))
    assert again.status_code == 409 and stored["id"] in again.json()["detail"]


def test_an_uploads_files_are_on_disk_before_its_study_is_committed(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsynced: list[int]
) -> None:
    """An upload's files (its series in ct/, its decoded images in cache/, its other series in uploads/) were
    written or moved without being flushed to disk before the study's row was committed (which the database
    flushes): power lost after the commit could leave a study whose images are empty. Each of those files
    and the folders naming them are now flushed (fsync) before the commit; a series opened from the kept
    upload too (copied from uploads/ to ct/)."""
    store = client.app.state.ctx.store
    add, synced, checked = store.add_study, fsynced, []

    def add_when_on_disk(study: Any, *args: Any, **kwargs: Any) -> Any:
        folders = [store.series_dir(study), store.cache_dir(study.id)]
        if not checked:  # the upload's: its other series are stored with it
            folders.append(store.upload_dir(study.upload_id))
        paths = [p for folder in folders for p in (folder, *folder.rglob("*"))]
        paths += [store.series_dir(study).parent, *(folder.parent for folder in folders)]
        needed = {p.stat().st_ino for p in paths}
        assert len(paths) > 10 and needed <= set(synced), sorted(
            p.name for p in paths if p.stat().st_ino not in synced
        )
        checked.append(study.id)
        return add(study, *args, **kwargs)

    monkeypatch.setattr(store, "add_study", add_when_on_disk)
    study, _ = _upload_exam(client, tmp_path)
    arterial = study["series"][1]["series_uid"]
    opened = client.post(f"/api/studies/{study['id']}/series", json={"series_uid": arterial})
    assert opened.status_code == 201, opened.text
    assert checked == [study["id"], opened.json()["id"]]
    assert client.get(f"/api/studies/{opened.json()['id']}/hu/5").status_code == 200


def test_a_series_opening_is_on_disk_and_found_again_when_its_listing_lost_it(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening another series of an upload commits its study, then records it in the upload's series.json,
    which was not flushed to disk: power lost then showed the series as not opened while its study exists,
    and opening it was refused (409 "already uploaded"). The listing is now flushed (fsync of the file and
    its folder) once written, and a listing that lost an opening finds the study by its series again."""
    store = client.app.state.ctx.store
    study, _ = _upload_exam(client, tmp_path)
    arterial = {"series_uid": study["series"][1]["series_uid"]}
    listing = store.upload_dir(store.get_study(study["id"]).upload_id) / "series.json"
    os_fsync, add, synced, committed = os.fsync, store.add_study, [], []

    def recorded_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        os_fsync(fd)

    def add_then_mark(*args: Any, **kwargs: Any) -> Any:
        added = add(*args, **kwargs)
        committed.append(len(synced))
        return added

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", recorded_fsync)
        m.setattr(store, "add_study", add_then_mark)
        before = listing.read_bytes()
        opened = client.post(f"/api/studies/{study['id']}/series", json=arterial)
    assert opened.status_code == 201, opened.text
    [mark] = committed
    assert {listing.stat().st_ino, listing.parent.stat().st_ino} <= set(synced[mark:])

    listing.write_bytes(before)  # the write after the commit lost with power
    shown = client.get(f"/api/studies/{study['id']}/series").json()
    assert [s["study_id"] for s in shown] == [study["id"], opened.json()["id"], None]
    again = client.post(f"/api/studies/{study['id']}/series", json=arterial)
    assert again.status_code == 200 and again.json()["id"] == opened.json()["id"], again.text
    assert [e["study_id"] for e in json.loads(listing.read_bytes())][:2] == [study["id"], opened.json()["id"]]
    assert len(client.get("/api/studies").json()) == 2
