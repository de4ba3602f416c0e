"""Warnings and errors fit for a de-identified output: without the input's path and the names below it,
original UIDs, quoted descriptions, or a patient characteristic the policy removes.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy

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
