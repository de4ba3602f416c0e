"""A PHI-laden DICOM study for de-identification tests: every attribute of PS3.15 Table E.1-1 as
dicom-anonymizer ships it (top level and nested in a kept sequence), the attributes issue #16 found
leaking, private tags, and references between the slices; and sentinel values to search every byte of a
de-identified output for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from sarcoscope.imaging import write_dicom_series
from sarcoscope.imaging.deidentify.policy import TABLE_EDITION, DeidentificationPolicy
from sarcoscope.imaging.volume import CTMetadata

SECRET = bytes(range(32))
POLICY = DeidentificationPolicy(secret=SECRET)
#: The library's table: tag -> its category (D_TAGS, X_TAGS, U_TAGS, X_Z_D_TAGS...).
TABLE: dict[Tag, str] = {
    Tag(*entry): category
    for category, entries in dicom_anonymization_database_selector(TABLE_EDITION).items()
    if category != "ALL_TAGS"
    for entry in entries
    if len(entry) == 2
}
#: Groups that cannot sit in an image data set (command, file meta, directory, signatures, padding).
_NOT_IN_DATASET = (0x0000, 0x0002, 0x0004, 0xFFFA, 0xFFFC)
SURNAME, PATIENT_ID, BIRTH_DATE = "Jansen", "12345678", "19470316"


def _phi_value(tag: Tag, vr: str) -> Any:
    """A value that names its tag, valid for the VR (so a kept value is recognisable)."""
    mark = f"PHI{int(tag):08X}"
    values: dict[str, Any] = {
        "AE": mark,
        "AS": "042Y",
        "CS": mark,
        "DA": "19991231",
        "DT": "19991231235959",
        "TM": "235959",
        "DS": "4242",
        "IS": "4242",
        "LO": mark,
        "LT": mark,
        "SH": mark,
        "ST": mark,
        "UC": mark,
        "UT": mark,
        "PN": f"{mark}^{SURNAME}",
        "UR": f"http://phi.invalid/{mark}",
        "UI": f"1.2.826.0.1.3680043.10.999.{int(tag)}",
        "FL": 42.5,
        "FD": 42.5,
        "SL": 4242,
        "SS": 4242,
        "UL": 4242,
        "US": 4242,
        "SV": 4242,
        "UV": 4242,
        "AT": 0x00100010,
        "OB": b"PHI!",
        "OW": b"PHI!",
        "OD": b"PHI!PHI!",
        "OF": b"PHI!",
        "OL": b"PHI!",
        "OV": b"PHI!PHI!",
        "UN": b"PHI!",
    }
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"{SURNAME}^InSequence"
        item.add_new(0x00091010, "LO", "private in sequence")
        return [item]
    return values.get(vr)


def fill_table(ds: Dataset) -> None:
    """Every attribute of the table that `ds` does not carry yet, with a recognisable value."""
    for tag in TABLE:
        if tag.group in _NOT_IN_DATASET or tag in ds or tag not in DicomDictionary:
            continue  # (a few table entries are newer than pydicom's dictionary)
        vr = dictionary_VR(tag).split(" or ")[0]
        value = _phi_value(tag, vr)
        if value is not None:
            ds.add_new(tag, vr, value)


def _item(**values: str) -> list[Dataset]:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return [item]


def _original_attributes() -> list[Dataset]:
    modified = _item(PatientName=f"{SURNAME}^Orig", StudyDate="20230505", InstitutionName="Erasmus MC")
    return _item(AttributeModificationDateTime="20230505120000", ModifiedAttributesSequence=modified)


#: What issue #16 found in "de-identified" downloads: attribute -> (value, the strings that leaked).
ISSUE_16_LEAKS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "ReferencedPatientSequence": (
        lambda: _item(PatientName=f"{SURNAME}^RefPat", PatientID="RP-7788"),
        (f"{SURNAME}^RefPat", "RP-7788"),
    ),
    "OriginalAttributesSequence": (_original_attributes, (f"{SURNAME}^Orig", "20230505", "Erasmus MC")),
    "InstanceCreationDate": (lambda: "20240105", ("20240105",)),
    "InstanceCreationTime": (lambda: "101500", ("101500",)),
    "ProtocolName": (lambda: f"Abdomen {SURNAME}-Prot", (f"{SURNAME}-Prot",)),
    "SeriesDescription": (lambda: f"CT {SURNAME}-Series", (f"{SURNAME}-Series",)),
    "ReasonForStudy": (lambda: f"weight loss {SURNAME}-Reason", (f"{SURNAME}-Reason",)),
    "CurrentPatientLocation": (lambda: "Ward 7 bed 3", ("Ward 7",)),
    "PatientInstitutionResidence": (lambda: "Rotterdam home", ("Rotterdam",)),
    "DateOfLastCalibration": (lambda: "20220909", ("20220909",)),
    "ContrastBolusStartTime": (lambda: "101200", ("101200",)),
    "ProcedureCodeSequence": (
        lambda: _item(CodeValue="CTABD", CodingSchemeDesignator="99HOSP", CodeMeaning=f"CT {SURNAME}-Code"),
        (f"{SURNAME}-Code",),
    ),
}


def add_issue_leaks(ds: Dataset) -> None:
    for keyword, (value, _) in ISSUE_16_LEAKS.items():
        setattr(ds, keyword, value())
    ds.RequestAttributesSequence = _item(RequestedProcedureDescription=SURNAME, RequestedProcedureID="R1")
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00291010, "LO", f"private {SURNAME}")


def write_phi_study(
    folder: Path,
    *,
    patient_id: str = PATIENT_ID,
    study_uid: str | None = None,
    n: int = 3,
    full_table: bool = True,
    seed: int = 1,
) -> list[Path]:
    """CT headers with PHI everywhere; slice k references slice k-1 (by ReferencedImageSequence)."""
    hu = np.full((n, 24, 20), -1000, np.int16)
    hu[:, 4:20, 3:17] = np.arange(n, dtype=np.int16)[:, None, None] * 10 + 40
    meta = CTMetadata(patient_id=patient_id, study_instance_uid=study_uid, patient_sex="F")
    paths = write_dicom_series(hu, (2.5, 0.8, 0.8), folder, metadata=meta, seed=seed)
    previous = None
    for path in paths:
        ds = pydicom.dcmread(path)
        add_phi(ds, full_table=full_table)
        if previous is not None:
            ds.ReferencedImageSequence = _item(
                ReferencedSOPClassUID=previous.SOPClassUID, ReferencedSOPInstanceUID=previous.SOPInstanceUID
            )
        ds.save_as(path, enforce_file_format=True)
        previous = ds
    return paths


def add_phi(ds: Dataset, *, full_table: bool = True) -> None:
    """Name, birth date, characteristics, dates, the issue's leaks and (`full_table`) the whole table three
    levels deep (top level, and nested in a kept sequence's item and that item's item)."""
    ds.PatientName = f"{SURNAME}^Piet"
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientAge, ds.PatientSize, ds.PatientWeight = "077Y", "1.72", "61"
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate = "20240102", "20240102", "20240103"
    add_issue_leaks(ds)
    if full_table:
        fill_table(ds)
        nested = Dataset()
        fill_table(nested)
        deeper = Dataset()
        fill_table(deeper)
        nested.AnatomicRegionSequence = [deeper]
        ds.ProcedureCodeSequence[0].AnatomicRegionSequence = [nested]


def walk(ds: Dataset, depth: int = 0):
    """(depth, element) for every element of `ds` and of its sequences' items."""
    for elem in ds:
        yield depth, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, depth + 1)


