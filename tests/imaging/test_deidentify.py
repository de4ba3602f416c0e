"""De-identification checked against PS3.15 Table E.1-1 as dicom-anonymizer ships it (no list written here).

The PHI-laden study carries every attribute of the table (top level and nested two levels deep in a kept
sequence), the attributes issue #16 found leaking, private tags, and references between files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import SecondaryCaptureImageStorage

from fresh_process import running_process
from phi_dicom import (
    ISSUE_16_LEAKS,
    PATIENT_ID,
    POLICY,
    SECRET,
    SURNAME,
    TABLE,
    kept_values,
    table_values,
    text_of,
    walk,
    write_phi_study,
)
from sarcoscope.errors import OutputError, SarcoscopeError
from sarcoscope.imaging import read_ct
from sarcoscope.imaging.deidentify.files import deidentify_tree
from sarcoscope.imaging.deidentify.messages import scrub_message
from sarcoscope.imaging.deidentify.policy import (
    SECRET_FILE_ENV,
    DeidentificationError,
    DeidentificationPolicy,
    load_policy,
)
from sarcoscope.imaging.deidentify.profile import deidentify_dataset
from sarcoscope.secret import load_or_create_secret
from sarcoscope.segmentation.quality import coarse_pixel_warning


@pytest.fixture
def phi_files(tmp_path: Path) -> list[Path]:
    return write_phi_study(tmp_path / "phi")


def deidentified(path: Path, policy: DeidentificationPolicy = POLICY) -> Dataset:
    ds = pydicom.dcmread(path)
    deidentify_dataset(ds, policy)
    return ds


def test_every_table_attribute_loses_its_original_value_at_every_depth(phi_files: list[Path]) -> None:
    original = pydicom.dcmread(phi_files[1])
    assert sum(1 for _, e in walk(original) if e.tag in TABLE) > 3 * 500  # the table, three times over
    ds = deidentified(phi_files[1])
    originals = table_values([original])
    assert kept_values(ds, originals) == []
    remapped = [e for _, e in walk(ds) if e.tag in originals and TABLE[e.tag] == "U_TAGS" and not e.is_empty]
    assert len(remapped) > 20
    for elem in remapped:
        assert elem.value in [POLICY.uid(str(v)) for v in originals[elem.tag]], elem.keyword
    assert max(depth for depth, _ in walk(ds)) >= 3  # the kept sequences were walked, not dropped
    text = text_of(ds)
    assert "PHI" not in text and SURNAME not in text and PATIENT_ID not in text


def test_sequences_follow_their_action(phi_files: list[Path]) -> None:
    ds = deidentified(phi_files[1])
    for keyword in ("ReferencedPatientSequence", "OriginalAttributesSequence", "RequestAttributesSequence"):
        assert keyword not in ds  # X
    assert len(ds.ReferencedStudySequence) == 0  # X/Z: emptied
    assert [len(item) for item in ds.ContentSequence] == [0]  # D: one dummy (empty) item
    kept = ds.ProcedureCodeSequence[0].AnatomicRegionSequence[0]
    assert kept.InstitutionName == "ANONYMIZED" and kept.PatientName == ds.PatientID  # cleaned inside
    assert not any(e.tag.is_private for _, e in walk(ds))
    assert not any(e.tag.is_private for _, e in walk(ds.file_meta))


@pytest.mark.parametrize("keyword", list(ISSUE_16_LEAKS))
def test_issue_16_leaks_are_gone(tmp_path: Path, keyword: str) -> None:
    path = write_phi_study(tmp_path / "s", n=1, full_table=False)[0]
    ds = deidentified(path)
    text = text_of(ds)
    for leaked in ISSUE_16_LEAKS[keyword][1]:
        assert leaked not in text


def test_free_text_code_meaning_of_a_local_scheme_is_replaced(tmp_path: Path) -> None:
    path = write_phi_study(tmp_path / "s", n=1, full_table=False)[0]
    ds = pydicom.dcmread(path)
    standard = Dataset()
    standard.CodeValue, standard.CodingSchemeDesignator, standard.CodeMeaning = "818981001", "SCT", "Abdomen"
    ds.AnatomicRegionSequence = [standard]
    deidentify_dataset(ds, POLICY)
    assert ds.ProcedureCodeSequence[0].CodeMeaning == "CTABD"  # scheme 99HOSP: free text replaced
    assert ds.AnatomicRegionSequence[0].CodeMeaning == "Abdomen"  # SNOMED CT: published meaning kept


def test_uids_are_remapped_consistently_across_files(phi_files: list[Path]) -> None:
    before = [pydicom.dcmread(p) for p in phi_files]
    after = [deidentified(p) for p in phi_files]
    for old, new in zip(before, after, strict=True):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            assert new[keyword].value == POLICY.uid(old[keyword].value) != old[keyword].value
            assert new[keyword].value.startswith("2.25.") and len(new[keyword].value) <= 64
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert new.SOPClassUID == old.SOPClassUID  # not an instance UID: kept
    assert len({ds.StudyInstanceUID for ds in after}) == 1
    assert len({ds.SOPInstanceUID for ds in after}) == len(after)
    assert after[2].ReferencedImageSequence[0].ReferencedSOPInstanceUID == after[1].SOPInstanceUID


def test_pseudonym_same_patient_across_studies_other_patient_or_key_differs(tmp_path: Path) -> None:
    first = deidentified(write_phi_study(tmp_path / "a", n=1, full_table=False)[0])
    second = deidentified(write_phi_study(tmp_path / "b", n=1, full_table=False, seed=2)[0])
    other = deidentified(write_phi_study(tmp_path / "c", n=1, full_table=False, patient_id="12345679")[0])
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.PatientID == second.PatientID == str(first.PatientName) == POLICY.pseudonym(PATIENT_ID)
    assert other.PatientID != first.PatientID
    rekeyed = DeidentificationPolicy(secret=bytes(reversed(range(32))))
    assert deidentified(write_phi_study(tmp_path / "d", n=1, full_table=False)[0], rekeyed).PatientID not in (
        first.PatientID,
        "ANON-" + hashlib.sha256(f"sarcoscope:{PATIENT_ID}".encode()).hexdigest()[:12].upper(),
    )


def test_burned_in_annotation_is_refused_unless_accepted(tmp_path: Path, caplog) -> None:
    path = write_phi_study(tmp_path / "s", n=1, full_table=False)[0]
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation is YES"):
        deidentify_dataset(ds.copy(), POLICY)
    capture = pydicom.dcmread(path)
    del capture.BurnedInAnnotation
    capture.SOPClassUID = SecondaryCaptureImageStorage
    with pytest.raises(DeidentificationError, match="secondary capture"):
        deidentify_dataset(capture, POLICY)
    accepting = DeidentificationPolicy(secret=SECRET, accept_burned_in=True)
    with caplog.at_level("WARNING"):
        deidentify_dataset(ds, accepting)
    assert "pixels unchanged" in caplog.text
    assert ds.PatientIdentityRemoved == "NO" and ds.BurnedInAnnotation == "YES"
    assert "Burned-in annotation NOT removed" in ds.DeidentificationMethod[0]


def test_marks_profile_and_options(tmp_path: Path) -> None:
    path = write_phi_study(tmp_path / "s", n=1, full_table=False)[0]
    ds = deidentified(path)
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert all(len(v) <= 64 for v in ds.DeidentificationMethod)
    both = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=True, keep_patient_characteristics=True)
    ds = deidentified(path, both)
    codes = [(c.CodingSchemeDesignator, c.CodeValue) for c in ds.DeidentificationMethodCodeSequence]
    assert codes == [("DCM", "113100"), ("DCM", "113107"), ("DCM", "113108")]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_names_and_dates_the_table_does_not_list_are_not_kept(tmp_path: Path) -> None:
    # SecondaryReviewerName, EvaluatorName, ExpiryDate and TimeOfGainCalibration are not in the table's
    # edition: a name, a date or a time is never kept as it is, listed or not (emptied; shifted with the
    # dates under the option, which keeps the times of day)
    def with_unlisted() -> Dataset:
        ds = pydicom.dcmread(write_phi_study(tmp_path / "s", n=1, full_table=False)[0])
        ds.SecondaryReviewerName = "Jansen^Piet"
        ds.ExpiryDate = "20240301"
        ds.DateOfGainCalibration, ds.TimeOfGainCalibration = "20240301", "101500"
        item = Dataset()
        item.EvaluatorName = "Jansen^Piet"
        ds.AnatomicRegionSequence = [item]
        return ds

    ds = with_unlisted()
    deidentify_dataset(ds, POLICY)
    assert ds.SecondaryReviewerName == "" and ds.ExpiryDate == "" and ds.TimeOfGainCalibration == ""
    assert ds.AnatomicRegionSequence[0].EvaluatorName == "" and "Jansen" not in text_of(ds)
    shifting = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=True)
    ds = with_unlisted()
    deidentify_dataset(ds, shifting)
    assert ds.ExpiryDate not in ("", "20240301") and ds.SecondaryReviewerName == ""
    assert ds.DateOfGainCalibration == ds.ExpiryDate and ds.TimeOfGainCalibration == "101500"


@pytest.mark.parametrize("shifted", [False, True], ids=["dates-removed", "dates-shifted"])
def test_dates_identifiers_and_addresses_the_table_does_not_list_are_not_kept(
    tmp_path: Path, shifted: bool
) -> None:
    # the table's edition lists the birth date and the order numbers, not the birth date in an alternative
    # calendar nor the retired order numbers; nor an address such as RetrieveURL, which holds the original
    # study UID: all were kept as they were
    ds = pydicom.dcmread(write_phi_study(tmp_path / "s", n=1, full_table=False)[0])
    study = str(ds.StudyInstanceUID)
    item = Dataset()
    ds.AnatomicRegionSequence = [item]
    for where in (ds, item):
        where.PatientBirthDateInAlternativeCalendar = "1366/12/25"
        where.PatientDeathDateInAlternativeCalendar = "1445/01/02"
        where.PatientAlternativeCalendar = "I"  # which calendar: no one's date
        where.PlacerOrderNumberProcedure, where.FillerOrderNumberProcedure = "PLC-4711", "FLR-4712"
        where.add_new(0x00402006, "SH", "PLC-4713")
        where.add_new(0x00402007, "SH", "FLR-4714")
        where.RetrieveURL = f"https://pacs.erasmus.invalid/dicomweb/studies/{study}"
        where.RetrieveURI = f"https://pacs.erasmus.invalid/wado?studyUID={study}"
        where.StorageURL = "file://pacs.erasmus.invalid/archive/PAT12345678"
        where.CodingSchemeURL = "http://snomed.info/sct"  # published: kept
    policy = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=shifted)
    deidentify_dataset(ds, policy)
    text = text_of(ds)
    for value in (
        "1366/12/25",
        "1445/01/02",
        "PLC-4711",
        "FLR-4712",
        "PLC-4713",
        "FLR-4714",
        "erasmus",
        study,
    ):
        assert value not in text, value
    for where in (ds, item):
        assert where.CodingSchemeURL == "http://snomed.info/sct" and where.PatientAlternativeCalendar == "I"
        assert where.PlacerOrderNumberProcedure == "" and "PatientBirthDateInAlternativeCalendar" not in where


#: The UID attributes of the standard's dictionary that the table's edition does not list.
_UNLISTED_UIDS = [
    Tag(tag)
    for tag, (vr, *_) in DicomDictionary.items()
    if vr == "UI" and Tag(tag).group not in (0x0000, 0x0002, 0x0004) and Tag(tag) not in TABLE
]
#: Those that name a published identifier, not the patient's data.
_PUBLISHED = re.compile(
    "SOPClass|TransferSyntax|CodingSchemeUID|ContextUID|MappingResource|Template|CreatorVersion"
)


def test_uids_the_table_does_not_list_are_remapped_unless_published(tmp_path: Path) -> None:
    # SOPInstanceUIDOfConcatenationSource (an enhanced CT stored in parts: the whole image's UID),
    # MultiFrameSourceSOPInstanceUID, TableFrameOfReferenceUID... are not in the table's edition: they were
    # kept as they were, the hospital's UIDs of this patient's images in a "de-identified" copy
    ds = pydicom.dcmread(write_phi_study(tmp_path / "s", n=1, full_table=False)[0])
    item = Dataset()
    ds.AnatomicRegionSequence = [item]
    original = {tag: f"1.2.826.0.1.3680043.10.777.{n}" for n, tag in enumerate(_UNLISTED_UIDS)}
    original[Tag("ReferencedSOPClassUID")] = "1.3.12.2.1107.5.9.1"  # a private SOP class is a class too
    original[Tag("SOPClassUID")] = ds.SOPClassUID
    # a colour palette the standard registers (Hot Iron) names no one's data
    original[Tag("ReferencedColorPaletteInstanceUID")] = "1.2.840.10008.1.5.1"
    for where in (ds, item):
        for tag, uid in original.items():
            where.add_new(tag, "UI", uid)
    deidentify_dataset(ds, POLICY)
    published = {tag for tag in _UNLISTED_UIDS if _PUBLISHED.search(keyword_for_tag(tag))}
    assert len(published) == 18 and len(_UNLISTED_UIDS) > 30
    for where in (ds, item):
        kept = {tag for tag in _UNLISTED_UIDS if where[tag].value == original[tag]}
        assert kept == published | {Tag("ReferencedColorPaletteInstanceUID")}
        for tag in set(_UNLISTED_UIDS) - kept:
            assert where[tag].value == POLICY.uid(original[tag]), keyword_for_tag(tag)


def test_free_text_describing_an_object_or_its_overlays_is_not_kept(tmp_path: Path) -> None:
    """ContentDescription and an overlay's description and label are outside the table: kept as they were,
    they named the editor of sarcoscope's own identified SEG ("edited by <user>", a staff name the profile
    removes from OperatorsName) and whatever a workstation wrote beside an overlay."""
    ds = pydicom.dcmread(write_phi_study(tmp_path / "s", n=1, full_table=False)[0])
    ds.ContentLabel = "L3_TISSUES"
    ds.ContentDescription = "L3 tissues; edited by jdevries; model unet-v3"
    ds.add_new(0x60000022, "LO", f"ROI of {SURNAME}")  # Overlay Description
    ds.add_new(0x60021500, "LO", f"{SURNAME} marker")  # Overlay Label, second overlay group
    ds.add_new(0x60000010, "US", 24)  # Overlay Rows: not text, kept
    deidentify_dataset(ds, POLICY)
    assert ds.ContentDescription == "" and ds.ContentLabel == "L3_TISSUES"
    assert 0x60000022 not in ds and 0x60021500 not in ds and ds[0x60000010].value == 24
    assert "jdevries" not in text_of(ds) and SURNAME not in text_of(ds)


def test_a_segments_label_and_description_and_an_srs_completion_note_are_not_kept(tmp_path: Path) -> None:
    """A SEG's SegmentLabel and SegmentDescription and an SR's CompletionFlagDescription are the user's own
    words outside the table (a workstation's segment "Tumour J. Jansen"): kept as they were, they named the
    patient in `sarcoscope deidentify`'s copy of a study holding them. The label (type 1) becomes its
    segment's coded meaning (a local scheme's: its code, as for every CodeMeaning), or "Segment <n>"."""
    ds = pydicom.dcmread(write_phi_study(tmp_path / "s", n=1, full_table=False)[0])
    coded, local, bare = Dataset(), Dataset(), Dataset()
    for item, number in ((coded, 1), (local, 2), (bare, 3)):
        item.SegmentNumber = number
        item.SegmentLabel = f"Tumour {SURNAME} {number}"
        item.SegmentDescription = f"drawn for {SURNAME}"
    coded.SegmentedPropertyTypeCodeSequence = [_code("71854001", "SCT", "Skeletal muscle")]
    local.SegmentedPropertyTypeCodeSequence = [_code("T1", "99LOCAL", f"{SURNAME}'s lesion")]
    ds.SegmentSequence = [coded, local, bare]
    ds.CompletionFlagDescription = f"checked with {SURNAME}"
    deidentify_dataset(ds, POLICY)
    assert [str(item.SegmentLabel) for item in ds.SegmentSequence] == ["Skeletal muscle", "T1", "Segment 3"]
    assert not any("SegmentDescription" in item for item in ds.SegmentSequence)
    assert "CompletionFlagDescription" not in ds and SURNAME not in text_of(ds)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_dates_shifted_keep_intervals_per_patient(tmp_path: Path) -> None:
    shifting = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=True)
    one = pydicom.dcmread(write_phi_study(tmp_path / "a", n=1, full_table=False)[0])
    two = pydicom.dcmread(write_phi_study(tmp_path / "b", n=1, full_table=False, seed=2)[0])
    two.StudyDate = "20240401"
    for ds in (one, two):
        deidentify_dataset(ds, shifting)
    offset = shifting.date_offset_days(PATIENT_ID)
    assert -3652 <= offset <= -366
    day = np.datetime64
    assert day(f"{one.StudyDate[:4]}-{one.StudyDate[4:6]}-{one.StudyDate[6:]}") == day("2024-01-02") + offset
    assert int(one.AcquisitionDate) != 20240103 and one.AcquisitionDate > one.StudyDate  # one day later
    gap = day(f"{two.StudyDate[:4]}-{two.StudyDate[4:6]}-{two.StudyDate[6:]}") - day(
        f"{one.StudyDate[:4]}-{one.StudyDate[4:6]}-{one.StudyDate[6:]}"
    )
    assert gap == np.timedelta64(90, "D")  # 2024-01-02 -> 2024-04-01, the interval survives
    assert one.PatientBirthDate == ""  # not covered by the option
    plain = deidentified(write_phi_study(tmp_path / "c", n=1, full_table=False)[0])
    assert plain.StudyDate == plain.AcquisitionDate == ""


def test_patient_characteristics_kept_only_with_the_option(tmp_path: Path) -> None:
    path = write_phi_study(tmp_path / "s", n=1, full_table=False)[0]
    plain = deidentified(path)
    assert plain.PatientSex == "" and not {"PatientAge", "PatientSize", "PatientWeight"} & set(plain.dir())
    keeping = DeidentificationPolicy(secret=SECRET, keep_patient_characteristics=True)
    kept = deidentified(path, keeping)
    assert (kept.PatientSex, kept.PatientAge, kept.PatientSize, kept.PatientWeight) == ("F", "077Y", 1.72, 61)
    assert kept.PatientBirthDate == ""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"secret": "a text, not bytes" * 4},
        {"secret": SECRET, "keep_dates_shifted": "yes"},
    ],
)
def test_policy_refuses_bad_state(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DeidentificationError):
        DeidentificationPolicy(**kwargs)


def test_deidentified_series_reads_with_the_same_hu(phi_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = deidentify_tree(phi_files[0].parent, out, POLICY)
    assert summary.written == 3 and summary.patients == {POLICY.pseudonym(PATIENT_ID)}
    before, after = read_ct(phi_files[0].parent), read_ct(out)
    np.testing.assert_array_equal(before.hu, after.hu)
    assert after.metadata.patient_id == POLICY.pseudonym(PATIENT_ID)
    assert after.metadata.series_instance_uid == POLICY.uid(before.metadata.series_instance_uid)


def test_tree_skips_non_dicom_refuses_burned_in_and_names_files_by_pseudonym(tmp_path: Path) -> None:
    src = tmp_path / f"{SURNAME}_{PATIENT_ID}"
    paths = write_phi_study(src, n=3, full_table=False)
    (src / "notes.txt").write_text("not DICOM")
    burned = pydicom.dcmread(paths[2])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(paths[2])
    summary = deidentify_tree(src, tmp_path / "out", POLICY)
    assert (summary.written, summary.non_dicom, len(summary.burned_in_refused)) == (2, 1, 1)
    written = [p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.dcm")]
    assert len(written) == 2
    assert all(SURNAME not in str(p) and PATIENT_ID not in str(p) for p in written)
    assert {p.parts[0] for p in written} == {POLICY.pseudonym(PATIENT_ID)}
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation"):
        deidentify_tree(paths[2], tmp_path / "single", POLICY)  # one file: refused outright
    assert not (tmp_path / "single").exists()
    accepting = DeidentificationPolicy(secret=SECRET, accept_burned_in=True)
    assert deidentify_tree(src, tmp_path / "all", accepting).burned_in_accepted == 1


def test_tree_reads_zip_and_refuses_a_non_empty_output(phi_files: list[Path], tmp_path: Path) -> None:
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in phi_files:
            zf.write(p, f"{SURNAME}/{p.name}")
    assert deidentify_tree(archive, tmp_path / "out", POLICY).written == 3
    with pytest.raises(OutputError, match="not empty"):
        deidentify_tree(archive, tmp_path / "out", POLICY)
    (tmp_path / "empty").mkdir()
    assert deidentify_tree(archive, tmp_path / "empty", POLICY).written == 3


def test_tree_with_nothing_to_write_leaves_no_output(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    with pytest.raises(DeidentificationError, match="No DICOM file"):
        deidentify_tree(tmp_path / "in", tmp_path / "out", POLICY)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_the_unfinished_copy_of_a_killed_run_is_removed_by_the_next_and_a_running_ones_is_not(
    phi_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run writes its copy into `.out.<random>.partial` beside `out` and renames it at the end; one killed
    (kill -9, the out-of-memory killer) left that folder of a patient's images for good. The next run beside
    it now removes it once nobody holds its lock file, and leaves a running one's."""
    src, parent = phi_files[0].parent, tmp_path / "deid"
    writing = (
        "import sys\n"
        "from pathlib import Path\n"
        "from phi_dicom import POLICY\n"
        "from sarcoscope.imaging.deidentify.files import deidentify_tree\n"
        f"out = Path({str(parent / 'out')!r})\n"
        "def stop(done, total):\n"
        "    (partial,) = out.parent.glob('.out.*.partial')\n"
        "    print(partial, flush=True)\n"
        "    sys.stdin.read()\n"
        f"deidentify_tree(Path({str(src)!r}), out, POLICY, progress=stop)\n"
    )
    with running_process(writing) as (writer, said):
        partial = Path(said)
        assert partial.parent == parent and len(list(partial.rglob("*.dcm"))) == 1
        assert deidentify_tree(src, parent / "second", POLICY).written == 3
        assert len(list(partial.rglob("*.dcm"))) == 1  # its writer runs
        writer.kill()
        writer.wait()
    with caplog.at_level(logging.INFO, logger="sarcoscope.fileio"):
        assert deidentify_tree(src, parent / "third", POLICY).written == 3
    assert sorted(p.name for p in parent.iterdir()) == ["second", "third"]
    said_removed = [r.getMessage() for r in caplog.records if "unfinished" in r.getMessage()]
    assert said_removed == ["Removed 1 unfinished output folder(s) that stopped runs left."]


