"""De-identification of DICOM by the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Every DICOM object sarcoscope hands out de-identified goes through `deidentify_dataset`: the web app's
"Download selected DICOM", `sarcoscope deidentify`, and the source headers a de-identified DICOM SEG (or SR)
is built from, so that derived objects carry the pseudonym and reference the remapped UIDs.

Which library: the attribute table comes from **dicom-anonymizer** (KitwareMedical), which ships the
standard's Table E.1-1 per DICOM edition as data (tag -> action code D, Z, X, U, Z/D, X/Z, X/D, X/Z/D,
X/Z/U*; ~650 attributes including the 50xx/60xx repeating groups). The other candidates apply less of it:
*dicognito* replaces names, IDs, UIDs, dates and addresses with fake values from its own list (descriptors
such as ProtocolName, SeriesDescription or ReasonForStudy are kept), and *deid* (pydicom) applies a recipe
that its user writes (its default recipe removes ~70 attributes), so the table would be ours to maintain.
dicom-anonymizer's own engine is not used as is: it applies the table to the top-level data set only (a
kept sequence is not cleaned inside), replaces UIDs with random UIDs from a process-wide dict (not
reproducible, grows forever in a server) and dates with 00010101. So this module walks the data set itself
and applies the library's table at every nesting level, with the library's VR-conforming dummy values for
D, and with our keyed replacements:

- PatientID and PatientName become one pseudonym, and every UID with action U becomes `2.25.<int>`, both by
  HMAC-SHA256 keyed with the installation's secret: the same patient gets the same pseudonym in every
  study, the same UID always maps to the same UID (a SEG still references its CT), and nothing can be
  reversed or brute-forced without the key (an unsalted hash of an 8-digit ID can).
- Options (`DeidentificationPolicy`): Retain Longitudinal Temporal Information with Modified Dates (every
  date in the table moved by a per-patient offset of whole days, derived from the key; times of day kept),
  Retain Patient Characteristics (age, sex, size, weight: SMI and BMI need them).
- Sequences: X removes; Z empties; D keeps one empty item (a dummy: the content may be identifying);
  X/Z/U* and sequences outside the table are kept and cleaned inside. Private attributes are removed.
- Code Meaning is outside the table, but free text in a local coding scheme can name a patient: a meaning
  whose scheme is not a standard one (pydicom's code dictionary, plus legacy SRT) is replaced by its code.
- Pixel data is never changed: an image with burned-in annotation (BurnedInAnnotation YES, or missing on a
  secondary capture / screen save) is refused unless the policy accepts it, and then it is marked
  PatientIdentityRemoved NO with a loud warning.
- An encapsulated document (PDF, CDA, STL...) is refused: its text names the patient where the profile
  cannot reach (the table puts a dummy in place of the document and keeps its DocumentTitle).

Every result carries PatientIdentityRemoved, DeidentificationMethod (text) and
DeidentificationMethodCodeSequence (CID 7050: 113100 and the option codes).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from dicomanonymizer.simpledicomanonymizer import replace_element
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from sarcoscope import __version__
from sarcoscope.errors import InputError, OutputError
from sarcoscope.fileio import check_outside_input
from sarcoscope.imaging.dicom_pixels import _transfer_syntax
from sarcoscope.imaging.dicom_reader import _iter_files, _read_header, patient_key
from sarcoscope.imaging.read import _existing, _extracted
from sarcoscope.secret import MIN_SECRET_BYTES, load_or_create_secret

logger = logging.getLogger(__name__)

#: Edition of Table E.1-1 in dicom-anonymizer's database.
TABLE_EDITION = "dicomfields_2026c"
#: Environment variable naming the key file (overridden by an explicit --secret-file).
SECRET_FILE_ENV = "SARCOSCOPE_DEID_SECRET_FILE"
SECRET_FILE_NAME = "deidentification.key"
PSEUDONYM_PREFIX = "ANON-"

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
_EMPTY = {"Z", "X/Z"}

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
_SECONDARY_CAPTURE = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
)
#: Per-patient date offsets: between 1 and 10 years into the past, whole days.
_SHIFT_MIN_DAYS, _SHIFT_MAX_DAYS = 366, 3652


class DeidentificationError(InputError):
    """An object cannot be de-identified as asked (burned-in annotation, no usable key)."""


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


@dataclass(frozen=True)
class DeidentificationPolicy:
    """How objects are de-identified; built once and shared by every export of a run.

    `secret` keys the pseudonyms, UIDs and date offsets (the installation's key: see `load_policy`).
    """

    secret: bytes = field(repr=False)
    keep_dates_shifted: bool = False
    keep_patient_characteristics: bool = False
    accept_burned_in: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES:
            raise DeidentificationError(
                f"A de-identification key needs at least {MIN_SECRET_BYTES} random bytes "
                "(a short or guessable key would let pseudonyms be reversed)."
            )
        for name in ("keep_dates_shifted", "keep_patient_characteristics", "accept_burned_in"):
            if not isinstance(getattr(self, name), bool):
                raise DeidentificationError(f"DeidentificationPolicy.{name} must be True or False.")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_key: str) -> str:
        """PatientID and PatientName of a patient: the same in every study of that patient."""
        return PSEUDONYM_PREFIX + self._digest("patient", patient_key)[:8].hex().upper()

    def uid(self, uid: str) -> str:
        """The replacement of a UID: `2.25.` and 128 bits of the keyed digest (at most 44 characters)."""
        return "2.25." + str(int.from_bytes(self._digest("uid", uid.strip())[:16], "big"))

    def date_offset_days(self, patient_key: str) -> int:
        """Days every date of this patient moves (negative: into the past) under the dates option."""
        span = _SHIFT_MAX_DAYS - _SHIFT_MIN_DAYS + 1
        return -(_SHIFT_MIN_DAYS + int.from_bytes(self._digest("date-offset", patient_key)[:8], "big") % span)

    def pseudonymise_text(self, purpose: str, text: str) -> str:
        """A short keyed code for a free identifier outside DICOM (a batch case id from a folder name)."""
        return self._digest(purpose, text)[:6].hex()

    @property
    def method_codes(self) -> list[Dataset]:
        """DeidentificationMethodCodeSequence items (CID 7050): the basic profile and the options used."""
        used = [codes.DCM.BasicApplicationConfidentialityProfile]
        if self.keep_dates_shifted:
            used.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
        if self.keep_patient_characteristics:
            used.append(codes.DCM.RetainPatientCharacteristicsOption)
        items = []
        for code in used:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
                code.value,
                code.scheme_designator,
                code.meaning,
            )
            items.append(item)
        return items

    @property
    def method_code_values(self) -> list[str]:
        """The code values of `method_codes`, as report.json lists them (they tell the options used)."""
        return [item.CodeValue for item in self.method_codes]

    @property
    def method_text(self) -> list[str]:
        """DeidentificationMethod values (LO, at most 64 characters each)."""
        text = [
            "DICOM PS3.15 Basic Application Confidentiality Profile",
            f"Table E.1-1 of dicom-anonymizer {TABLE_EDITION}",
            "Pseudonym and UIDs: HMAC-SHA256 with the installation key",
        ]
        if self.keep_dates_shifted:
            text.append("Dates shifted per patient (Modified Dates Option)")
        if self.keep_patient_characteristics:
            text.append("Retain Patient Characteristics Option")
        text.append(f"sarcoscope {__version__}"[:64])
        return text


def default_secret_file() -> Path:
    """Where the command line keeps its key when neither --secret-file nor the environment names one."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sarcoscope" / SECRET_FILE_NAME


def load_secret(secret_file: Path | None = None, *, default_file: Path | None = None) -> bytes:
    """The installation's key: `secret_file`, else $SARCOSCOPE_DEID_SECRET_FILE, else `default_file` (the web
    app's data folder), else `default_secret_file()`; created (0600, random) on first use, with a warning."""
    env = os.environ.get(SECRET_FILE_ENV)
    path = Path(secret_file or env or default_file or default_secret_file()).expanduser()
    created = not path.exists()
    secret = load_or_create_secret(path)
    if created:
        logger.warning("new de-identification key %s: keep it (and a backup); pseudonyms depend on it", path)
    return secret


def load_policy(
    secret_file: Path | None = None,
    *,
    keep_dates_shifted: bool = False,
    keep_patient_characteristics: bool = False,
    accept_burned_in: bool = False,
) -> DeidentificationPolicy:
    """A policy keyed by the installation's key (see `load_secret`)."""
    return DeidentificationPolicy(
        secret=load_secret(secret_file),
        keep_dates_shifted=keep_dates_shifted,
        keep_patient_characteristics=keep_patient_characteristics,
        accept_burned_in=accept_burned_in,
    )


def burned_in_problem(ds: Dataset) -> str | None:
    """Why the pixels of this image may show identifying text, or None (non-images have no pixels)."""
    if "Rows" not in ds and "PixelData" not in ds:
        return None
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if flag != "NO" and (ds.get("SOPClassUID") in _SECONDARY_CAPTURE or "SCREEN SAVE" in image_type):
        return "a secondary capture / screen save without BurnedInAnnotation NO"
    return None


#: Encapsulated PDF, CDA, STL, OBJ, MTL... Storage (PS3.4 Annex B: 1.2.840.10008.5.1.4.1.1.104.x).
_ENCAPSULATED_DOCUMENT_CLASSES = "1.2.840.10008.5.1.4.1.1.104."
#: A MIME type as a document's message may name it (anything else in the attribute is not repeated).
_MIME_TYPE = re.compile(r"[A-Za-z0-9.+-]{1,40}/[A-Za-z0-9.+-]{1,60}")


def encapsulated_document_problem(ds: Dataset) -> str | None:
    """Why this object cannot be de-identified by its header (an encapsulated PDF, CDA, STL...: the
    document names the patient in its own text, out of the profile's reach, as its DocumentTitle often
    does), or None. An image whose header also holds the attribute is de-identified as the table says."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    is_document = sop_class.startswith(_ENCAPSULATED_DOCUMENT_CLASSES) or "Rows" not in ds
    if "EncapsulatedDocument" not in ds or not is_document:
        return None
    mime = str(ds.get("MIMETypeOfEncapsulatedDocument", "") or "").strip()
    kind = mime if _MIME_TYPE.fullmatch(mime) else "document"
    return f"an encapsulated {kind} whose content cannot be de-identified"


def document_name(ds: Dataset, policy: DeidentificationPolicy) -> str:
    """An encapsulated document named in a message by its remapped SOPInstanceUID (as image_name)."""
    return image_name(ds, policy).replace("image", "document", 1)


def shows_burned_in(headers: list[Dataset]) -> bool:
    """Whether outputs showing this series' pixels (overlay.png, the QC capture) may show text burned into
    them: such outputs are not de-identified unless the policy accepted it."""
    return any(burned_in_problem(ds) is not None for ds in headers)


def refuse_burned_in(headers: list[Dataset], policy: DeidentificationPolicy) -> None:
    """Raise DeidentificationError when an image of a series may show text in its pixels and the policy
    does not accept that (outputs that show CT pixels, like a QC picture, check the series first)."""
    found = next(((ds, p) for ds in headers if (p := burned_in_problem(ds)) is not None), None)
    if found is None:
        return
    ds, problem = found
    if not policy.accept_burned_in:
        raise _burned_in_error(ds, problem, "", policy)
    logger.warning("%s: %s; its pixels are shown unchanged", image_name(ds, policy), problem)


def image_name(ds: Dataset, policy: DeidentificationPolicy | None) -> str:
    """An image named in a message by its SOPInstanceUID, remapped when de-identified (the original links
    back to the patient's record; the remapped one is what the de-identified outputs carry), or by its
    InstanceNumber."""
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        return f"image number {ds.get('InstanceNumber', '?')}"
    return f"image {policy.uid(uid) if policy is not None else uid}"


def _burned_in_error(
    ds: Dataset, problem: str, source: str, policy: DeidentificationPolicy
) -> DeidentificationError:
    return DeidentificationError(
        f"{source or image_name(ds, policy)}: {problem}; its pixels may show the "
        "patient's name, so it is not exported de-identified (accepting burned-in annotation, "
        "--accept-burned-in, exports it anyway, marked PatientIdentityRemoved NO)"
    )


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


def _remap_uids(elem: DataElement, policy: DeidentificationPolicy) -> None:
    if isinstance(elem.value, MultiValue):
        elem.value = [policy.uid(str(v)) for v in elem.value if str(v).strip()]
    elif elem.value:
        elem.value = policy.uid(str(elem.value))


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


#: Value representations that hold a person's name or a date: never kept as they are, listed or not.
_UNLISTED_PHI_VRS = frozenset({"PN", "DA", "DT"})
#: Free text the table's edition does not list that describes an object or its overlays in the user's own
#: words (a SEG's ContentDescription names its editor: "edited by <user>", as sarcoscope's own identified
#: SEG does), treated as the table treats such text: ContentDescription (type 2) emptied, an overlay's
#: description and label (type 3, beside the Overlay Comments and Data the table removes), a SEG's
#: SegmentDescription and an SR's CompletionFlagDescription (type 3) removed. A SEG's SegmentLabel (type 1)
#: becomes its segment's coded meaning (see `_clean_segment_label`).
_UNLISTED_FREE_TEXT: dict[int, str] = {0x00700081: "Z", 0x00620006: "X", 0x0040A492: "X"}
_UNLISTED_OVERLAY_TEXT = (0x0022, 0x1500)  # (60xx,0022) Overlay Description, (60xx,1500) Overlay Label


def _unlisted_free_text_action(tag: BaseTag) -> str | None:
    if tag.group & 0xFF01 == 0x6000 and tag.element in _UNLISTED_OVERLAY_TEXT:
        return "X"
    return _UNLISTED_FREE_TEXT.get(int(tag))


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
    name or a date the table's edition does not list (16 in the standard's dictionary, SecondaryReviewerName
    and ExpiryDate among them) is treated as the table treats its own: emptied, or shifted with the dates."""
    for tag in list(ds.keys()):
        if tag.is_private:
            del ds[tag]
            continue
        elem = ds[tag]
        code = profile_action(tag) or _unlisted_free_text_action(tag)
        if code is not None:
            _apply(ds, elem, code, ctx)
        elif elem.VR in _UNLISTED_PHI_VRS:
            _apply(ds, elem, "Z", ctx)
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
        raise _burned_in_error(ds, problem, source, policy)
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


#: A DICOM UID in a message (four or more numeric components: no version number or decimal).
_UID_TEXT = re.compile(r"\b\d+(?:\.\d+){3,}\b")
#: A quoted value in a message (the DICOM reader quotes series descriptions, which may name the patient), as
#: Python's repr quotes it: in single quotes with \\' escaped when it holds both kinds of quote. A quote
#: opens after no letter or digit: the apostrophe of "the patient's" is none (paired with the next quote,
#: it mangled the text between them and left a quoted value after it whole).
_QUOTED_TEXT = re.compile(r"(?<!\w)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
#: Messages about a patient characteristic quote its value.
_CHARACTERISTIC_TEXT = re.compile(r"\bPatient(?:Size|Weight|Sex|Age)\b")


#: At most this many names below an input are read for scrub_message (a case is one series; a cohort's root
#: is not an input).
_MAX_NAMES_BELOW = 100_000


def _names_below(source_path: str) -> tuple[str, ...]:
    """Every folder and file name below an input folder or inside an input zip, longest first (they may
    hold spaces and commas, so a message's path cannot be told from its text alone)."""
    names: set[str] = set()
    path = Path(source_path)
    try:
        if path.is_dir():
            for _, dirs, files in os.walk(path):
                names.update(dirs, files)
                if len(names) > _MAX_NAMES_BELOW:
                    break
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist()[:_MAX_NAMES_BELOW]:
                    names.update(part for part in re.split(r"[/\\]", member) if part)
    except (OSError, zipfile.BadZipFile):
        pass
    return tuple(sorted(names, key=len, reverse=True))


def message_scrubber(
    policy: DeidentificationPolicy,
    source_path: str | Path | None = None,
    contrast_agent: str | None = None,
) -> Callable[[str], str | None]:
    """`scrub_message` for many messages about one input: its tree is walked and its patterns built once."""
    patterns: list[tuple[re.Pattern[str], str]] = []
    if source_path:
        # the path, or its bare name as a word (a zip is named so), and the names below it that follow it
        below = _names_below(str(source_path))
        chain = rf"(?:[/\\](?:{'|'.join(map(re.escape, below))}))*" if below else ""
        rest = chain + r"[^\s,;:'\"]*"
        name = re.escape(Path(source_path).name)
        patterns += [
            (re.compile(re.escape(str(source_path)) + rest), "<input>"),
            (re.compile(rf"(?<![\w.-]){name}(?![\w.-])" + rest), "<input>"),
        ]
        # a file's name on its own (a NIfTI extracted from a zip is named so)
        files = [n for n in below if "." in n.strip(".") and len(n) >= 5]
        if files:
            alone = rf"(?<![\w.-])(?:{'|'.join(map(re.escape, files))})(?![\w.-])"
            patterns.append((re.compile(alone), "<file>"))

    def scrub(text: str) -> str | None:
        if not policy.keep_patient_characteristics and _CHARACTERISTIC_TEXT.search(text):
            return None
        for pattern, replacement in patterns:
            text = pattern.sub(replacement, text)
        if contrast_agent:
            text = text.replace(contrast_agent, "ANONYMIZED")
        text = _UID_TEXT.sub(lambda m: policy.uid(m.group()), text)
        return _QUOTED_TEXT.sub("'ANONYMIZED'", text)

    return scrub


def scrub_message(
    text: str,
    policy: DeidentificationPolicy,
    source_path: str | Path | None = None,
    contrast_agent: str | None = None,
) -> str | None:
    """A warning or error message fit for a de-identified output: without the input's path and anything
    below it (folder and file names may name the patient), original UIDs (remapped, as in the outputs),
    quoted descriptions or the contrast agent's name; None for a message about a patient characteristic
    the policy removes."""
    return message_scrubber(policy, source_path, contrast_agent)(text)


def scrub_error(text: str, policy: DeidentificationPolicy, source_path: str | Path | None = None) -> str:
    """An error message fit for a de-identified run's console or failures table (see scrub_message); one
    about a patient characteristic the policy removes says only that one is implausible. Not for a
    DeidentificationError's, which names images by their remapped UIDs already (they would be remapped
    again, naming no image)."""
    return scrub_message(text, policy, source_path) or "a patient characteristic is implausible"


def deidentify_file(path: Path, policy: DeidentificationPolicy, source: str | None = None) -> bytes:
    """The DICOM file at `path`, de-identified, as bytes (the file itself is not changed); `source` names it
    in a refusal (default: the path, for the user's own files; the web app names the slice instead)."""
    ds = pydicom.dcmread(path)
    deidentify_dataset(ds, policy, source=str(path) if source is None else source)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class DeidentifySummary:
    """What `deidentify_tree` did; `burned_in_refused` names the images left out for burned-in text by
    their de-identified UIDs (image_name), never by their files' names, which may name the patient."""

    out_dir: Path
    written: int = 0
    non_dicom: int = 0
    duplicates: int = 0
    burned_in_refused: list[str] = field(default_factory=list)
    burned_in_accepted: int = 0
    #: encapsulated documents (PDF, CDA...) left out, by their de-identified UIDs: their text stays theirs
    documents_refused: list[str] = field(default_factory=list)
    patients: set[str] = field(default_factory=set)


def deidentify_tree(
    src: Path,
    out_dir: Path,
    policy: DeidentificationPolicy,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DeidentifySummary:
    """De-identify every DICOM file of a file, folder or zip into the new folder `out_dir`.

    Files are written as `<pseudonym>/<study UID>/<series UID>/<SOP instance UID>.dcm` (remapped values: the
    input's file names may carry names); non-DICOM files are counted and skipped. Images with burned-in
    annotation are left out (listed in the summary) unless the policy accepts them, and so are encapsulated
    documents (PDF, CDA...: their own text is out of the profile's reach); a single input file with
    burned-in annotation, or a document, is refused. Everything is written into a temporary folder beside
    `out_dir` and renamed at the end: a failed run leaves no `out_dir`.
    """
    src = _existing(src)
    out_dir = Path(out_dir)
    check_outside_input(out_dir, src)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputError(f"Output folder {out_dir} exists and is not empty; give a new or empty folder.")
    if src.is_file() and src.suffix.lower() == ".zip":
        with _extracted(src) as tmp:
            return _deidentify_files(_iter_files(tmp), out_dir, policy, progress, single=False)
    return _deidentify_files(_iter_files(src), out_dir, policy, progress, single=src.is_file())


def _deidentify_files(
    files: list[Path],
    out_dir: Path,
    policy: DeidentificationPolicy,
    progress: Callable[[int, int], None] | None,
    *,
    single: bool,
) -> DeidentifySummary:
    summary = DeidentifySummary(out_dir=out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # mkdtemp: the folder is private (0700) until its owner decides to share it
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc}") from exc
    try:
        for done, path in enumerate(files, start=1):
            _deidentify_one(path, policy, tmp, summary, single=single, place=(done, len(files)))
            if progress is not None:
                progress(done, len(files))
        if summary.written == 0:
            raise DeidentificationError(
                f"No DICOM file could be de-identified ({summary.non_dicom} non-DICOM file(s), "
                f"{len(summary.burned_in_refused)} refused for burned-in annotation, "
                f"{len(summary.documents_refused)} encapsulated document(s) left out)."
            )
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); replaced by the finished folder
        os.replace(tmp, out_dir)
    except OSError as exc:
        raise OutputError(f"Cannot write the de-identified files into {out_dir}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _header_cut_short(ds: Dataset) -> str | None:
    """Why a file that holds no image part is not whole, or None: an image storage object (by its SOP
    class, or the file meta's when the cut came before it) whose header ends before Rows, as a copy broken
    off in its header reads. pydicom parses such a file without complaint."""
    if "Rows" in ds or "PixelDataProviderURL" in ds or any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        return None
    file_meta = getattr(ds, "file_meta", None)
    stored = file_meta.get("MediaStorageSOPClassUID", "") if file_meta is not None else ""
    sop_class = pydicom.uid.UID(str(ds.get("SOPClassUID", "") or stored or ""))
    if "Image Storage" not in sop_class.name:
        return None  # not an image (an SR, a presentation state...), or no class to tell
    return f"a {sop_class.name} header that ends before its image (no Rows, Columns or pixel data)"


def _pixel_data_damage(ds: Dataset) -> str | None:
    """Why an image's pixel data is not whole (missing, or shorter than its header says: a file cut short;
    or the header itself cut before the image), or None. Its bytes are copied as they are, so a broken
    image would pass for a whole one. A cut compressed image has no end of its fragments and is refused
    when parsed (_read_header)."""
    cut = _header_cut_short(ds)
    if cut is not None:
        return f"{cut} (truncated)"
    if "Rows" not in ds or "Columns" not in ds or "PixelDataProviderURL" in ds:
        return None  # not an image, or its pixels are elsewhere
    if not any(k in ds for k in _PIXEL_DATA_KEYWORDS):
        return "an image header (Rows, Columns) without pixel data"
    if "PixelData" not in ds or _transfer_syntax(ds).is_compressed:
        return None
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None  # a header that does not say how long its pixels are: nothing to compare with
    found = len(ds.PixelData or b"")
    if found < expected:
        return (
            f"{found} bytes of pixel data where its Rows, Columns, frames, samples and bits need {expected} "
            "(truncated)"
        )
    return None


def _deidentify_one(
    path: Path,
    policy: DeidentificationPolicy,
    tmp: Path,
    summary: DeidentifySummary,
    *,
    single: bool,
    place: tuple[int, int] = (1, 1),
) -> None:
    """De-identify one file into `tmp`; `place` (its number, of how many) names it in an error when its
    path is scrubbed from the message (a de-identifying run's console shows no file name)."""
    ds = _read_header(path)  # large values (pixel data) are read from the file when written
    if ds is None:
        summary.non_dicom += 1
        return
    damage = _pixel_data_damage(ds)
    if damage is not None:
        raise InputError(
            f"damaged DICOM file {path} (file {place[0]} of {place[1]}, sorted by path): {damage}; nothing "
            "was written (the copy would not be complete): replace or remove the file, then run again"
        )
    document = encapsulated_document_problem(ds)
    if document is not None and not single:  # one file on its own is refused (deidentify_dataset)
        summary.documents_refused.append(f"{document_name(ds, policy)} ({document})")
        return
    problem = burned_in_problem(ds)
    if problem is not None and not policy.accept_burned_in and not single:
        summary.burned_in_refused.append(f"{image_name(ds, policy)} ({problem})")
        return
    # named by its de-identified UID: the file's name and folders may name the patient
    deidentify_dataset(ds, policy)
    summary.burned_in_accepted += problem is not None
    names = (str(ds.PatientID), ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"))
    instance = ds.get("SOPInstanceUID") or uuid.uuid4().hex
    target = tmp.joinpath(*(str(n or "unknown") for n in names), f"{instance}.dcm")
    if target.exists():
        summary.duplicates += 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(target, enforce_file_format=True)
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{path}: cannot be written as a DICOM file after de-identification: {exc}") from exc
    summary.written += 1
    summary.patients.add(str(ds.PatientID))