def table_values(datasets: list[Dataset]) -> dict[Tag, list[Any]]:
    """The original non-empty values of every table attribute, anywhere in `datasets`."""
    values: dict[Tag, list[Any]] = {}
    for ds in datasets:
        for _, elem in walk(ds):
            if elem.tag in TABLE and elem.VR != "SQ" and not elem.is_empty:
                values.setdefault(elem.tag, []).append(elem.value)
    return values


def kept_values(ds: Dataset, originals: dict[Tag, list[Any]]) -> list[str]:
    """Table attributes of `ds` (at any depth) that still hold an original value: what must not exist."""
    return [
        f"{elem.keyword or elem.tag} ({TABLE[elem.tag]}) at depth {depth}"
        for depth, elem in walk(ds)
        if elem.VR != "SQ" and not elem.is_empty and elem.value in originals.get(elem.tag, ())
    ]


def text_of(ds: Dataset) -> str:
    """Every value of `ds` and its sequences as text (to search for names and markers)."""
    return "\n".join(str(e.value) for _, e in walk(ds) if e.VR != "SQ")


#: A name outside ASCII, as a header in the series' own character set spells it.
NON_ASCII_NAMES = {"ISO_IR 100": "Müllerström^Jürgen", "ISO_IR 192": "Ξανθοπούλου^Ευαγγελία"}
#: Names in a multi-byte set with code extensions, which a header declares after an empty value 1 (the default
#: repertoire): SpecificCharacterSet `\\ISO 2022 IR 87` in Japan, `\\ISO 2022 IR 149` in Korea.
ISO_2022_NAMES = {"ISO 2022 IR 87": "山田^太郎", "ISO 2022 IR 149": "남궁^하늘빛"}
SENTINEL_PATIENT_ID = "PIDQ7731"