def test_secret_file_created_private_reused_and_overridable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "keys" / "deid.key"
    first = load_or_create_secret(path)
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    monkeypatch.setenv(SECRET_FILE_ENV, str(path))
    assert load_policy().secret == first
    other = tmp_path / "other.key"
    assert load_policy(other).secret == other.read_bytes() != first  # --secret-file wins
    monkeypatch.delenv(SECRET_FILE_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert load_policy().secret == (tmp_path / "config" / "sarcoscope" / "deidentification.key").read_bytes()
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    os.chmod(short, 0o600)
    with pytest.raises(SarcoscopeError, match="holds 3 bytes"):
        load_policy(short)


def test_a_secret_file_other_users_can_read_is_warned_about(tmp_path: Path, caplog) -> None:
    path = tmp_path / "deid.key"
    load_or_create_secret(path)
    with caplog.at_level(logging.WARNING):
        load_or_create_secret(path)
        assert "readable by other users" not in caplog.text
        path.chmod(0o604)
        assert len(load_or_create_secret(path)) == 32  # still usable
    assert f"The secret key file {path} is readable by other users (mode 604): chmod 600 it." in caplog.text


@pytest.mark.parametrize("name", ["ts_thoracoabdominal_j2k", "dcmqi_ct3slice"])
def test_real_series_deidentified_reads_the_same(shared_data: Path, tmp_path: Path, name: str) -> None:
    src = shared_data / "real" / "dicom_series" / name
    summary = deidentify_tree(src, tmp_path / "out", POLICY)
    before, after = read_ct(src), read_ct(tmp_path / "out")
    np.testing.assert_array_equal(before.hu, after.hu)
    np.testing.assert_allclose(before.slice_positions, after.slice_positions)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in src.iterdir() if p.suffix != ".nrrd"]
    originals = table_values(headers)
    assert len(headers) == before.n_slices and originals
    for path in (tmp_path / "out").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert kept_values(ds, originals) == [] and ds.PatientIdentityRemoved == "YES"
        assert not any(e.tag.is_private for _, e in walk(ds))
    assert summary.written == before.n_slices


