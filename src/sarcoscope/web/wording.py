"""Messages from the pipeline reworded for the web app, which has controls where the CLI has options.

The analysis stages explain what a user can do in CLI terms ("Use --slice/--range", "pass --height-cm");
in the browser those words mean nothing, so every message the web app shows passes through `for_ui`.
"""

from __future__ import annotations

import re
from typing import Any

#: CLI advice -> the UI control that does the same (longest first, so a phrase wins over its parts).
_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    (
        "choose the level with --slice/--range",
        "place the Slice or Range lines by hand (L3 selection tab)",
    ),
    (
        "Choose the level with --slice/--range",
        "Place the Slice or Range lines by hand (L3 selection tab)",
    ),
    ("Use --slice/--range", "Place the Slice or Range lines by hand (L3 selection tab)"),
    ("pass --height-cm or PatientSize in DICOM", "enter Height (cm) in the Patient card"),
    ("pass --weight-kg or PatientWeight in DICOM", "enter Weight (kg) in the Patient card"),
    ("pass --sex M|F or PatientSex in DICOM", "choose Sex in the Patient card"),
    ("pass --height-cm", "enter Height (cm) in the Patient card"),
    ("pass --weight-kg", "enter Weight (kg) in the Patient card"),
    ("pass --sex M|F", "choose Sex in the Patient card"),
    (
        "(choose one with --series, or series_uid= in Python)",
        "(to analyse another, choose it in Series on the L3 selection tab)",
    ),
    (
        "choose a series with --series UID (`sarcoscope series` lists them with their patient), or give each "
        "patient's images a folder of their own",
        "upload each patient's images on their own",
    ),
    ("(--keep-patient-characteristics keeps it)", "(an export with de-identify unticked keeps it)"),
    (
        "(accepting burned-in annotation, --accept-burned-in, exports it anyway, marked "
        "PatientIdentityRemoved NO)",
        "(with de-identify unticked it is downloaded as it is)",
    ),
    ("Pass the right --ref-labels/--pred-labels mapping.", "Choose the file's Mapping under Import labels."),
    ("label folders hold label maps (images go to --images)", "import a label map here, not an image"),
    (
        "give the true spacing with --pixel-spacing ROW COL (mm)",
        "save it again with its spatial transform, or analyse it with the sarcoscope command line, which "
        "can be given the pixel spacing",
    ),
)
_LEFTOVER_OPTION = re.compile(r"--[a-z][a-z-]+")


def for_ui(text: str) -> str:
    """`text` with CLI options replaced by the web app's controls."""
    for cli, ui in _REPLACEMENTS:
        text = text.replace(cli, ui)
    return text


def report_for_ui(value: Any) -> Any:
    """A report (export.build_report) with `for_ui` applied to every string in it."""
    if isinstance(value, str):
        return for_ui(value)
    if isinstance(value, list):
        return [report_for_ui(v) for v in value]
    if isinstance(value, dict):
        return {k: report_for_ui(v) for k, v in value.items()}
    return value


def has_cli_words(text: str) -> bool:
    """True when `text` still names a command-line option (what the tests check against)."""
    return bool(_LEFTOVER_OPTION.search(text))
