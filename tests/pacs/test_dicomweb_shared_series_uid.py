"""Two patients' studies on the PACS whose series share a SeriesInstanceUID (an anonymiser or a phantom set
reusing it): once the first is imported, the second's series list must not offer the first patient's local
study as "imported", and its import must not open it either; it is refused before its images are retrieved,
naming neither that study nor its patient. A small HTTP server holds both studies (Orthanc could too, but
this needs no Orthanc)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from local_http import answer, ct_series, retrieved, serve

from sarcoscope.imaging import CTMetadata, write_dicom_series
from sarcoscope.web import WebSettings, create_app

SERIES = "1.2.826.0.1.3680043.8.498.1000"


def _study(folder: Path, patient_id: str, study_uid: str) -> list[Path]:
    hu = np.full((12, 64, 64), -1000, np.int16)
    hu[:, 8:56, 8:56] = 40
    meta = CTMetadata(patient_id=patient_id, study_instance_uid=study_uid, series_instance_uid=SERIES)
    return write_dicom_series(hu, (3.0, 4.0, 4.0), folder, metadata=meta)


@contextmanager
def _pacs(studies: dict[str, list[Path]], retrievals: list[str]) -> Iterator[str]:
    """A DICOMweb server holding `studies` (StudyInstanceUID: its CT files, all of series SERIES); the
    study of each retrieval is appended to `retrievals`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].split("/")  # "", "studies", study, "series"[, series]
            files = studies.get(path[2]) if len(path) > 3 else None
            if path == ["", "studies"]:  # the study search: every study, CT
                found = [
                    {"0020000D": {"vr": "UI", "Value": [uid]}, "00080061": {"vr": "CS", "Value": ["CT"]}}
                    for uid in studies
                ]
                answer(self, json.dumps(found).encode())
            elif files is not None and path[3:] == ["series"]:
                answer(self, ct_series(SERIES, len(files)))
            elif files is not None and path[3:] == ["series", SERIES]:
                retrievals.append(path[2])
                retrieved(self, files)
            else:
                self.send_error(404)

    with serve(Handler) as url:
        yield url


def test_another_patients_series_with_the_same_uid_is_not_taken_for_the_one_imported(tmp_path: Path) -> None:
    first, second = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    studies = {
        first: _study(tmp_path / "a", "PATIENT-A", first),
        second: _study(tmp_path / "b", "PATIENT-B", second),
    }
    retrievals: list[str] = []
    with _pacs(studies, retrievals) as url:
        app = create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=url))
        try:
            with TestClient(app) as client:
                imported = client.post(f"/api/pacs/studies/{first}/series/{SERIES}/import")
                assert imported.status_code == 201, imported.text
                local = imported.json()
                assert (local["series_uid"], local["patient_id"]) == (SERIES, "PATIENT-A")
                (listed,) = client.get(f"/api/pacs/studies/{first}/series").json()
                assert listed["imported_as"] == local["id"]

                (other,) = client.get(f"/api/pacs/studies/{second}/series").json()
                assert other["series_uid"] == SERIES and other["imported_as"] is None
                refused = client.post(f"/api/pacs/studies/{second}/series/{SERIES}/import")
                assert refused.status_code == 409, refused.text
                detail = refused.json()["detail"]
                assert "already stored here in another study" in detail
                assert retrievals == [first]  # the second study's images were never downloaded
                assert local["id"] not in detail and "PATIENT-A" not in detail
                assert [s["id"] for s in client.get("/api/studies").json()] == [local["id"]]
        finally:
            app.state.ctx.store.close()


def test_a_cohort_with_two_studies_sharing_a_series_uid_analyses_both_as_their_own_cases(
    tmp_path: Path,
) -> None:
    """`batch` over a DICOMweb query named each case by its SeriesInstanceUID, so two studies reusing one
    refused the whole cohort before it started ("Case id … appears twice"). Each is now its own case, named
    with its study, read from its own study."""
    from sarcoscope.batch import dicomweb_cases

    first, second = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    studies = {
        first: _study(tmp_path / "a", "PATIENT-A", first),
        second: _study(tmp_path / "b", "PATIENT-B", second),
    }
    with _pacs(studies, []) as url:
        cases = dicomweb_cases(f"dicomweb+{url}", {"PatientID": "*"})
    assert sorted((c.case_id, str(c.path).split("/studies/")[1]) for c in cases) == [
        (f"{SERIES}_{study}", f"{study}/series/{SERIES}") for study in (first, second)
    ]
