"""De-identified outputs of one analysis: the SEG, report.json and metrics.csv name nobody and agree with
the de-identified CT (same pseudonym, same remapped UIDs); burned-in annotation stops the whole run."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path

import highdicom as hd
import jsonschema
import numpy as np
import pydicom
import pytest

from phi_dicom import (
    ISO_2022_NAMES,
    NON_ASCII_NAMES,
    POLICY,
    SECRET,
    SENTINEL_PATIENT_ID,
    SURNAME,
    add_phi,
    header_sentinels,
    kept_values,
    leaks,
    table_values,
    text_of,
    walk,
    write_sentinel_series,
    written_bytes,
)
from sarcoscope.conventions import Label
from sarcoscope.export import report_schema, write_outputs
from sarcoscope.export.report import build_report, metrics_csv
from sarcoscope.export.writer import DICOM_RESULTS
from sarcoscope.imaging.deidentify.policy import DeidentificationError, DeidentificationPolicy
from sarcoscope.imaging.deidentify.profile import deidentify_dataset
from sarcoscope.imaging.dicom_reader import patient_key


@pytest.fixture
def phi_result(make_result):
    """A two-slice DICOM result whose CT headers carry PHI everywhere (PatientID P1)."""
    result = make_result((4, 5), dicom=True)
    for ds in result.volume.dicom_headers:
        add_phi(ds)
        ds.BurnedInAnnotation = "NO"
    result.volume.metadata.patient_id = "P1"
    result.volume.metadata.study_instance_uid = result.volume.dicom_headers[0].StudyInstanceUID
    result.volume.metadata.series_instance_uid = result.volume.dicom_headers[0].SeriesInstanceUID
    result.volume.metadata.series_description = f"CT {SURNAME}"
    result.volume.metadata.contrast_agent = f"Omnipaque for {SURNAME}"
    result.warnings.append(f"Contrast-enhanced CT (Omnipaque for {SURNAME})")
    result.volume.warnings.append(f"{result.volume.source_path}/{SURNAME}/CT1.dcm lacks ImagePositionPatient")
    # as the DICOM reader words them: the series by UID and (quoted) description, a patient characteristic
    series = result.volume.metadata.series_instance_uid
    result.volume.warnings.append(
        f"2 CT series found; read {series} ('Abdomen {SURNAME}', 84 axial slices); others: "
        f'1.2.826.0.1.99.7 ("{SURNAME}\'s bones", 20 axial slices) '
        "(choose one with --series, or series_uid= in Python)"
    )
    result.volume.warnings.append("PatientSize 172 looks like centimetres; used 1.72 m")
    return result


def test_outputs_are_deidentified_consistently(phi_result, tmp_path: Path) -> None:
    headers = phi_result.volume.dicom_headers
    originals = table_values(headers)
    written = write_outputs(phi_result, tmp_path / "out", POLICY)

    seg = pydicom.dcmread(written["dicom_seg"])
    assert kept_values(seg, originals) == []
    text = text_of(seg)
    assert SURNAME not in text and "PHI" not in text and "P1" not in text.split()
    assert seg.PatientID == str(seg.PatientName) == POLICY.pseudonym("P1")
    assert seg.PatientBirthDate == "" and seg.PatientIdentityRemoved == "YES"
    assert seg.ContentDate == seg.StudyDate == ""  # no date of the scan, nor of the analysis
    # the SEG references the CT files exactly as the DICOM download de-identifies them
    downloaded = []
    for i in (4, 5):
        downloaded.append(copy.deepcopy(headers[i]))
        deidentify_dataset(downloaded[-1], POLICY)
    assert seg.StudyInstanceUID == downloaded[0].StudyInstanceUID == POLICY.uid(headers[4].StudyInstanceUID)
    assert seg.FrameOfReferenceUID == downloaded[0].FrameOfReferenceUID
    referenced = {uid for _, _, uid in hd.seg.segread(written["dicom_seg"]).get_source_image_uids()}
    assert referenced == {d.SOPInstanceUID for d in downloaded}

    # the SR and the QC capture: same pseudonym and study, nothing of the original left, no real dates
    for kind in ("dicom_sr", "qc_capture"):
        other = pydicom.dcmread(written[kind])
        assert kept_values(other, originals) == [], kind
        assert SURNAME not in text_of(other) and "PHI" not in text_of(other)
        assert other.PatientID == seg.PatientID and other.StudyInstanceUID == seg.StudyInstanceUID
        assert other.ContentDate == other.StudyDate == "" and other.PatientIdentityRemoved == "YES"
    sr = hd.sr.srread(written["dicom_sr"])
    segment = sr.content.get_planar_roi_measurement_groups()[0].referenced_segmentation_frame
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert segment.source_image_for_segmentation.referenced_sop_instance_uid == downloaded[0].SOPInstanceUID

    report = json.loads(written["report"].read_text())
    jsonschema.validate(report, report_schema())
    dumped = json.dumps(report)
    assert SURNAME not in dumped and "/data/case1" not in dumped and "P1" not in dumped
    assert report["input"]["source_path"] is None
    assert report["input"]["metadata"]["study_instance_uid"] == seg.StudyInstanceUID
    assert report["input"]["series_instance_uid"] == downloaded[0].SeriesInstanceUID
    assert report["deidentification"]["patient_pseudonym"] == seg.PatientID
    assert report["deidentification"]["codes"] == ["113100"]
    assert report["input"]["metadata"]["patient_sex"] is report["assessment"]["patient"]["sex"] is None
    assert report["assessment"]["smi"]["status"] == "computed"  # the results stay
    # the BMI with the SMI and the muscle area would give the weight the headers lost
    assert report["assessment"]["bmi"]["status"] == "not computed"
    assert "value" not in report["assessment"]["bmi"]
    # warnings: UIDs remapped as everywhere else, descriptions and the patient's height gone
    (series_note,) = [w for w in report["input"]["warnings"] if "CT series found" in w]
    assert headers[4].SeriesInstanceUID not in series_note and "1.2.826.0.1.99.7" not in series_note
    assert series_note.startswith(f"2 CT series found; read {downloaded[0].SeriesInstanceUID} ('ANONYMIZED'")
    assert POLICY.uid("1.2.826.0.1.99.7") in series_note and "bones" not in series_note
    # as numbers of their own (a remapped UID's 39 random digits may hold "172")
    assert not re.search(r"(?<![\d.])(1\.72|172)(?![\d.])", dumped)
    # nor in the SR: its body height is the PatientSize the DICOM headers lost
    assert "Body height" not in text_of(pydicom.dcmread(written["dicom_sr"]))

    assert written["metrics"].read_text() == metrics_csv(phi_result)  # no patient field to remove


def test_report_keeps_patient_characteristics_with_the_option(phi_result) -> None:
    keeping = DeidentificationPolicy(secret=SECRET, keep_patient_characteristics=True)
    report = build_report(phi_result, deidentification=keeping)
    assert report["input"]["metadata"]["patient_sex"] == "M"
    assert report["assessment"]["patient"]["height_m"] == pytest.approx(1.7)
    assert report["assessment"]["bmi"] == build_report(phi_result)["assessment"]["bmi"]
    assert report["deidentification"]["codes"] == ["113100", "113108"]
    assert "PatientSize 172 looks like centimetres; used 1.72 m" in report["input"]["warnings"]
    plain = build_report(phi_result)
    assert "deidentification" not in plain and plain["input"]["source_path"] == "/data/case1"


def test_burned_in_annotation_stops_a_deidentified_run(phi_result, tmp_path: Path) -> None:
    phi_result.volume.dicom_headers[0].BurnedInAnnotation = "YES"  # not even an analysed slice
    with pytest.raises(DeidentificationError, match="BurnedInAnnotation is YES"):
        write_outputs(phi_result, tmp_path / "out", POLICY)
    assert not (tmp_path / "out").exists()
    accepting = DeidentificationPolicy(secret=SECRET, accept_burned_in=True)
    written = write_outputs(phi_result, tmp_path / "out", accepting)
    assert pydicom.dcmread(written["dicom_seg"]).PatientID == POLICY.pseudonym("P1")
    # the QC capture shows the series' pixels (the slice, and the reconstructions through every slice), the
    # text burned into them included: it was marked PatientIdentityRemoved YES; the SEG and SR show none
    capture = pydicom.dcmread(written["qc_capture"])
    assert capture.PatientIdentityRemoved == "NO"
    assert "Burned-in annotation NOT removed from pixel data" in capture.DeidentificationMethod
    for kind in ("dicom_seg", "dicom_sr"):
        assert pydicom.dcmread(written[kind]).PatientIdentityRemoved == "YES", kind


def test_deidentified_seg_still_reads_back_the_labels(phi_result, tmp_path: Path) -> None:
    written = write_outputs(phi_result, tmp_path / "out", POLICY)
    seg = hd.seg.segread(written["dicom_seg"])
    uids = [POLICY.uid(phi_result.volume.dicom_headers[i].SOPInstanceUID) for i in (4, 5)]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])
    np.testing.assert_array_equal(masks[..., 0] > 0, phi_result.labels == 1)


def _shifted_day(day: str, policy: DeidentificationPolicy, key: str) -> str:
    """`day` (YYYYMMDD) moved by the patient's offset, as the de-identification moves the study's dates."""
    moved = dt.datetime.strptime(day, "%Y%m%d") + dt.timedelta(days=policy.date_offset_days(key))
    return moved.strftime("%Y%m%d")


def _assert_dates_are_the_studys(written: dict[str, Path], date: str, time: str) -> None:
    """Every DA, DT and TM of every written DICOM object (nested sequences included) is empty or the
    de-identified study's date and time; report.json holds no date (metrics.csv has no date column)."""
    allowed = {"DA": {"", date}, "TM": {"", time}, "DT": {"", date + time}}
    for kind in DICOM_RESULTS:
        ds = pydicom.dcmread(written[kind])
        dates = [(e.keyword, e.VR, str(e.value or "")) for _, e in walk(ds) if e.VR in allowed]
        assert [d for d in dates if d[2] not in allowed[d[1]]] == [], kind
        assert (ds.StudyDate, ds.ContentDate, ds.ContentTime) == (date, date, time), kind
    assert json.loads(written["report"].read_text())["created_utc"] is None
    assert "date" not in written["metrics"].read_text().splitlines()[0]


