"""What de-identification refuses rather than cleans: an image whose pixels may show text (burned-in
annotation) and an encapsulated document, whose text is out of the header's reach; and how such an object is
named in a message, by its remapped UID.
"""

from __future__ import annotations

import logging
import re

from pydicom.dataset import Dataset
from pydicom.uid import (
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)

from sarcoscope.imaging.deidentify.policy import DeidentificationError, DeidentificationPolicy

logger = logging.getLogger(__name__)

_SECONDARY_CAPTURE = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
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
        raise burned_in_error(ds, problem, "", policy)
    logger.warning("%s: %s; its pixels are shown unchanged", image_name(ds, policy), problem)


def image_name(ds: Dataset, policy: DeidentificationPolicy | None) -> str:
    """An image named in a message by its SOPInstanceUID, remapped when de-identified (the original links
    back to the patient's record; the remapped one is what the de-identified outputs carry), or by its
    InstanceNumber."""
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        return f"image number {ds.get('InstanceNumber', '?')}"
    return f"image {policy.uid(uid) if policy is not None else uid}"


def burned_in_error(
    ds: Dataset, problem: str, source: str, policy: DeidentificationPolicy
) -> DeidentificationError:
    return DeidentificationError(
        f"{source or image_name(ds, policy)}: {problem}; its pixels may show the "
        "patient's name, so it is not exported de-identified (accepting burned-in annotation, "
        "--accept-burned-in, exports it anyway, marked PatientIdentityRemoved NO)"
    )