def test_messages_are_scrubbed_for_deidentified_outputs() -> None:
    uid = "1.2.826.0.1.3680043.2.77"
    text = f"read {uid} ('CT Jansen^Piet', 84 slices) from /data/Jansen/x.dcm; 1776 bytes, slice 1 of 1.5 mm"
    scrubbed = scrub_message(text, POLICY, "/data/Jansen")
    assert scrubbed == (
        f"read {POLICY.uid(uid)} ('ANONYMIZED', 84 slices) from <input>; 1776 bytes, slice 1 of 1.5 mm"
    )
    # the bare folder name only as a word: a case folder named "1" leaves the numbers alone
    assert scrub_message("case 1 failed at 192x192", POLICY, "/cohort/1") == "case <input> failed at 192x192"
    assert scrub_message("PatientSize 172 looks like centimetres", POLICY) is None
    keeping = DeidentificationPolicy(secret=POLICY.secret, keep_patient_characteristics=True)
    assert scrub_message("PatientSize 172 looks like centimetres", keeping) == (
        "PatientSize 172 looks like centimetres"
    )


def test_messages_lose_names_below_the_input_with_spaces_commas_and_both_quotes(tmp_path: Path) -> None:
    """Folder and file names below the input may name the patient and hold spaces or commas: each one is
    known (the folder walked, the zip listed), so the path ends where they end; a file's name alone goes
    too."""
    case = tmp_path / "case01"
    (case / "Jansen, Piet (PID12345)").mkdir(parents=True)
    (case / "Jansen, Piet (PID12345)" / "CT0060.dcm").write_bytes(b"")
    text = f"truncated pixel data in {case}/Jansen, Piet (PID12345)/CT0060.dcm: 10 of 20 bytes"
    assert scrub_message(text, POLICY, case) == "truncated pixel data in <input>: 10 of 20 bytes"
    archive = tmp_path / "case7.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Jansen Piet/CT0060.dcm", b"")
        zf.writestr("Jansen_Piet_PID12345.nii.gz", b"")
    assert (
        scrub_message("in zip case7.zip/Jansen Piet/CT0060.dcm: bad", POLICY, archive)
        == "in zip <input>: bad"
    )
    assert scrub_message("Jansen_Piet_PID12345.nii.gz has no spatial transform", POLICY, archive) == (
        "<file> has no spatial transform"
    )
    # a description holding both kinds of quote, as Python's repr quotes it
    description = 'Piet Jansen\'s "scout" PID12345'
    both = f"read {description!r} (3 axial slices)"
    assert scrub_message(both, POLICY) == "read 'ANONYMIZED' (3 axial slices)"