@pytest.mark.parametrize("shifted", [False, True], ids=["dates-removed", "dates-shifted"])
def test_outputs_carry_no_real_date_of_the_analysis(phi_result, tmp_path: Path, shifted: bool) -> None:
    # highdicom's ContributionDateTime (ContributingEquipmentSequence) and report.json's created_utc were the
    # analysis' real time: next to the study's removed or shifted dates they tell the scan date or the shift
    policy = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=shifted)
    written = write_outputs(phi_result, tmp_path / "out", policy)
    date = _shifted_day("20240102", policy, "P1") if shifted else ""
    _assert_dates_are_the_studys(written, date, "120000" if shifted else "")
    plain = write_outputs(phi_result, tmp_path / "plain")  # not de-identified: the real time stays
    assert pydicom.dcmread(plain["dicom_seg"]).ContributingEquipmentSequence[-1].ContributionDateTime
    assert json.loads(plain["report"].read_text())["created_utc"].endswith("Z")


@pytest.mark.parametrize("shifted", [False, True], ids=["dates-removed", "dates-shifted"])
def test_real_series_outputs_carry_no_real_date_of_the_analysis(
    shared_data, tmp_path: Path, dicom_volume, result_for, shifted: bool
) -> None:
    volume = dicom_volume(sorted((shared_data / "real/dicom_series/dcmqi_ct3slice").glob("*.dcm")))
    hu = volume.hu[[1]]
    labels = np.where((hu > -29) & (hu < 150), Label.MUSCLE, np.where((hu > -190) & (hu < -30), Label.SAT, 0))
    result = result_for(volume, [1], labels.astype(np.uint8))
    policy = DeidentificationPolicy(secret=SECRET, keep_dates_shifted=shifted)
    written = write_outputs(result, tmp_path / "out", policy)
    first = volume.dicom_headers[0]
    key = patient_key(first.PatientID, first.StudyInstanceUID)
    assert key is not None and first.StudyDate == "20030417"
    date = _shifted_day(first.StudyDate, policy, key) if shifted else ""
    _assert_dates_are_the_studys(written, date, first.StudyTime if shifted else "")


