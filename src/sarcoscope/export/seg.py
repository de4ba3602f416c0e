"""DICOM SEG of the analysed slice(s), referencing the source CT images, for PACS and viewers (highdicom).

One segment per tissue present, in conventions order, coded with SNOMED CT concepts from pydicom's code
dictionary (category "Tissue" 85756007 for all):

| tissue | segmented property type            | anatomic region                         |
|--------|------------------------------------|-----------------------------------------|
| muscle | Skeletal muscle (127954009)        | Abdomen (818981001)                     |
| SAT    | Adipose tissue / Fat (55603005)    | Subcutaneous tissue (71966008)          |
| VAT    | Adipose tissue / Fat (55603005)    | Abdominal cavity structure (52731004)   |
| IMAT   | Adipose tissue / Fat (55603005)    | Skeletal muscle structure (127954009)   |

SNOMED has no pre-coordinated "visceral fat" or "intermuscular fat" concept in the DICOM code dictionary, so
the three adipose compartments share the type and differ by anatomic region (and by segment label). The
table (SEGMENT_CODES) lives with the SEG reader, imaging/labelmaps/seg.py, which maps these codes back.

Provenance: segments are AUTOMATIC as the engine made them and SEMIAUTOMATIC once a person edited them
(`AnalysisResult.editor`, set by the web app); the algorithm identification carries the software version
and the full model id, ContentCreatorName and the content description name the editor (not when
de-identified: PS3.15 removes the content creator's name).

De-identified inputs often lack Type 2 patient/study attributes (PatientBirthDate, StudyID...). Type 2 means
"present, possibly empty", so absent ones are added EMPTY on copies of the headers: that fabricates nothing.
A value highdicom cannot read (real archives hold birth dates such as "19XX0101" or "1950-01-01") is left
empty the same way, and the caller gets a note saying so for the report: the DICOM objects are still made.
A source without FrameOfReferenceUID (mandatory for CT) or without image geometry cannot be referenced
faithfully; then no SEG is written and the reason is returned for the report.

De-identified (a `DeidentificationPolicy`): the copies of the source headers are de-identified first, so the
SEG takes the pseudonym (no name, ID or birth date) and references the remapped UIDs, the same ones as the
de-identified CT files; every date and time it carries (its own, made now by highdicom, nested ones such as
the ContributionDateTime of ContributingEquipmentSequence included) becomes the sources' de-identified study
date and time: empty when dates are removed, shifted with the study's under the Modified Dates option. The
real time of the analysis would bound the scan date (often the same day) or reveal the shift; a shifted
"now" would reveal the shift to whoever knows when the analysis ran.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM, PersonName

from sarcoscope.conventions import LABEL_COLORS, TISSUE_TITLES, TISSUES
from sarcoscope.export import SEG_NOT_DICOM
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.imaging.deidentify.profile import deidentify_dataset, mark_deidentified
from sarcoscope.imaging.deidentify.refusals import image_name
from sarcoscope.imaging.highdicom_tables import use_module_table
from sarcoscope.imaging.labelmaps.seg import SEGMENT_CODES

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

use_module_table()  # for the SEG, SR and secondary capture (export.sr and export.sc import this module)

#: Type 2 attributes highdicom reads from the source; added empty when a de-identified source lacks them.
TYPE2_FILL = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: The Type 2 values highdicom reads (not only copies), how it reads them, and what a valid one looks like.
TYPE2_READ = {
    "PatientBirthDate": (DA, "a date, YYYYMMDD"),
    "StudyDate": (DA, "a date, YYYYMMDD"),
    "StudyTime": (TM, "a time, HHMMSS"),
    "PatientSex": (hd.PatientSexValues, "M, F or O"),
}
#: Without these the SEG cannot be tied to the CT's pixels; nothing sensible can be filled in.
REQUIRED = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)


def _unreadable(value: object, read: Callable[[str], object]) -> bool:
    try:
        read(str(value))
    except ValueError:
        return True
    return False


def _left_empty_note(keywords: list[str]) -> str | None:
    if not keywords:
        return None
    forms = "; ".join(TYPE2_READ[k][1] for k in keywords)
    values = "its value is" if len(keywords) == 1 else "their values are"
    return (
        f"The DICOM SEG, SR and QC capture leave the source CT's {' and '.join(keywords)} empty: {values} "
        f"not valid DICOM ({forms})."
    )


def _character_set(source: Dataset) -> str | list[str] | None:
    """The SpecificCharacterSet a derived object of `source` is written in: the source's (so its copied
    names are spelled as the source spells them), None for the default repertoire (empty or absent); an
    empty value 1 before code extensions (Japanese `\\ISO 2022 IR 87`, Korean `\\ISO 2022 IR 149`) is
    ISO 2022 IR 6 (PS3.3 C.12.1.1.2)."""
    value = source.get("SpecificCharacterSet")
    if not value:
        return None
    if isinstance(value, str):
        return value
    return ["ISO 2022 IR 6" if not v and i == 0 else str(v) for i, v in enumerate(value)]


#: Value representations whose text is written in the data set's character set.
_TEXT_VRS = frozenset({"PN", "SH", "LO", "ST", "LT", "UC", "UT"})


def _text_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(VR, text) of every value outside ASCII that `ds` and its items write in their character set."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _text_values(item)
        elif elem.VR in _TEXT_VRS and not elem.is_empty:
            for value in elem.value if elem.VM > 1 else [elem.value]:
                if not str(value).isascii():
                    yield elem.VR, str(value)


def _read_values(ds: Dataset) -> None:
    """Read every value of `ds` and its items that pydicom still holds as the file's bytes, in the character
    set they were written in (Dataset.decode would also re-encode values set as text, writing '?' for
    characters it cannot encode)."""
    for elem in ds:  # iterating reads each element
        if elem.VR == "SQ":
            for item in elem.value:
                _read_values(item)


def _spells(ds: Dataset, charset: str | list[str]) -> bool:
    """Whether every text value of `ds` reads back the same once pydicom writes it in `charset`: it writes
    '?' for what the set lacks, and GB2312 (ISO 2022 IR 58) without its escape sequence, read back as
    Latin-1."""
    encodings = convert_encodings(charset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns when it replaces characters
        try:
            for vr, text in _text_values(ds):
                if vr == "PN":
                    back = str(PersonName(PersonName(text).encode(encodings), encodings))
                else:
                    back = decode_bytes(encode_string(text, encodings), encodings, {0x5C})
                if back != text:
                    return False
        except (UnicodeError, LookupError, UserWarning):
            return False
    return True


def give_character_set(ds: Dataset, source: Dataset) -> None:
    """Write `ds` (built by highdicom from prepared_sources' copies of `source`, which carry none) in the
    source's character set (_character_set), or in UTF-8 (ISO_IR 192) when pydicom cannot write its text
    there (_spells): a name read back otherwise would not be the patient's."""
    charset = _character_set(source)
    if charset is not None:
        ds.SpecificCharacterSet = charset if _spells(ds, charset) else "ISO_IR 192"
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet


def prepared_sources(
    series: list[Dataset], indices: Sequence[int], deidentification: DeidentificationPolicy | None
) -> tuple[list[Dataset] | None, str | None]:
    """Copies of the source CT headers of slices `indices` of `series` that a derived object (SEG, SR,
    secondary capture) references, de-identified when asked, their values decoded and without
    SpecificCharacterSet (see give_character_set), with a note when a value was left empty as unreadable
    (else None); (None, reason) when one lacks what referencing it needs, or shares its
    SOPInstanceUID with another image of the series (a broken export: a reference cannot tell which)."""
    shared = Counter(str(ds.get("SOPInstanceUID") or "") for ds in series)
    out = []
    emptied: set[str] = set()
    for ds in (series[int(i)] for i in indices):
        missing = [k for k in REQUIRED if k not in ds or ds.get(k) in (None, "")]
        if missing:
            return None, f"source CT {image_name(ds, deidentification)} lacks {', '.join(missing)}"
        if shared[str(ds.SOPInstanceUID)] > 1:
            return None, (
                f"source CT {image_name(ds, deidentification)} and another image of the series share the "
                "SOPInstanceUID, so a reference to it cannot tell them apart"
            )
        src = copy.deepcopy(ds)
        if deidentification is not None:
            deidentify_dataset(src, deidentification)
        for keyword in TYPE2_FILL:
            if keyword not in src:
                setattr(src, keyword, "")
        for keyword, (read, _) in TYPE2_READ.items():
            if src.get(keyword) not in (None, "") and _unreadable(src.get(keyword), read):
                setattr(src, keyword, "")
                emptied.add(keyword)
        # decoded in the source's character set, then without it: highdicom copies it but refuses values
        # the standard defines (an empty value 1; ISO 2022 IR 149, Korean, which its enum spells IR 159);
        # each object gets the source's after it is built (give_character_set)
        _read_values(src)
        if "SpecificCharacterSet" in src:
            del src.SpecificCharacterSet
        out.append(src)
    return out, _left_empty_note([k for k in TYPE2_READ if k in emptied])


def _date_elements(ds: Dataset) -> Iterator[DataElement]:
    """Every DA, DT and TM element of `ds` and of its sequences' items."""
    for elem in ds:
        if elem.VR in ("DA", "DT", "TM"):
            yield elem
        elif elem.VR == "SQ":
            for item in elem.value:
                yield from _date_elements(item)


def hide_creation_time(
    ds: Dataset, source: Dataset, deidentification: DeidentificationPolicy, *, burned_in: bool = False
) -> None:
    """Give every date and time of a derived object made now (at any depth: highdicom's ContributionDateTime
    too) the de-identified source's study date and time, and mark it de-identified, so it tells nothing
    about when the patient was scanned nor the date shift. Empty values (the birth date) stay empty.
    `burned_in`: its pixels show source pixels with burned-in text (accepted by the policy)."""
    date, time = str(source.get("StudyDate") or ""), str(source.get("StudyTime") or "")
    study = {"DA": date, "TM": time, "DT": date + time if date else ""}
    for elem in _date_elements(ds):
        if not elem.is_empty:
            elem.value = study[elem.VR]
    mark_deidentified(ds, deidentification, burned_in=burned_in)


def derived_uid(seed: str | None, purpose: str) -> str:
    """A new UID, or with `seed` the same UID for the same seed and purpose (an object made again of the same
    result keeps its identity, so a PACS it is sent to again holds it once)."""
    return generate_uid() if seed is None else generate_uid(entropy_srcs=[seed, purpose])


def _content_description(result: AnalysisResult, editor: str | None) -> str:
    """What the SEG holds and how it was made: engine model, and whether (and by whom) it was edited."""
    parts = ["L3 tissues"]
    if result.editor is not None:
        parts.append(f"edited by {editor}" if editor else "edited by hand")
    parts.append(f"model {result.model_id}")  # in full in the algorithm parameters
    return "; ".join(parts)[:64]  # LO


def build_dicom_seg(
    result: AnalysisResult,
    deidentification: DeidentificationPolicy | None = None,
    uid_seed: str | None = None,
) -> tuple[hd.seg.Segmentation | None, str | None]:
    """The SEG for `result` and None, or a note on what it left empty (see prepared_sources); (None, reason)
    when the input was not DICOM or cannot be referenced.

    With `deidentification`, built from de-identified copies of the source headers (see module docstring);
    a source with burned-in annotation the policy refuses raises DeidentificationError. `uid_seed` makes
    the SEG's series and instance UIDs a function of it, so that an SR exported separately later references
    the same SEG instance (the web app seeds with study, label version and de-identification).
    """
    headers = result.volume.dicom_headers
    if not headers:
        return None, SEG_NOT_DICOM
    sources, message = prepared_sources(headers, result.selection.indices, deidentification)
    if sources is None:
        return None, f"DICOM SEG not written: {message} (see labels.nii.gz)"
    labels = np.asarray(result.labels)
    present = [name for name, lab in TISSUES.items() if np.any(labels == lab)]
    if not present:
        return None, "DICOM SEG not written: no tissue was segmented in the analysed slice(s)"

    edited = result.editor is not None
    named_editor = result.editor if edited and deidentification is None else None  # PS3.15 removes it
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"sarcoscope {result.engine}",
        family=codes.DCM.ArtificialIntelligence if result.engine == "unet" else codes.DCM.ImageProcessing,
        version=result.software_version[:64],  # LO: at most 64 characters
        parameters={"engine": result.engine, "model_id": result.model_id},  # LT: the full model id
    )
    descriptions = []
    segment_map = np.zeros(256, dtype=np.uint8)  # project label id -> segment number (1..n, consecutive)
    for number, name in enumerate(present, start=1):
        prop_type, region = SEGMENT_CODES[name]
        segment_map[int(TISSUES[name])] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=TISSUE_TITLES[name],
                segmented_property_category=codes.SCT.Tissue,
                segmented_property_type=prop_type,
                anatomic_regions=[region],
                algorithm_type=(
                    hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
                    if edited
                    else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
                ),
                algorithm_identification=algorithm,
                tracking_id=f"sarcoscope-{name}",
                tracking_uid=generate_uid(),
                display_color=hd.color.CIELabColor.from_rgb(*LABEL_COLORS[TISSUES[name]]),
            )
        )
    try:
        with warnings.catch_warnings():
            # highdicom warns about single-component patient names of the source; they are copied as they are
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=result.volume.stored_layout(segment_map[labels]),  # the frames' own layout
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=derived_uid(uid_seed, "seg-series"),
                series_number=9901,
                sop_instance_uid=derived_uid(uid_seed, "seg-instance"),
                instance_number=1,
                manufacturer="sarcoscope",
                manufacturer_model_name=f"sarcoscope {result.engine}",
                software_versions=result.software_version,
                device_serial_number="none",
                series_description=f"sarcoscope L3 body composition ({result.engine})",
                content_label="L3_TISSUES",
                content_description=_content_description(result, named_editor),
                content_creator_name=named_editor,
                omit_empty_frames=False,
            )
    except Exception as exc:  # an optional output: any refusal becomes a report warning, never a failed run
        return (
            None,
            f"DICOM SEG not written: highdicom refused the source headers ({type(exc).__name__}: {exc})",
        )
    give_character_set(seg, headers[int(result.selection.indices[0])])
    if deidentification is not None:
        hide_creation_time(seg, sources[0], deidentification)
    return seg, message


def write_dicom_seg(
    result: AnalysisResult, path: Path, deidentification: DeidentificationPolicy | None = None
) -> str | None:
    """Write the SEG to `path` when it can be made; return a warning: why not, or what it left empty (never
    raises for that, except DeidentificationError when a de-identified SEG is asked of sources with
    burned-in text)."""
    seg, message = build_dicom_seg(result, deidentification)
    if seg is not None:
        seg.save_as(path)
    return message
