"""Which input the results in a case's folder were made from.

A cohort's case ids are the user's (patient1, a manifest's column), so a second cohort into the same folder, a
corrected manifest row or a case folder replaced by a data manager can name other images under an id whose
folder holds results. Two markers in each case folder tell them apart (INPUT_MARKER: the input it belongs to;
INPUT_FILES: the input's files as they were analysed), so that such a case is refused or analysed again, never
listed with another patient's results. In a de-identified run both are keyed codes that name nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sarcoscope.batch.cases import REPORT, Case
from sarcoscope.errors import InputError, OutputError
from sarcoscope.fileio import atomic_write_text
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy


def check_same_inputs(out_root: Path, cases: list[Case], policy: DeidentificationPolicy | None) -> None:
    """Refuse a run whose case ids name, in `out_root`, the results of other inputs (a second cohort whose
    folders are named like the first's: patient1...): such a case would be skipped as done, listing another
    patient's results as its own, or analysed over them, its row replacing the other's in cohort.csv or
    failures.csv. Every case folder names its input in INPUT_MARKER, written here for the cases that lack it
    before any case runs (so a case that fails, leaving no report, names it too): its real path, or in a
    de-identified folder a keyed code of it, and only the case code is shown. A folder made before the marker
    names it by its report. A DICOMweb case (a manifest's case id is the user's) is named by its study and
    series UIDs."""
    clashes, unmarked = [], []
    for case in cases:
        folder = case.folder(out_root)
        code, recorded = _input_code(case, policy), _read_marker(folder / INPUT_MARKER)
        if recorded is None:
            unmarked.append((folder / INPUT_MARKER, code))
            recorded = _reported_input(folder) if policy is None and isinstance(case.path, Path) else None
        if recorded is None or recorded == code:
            continue
        if policy is not None:
            clashes.append(case.case_id)
        elif isinstance(case.path, str) or (  # a series is its UIDs, wherever the server is
            Path(recorded).exists() and not os.path.samefile(recorded, case.path)  # not a moved cohort
        ):
            clashes.append(f"{case.case_id} ({recorded})")
    if clashes:
        shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise OutputError(
            f"{out_root} holds the results of other inputs under case ids of this run: {shown}. Give this "
            "cohort a folder of its own, or give its cases other ids (a manifest's case_id column)."
        )
    for marker, code in unmarked:
        atomic_write_text(marker, code + "\n")


def _reported_input(folder: Path) -> str | None:
    """The input a case folder's report names (None: no report, or one naming none)."""
    try:
        return json.loads((folder / REPORT).read_text(encoding="utf-8"))["input"]["source_path"] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: In a case's folder: the input it was analysed from (its real path; in a de-identified folder a keyed code
#: of it, so that the folder names no input), so that another cohort's case of the same id is told apart.
INPUT_MARKER = ".input-code"


def _input_code(case: Case, policy: DeidentificationPolicy | None) -> str:
    """What INPUT_MARKER holds for a case: its file or folder, or its DICOMweb study and series."""
    path = _series_named(case.path) if isinstance(case.path, str) else os.path.realpath(case.path)
    return path if policy is None else policy.pseudonymise_text("input", path)


def _series_named(url: str) -> str:
    """The study and series a DICOMweb case's address names, wherever the server is."""
    from sarcoscope.pacs.dicomweb_query import parse_dicomweb_url, shown_url

    try:
        target = parse_dicomweb_url(url)
    except InputError:  # the case fails, saying why
        return shown_url(url)
    return f"dicomweb:studies/{target.study_uid}/series/{target.series_uid}"


def _read_marker(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


#: In a case's folder once its report is written: a digest of the input as it was analysed (its files'
#: names, sizes and modification times, or the DICOMweb study, series and the series' SOP Instance UIDs;
#: keyed in a de-identified run, so that it names nothing), so that a resumed run tells an input that now
#: holds other images from it.
INPUT_FILES = ".input-files"


def series_instances(case: Case, waits: tuple[float, float]) -> list[str] | None:
    """The SOP Instance UIDs a DICOMweb case's series holds on its server now (one QIDO-RS search, waiting
    at most `waits`: connect, each answer); None for a case read from files."""
    if not isinstance(case.path, str):
        return None
    from sarcoscope.pacs.dicomweb import series_instance_uids

    return series_instance_uids(case.path, waits[1], waits[0])


def input_files_code(
    case: Case, policy: DeidentificationPolicy | None, instances: list[str] | None = None
) -> str:
    """What INPUT_FILES holds for the case's input as it is now: every file the reader may read (as
    imaging.read_ct finds them), by its path inside the input, size and modification time; for a DICOMweb
    case its series and `instances` (series_instances), so that images added, removed or replaced on the
    server since (new SOP Instance UIDs) are told."""
    if isinstance(case.path, str):
        text = "\n".join([_series_named(case.path), *(instances or [])])
    else:
        root = Path(case.path)
        found = [Path(d, f) for d, _, names in os.walk(root) for f in names] if root.is_dir() else [root]
        lines = []
        for path in sorted(found):
            if path.name.startswith(".") and path != root:
                continue  # not read (the reader skips hidden files); may change at any time (.DS_Store)
            try:
                st = path.stat()
            except OSError:
                continue
            name = path.name if path == root else path.relative_to(root).as_posix()
            lines.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
        text = "\n".join(lines)
    if policy is not None:
        return policy.pseudonymise_text("input-files", text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def input_changed(
    report: dict[str, Any],
    out: Path,
    case: Case,
    files: str,
    policy: DeidentificationPolicy | None,
    instances: list[str] | None = None,
) -> str | None:
    """Why the case's earlier report was not made from its input as it is now (None: it was): its files
    were replaced, added, removed or modified since (a data manager replacing a mis-filed case folder, a
    manifest row pointing to another file or series, a re-export), or its DICOMweb series' `instances`
    (series_instances) are others now. A folder made before INPUT_FILES was written (or, for a series,
    before it listed the instances) is judged by its report: its series and how many images it was read
    from, or its input's files none newer than the report (then INPUT_FILES is written now)."""
    recorded = _read_marker(out / INPUT_FILES)
    gone = not case.path.exists() if isinstance(case.path, Path) else not instances
    if recorded == files or gone:
        return None  # the same, or gone (archived after the run): analysing it would only fail
    series_only = isinstance(case.path, str) and recorded == input_files_code(case, policy)
    if recorded is not None and not series_only:
        if isinstance(case.path, str):
            return (
                "made from its series as it was before: images of it were added to, removed from or "
                "replaced on the server since, or it names another series now"
            )
        return (
            "made from its input as it was before: its files were replaced, added, removed or modified "
            "since, or it names another series now"
        )
    if isinstance(case.path, str):
        from sarcoscope.pacs.dicomweb_query import parse_dicomweb_url

        series = parse_dicomweb_url(case.path).series_uid or ""
        wanted = policy.uid(series) if policy is not None and series else series
        if report["input"].get("series_instance_uid") != wanted:
            return "made from another series than the case names now"
        made, now = report["input"]["shape_zyx"][0], len(instances or [])
        if made != now:
            return f"made from {made} images of its series, which has {now} on the server now"
    else:
        made = (out / REPORT).stat().st_mtime
        root = Path(case.path)
        entries = [Path(d, n) for d, dirs, names in os.walk(root) for n in [*dirs, *names]] + [root]
        for path in entries:
            try:
                st = path.stat()
            except OSError:
                continue
            if max(st.st_mtime, st.st_ctime) > made:
                return "made before its input last changed (a file of it is newer than the report)"
    atomic_write_text(out / INPUT_FILES, files + "\n")
    return None
