"""Study rows for tests of the store and the lists built on it: no images behind them (nothing reads any)."""

from __future__ import annotations

from sarcoscope.store import Study, new_study_id


def study_row(series_uid: str = "1.2.3.4", patient_id: str = "PSEUDO-1") -> Study:
    """A study of ten 4×5 slices, as an upload of a DICOM series would make it."""
    return Study(
        id=new_study_id(),
        study_uid="1.2.3",
        series_uid=series_uid,
        patient_id=patient_id,
        study_date="20240101",
        series_description="abdomen",
        source_kind="dicom",
        n_slices=10,
        rows=4,
        cols=5,
        spacing=[2.0, 0.8, 0.8],
        upload_bytes=1234,
        status="uploaded",
        created_by="alice",
    )