def test_an_apostrophe_is_no_quote() -> None:
    """A possessive's apostrophe opened a quote: the coarse-pixel warning of every de-identified report lost
    its middle ("diagnostic CT'ANONYMIZED's mean HU"), and a quoted description after a possessive was
    left whole, its quotes paired with the apostrophe and the next quoted value."""
    warning = coarse_pixel_warning((1.6, 1.6))
    assert warning is not None and warning.count("'") >= 2
    assert scrub_message(warning, POLICY) == warning
    text = "stored mirrored (rows toward the patient's right); read 'CT Jansen' and 'Piet' (3 slices)"
    assert scrub_message(text, POLICY) == (
        "stored mirrored (rows toward the patient's right); read 'ANONYMIZED' and 'ANONYMIZED' (3 slices)"
    )


def test_file_meta_keeps_only_what_reading_needs(phi_files: list[Path]) -> None:
    """Group 0002 names the sending systems and may carry private information: only the elements reading
    needs stay, naming the de-identified instance."""
    ds = pydicom.dcmread(phi_files[0])
    ds.file_meta.SourceApplicationEntityTitle = "JANSENAE"
    ds.file_meta.SendingApplicationEntityTitle = "ELSEWHERE_CT"
    ds.file_meta.SourcePresentationAddress = "http://elsewhere.example/jansen"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4.555.77"
    ds.file_meta.PrivateInformation = b"Jansen^Piet PID12345"
    deidentify_dataset(ds, POLICY)
    assert {e.keyword for e in ds.file_meta} <= {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
    }
    assert (
        ds.file_meta.MediaStorageSOPInstanceUID
        == ds.SOPInstanceUID
        != pydicom.dcmread(phi_files[0]).SOPInstanceUID
    )


