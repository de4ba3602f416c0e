"""How objects are de-identified (DeidentificationPolicy): the installation's key, which keys the pseudonym,
the UIDs and the date offsets, and the options; and the method an object records that it went through.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sarcoscope import __version__
from sarcoscope.errors import InputError
from sarcoscope.secret import MIN_SECRET_BYTES, load_or_create_secret

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)

#: Edition of Table E.1-1 in dicom-anonymizer's database.
TABLE_EDITION = "dicomfields_2026c"
#: Environment variable naming the key file (overridden by an explicit --secret-file).
SECRET_FILE_ENV = "SARCOSCOPE_DEID_SECRET_FILE"
SECRET_FILE_NAME = "deidentification.key"
PSEUDONYM_PREFIX = "ANON-"
#: Per-patient date offsets: between 1 and 10 years into the past, whole days.
_SHIFT_MIN_DAYS, _SHIFT_MAX_DAYS = 366, 3652


class DeidentificationError(InputError):
    """An object cannot be de-identified as asked (burned-in annotation, no usable key)."""


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
        from pydicom.dataset import Dataset  # here: the policy is made before any DICOM is read, or none
        from pydicom.sr.codedict import codes  # its concept dictionary alone takes ≈0.07 s to import

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
