"""A study's folders moved between their places in the data folder and a trash entry (`move_out`,
`move_in`): renamed, or across file systems copied to the disk and marked, so that a move cut by a kill is
finished and never taken for another's (`move_dir`); the renames put on the disk before a commit relies on
them (`sync_moves`)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from sarcoscope.store.files import atomic_private_file, private_dir, sync_dir, sync_tree

if TYPE_CHECKING:
    from sarcoscope.store.models import Study
    from sarcoscope.store.store import Store

log = logging.getLogger(__name__)


def study_files(store: Store, study: Study) -> dict[str, Path]:
    """Where a study's files live in the data folder, by their name in a trash entry."""
    files = {"ct": store.series_dir(study), "cache": store.cache_dir(study.id)}
    if study.upload_id:
        files["upload"] = store.upload_dir(study.upload_id)
    return files


def move_dir(src: Path, dst: Path) -> None:
    """Move a folder to `dst`, across file systems too (a site may mount `ct/` on a larger disk): then it is
    copied under a temporary name, marked as this move's (`.<name>.moved` beside it names the copy's inode),
    renamed when whole and on the disk (fsync), and the source removed. Cut anywhere, calling it again
    finishes it: a `dst` beside the source is taken for this move's only when its mark names it. Any other is
    not this move's to finish (a study's files put there meanwhile): FileExistsError, the source left as it
    is, for it may be the only copy of a kept deletion's images."""
    moved = dst.with_name(f".{dst.name}.moved")
    if dst.exists():
        if not _moved_here(moved, dst):
            raise FileExistsError(errno.EEXIST, "Not moved: other files are in its place already")
        shutil.rmtree(src, ignore_errors=True)
        moved.unlink(missing_ok=True)
        return
    moved.unlink(missing_ok=True)  # a mark of a move cut before its rename names no copy
    try:
        os.replace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    part = dst.with_name(f".{dst.name}.part")
    shutil.rmtree(part, ignore_errors=True)
    shutil.copytree(src, part, symlinks=True)
    sync_tree(part)
    with atomic_private_file(moved, durable=True) as f:
        f.write(_identity(part).encode())
    os.replace(part, dst)
    sync_dir(dst.parent)
    shutil.rmtree(src)
    moved.unlink()


def moved_folder(name: str) -> str:
    """The folder a `move_dir` working file beside it (`.<name>.part`, `.<name>.moved`) is of; any other
    name as it is."""
    for suffix in (".part", ".moved"):
        if name.startswith(".") and name.endswith(suffix) and len(name) > len(suffix) + 1:
            return name[1 : -len(suffix)]
    return name


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def _moved_here(moved: Path, dst: Path) -> bool:
    """Whether `dst` is the copy a cut `move_dir` renamed into place (its mark names it)."""
    try:
        return moved.read_text() == _identity(dst)
    except (OSError, ValueError):
        return False


def move_out(entry: Path, files: dict[str, Path], study: Study) -> None:
    """The entry's files to their places; an upload's other series are left where a study of that upload
    still holds them, and when they were erased meanwhile (with its last study) the study can no longer
    open them."""
    for name, target in files.items():
        source = entry / name
        if name == "upload" and target.is_dir():
            continue
        if not source.is_dir():
            if name == "upload":
                study.upload_id = None
            continue
        private_dir(target.parent)
        move_dir(source, target)


def sync_moves(entry: Path, files: dict[str, Path]) -> None:
    """Put the renames between the entry and the files' places on the disk (fsync of the folders naming
    them) before the commit that relies on them: a database flushed elsewhere (PostgreSQL) would otherwise
    hold a restored study whose files power lost put back in the trash."""
    for folder in {entry.parent, entry, files["ct"].parent.parent, *(p.parent for p in files.values())}:
        if folder.is_dir():
            sync_dir(folder)


def move_in(store: Store, entry: Path, study: Study) -> None:
    """Back into the entry what a stopped restore had moved out, only what no live study owns: a study
    holding the series now keeps its images there; an upload's other series only when no study holds them
    (then they were this entry's). The caller holds the upload's lock and the ct lock, from this look to its
    put-back, which the server and `sarcoscope studies restore` beside it share: no study or folder of the
    series comes meanwhile (a restore of another deletion of it would put its images where this takes the
    entry's back from). A move out across file systems cut while it removed the entry's copy is finished
    first: the whole copy in place goes back, not the entry's part of one (the start would then remove the
    whole one as no study's)."""
    owned = {
        "ct": store.find_series(study.series_uid) is not None,
        "cache": store.has_study(study.id),
        "upload": bool(study.upload_id and store.studies_of_upload(study.upload_id)),
    }
    for name, source in study_files(store, study).items():
        if owned[name]:
            if name == "ct" and source.is_dir() and not (entry / name).exists():
                log.warning(
                    "Deleted study %s is put back without its images: a study holding its series since "
                    "keeps them.",
                    study.id,
                )
            continue
        if source.is_dir() and _cut_out_of(entry / name, source):
            move_dir(entry / name, source)  # finished: what is left of the entry's copy goes
            log.warning(
                "Finished a move of deleted study %s's files out of its entry that was cut.", study.id
            )
        if source.is_dir() and not (entry / name).exists():
            move_dir(source, entry / name)


def _cut_out_of(kept: Path, place: Path) -> bool:
    """Whether `place` is the whole copy that a `move_dir` of `kept` across file systems renamed into place
    before it was cut while it removed `kept` (its mark names it, as `move_dir` itself decides)."""
    return kept.is_dir() and _moved_here(place.with_name(f".{place.name}.moved"), place)
