"""A small synthetic CT series written as DICOM, with exactly known HU, for the web app tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from sarcoscope.imaging import CTMetadata, write_dicom_series

SHAPE = (12, 96, 96)
SPACING = (3.0, 4.0, 4.0)


def synthetic_hu(seed: int = 0) -> np.ndarray:
    """An elliptic 'abdomen': SAT ring, muscle ring, visceral fat and organs, a bright vertebra."""
    nz, ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    r = np.sqrt(((yy - ny / 2) / 34.0) ** 2 + ((xx - nx / 2) / 44.0) ** 2)
    hu = np.full((ny, nx), -1000, np.int16)
    hu[r < 1.0] = -100  # SAT
    hu[r < 0.85] = 50  # muscle wall
    hu[r < 0.72] = -90  # visceral fat
    organs = np.sqrt(((yy - ny / 2 + 6) / 14.0) ** 2 + ((xx - nx / 2) / 22.0) ** 2) < 1.0
    hu[organs] = 40
    spine = np.sqrt(((yy - ny / 2 - 14) / 6.0) ** 2 + ((xx - nx / 2) / 6.0) ** 2) < 1.0
    hu[spine] = 700
    noise = np.random.default_rng(seed).integers(-4, 5, size=(nz, ny, nx))
    return (hu[None] + noise).astype(np.int16)


def turned(tilt: float, spin: float) -> np.ndarray:
    """Columns: the LPS directions of the image's rows, columns and slices, tilted `tilt` degrees about the
    left-right axis (as a gantry tilted without shear) after turning `spin` degrees in the image plane."""
    a, b = np.deg2rad(tilt), np.deg2rad(spin)
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return about_x @ about_z


def write_series(
    out: Path, seed: int = 0, patient_id: str = "PAT-001", hu: np.ndarray | None = None
) -> list[Path]:
    """The synthetic series (or `hu`, e.g. one of its slices) as DICOM files in `out`."""
    meta = CTMetadata(
        patient_id=patient_id, patient_sex="F", study_date="20240131", series_description="synthetic"
    )
    hu = synthetic_hu(seed) if hu is None else hu
    return write_dicom_series(hu, SPACING, out, metadata=meta, seed=seed)


#: The series of `write_exam`: description, slice step (of the synthetic series' 12 slices), thickness (mm)
#: and contrast agent.
EXAM = (
    ("Abdomen PV 3.0", 1, 3.0, "Omnipaque"),  # the most slices: the CLI's (and the web app's) default
    ("Abdomen ART 6.0", 2, 6.0, "Omnipaque"),
    ("Abdomen 9.0", 3, 9.0, None),  # no phase word, no agent: the phase is unknown
)


def write_exam(out: Path, patient_id: str = "PAT-EXAM") -> dict[str, list[Path]]:
    """One patient's exam as a PACS export holds it: a localizer image, then the axial series of EXAM
    (portal-venous thin, arterial thick, a reconstruction without phase) in one study, folder per series."""
    import pydicom
    from pydicom.uid import generate_uid

    study = str(generate_uid(entropy_srcs=["web-synth-exam", patient_id]))
    hu = synthetic_hu(7)
    files: dict[str, list[Path]] = {}
    for n, (description, step, thickness, agent) in enumerate(EXAM):
        meta = CTMetadata(
            patient_id=patient_id,
            patient_sex="M",
            study_date="20240131",
            study_instance_uid=study,
            series_description=description,
            slice_thickness_mm=thickness,
            contrast_agent=agent,
        )
        spacing = (SPACING[0] * step, *SPACING[1:])
        files[description] = write_dicom_series(
            hu[::step], spacing, out / f"series{n}", metadata=meta, seed=100 + n
        )
    scout_meta = CTMetadata(patient_id=patient_id, study_instance_uid=study, series_description="Topogram")
    (scout,) = write_dicom_series(hu[:1], SPACING, out / "scout", metadata=scout_meta, seed=99)
    ds = pydicom.dcmread(scout)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(scout)
    files["Topogram"] = [scout]
    return files


#: The StudyInstanceUID `write_exam_of_two_studies` gives the arterial series.
ARTERIAL_STUDY_UID = "1.2.826.0.1.3680043.8.498.4711"


def write_exam_of_two_studies(out: Path) -> dict[str, list[Path]]:
    """`write_exam`, with its arterial series in another study (ARTERIAL_STUDY_UID) of the same patient, as
    a PACS export of two exams holds it: its ct lock is another StudyUID's."""
    import pydicom

    files = write_exam(out)
    for path in files["Abdomen ART 6.0"]:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = ARTERIAL_STUDY_UID
        ds.save_as(path)
    return files


def zip_bytes(files: list[Path], root: Path | None = None) -> bytes:
    """The files in a zip, under `series/`, or by their path below `root` (several series of one name)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, f"series/{f.name}" if root is None else str(f.relative_to(root)))
    return buf.getvalue()


def multipart(files: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f.name, f.read_bytes(), "application/dicom")) for f in files]