def _encapsulated_pdf(study: Dataset) -> Dataset:
    """A scanned request form, as archives file it with the CT: the patient in its title and its text."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.PatientName, ds.PatientID = f"{SURNAME}^Piet", PATIENT_ID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.StudyInstanceUID, pydicom.uid.generate_uid()
    ds.Modality, ds.BurnedInAnnotation = "DOC", "NO"
    ds.DocumentTitle = f"CT request {SURNAME}"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = f"%PDF-1.4 (Patient: {SURNAME} {PATIENT_ID}) %%EOF ".encode()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds


def test_an_encapsulated_document_is_left_out_not_copied_with_its_title(tmp_path: Path) -> None:
    """A PDF (or CDA) filed with the study was written as "de-identified" with its DocumentTitle, which the
    table does not list, as it was (here the patient's name) and the document replaced by the 10 bytes
    "Anonymized": a broken object that still named the patient. It is left out, listed by its remapped
    UID like a burned-in image, and refused as a single file; the CT images are written."""
    src = tmp_path / "in"
    paths = write_phi_study(src, n=2, full_table=False)
    pdf = _encapsulated_pdf(pydicom.dcmread(paths[0]))
    pdf.save_as(src / "request.dcm", enforce_file_format=True)
    summary = deidentify_tree(src, tmp_path / "out", POLICY)
    assert summary.written == 2
    assert summary.documents_refused == [
        f"document {POLICY.uid(pdf.SOPInstanceUID)} (an encapsulated application/pdf whose content cannot "
        "be de-identified)"
    ]
    for path in (tmp_path / "out").rglob("*.dcm"):
        data = path.read_bytes()
        assert SURNAME.encode() not in data and b"%PDF" not in data, path
    with pytest.raises(DeidentificationError, match="encapsulated application/pdf"):
        deidentify_tree(src / "request.dcm", tmp_path / "single", POLICY)
    assert not (tmp_path / "single").exists() and not list(tmp_path.glob(".single.*"))
