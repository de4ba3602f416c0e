"""Where a validation report goes: checking the output folder, staging the report, putting it in place.

A report folder is often one the user already fills (a batch output, a study folder with notes, the folder
holding the label maps being validated), so a report replaces only its own outputs (`REPORT_OUTPUTS`) and
keeps every other entry. The report is built in a staging folder beside the output folder (inside it when
the output folder is a mount point, so every move stays on one file system); each output is then moved into
place, report.md and report.html last, and outputs of an earlier report that this one does not write are
removed. A failed run removes its staging folder; staging folders of killed runs are removed by the next
run into the same folder. New folders get the user's usual permissions (umask), as `analyze` outputs do;
an existing output folder keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from sarcoscope.errors import OutputError
from sarcoscope.fileio import check_output_folder
from sarcoscope.validation.io import shown
from sarcoscope.validation.report_folder import PLACED_LAST, REPORT_OUTPUTS

_STAGING = "validate-staging"


def check_report_folder(
    out_dir: str | Path, inputs: Iterable[str | Path | None] = (), folders: Iterable[str | Path | None] = ()
) -> Path:
    """The resolved report folder, or OutputError before any work when the report cannot go there.

    Refused: what `analyze` refuses (fileio.check_output_folder: a file, the current folder, one above it or
    the home folder, a folder that cannot be written); one of the input `folders` or a folder inside one (a
    later run would take the report for cases); a folder where one of the `inputs` (files or folders) lies
    inside an output of the report (it would be replaced); a staging place that cannot be written.
    """
    given = Path(out_dir)
    out = given.resolve()
    check_output_folder(given, replaced=True)  # a file, the working or home folder, not writable: as analyze
    for folder in folders:
        if folder is None:
            continue
        source = Path(folder).resolve()
        if source == out or source in out.parents:  # inside one, a later run would read it as a case
            mine = out.name + "-validation" if source == out else "validation-report"
            raise OutputError(
                f"Output folder {shown(given)} is {'an' if source == out else 'inside an'} input folder; "
                f"give the report a folder of its own, e.g. -o {shown(source.parent / mine)}."
            )
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        for name in sorted(REPORT_OUTPUTS):
            own = out / name
            if source == own or own in source.parents:
                raise OutputError(
                    f"The input {shown(item)} is in {shown(given / name)}, an output of the report that a "
                    "new report replaces; move the input or give another output folder."
                )
    taken = sorted(name for name in REPORT_OUTPUTS if os.path.lexists(out / name))
    if taken and not _holds_a_report(out):
        raise OutputError(
            f"{shown(given)} holds {', '.join(taken)} that no validation report wrote there (it has no "
            "report's settings.json): a report would replace them. Give the report a folder of its own, or "
            "move them."
        )
    staging_parent = _staging_parent(out)
    if out.is_dir() and not os.access(staging_parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"Cannot write the report into {shown(given)}: {shown(staging_parent)} is not writable."
        )
    return out


#: Keys of the settings.json a validation report writes (runner._settings): an earlier report's mark.
_REPORT_SETTINGS = ("reference_mapping", "prediction_mapping", "iou_bins")


def _holds_a_report(out: Path) -> bool:
    """Whether `out` holds an earlier validation report (its settings.json), whose outputs a new report may
    replace or remove: files of those names that no report wrote are the user's (a study's figures/)."""
    try:
        settings = json.loads((out / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and all(key in settings for key in _REPORT_SETTINGS)


def _staging_parent(out: Path) -> Path:
    """Beside `out`, or inside it when `out` is a mount point (a move must not cross file systems)."""
    if out.is_dir() and out.stat().st_dev != out.parent.stat().st_dev:
        return out
    return out.parent


def _staging_prefix(out: Path, parent: Path) -> str:
    return f".{_STAGING}-" if parent == out else f".{out.name}.{_STAGING}-"


def new_staging(out: Path) -> Path:
    """A fresh staging folder for the report into `out` (created with the umask: it may become `out`).

    Its name carries this process's id, so the next run can tell a killed run's folder from a live one.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        parent = _staging_parent(out)
        remove_stale_staging(out)
        staging = parent / f"{_staging_prefix(out, parent)}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging.mkdir()  # not mkdtemp (0700): a new report folder gets the user's usual permissions
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {shown(out)}: {exc.strerror or exc}") from None
    return staging


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_staging(out: Path) -> None:
    """Remove the staging folders that killed runs into `out` left (their process is gone); best effort.

    Also those of earlier versions (`.OUT.tmp-XXXXXXXX`, no process id), recognised by holding nothing but
    report outputs.
    """
    with contextlib.suppress(OSError):
        _remove_stale_staging(out)


def _remove_stale_staging(out: Path) -> None:
    places = [(out.parent, f".{out.name}.")] + ([(out, ".")] if out.is_dir() else [])
    legacy = re.compile(re.escape(f".{out.name}.tmp-") + r"[A-Za-z0-9_]{8}")
    for folder, lead in places:
        ours = re.compile(re.escape(lead + _STAGING) + r"-(\d+)-[0-9a-f]+")
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink() and _stale(entry, ours, legacy):
                shutil.rmtree(entry, ignore_errors=True)


def _stale(entry: Path, ours: re.Pattern[str], legacy: re.Pattern[str]) -> bool:
    match = ours.fullmatch(entry.name)
    if match is not None:
        return not _alive(int(match.group(1)))
    return legacy.fullmatch(entry.name) is not None and {p.name for p in entry.iterdir()} <= REPORT_OUTPUTS


def place_report(staging: Path, out: Path) -> None:
    """Move the report built in `staging` into `out`, replacing only the report's own outputs.

    A new `out` is the staging folder renamed (one step). Into an existing one each output is moved in
    (a file replaces the old one in one step; a folder's old version is first moved into `staging`, which
    the caller removes), report.md and report.html last; then the outputs of an earlier report that this
    one did not write are removed, so the folder never mixes two reports.
    """
    try:
        if not out.exists():
            try:
                os.rename(staging, out)
                return
            except OSError as exc:  # created meanwhile: fall through to the per-output moves
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        written = {p.name for p in staging.iterdir()} & REPORT_OUTPUTS
        order = sorted(written - set(PLACED_LAST)) + [n for n in PLACED_LAST if n in written]
        trash = staging / f".old-{uuid.uuid4().hex[:12]}"
        trash.mkdir()
        for name in order:
            _replace(staging / name, out / name, trash)
        for name in sorted(REPORT_OUTPUTS - written):
            old = out / name
            if old.is_dir() and not old.is_symlink():
                os.replace(old, trash / name)
            elif os.path.lexists(old):
                old.unlink()
    except OSError as exc:
        raise OutputError(f"Cannot write the report into {shown(out)}: {exc}") from None


def _replace(new: Path, old: Path, trash: Path) -> None:
    """Put `new` at `old`. A file replaces a file (or a link) in one step; an old folder, or anything in the
    way of a new folder, is first moved into `trash` (rename cannot put a folder over another entry)."""
    if (old.is_dir() and not old.is_symlink()) or (new.is_dir() and os.path.lexists(old)):
        os.replace(old, trash / old.name)
    os.replace(new, old)


def discard(staging: Path) -> None:
    """Remove a staging folder (and the old outputs moved into it)."""
    shutil.rmtree(staging, ignore_errors=True)