def write_sentinel_series(
    folder: Path, charset: str, hu: np.ndarray, spacing: tuple[float, ...]
) -> list[Path]:
    """`hu` as a CT series whose headers carry the whole table three levels deep (every text value
    `PHI<tag>`), the name in `charset` (declared after an empty value 1 for ISO_2022_NAMES), the patient's
    other IDs, private blocks with a named creator and a private sequence, what issue #16 found, and a birth
    date, an address and a UID outside the table."""
    meta = CTMetadata(patient_id=SENTINEL_PATIENT_ID, patient_sex="F", contrast_agent=f"Omnipaque {SURNAME}")
    paths = write_dicom_series(hu, spacing, folder, metadata=meta, seed=27)
    name = {**NON_ASCII_NAMES, **ISO_2022_NAMES}[charset]
    declared = ["", charset] if charset in ISO_2022_NAMES else charset
    for path in paths:
        ds = pydicom.dcmread(path)
        add_phi(ds)
        ds.SpecificCharacterSet, ds.PatientName = declared, name
        ds.SeriesDescription = f"CT {SURNAME}-Series {name.split('^')[0]}"
        ds.OtherPatientIDsSequence = _item(PatientID="OPIDK4412")
        block = ds.private_block(0x0029, f"{SURNAME} PRIVATE", create=True)
        block.add_new(0x10, "LO", f"private {SURNAME}")
        block.add_new(0x11, "SQ", Sequence(_item(PatientName=f"{SURNAME}^InPrivate")))
        ds.PatientBirthDateInAlternativeCalendar = "1366/12/25"
        ds.RetrieveURL = f"https://pacs.invalid/studies/{ds.StudyInstanceUID}"
        ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID
        ds.save_as(path, enforce_file_format=True)
    return paths


def header_sentinels(paths: list[Path]) -> dict[str, list[bytes]]:
    """What of `write_sentinel_series`' headers must not be in a de-identified output, by each encoding it
    could be written in: names, IDs, dates (not a time of day, which a UID's digits may hold), UIDs."""
    texts = {SENTINEL_PATIENT_ID, "OPIDK4412", SURNAME, "1366/12/25", BIRTH_DATE, "19991231"}
    texts |= {"20240102", "20240103"}  # the study's dates
    texts |= {
        text for _, leaked in ISSUE_16_LEAKS.values() for text in leaked if not re.fullmatch(r"\d{6}", text)
    }
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        texts |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
        texts |= {str(ds.FrameOfReferenceUID), *str(ds.PatientName).split("^")}
    codecs = ("utf-8", "latin-1", "iso8859-7", "utf-16-le", "iso2022_jp")

    def forms(text: str) -> set[bytes]:  # ISO 2022 IR 149 as DICOM writes it: ESC $ ) C, then EUC-KR
        hangul = text.encode("euc_kr", "ignore")
        return {text.encode(c, "ignore") for c in codecs} | (
            {b"\x1b$)C" + hangul} if not text.isascii() else set()
        )

    return {text: [f for f in forms(text) if len(f) >= 5] for text in texts}


def readable_bytes(data: bytes) -> bytes:
    """`data`, and what it holds compressed: a gzip's content, a PNG's text chunks and pixels, a zip's files
    and their names, a PDF's text and document information."""
    import gzip
    import io
    import struct
    import zipfile
    import zlib

    if data.startswith(b"\x1f\x8b"):
        return data + gzip.decompress(data)
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return data + b"".join(n.encode() + readable_bytes(zf.read(n)) for n in zf.namelist())
    if data.startswith(b"%PDF"):  # its text as a viewer shows it (the page streams are compressed)
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(data))
        shown = "\n".join(page.extract_text() for page in reader.pages) + repr(dict(reader.metadata or {}))
        return data + shown.encode()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    pos, pixels, texts = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            pixels += body
        elif kind == b"zTXt":
            texts += zlib.decompress(body.split(b"\0", 1)[1][1:])
        elif kind == b"iTXt" and body.split(b"\0", 1)[1][:1] == b"\1":
            texts += zlib.decompress(body.split(b"\0", 1)[1][2:].split(b"\0", 2)[2])
        pos += 12 + length
    return data + texts + zlib.decompress(pixels)


def written_bytes(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones too) by its path, and their paths, as bytes to search."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = "\n".join(map(str, files)).encode()
    return {str(p): readable_bytes(p.read_bytes()) for p in files} | {f"file names in {folder}": names}


#: A UID in the text of an output: its digits, random or keyed, may hold a date's by chance.
_UID_TEXT = re.compile(rb"\d+(?:\.\d+){3,}")


def leaks(outputs: dict[str, bytes], sentinels: dict[str, list[bytes]]) -> list[str]:
    """Where each sentinel, or a table attribute's value (`PHI<tag>`), is found in `outputs`: a UID as it
    is, any other value outside the UIDs of the output."""
    found = []
    for where, data in outputs.items():
        outside_uids = _UID_TEXT.sub(b"<uid>", data)
        for text, forms in sentinels.items():
            searched = data if re.fullmatch(r"[\d.]+\.\d+", text) else outside_uids
            if any(form in searched for form in forms):
                found.append(f"{where}: {text!r}")
        if re.search(rb"PHI[0-9A-F]{8}", data):
            found.append(f"{where}: a table value")
    return found
