"""The basic profile applied to one data set (`deidentify_dataset`): the library's Table E.1-1, what each
action does to a value, the names, dates and free text the table does not list, and the file meta.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass

from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from dicomanonymizer.simpledicomanonymizer import replace_element
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag

from sarcoscope.imaging.deidentify.policy import TABLE_EDITION, DeidentificationError, DeidentificationPolicy
from sarcoscope.imaging.deidentify.refusals import (
    burned_in_error,
    burned_in_problem,
    document_name,
    encapsulated_document_problem,
    image_name,
)
from sarcoscope.imaging.dicom_reader import patient_key

logger = logging.getLogger(__name__)

_CATEGORY_CODES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: Where the table allows a choice, the library's choice: the value IODs need (D before Z before X).
_REPLACE = {"D", "Z/D", "X/D", "X/Z/D"}

_PATIENT_ID = Tag("PatientID")
_PATIENT_NAME = Tag("PatientName")
#: Kept by the Retain Patient Characteristics Option (K in the standard's "Rtn. Pat. Chars. Opt." column).
PATIENT_CHARACTERISTICS = frozenset(
    Tag(k)
    for k in (
        "PatientAge",
        "PatientSex",
        "PatientSexNeutered",
        "PatientSize",
        "PatientWeight",
        "PregnancyStatus",
    )
)
#: Dates the Modified Dates option does not cover (the standard's column has no entry for them).
_NEVER_SHIFTED = frozenset(Tag(k) for k in ("PatientBirthDate", "PatientBirthTime"))
_DATE_VRS = ("DA", "DT", "TM")
#: Coding schemes whose meanings are published vocabulary; other schemes' meanings may be free text.
STANDARD_CODING_SCHEMES = frozenset(codes.schemes()) | {"SRT"}


@functools.cache
def _table() -> tuple[dict[BaseTag, str], tuple[tuple[int, int, int, int, str], ...]]:
    """The library's Table E.1-1: exact tags -> action, and (group, element, masks, action) for 50xx/60xx."""
    database = dicom_anonymization_database_selector(TABLE_EDITION)
    exact: dict[BaseTag, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, code in _CATEGORY_CODES.items():
        for entry in database[category]:
            if len(entry) == 2:
                exact[Tag(*entry)] = code
            else:
                masked.append((*entry, code))
    return exact, tuple(masked)


def profile_action(tag: BaseTag) -> str | None:
    """The basic profile's action code for a public attribute, None when the table does not list it."""
    exact, masked = _table()
    if tag in exact:
        return exact[tag]
    for group, element, group_mask, element_mask, code in masked:
        same_group = tag.group & group_mask == group & group_mask
        if same_group and tag.element & element_mask == element & element_mask:
            return code
    return None


@dataclass
class _Context:
    policy: DeidentificationPolicy
    pseudonym: str
    offset_days: int


def _shift_one(value: str, vr: str, days: int) -> str | None:
    """A DA/DT value moved by `days` (time of day and zone kept); TM unchanged; None when unparseable."""
    if vr == "TM":
        return value
    if len(value) < 8 or (vr == "DA" and len(value) != 8):
        return None
    try:
        day = dt.datetime.strptime(value[:8], "%Y%m%d") + dt.timedelta(days=days)
    except ValueError:
        return None
    return day.strftime("%Y%m%d") + value[8:]


def _shift(elem: DataElement, days: int) -> bool:
    values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
    shifted = [_shift_one(str(v), elem.VR, days) for v in values if v not in ("", None)]
    if any(s is None for s in shifted):
        return False
    elem.value = shifted if len(shifted) > 1 else (shifted[0] if shifted else elem.value)
    return True


#: The root of the UIDs the DICOM standard itself registers (classes, syntaxes, well-known frames of reference
#: and colour palettes): they name no patient's data.
_REGISTERED_UID_ROOT = "1.2.840.10008."
#: UID attributes the table's edition does not list that name a published identifier (a SOP class, a transfer
#: syntax, a coding scheme, context or mapping resource, a template, an implementation's version): kept. Every
#: other UID it does not list names the patient's data (SOPInstanceUIDOfConcatenationSource,
#: MultiFrameSourceSOPInstanceUID, TableFrameOfReferenceUID...): remapped as the table's U attributes are.
_UNLISTED_PUBLISHED_UIDS = frozenset(
    Tag(k)
    for k in (
        "SOPClassUID",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "ReferencedSOPClassUID",
        "SOPClassesSupported",
        "PertinentSOPClassesInStudy",
        "PertinentSOPClassesInSeries",
        "StoredInstanceTransferSyntaxUID",
        "AvailableTransferSyntaxUID",
        "FlowTransferSyntaxUID",
        "MACCalculationTransferSyntaxUID",
        "EncryptedContentTransferSyntaxUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "SegmentationTemplateUID",
        "CreatorVersionUID",
    )
)


def _remap_uids(elem: DataElement, policy: DeidentificationPolicy, *, keep_registered: bool = False) -> None:
    """Each UID of `elem` by the keyed HMAC; `keep_registered`: not one the standard registers."""

    def remapped(uid: str) -> str:
        return uid if keep_registered and uid.startswith(_REGISTERED_UID_ROOT) else policy.uid(uid)

    if isinstance(elem.value, MultiValue):
        elem.value = [remapped(str(v)) for v in elem.value if str(v).strip()]
    elif elem.value:
        elem.value = remapped(str(elem.value))


def _apply(ds: Dataset, elem: DataElement, code: str, ctx: _Context) -> None:
    """One attribute under its table action (after the options and pseudonyms took precedence)."""
    tag, vr = elem.tag, elem.VR
    if ctx.policy.keep_patient_characteristics and tag in PATIENT_CHARACTERISTICS:
        return
    if tag in (_PATIENT_ID, _PATIENT_NAME):
        elem.value = ctx.pseudonym
        return
    if (
        vr in _DATE_VRS
        and ctx.policy.keep_dates_shifted
        and tag not in _NEVER_SHIFTED
        and _shift(elem, ctx.offset_days)
    ):
        return
    if code == "X":
        del ds[tag]
    elif vr == "UI" and code in (*_REPLACE, "U", "X/Z/U*"):
        _remap_uids(elem, ctx.policy)
    elif vr == "SQ" and code == "X/Z/U*":
        for item in elem.value:
            _clean(item, ctx)
    elif vr == "SQ" and code in _REPLACE:
        elem.value = Sequence([Dataset()])
    elif code in _REPLACE:
        try:
            replace_element(elem)
        except NotImplementedError:  # a VR without a dummy value in the library (OW, OF, AT...)
            del ds[tag]
    else:  # Z, X/Z, and U or X/Z/U* on a non-UID value
        elem.value = elem.empty_value


#: Value representations that hold a person's name, a date or a time: never kept as they are, listed or not
#: (a time is kept with the dates shifted, as the table's times are).
_UNLISTED_PHI_VRS = frozenset({"PN", "DA", "DT", "TM"})
#: Free text the table's edition does not list that describes an object or its overlays in the user's own
#: words (a SEG's ContentDescription names its editor: "edited by <user>", as sarcoscope's own identified
#: SEG does), treated as the table treats such text: ContentDescription (type 2) emptied, an overlay's
#: description and label (type 3, beside the Overlay Comments and Data the table removes), a SEG's
#: SegmentDescription and an SR's CompletionFlagDescription (type 3) removed. A SEG's SegmentLabel (type 1)
#: becomes its segment's coded meaning (see `_clean_segment_label`).
_UNLISTED_FREE_TEXT: dict[int, str] = {0x00700081: "Z", 0x00620006: "X", 0x0040A492: "X"}
_UNLISTED_OVERLAY_TEXT = (0x0022, 0x1500)  # (60xx,0022) Overlay Description, (60xx,1500) Overlay Label
#: The patient's dates and identifiers the table's edition does not list, though it lists their kin: the
#: birth and death dates in an alternative calendar (text, not DA: no shift can move them), removed as the
#: birth date is; the retired placer and filler order numbers, emptied as the current ones (Z).
_UNLISTED_IDENTIFYING: dict[int, str] = {
    0x00100033: "X",  # PatientBirthDateInAlternativeCalendar
    0x00100034: "X",  # PatientDeathDateInAlternativeCalendar
    0x00401006: "Z",  # PlacerOrderNumberProcedure
    0x00401007: "Z",  # FillerOrderNumberProcedure
    0x00402006: "Z",  # PlacerOrderNumberImagingServiceRequestRetired
    0x00402007: "Z",  # FillerOrderNumberImagingServiceRequestRetired
}
#: Addresses (UR) that name a published resource: kept. Every other address the table does not list points at
#: the hospital's systems, often with original UIDs in it (RetrieveURL ".../studies/<StudyInstanceUID>"):
#: removed, as the table removes locations and addresses.
_PUBLISHED_ADDRESSES = frozenset(Tag(k) for k in ("CodingSchemeURL", "URNCodeValue"))


def _unlisted_action(tag: BaseTag) -> str | None:
    """The action for an attribute the table's edition does not list but that is treated as its kin are."""
    if tag.group & 0xFF01 == 0x6000 and tag.element in _UNLISTED_OVERLAY_TEXT:
        return "X"
    return _UNLISTED_FREE_TEXT.get(int(tag)) or _UNLISTED_IDENTIFYING.get(int(tag))


def _clean_code_meaning(ds: Dataset) -> None:
    if "CodeMeaning" not in ds or str(ds.get("CodingSchemeDesignator", "")) in STANDARD_CODING_SCHEMES:
        return
    code = ds.get("CodeValue") or ds.get("LongCodeValue") or ds.get("URNCodeValue") or "code"
    ds.CodeMeaning = str(code)[:64]


def _clean_segment_label(ds: Dataset) -> None:
    """A SEG segment's label, the user's own words ("Tumour J. Jansen"), replaced by what its codes say: the
    meaning of its SegmentedPropertyTypeCodeSequence (already cleaned: a local scheme's is its code), or
    "Segment <number>" without one. Call after the item's sequences were cleaned."""
    if "SegmentLabel" not in ds:
        return
    types = ds.get("SegmentedPropertyTypeCodeSequence") or []
    meaning = str(types[0].get("CodeMeaning", "") or "").strip() if types else ""
    ds.SegmentLabel = meaning[:64] or f"Segment {ds.get('SegmentNumber', '')}".strip()


def _clean(ds: Dataset, ctx: _Context) -> None:
    """Apply the table to every attribute of `ds` and, recursively, of the sequences that stay. A person's
    name, a date or a time the table's edition does not list (18 in the standard's dictionary,
    SecondaryReviewerName, ExpiryDate and TimeOfGainCalibration among them) is treated as the table treats
    its own: emptied, or shifted with the dates; so
    is a UID it does not list (remapped) and an address (removed), unless it names a published identifier."""
    for tag in list(ds.keys()):
        if tag.is_private:
            del ds[tag]
            continue
        elem = ds[tag]
        code = profile_action(tag) or _unlisted_action(tag)
        if code is not None:
            _apply(ds, elem, code, ctx)
        elif elem.VR in _UNLISTED_PHI_VRS:
            _apply(ds, elem, "Z", ctx)
        elif elem.VR == "UR" and tag not in _PUBLISHED_ADDRESSES:
            del ds[tag]
        elif elem.VR == "UI" and tag not in _UNLISTED_PUBLISHED_UIDS:
            _remap_uids(elem, ctx.policy, keep_registered=True)
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, ctx)
    _clean_code_meaning(ds)
    _clean_segment_label(ds)