#: What a classification's rule says of the patient ("women", "men, BMI ≥ 25"): the sex and the BMI's side.
_RULE_WORDS = re.compile(r"\b(wo)?men\b|BMI [<≥]")


def test_values_never_computed_say_why_not_that_de_identification_removed_them(phi_result) -> None:
    """Without height and weight no BMI (nor SMI, nor a BMI-rule classification) is computed; the
    de-identified report said "removed by de-identification" for them, as if values had been hidden. It says
    what was missing, in words that quote no DICOM value (an implausible PatientSize is quoted in the
    analysis' own reason)."""
    from sarcoscope.composition import PatientInfo, assess
    from sarcoscope.composition.assessment import UNKNOWN_REASONS

    dicom_height = "height unknown: DICOM PatientSize 2.93 is outside 0.5-2.5 m; pass --height-cm"
    patient = PatientInfo(sex="M", reasons={"height_m": dicom_height})
    phi_result.assessment = assess(phi_result.average, patient)
    report = build_report(phi_result, deidentification=POLICY)
    assessment = report["assessment"]
    assert assessment["bmi"] == {
        "status": "not computed",
        "reason": f"{UNKNOWN_REASONS['height_m']}; {UNKNOWN_REASONS['weight_kg']}",
    }
    assert assessment["smi"] == {"status": "not computed", "reason": UNKNOWN_REASONS["height_m"]}
    for c in assessment["sarcopenia"]:
        assert c["status"] == "not computed" and "removed by de-identification" not in c["reason"], c
        assert UNKNOWN_REASONS["height_m"] in c["reason"], c
    assert "2.93" not in json.dumps(report)
    assert "2.93" in json.dumps(build_report(phi_result))  # the analysis' own report says it


