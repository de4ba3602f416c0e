"""CT series from a DICOMweb server (QIDO-RS to find the series, WADO-RS to retrieve it; dicomweb-client).

An input `dicomweb+http://host:port/prefix/studies/<StudyUID>[/series/<SeriesUID>]` (or `dicomweb+https`)
names the server's DICOMweb root (`http://host:port/prefix`) and a study, optionally one series. Without a
series, the study's CT series is looked up with QIDO-RS; a study with several CT series needs `--series`.
The instances are written into a local folder, which is then read like any DICOM folder. The results (SEG,
SR, QC capture) can be stored back into the same study with STOW-RS (`store_results`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import requests

from sarcoscope.errors import InputError

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

SCHEME = "dicomweb+"
_URL = re.compile(
    r"^dicomweb\+(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/studies/(?P<study>[0-9.]+)"
    r"(?:/series/(?P<series>[0-9.]+))?/?$"
)
SERIES_UID_TAG = "0020000E"
MODALITY_TAG = "00080060"


@dataclass(frozen=True)
class DICOMwebTarget:
    """Where a DICOMweb input points: the server root, the study, and maybe a series."""

    base_url: str
    study_uid: str
    series_uid: str | None = None


def is_dicomweb(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_dicomweb_url(text: str) -> DICOMwebTarget:
    """Split a `dicomweb+http(s)://…/studies/UID[/series/UID]` input; InputError with the form otherwise."""
    match = _URL.match(text)
    if match is None:
        raise InputError(
            f"Cannot read the DICOMweb address '{text}': expected "
            "dicomweb+http://host:port/prefix/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]."
        )
    return DICOMwebTarget(match["base"], match["study"], match["series"])


def _value(item: dict, tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _choose_series(client: DICOMwebClient, target: DICOMwebTarget, series_uid: str | None) -> str:
    chosen = series_uid or target.series_uid
    if chosen is not None:
        return chosen
    found = client.search_for_series(study_instance_uid=target.study_uid)
    ct = [_value(s, SERIES_UID_TAG) for s in found if _value(s, MODALITY_TAG) == "CT"]
    ct = [uid for uid in ct if uid]
    if not ct:
        raise InputError(f"Study {target.study_uid} on {target.base_url} has no CT series.")
    if len(ct) > 1:
        raise InputError(
            f"Study {target.study_uid} on {target.base_url} has {len(ct)} CT series; choose one with "
            f"--series: {', '.join(ct)}."
        )
    return ct[0]


def _client_call_errors(target: DICOMwebTarget, exc: requests.RequestException, what: str) -> InputError:
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return InputError(f"The DICOMweb server {target.base_url} refused {what} (HTTP {status}).")
    return InputError(f"Cannot reach the DICOMweb server {target.base_url}: {exc}")


def store_results(text: str, paths: list[Path], timeout: float = 60.0) -> int:
    """Store the DICOM files `paths` (results of the study `text` names) with STOW-RS; return how many.

    They must belong to that study: results of a de-identified run (another study UID) are refused."""
    target = parse_dicomweb_url(text)
    datasets = [pydicom.dcmread(p) for p in paths]
    foreign = [
        p.name for p, ds in zip(paths, datasets, strict=True) if ds.StudyInstanceUID != target.study_uid
    ]
    if foreign:
        raise InputError(
            f"Not storing {', '.join(foreign)} on {target.base_url}: not in study {target.study_uid} "
            "(de-identified results are not pushed back to the source)."
        )
    from dicomweb_client.api import DICOMwebClient  # only for dicomweb+http inputs (≈40 ms to import)

    client = DICOMwebClient(url=target.base_url, timeout=timeout)
    try:
        client.store_instances(datasets=datasets, study_instance_uid=target.study_uid)
    except requests.RequestException as exc:
        raise _client_call_errors(target, exc, f"storing the results into study {target.study_uid}") from exc
    return len(datasets)


def fetch_series(text: str, folder: Path, series_uid: str | None = None, timeout: float = 60.0) -> Path:
    """Retrieve the CT series that `text` names into `folder` (one file per instance); return the folder.

    Network and server failures become InputError naming the server, never a traceback."""
    target = parse_dicomweb_url(text)
    from dicomweb_client.api import DICOMwebClient  # only for dicomweb+http inputs (≈40 ms to import)

    client = DICOMwebClient(url=target.base_url, timeout=timeout)
    try:
        uid = _choose_series(client, target, series_uid)
        instances = client.retrieve_series(target.study_uid, uid)
    except requests.RequestException as exc:
        raise _client_call_errors(target, exc, f"the request for study {target.study_uid}") from exc
    if not instances:
        raise InputError(f"The DICOMweb server {target.base_url} returned no instances of series {uid}.")
    folder.mkdir(parents=True, exist_ok=True)
    for number, ds in enumerate(instances, start=1):
        ds.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)
    return folder