def mark_deidentified(ds: Dataset, policy: DeidentificationPolicy, *, burned_in: bool = False) -> None:
    """Record on `ds` that (and how) it was de-identified; `burned_in`: its pixels may still show text."""
    ds.PatientIdentityRemoved = "NO" if burned_in else "YES"
    method = policy.method_text
    if burned_in:
        method.insert(0, "Burned-in annotation NOT removed from pixel data")
    ds.DeidentificationMethod = method
    ds.DeidentificationMethodCodeSequence = Sequence(policy.method_codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if policy.keep_dates_shifted else "REMOVED"


#: File meta elements a de-identified file keeps: what reading it needs. The others name the sending and
#: receiving systems (AE titles, a presentation address) or carry private information, patient text included.
_FILE_META_KEPT = frozenset(
    {
        0x00020000,  # FileMetaInformationGroupLength
        0x00020001,  # FileMetaInformationVersion
        0x00020002,  # MediaStorageSOPClassUID
        0x00020003,  # MediaStorageSOPInstanceUID
        0x00020010,  # TransferSyntaxUID
        0x00020012,  # ImplementationClassUID
        0x00020013,  # ImplementationVersionName
    }
)


def _clean_file_meta(file_meta: Dataset, ds: Dataset, policy: DeidentificationPolicy) -> None:
    """Keep only the file meta elements reading needs, naming the (de-identified) instance: the dataset's
    own SOP UIDs, or when it lacks them (some archives leave them empty) the file meta's, remapped."""
    for tag in [elem.tag for elem in file_meta if int(elem.tag) not in _FILE_META_KEPT]:
        del file_meta[tag]
    instance = str(ds.get("SOPInstanceUID", "") or "")
    stored = str(file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    if instance or stored:
        file_meta.MediaStorageSOPInstanceUID = instance or policy.uid(stored)
    if ds.get("SOPClassUID"):
        file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


def deidentify_dataset(ds: Dataset, policy: DeidentificationPolicy, *, source: str = "") -> None:
    """De-identify `ds` in place (file meta included) by the basic profile and the policy's options.

    Raises DeidentificationError for an image with burned-in annotation unless the policy accepts it;
    `source` names the object in that message. Export writers (SEG, SR) call this on copies of their source
    headers before building, so that the new object carries the pseudonym and the remapped references.
    """
    document = encapsulated_document_problem(ds)
    if document is not None:  # its bytes would be replaced by a dummy, its title kept: nothing is exported
        raise DeidentificationError(
            f"{source or document_name(ds, policy)}: {document}; it is not exported de-identified"
        )
    problem = burned_in_problem(ds)
    if problem is not None and not policy.accept_burned_in:
        raise burned_in_error(ds, problem, source, policy)
    if problem is not None:
        logger.warning(
            "%s: %s; exported with its pixels unchanged and marked PatientIdentityRemoved NO",
            source or image_name(ds, policy),
            problem,
        )
    key = patient_key(str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", "") or ""))
    key = key or f"instance:{ds.get('SOPInstanceUID', '')}"
    ctx = _Context(policy, policy.pseudonym(key), policy.date_offset_days(key))
    _clean(ds, ctx)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        _clean_file_meta(file_meta, ds, policy)
    if "PatientID" not in ds:
        ds.PatientID = ctx.pseudonym
    mark_deidentified(ds, policy, burned_in=problem is not None)