def test_no_classification_gives_back_the_sex_or_bmi_it_removed(phi_result, tmp_path: Path) -> None:
    # the sex and the BMI are removed, but each cutoff set's classification said which rule it applied
    # ("men, BMI ≥ 25") and its cutoff (52.4 is Prado's for men), and its flag with the SMI that stays tells
    # which side of a sex's cutoff the patient is: every classification that applies the sex or the BMI goes
    from sarcoscope.composition import PatientInfo, assess
    from sarcoscope.export.report_html import report_html

    phi_result.assessment = assess(phi_result.average, PatientInfo(height_m=1.7, weight_kg=80.0, sex="M"))
    written = write_outputs(phi_result, tmp_path / "out", POLICY)
    report = json.loads(written["report"].read_text())
    jsonschema.validate(report, report_schema())
    assert report["assessment"]["smi"]["status"] == "computed"  # the result stays
    classifications = report["assessment"]["sarcopenia"] + report["assessment"]["myosteatosis"]
    for c in classifications:
        assert c["status"] == "not computed", c
        assert "removed by de-identification" in c["reason"] and not _RULE_WORDS.search(c["reason"])
        assert not {"value", "cutoff", "rule", "flagged"} & set(c), c
    assert not _RULE_WORDS.search(report_html(report, b"", "t").split("Sarcopenia cutoff set", 1)[1])
    sr = text_of(pydicom.dcmread(written["dicom_sr"]))
    assert "Skeletal muscle index cutoff" not in sr and "SMI below cutoff" not in sr
    assert "Skeletal muscle index" in sr  # the SMI stays
    # kept with the option, as the sex and the BMI are
    keeping = DeidentificationPolicy(secret=SECRET, keep_patient_characteristics=True)
    kept = write_outputs(phi_result, tmp_path / "kept", keeping)
    report = json.loads(kept["report"].read_text())
    assert report["assessment"]["sarcopenia"] == build_report(phi_result)["assessment"]["sarcopenia"]
    assert "SMI below cutoff" in text_of(pydicom.dcmread(kept["dicom_sr"]))


