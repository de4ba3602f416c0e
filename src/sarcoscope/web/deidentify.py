"""De-identification of DICOM files leaving the server through "Download selected DICOM".

Follows the DICOM PS3.15 basic profile for the attributes a CT slice carries in practice, with the
Retain UIDs option (so that labels exported later still reference these images): names, identifiers,
dates, times, addresses, free-text comments, institution and device details and all private tags are
removed or emptied; the patient id becomes a pseudonym derived from it (stable, not reversible).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

#: Removed attributes (keywords). Type 2 ones that must stay present are emptied instead.
_REMOVE = (
    "PatientBirthTime",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "OperatorsName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    "RequestAttributesSequence",
    "ImageComments",
    "StudyDescription",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "AcquisitionDateTime",
    "AdmittingDiagnosesDescription",
    "IssuerOfPatientID",
)
_EMPTY = (
    "PatientName",
    "PatientBirthDate",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
)


def pseudonym(patient_id: str) -> str:
    return "ANON-" + hashlib.sha256(f"sarcoscope:{patient_id}".encode()).hexdigest()[:12].upper()


def deidentify_dataset(ds: Dataset) -> Dataset:
    """Strip identifying attributes from `ds` in place (see module docstring) and mark it de-identified."""
    for keyword in _REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in _EMPTY:
        if keyword in ds:
            ds.data_element(keyword).value = ""
    ds.PatientID = pseudonym(str(ds.get("PatientID", "")))
    ds.remove_private_tags()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "sarcoscope: PS3.15 basic profile subset; UIDs retained"
    return ds


def deidentify(path: Path) -> bytes:
    """The file at `path`, de-identified, as DICOM bytes (the stored original is not changed)."""
    ds = pydicom.dcmread(path)
    deidentify_dataset(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