@pytest.mark.parametrize("charset", [*NON_ASCII_NAMES, *ISO_2022_NAMES])
def test_no_sentinel_of_the_headers_is_in_any_byte_of_a_deidentified_run(
    tmp_path: Path, charset: str
) -> None:
    """Every output of `analyze --deidentify`, `batch --deidentify` and `sarcoscope deidentify` (files,
    hidden files, file names, NIfTI header, PNG chunks and pixels, console) is searched for every value of
    the headers that the profile removes or replaces: the patient's name (outside ASCII, in the series'
    character set), IDs, birth date (in an alternative calendar too), dates, UIDs, every table attribute's
    value three levels deep, private blocks; the input folder and the case id name the patient."""
    from typer.testing import CliRunner

    from sarcoscope.cli import app
    from sarcoscope.phantom import make_slice

    def run(*args: object) -> str:
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    name = {**NON_ASCII_NAMES, **ISO_2022_NAMES}[charset].split("^")[0]
    folder = tmp_path / "cohort" / f"{name}_{SENTINEL_PATIENT_ID}"
    phantom = make_slice(4, size=128)  # three times over
    hu, spacing = np.stack([phantom.hu] * 3), (3.0, *phantom.pixel_spacing)
    sentinels = header_sentinels(write_sentinel_series(folder, charset, hu, spacing))
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"case_id,path,slice,height_cm\n{folder.name},{folder},1,170\n", encoding="utf-8")
    key = tmp_path / "key"
    options = ["--engine", "threshold", "--slice", 1, "--height-cm", 170]
    deid = ["--deidentify", "--secret-file", key]
    consoles = {
        "analyze": run("analyze", folder, "-o", tmp_path / "out", *options, *deid),
        "batch": run("batch", manifest, "-o", tmp_path / "runs", "--engine", "threshold", *deid),
        "deidentify": run("deidentify", folder, tmp_path / "copy", "--secret-file", key),
    }
    written = {"labels.seg.dcm", "report.sr.dcm", "report.qc.dcm", "labels.nii.gz", "overlay.png"}
    assert written <= {p.name for p in (tmp_path / "out").iterdir()}
    assert written <= {p.name for p in (tmp_path / "runs").glob("cases/*/*")}
    outputs = {f"{command} console": text.encode() for command, text in consoles.items()}
    for kind in ("out", "runs", "copy"):
        outputs |= written_bytes(tmp_path / kind)
    assert leaks(outputs, sentinels) == []
    # the search finds them where they are: each in the headers, and in the outputs made without --deidentify
    assert {leak.split(": ", 1)[1] for leak in leaks(written_bytes(folder), sentinels)} == {
        *map(repr, sentinels),
        "a table value",
    }
    run("analyze", folder, "-o", tmp_path / "plain", *options)
    found = {leak.split(": ", 1)[1] for leak in leaks(written_bytes(tmp_path / "plain"), sentinels)}
    assert {repr(SENTINEL_PATIENT_ID), repr(name), repr(SURNAME), "a table value"} <= found


@pytest.mark.parametrize("charset", list(ISO_2022_NAMES))
def test_names_in_iso_2022_code_extensions_get_the_dicom_outputs(
    tmp_path: Path, charset: str, dicom_volume, result_for
) -> None:
    """Japanese and Korean headers declare `\\ISO 2022 IR 87` and `\\ISO 2022 IR 149` (value 1 empty: the
    default repertoire), which highdicom refused: no SEG, SR or QC capture at all, identified or not. They
    are written: identified in the source's character set, with its patient's name; de-identified under the
    pseudonym, naming nobody in any byte."""
    hu = np.full((3, 48, 56), -1000, np.int16)
    hu[:, 8:40, 8:48] = 40
    paths = write_sentinel_series(tmp_path / "series", charset, hu, (3.0, 0.8, 0.8))
    source = pydicom.dcmread(paths[1])
    assert str(source.PatientName) == ISO_2022_NAMES[charset]  # the series spells it as written
    labels = np.zeros((1, 48, 56), np.uint8)
    labels[0, 8:40, 8:48], labels[0, 16:32, 16:40] = Label.SAT, Label.MUSCLE
    for policy in (None, POLICY):
        volume = dicom_volume(paths)
        result = result_for(volume, [1], labels)
        out = tmp_path / ("deid" if policy else "plain")
        written = write_outputs(result, out, policy)
        assert not [w for w in result.warnings if "not written" in w]
        for kind in ("dicom_seg", "dicom_sr", "qc_capture"):
            ds = pydicom.dcmread(written[kind])
            assert ds.SpecificCharacterSet == ["ISO 2022 IR 6", charset], kind
            expected = POLICY.pseudonym(SENTINEL_PATIENT_ID) if policy else str(source.PatientName)
            assert str(ds.PatientName) == expected, kind
    sentinels = header_sentinels(paths)
    assert leaks(written_bytes(tmp_path / "deid"), sentinels) == []
    assert repr(ISO_2022_NAMES[charset].split("^")[0]) in {
        leak.split(": ", 1)[1] for leak in leaks(written_bytes(tmp_path / "plain"), sentinels)
    }
