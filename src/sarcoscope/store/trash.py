"""Deleted studies are kept for a while before they are erased: a study deleted by mistake (the wrong row
of the list) would otherwise take its images and every colleague's label versions with it, for good.

`trash/<study id>/` holds what the deletion removed from the database (`study.json`: the study row, who
deleted it and when, and a random id of that deletion; `label_versions.json`: its label versions) and its
files, moved there as they were (`ct/` the series, `cache/` the decoded images, `upload/` the upload's other
series when it was that upload's last study). `sarcoscope studies restore` puts it all back; the server
erases entries older than its `--keep-deleted-days` at start and at each deletion, and `sarcoscope studies
erase` erases at once (an erasure request).

Every step can be cut by a kill and is finished or undone at the next start (`recover`), before the server
deletes files no study owns: a deletion writes `.<id>.deleting/study.json` before its database rows go
(`begin`), moves the files in after (`finish`); a restore renames the entry to `.<id>.restoring` first, an
erasure to `.<id>.erasing` (checked, then audited: the audit event, which names the deletion's id, decides
it, so that the audit log and what is kept agree after a kill) and then `.<id>.erased` (removed). An
entry taken out of place is put back (an erase refused, a restore failed) only under `_no_put_back`, under
which a restore or erase that found no entry decides why: never "none is kept" for one put back meanwhile.
A restore or erasure holds its study's `locks/trash-<id>.lock` (`_working_on`, a shared flock) from before it
takes the entry out of place until its last step: `recover` handles an entry out of place only when nobody
holds it (its process killed), and leaves one that a `sarcoscope studies` command beside the starting server
is working on to that command.

An entry whose record cannot be read (missing, empty, not JSON, incomplete: a damaged disk, a hand edit) is
never removed: it is left out of the list (which names it by its id), refused by a restore or an erasure, and
left as it is by `recover`, which says so once; while there is one, the server's start keeps the files no
study owns (they may be its: its record says which).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, select

from sarcoscope.fileio import LockHeld, claim_lock
from sarcoscope.store.errors import ConflictError, NotFoundError, StoreError, reason_of
from sarcoscope.store.files import (
    PRIVATE_FILE_MODE,
    atomic_private_file,
    private_dir,
    sync_dir,
    sync_tree,
)
from sarcoscope.store.models import AuditEvent, LabelVersion, Study, as_utc, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sarcoscope.store.store import Store

log = logging.getLogger(__name__)

RECORD = "study.json"
#: The label versions' rows, apart from RECORD: listing the kept deletions (the page, the expiry at each
#: deletion) reads RECORD only, not every version's label maps.
VERSIONS = "label_versions.json"
_ENTRY_RE = re.compile(r"^[0-9a-f]{32}$")
_DELETING = re.compile(r"^\.([0-9a-f]{32})\.deleting$")
_RESTORING = re.compile(r"^\.([0-9a-f]{32})\.restoring$")
_ERASING = re.compile(r"^\.([0-9a-f]{32})\.erasing$")
_ERASED = re.compile(r"^\.([0-9a-f]{32})\.erased$")
_OUT_OF_PLACE = re.compile(r"^\.([0-9a-f]{32})\.(deleting|restoring|erasing|erased)$")
#: How often a restore or erase takes an entry again that was put back as it looked for it (`_no_put_back`):
#: more would be that many erases or restores of it, each refused, at that moment.
_TRIES = 3
_PUT_BACK_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class DeletedStudy:
    """What `sarcoscope studies deleted` lists of one kept deletion."""

    id: str
    deleted_at: dt.datetime
    deleted_by: str
    patient_id: str | None
    study_date: str | None
    series_description: str | None
    n_versions: int
    #: A random id of this deletion, which its erasure's audit event names (None: kept by a version before
    #: deletions had one).
    deletion_id: str | None = None


def trash_dir(store: Store) -> Path:
    return private_dir(store.data_dir / "trash")


def _not_kept(study_id: str) -> NotFoundError:
    return NotFoundError(f"No deleted study with id '{study_id}' is kept.")


def _study_id(entry: Path) -> str:
    """The study id an entry of trash/ is named by (`<id>`, `.<id>.restoring`, ...)."""
    return entry.name.lstrip(".").split(".")[0]


class UnreadableRecordError(ConflictError):
    """A kept entry whose record (RECORD or VERSIONS) cannot be read: kept as it is, neither restored nor
    erased; the message names the study's id and the file, never the patient's data."""

    def __init__(self, entry: Path, name: str, why: str) -> None:
        self.study_id = _study_id(entry)
        self.what = f"The record of deleted study {self.study_id} cannot be read ({name}: {why})"
        self.entry = entry.name
        super().__init__(
            f"{self.what}: it is kept as it is, and cannot be restored or erased here. Look at the data "
            f"folder's trash/{entry.name}/."
        )


@contextlib.contextmanager
def _no_put_back(store: Store) -> Iterator[None]:
    """Held while an entry taken out of place is put back (an erase refused, a restore failed), and while a
    restore or erase that found no entry looks why: it then finds the entry put back, or its .erasing or
    .restoring name, never neither. Threads of this process: a lock; `sarcoscope studies` beside the server:
    the data folder's `trash.lock` (flock, let go when the process ends, even by a kill)."""
    with _PUT_BACK_LOCK:
        fd = os.open(store.data_dir / "trash.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _entry_lock(store: Store, study_id: str) -> Path:
    return private_dir(store.data_dir / "locks") / f"trash-{study_id}.lock"


@contextlib.contextmanager
def _working_on(store: Store, study_id: str) -> Iterator[None]:
    """Held by a restore or an erasure of `study_id` from before it looks at its entry until its last step:
    a shared flock (restores and erasures decide among themselves by renames), which `recover` cannot take
    then, so it leaves their entries out of place to them; let go when the process ends, even by a kill,
    which is when `recover` must finish or undo what they left. Waits only while `recover` handles that
    study's entries. Its file is removed by whoever lets go of it last (nothing named by an erased study's id
    is left); one waiting for it then takes a file made anew."""
    path = _entry_lock(store, study_id)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last one: nobody else holds it
        except BlockingIOError:
            os.close(fd)
        else:
            _let_go(store, study_id, fd)


def _nobody_working_on(store: Store, study_id: str) -> int | None:
    """`study_id`'s lock (`_working_on`) held alone, an open descriptor to let go with `_let_go`; None while
    a restore or erasure of it holds it (never waits)."""
    try:
        return claim_lock(_entry_lock(store, study_id))
    except LockHeld:
        return None


def _let_go(store: Store, study_id: str, fd: int) -> None:
    """Let go of a study's lock held alone (exclusive), removing its file: a restore or erasure waiting for
    it takes a new one."""
    try:
        path = _entry_lock(store, study_id)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                path.unlink()
    finally:
        os.close(fd)


def _entry(store: Store, study_id: str) -> Path:
    """The kept deletion of `study_id`; NotFoundError when there is none."""
    entry = trash_dir(store) / study_id
    if not (_ENTRY_RE.match(study_id) and entry.is_dir()):
        raise _not_kept(study_id)
    return entry


# -- the record of the database rows ------------------------------------------------------------------
def _row_values(row: Study | LabelVersion, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(row, column.key)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        values[column.key] = value
    return values


def _row_from(model: type[Study] | type[LabelVersion], values: dict[str, Any]) -> Any:
    kwargs = dict(values)
    for column in model.__table__.columns:
        value = kwargs.get(column.key)
        if value is None:
            continue
        if isinstance(column.type, DateTime):
            kwargs[column.key] = dt.datetime.fromisoformat(value)
        elif column.key == "data":
            kwargs[column.key] = base64.b64decode(value)
    return model(**kwargs)


def begin(store: Store, s: Session, study: Study, actor: str) -> Path:
    """Write the record of `study`'s rows (its label versions read in the deleting transaction `s`, before
    they go) to `.<id>.deleting/`, on the disk before the rows go (fsync: power lost after the commit finds
    it whole); a failure here fails the deletion, so nothing is deleted unkept."""
    rows = s.scalars(
        select(LabelVersion).where(LabelVersion.study_id == study.id).order_by(LabelVersion.version)
    )
    versions = [_row_values(v, frozenset({"id"})) for v in rows]
    record = {
        "deletion_id": uuid.uuid4().hex,
        "deleted_at": utcnow().isoformat(),
        "deleted_by": actor,
        "study": _row_values(study),
        "n_versions": len(versions),
    }
    pending = trash_dir(store) / f".{study.id}.deleting"
    shutil.rmtree(pending, ignore_errors=True)
    private_dir(pending)
    for name, content in ((VERSIONS, versions), (RECORD, record)):  # RECORD last: the entry is whole
        with atomic_private_file(pending / name, durable=True) as f:
            f.write(json.dumps(content).encode())
    sync_dir(pending.parent)
    sync_dir(store.data_dir)  # which names trash/, made by the first deletion
    return pending


def _files(store: Store, study: Study) -> dict[str, Path]:
    """Where a study's files live in the data folder, by their name in a trash entry."""
    files = {"ct": store.series_dir(study), "cache": store.cache_dir(study.id)}
    if study.upload_id:
        files["upload"] = store.upload_dir(study.upload_id)
    return files


def finish(store: Store, study: Study, pending: Path) -> None:
    """Move the deleted study's files into its entry and make the entry whole. Its series' folder only when
    no study holds the series again (uploaded again since), its upload's other series only when no study of
    that upload is left (as `Store.remove_study_files` decides)."""
    files = _files(store, study)
    with store.ct_lock(study.study_uid):
        if store.find_series(study.series_uid) is None and files["ct"].is_dir():
            _move_dir(files["ct"], pending / "ct")
        with contextlib.suppress(OSError):  # only when no other series of the study is left
            files["ct"].parent.rmdir()
    if files["cache"].is_dir():
        _move_dir(files["cache"], pending / "cache")
    if study.upload_id:
        with store.upload_lock(study.upload_id):
            if not store.studies_of_upload(study.upload_id) and files["upload"].is_dir():
                _move_dir(files["upload"], pending / "upload")
    os.replace(pending, trash_dir(store) / study.id)


def _move_dir(src: Path, dst: Path) -> None:
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


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def _moved_here(moved: Path, dst: Path) -> bool:
    """Whether `dst` is the copy a cut `_move_dir` renamed into place (its mark names it)."""
    try:
        return moved.read_text() == _identity(dst)
    except (OSError, ValueError):
        return False


# -- what is kept ---------------------------------------------------------------------------------------
def _read(entry: Path, name: str = RECORD) -> Any:
    """One of an entry's record files; UnreadableRecordError when it cannot be read (FileNotFoundError when
    the entry itself is gone: restored or erased meanwhile)."""
    path = entry / name
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        if entry.is_dir() and not path.exists():
            raise UnreadableRecordError(entry, name, "missing") from None
        raise
    except ValueError:  # UnicodeDecodeError too
        raise UnreadableRecordError(entry, name, "empty" if not path.stat().st_size else "not JSON") from None
    except OSError as exc:
        raise UnreadableRecordError(entry, name, reason_of(exc)) from None


def _parsed(entry: Path, name: str, parse: Any) -> Any:
    """`parse(record)` of an entry's record file; UnreadableRecordError when a value is missing or wrong."""
    record = _read(entry, name)
    try:
        return parse(record)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UnreadableRecordError(entry, name, "incomplete") from None


def _deleted_study(entry: Path) -> DeletedStudy:
    def parse(record: dict[str, Any]) -> DeletedStudy:
        study = record["study"]
        return DeletedStudy(
            id=_study_id(entry),
            deleted_at=as_utc(dt.datetime.fromisoformat(record["deleted_at"])),
            deleted_by=str(record["deleted_by"]),
            patient_id=study.get("patient_id"),
            study_date=study.get("study_date"),
            series_description=study.get("series_description"),
            n_versions=int(record["n_versions"]),
            deletion_id=record.get("deletion_id"),
        )

    return _parsed(entry, RECORD, parse)


def _study_of(entry: Path) -> Study:
    """The study row an entry's record holds."""
    return _parsed(entry, RECORD, lambda record: _row_from(Study, record["study"]))


def _kept(store: Store) -> tuple[list[DeletedStudy], list[str]]:
    """The kept deletions, most recent first, and the ids of those whose record cannot be read."""
    found, unreadable = [], []
    for entry in trash_dir(store).iterdir():
        if not _ENTRY_RE.match(entry.name):
            continue
        try:
            found.append(_deleted_study(entry))
        except FileNotFoundError:  # restored or erased meanwhile
            continue
        except UnreadableRecordError as exc:
            unreadable.append(exc.study_id)
    return sorted(found, key=lambda d: d.deleted_at, reverse=True), sorted(unreadable)


def deleted_studies(store: Store) -> list[DeletedStudy]:
    """The kept deletions, most recent first (not those whose record cannot be read: `shown_to` names
    them)."""
    return _kept(store)[0]


def kept_deletion(store: Store, study_id: str) -> DeletedStudy:
    """The kept deletion of `study_id` as it is now; NotFoundError when there is none."""
    try:
        return _deleted_study(_entry(store, study_id))
    except FileNotFoundError:  # restored or erased meanwhile
        raise _not_kept(study_id) from None


def shown_to(store: Store, actor: str, client: str | None = None) -> tuple[list[DeletedStudy], list[str]]:
    """The kept deletions as listed to a person (the web page's Deleted studies, `sarcoscope studies
    deleted`), and the ids of those whose record cannot be read (logged): audited as `view-deleted-studies`
    (who, when, which and how many), as being shown a study is, for the list names their patients."""
    kept, unreadable = _kept(store)
    for study_id in unreadable:
        log.warning("The record of deleted study %s cannot be read: it is kept, not listed.", study_id)
    listed: dict[str, Any] = {"count": len(kept), "ids": [d.id for d in kept]}
    if unreadable:
        listed["unreadable"] = unreadable
    store.audit(actor, "view-deleted-studies", None, listed, client)
    return kept, unreadable


def erase(
    store: Store,
    study_id: str,
    actor: str,
    client: str | None = None,
    *,
    deleted_at: dt.datetime | None = None,
) -> None:
    """Erase one kept deletion now (its files and the record of its rows); audited.

    `deleted_at`: when the deletion the person erasing was shown was made. A study restored and deleted
    again since (a colleague's label versions saved in between) is another deletion: ConflictError, and
    nothing is erased, so that nobody erases for good what they have not seen.

    The entry is renamed out of a restore's reach (`.<id>.erasing`) before it is checked, and to
    `.<id>.erased` once the erasure is decided (audited): a restore at the same time either took it first
    (this one answers ConflictError; when that restore fails and puts it back, this one erases it) or finds
    it being erased (ConflictError, try again: the next finds none), never a study half erased. Killed before
    the audit event, the next start puts the entry back; after it (the event names the deletion's id), the
    next start erases it."""
    if not _ENTRY_RE.match(study_id):
        raise _not_kept(study_id)
    with _working_on(store, study_id):
        _erase(store, study_id, actor, client, deleted_at)


def _erase(
    store: Store, study_id: str, actor: str, client: str | None, deleted_at: dt.datetime | None
) -> None:
    """`erase`, under its study's `_working_on`."""
    entry = trash_dir(store) / study_id
    claimed = entry.with_name(f".{study_id}.erasing")
    for _ in range(_TRIES):
        try:
            os.replace(entry, claimed)
            break
        except FileNotFoundError:  # restored, being restored or erased
            if (why := _not_erasable(store, study_id)) is not None:
                raise why from None
    else:
        raise _being_erased(study_id, restoring=False)
    try:
        kept = _deleted_study(claimed)
        sync_dir(claimed.parent)  # the entry out of place on the disk before the event that decides it
        if deleted_at is not None and kept.deleted_at != deleted_at:
            raise ConflictError(
                f"Not erased: study {study_id} was restored and deleted again since you were shown it (by "
                f"{kept.deleted_by} at {kept.deleted_at:%Y-%m-%d %H:%M} UTC, with {kept.n_versions} label "
                "versions). Look at the deleted studies again first."
            )
        erased = None if kept.deletion_id is None else {"deletion_id": kept.deletion_id}
        store.audit(actor, "erase-study", study_id, erased, client)
    except BaseException:
        with _no_put_back(store):
            os.replace(claimed, entry)
        raise
    _remove(claimed, study_id)


def _not_erasable(store: Store, study_id: str) -> StoreError | None:
    """Why an erase found no entry (None: it is back, put back by a restore that failed: take it again).
    Looked at under `_no_put_back`, in the order the entry moves: .restoring before the study row, which a
    restore writes before it removes .restoring."""
    entry = trash_dir(store) / study_id
    with _no_put_back(store):
        if entry.is_dir():
            return None
        if entry.with_name(f".{study_id}.restoring").is_dir() or store.has_study(study_id):
            return ConflictError(f"Not erased: study {study_id} was restored since you were shown it.")
        if entry.with_name(f".{study_id}.erasing").is_dir():  # refused, it is put back: try again
            return _being_erased(study_id, restoring=False)
    return _not_kept(study_id)


def _being_erased(study_id: str, *, restoring: bool) -> ConflictError:
    """An erase has the entry out of place: refused, it puts it back at once; else the next try finds none."""
    said = (
        "Study {} is not restored: it is being erased."
        if restoring
        else "Not erased: study {} is being erased."
    )
    return ConflictError(f"{said.format(study_id)} Try again in a moment.")


def _remove(claimed: Path, study_id: str) -> None:
    """Remove an entry whose erasure is audited (`.<id>.erasing`, or `.<id>.erased` when a kill stopped its
    removal): renamed to `.<id>.erased` first, so that a kill while its files go leaves no half study that
    `recover` would put back."""
    doomed = claimed.with_name(f".{study_id}.erased")
    if claimed != doomed:
        os.replace(claimed, doomed)
    shutil.rmtree(doomed)


def _erasure_audited(store: Store, study_id: str, claimed: Path) -> bool:
    """Whether the audit log holds the erasure of the claimed entry's deletion: that event decides the
    erasure, so a kill after it is finished. An erase-study event naming the deletion's id, not one newer
    than the deletion by the clock, which a step of it (NTP, a virtual machine restored, another host's
    clock) makes wrong either way; a deletion kept before deletions had an id is decided by the clock."""
    kept = _deleted_study(claimed)
    with store.session() as s:
        erasures = s.execute(
            select(AuditEvent.at, AuditEvent.details).where(
                AuditEvent.study_id == study_id, AuditEvent.action == "erase-study"
            )
        ).all()
    if kept.deletion_id is not None:
        return any((details or {}).get("deletion_id") == kept.deletion_id for _, details in erasures)
    return any(as_utc(at) > kept.deleted_at for at, _ in erasures)


def erase_expired(store: Store, keep: dt.timedelta, actor: str) -> list[str]:
    """Erase the deletions kept longer than `keep`; returns their ids."""
    cutoff = utcnow() - keep
    expired = [d.id for d in deleted_studies(store) if d.deleted_at <= cutoff]
    for study_id in expired:
        try:
            erase(store, study_id, actor)
        except (StoreError, OSError) as exc:  # restored meanwhile (`sarcoscope studies restore`), a disk
            # error: by its reason only, as its path names the entry's files by their UIDs
            reason = reason_of(exc).rstrip(".")
            log.warning("The deleted study %s, kept too long, was not erased: %s.", study_id, reason)
    if expired:
        log.info("Erased %d deleted studies kept longer than %s.", len(expired), keep)
    return expired


def _not_restorable(store: Store, study_id: str) -> StoreError | None:
    """Why a restore found no entry (None: it is back, put back by an erase refused: take it again): an
    erase or another restore has it out of place (refused or failed, it puts it back at once: ConflictError,
    try again; done, the next try finds none), or none is kept (NotFoundError). Looked at under
    `_no_put_back`."""
    if not _ENTRY_RE.match(study_id):
        return _not_kept(study_id)
    entry = trash_dir(store) / study_id
    with _no_put_back(store):
        if entry.is_dir():
            return None
        if entry.with_name(f".{study_id}.erasing").is_dir():
            return _being_erased(study_id, restoring=True)
        if entry.with_name(f".{study_id}.restoring").is_dir():  # failed, it is put back; done, none is kept
            return ConflictError(
                f"Study {study_id} is being restored by someone else. Try again in a moment."
            )
    return _not_kept(study_id)


def restore(store: Store, study_id: str, actor: str, client: str | None = None) -> Study:
    """Put a kept deletion back: its files, its study row and every label version, as they were. Refused
    (ConflictError) when its series is held by a study again, or its images are not kept with it."""
    if not _ENTRY_RE.match(study_id):
        raise _not_kept(study_id)
    with _working_on(store, study_id):
        for _ in range(_TRIES):
            if (study := _restore(store, study_id, actor, client)) is not None:
                return study
    raise _being_erased(study_id, restoring=True)


def _restore(store: Store, study_id: str, actor: str, client: str | None) -> Study | None:
    """`restore`, once; None when the entry was out of place as it was looked for, and is back."""
    try:
        entry = _entry(store, study_id)
        study = _study_of(entry)
        versions = _parsed(entry, VERSIONS, lambda rows: [_row_from(LabelVersion, v) for v in rows])
    except (NotFoundError, FileNotFoundError):  # being erased, or erased
        if (why := _not_restorable(store, study_id)) is not None:
            raise why from None
        return None
    files = _files(store, study)
    with store.ct_lock(study.study_uid):
        again = store.find_series(study.series_uid)
        if again is not None:
            raise ConflictError(
                f"Study {study_id} is not restored: its series was uploaded again since it was deleted "
                f"(study {again.id}). Delete that one first, or keep it and erase this one."
            )
        for name, what in (("ct", "images"), ("cache", "decoded images")):
            if (entry / name).is_dir() and files[name].exists():  # said without the path: the patient's UIDs
                raise ConflictError(
                    f"Study {study_id} is not restored: its {what} are there already (a folder in the data "
                    f"folder's {name}/ that no study owns; the server's next start removes it)."
                )
        restoring = entry.with_name(f".{study_id}.restoring")
        try:
            os.replace(entry, restoring)
        except FileNotFoundError:  # an erase took it first
            if (why := _not_restorable(store, study_id)) is not None:
                raise why from None
            return None
        if not (restoring / "ct").is_dir():  # left with a study holding the series then (`_move_in`)
            with _no_put_back(store):
                os.replace(restoring, entry)
            raise ConflictError(
                f"Study {study_id} is not restored: its images are not kept with it (they stayed with a "
                "study of the same series that held them when this deletion was put back; that study's own "
                "deletion keeps them, when it is kept). It stays kept with its label versions until it is "
                "erased."
            )
        try:
            _move_out(restoring, files, study)
            _sync_moves(restoring, files)
            store.restore_rows(study, versions, actor, client)
        except BaseException:  # what was moved out goes back: the deletion is kept as it was
            _move_in(store, restoring, study)
            with _no_put_back(store):
                os.replace(restoring, entry)
            raise
    shutil.rmtree(restoring)
    return study


def _move_out(entry: Path, files: dict[str, Path], study: Study) -> None:
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
        _move_dir(source, target)


def _sync_moves(entry: Path, files: dict[str, Path]) -> None:
    """Put the renames between the entry and the files' places on the disk (fsync of the folders naming
    them) before the commit that relies on them: a database flushed elsewhere (PostgreSQL) would otherwise
    hold a restored study whose files power lost put back in the trash."""
    for folder in {entry.parent, entry, files["ct"].parent.parent, *(p.parent for p in files.values())}:
        if folder.is_dir():
            sync_dir(folder)


def _move_in(store: Store, entry: Path, study: Study) -> None:
    """Back into the entry what a stopped restore had moved out, only what no live study owns: a study
    holding the series now keeps its images there (none can come while the restore holds the ct lock, which
    the server beside `sarcoscope studies restore` shares: kept as a second guard); an upload's other series
    only when no study holds them (then they were this entry's)."""
    owned = {
        "ct": store.find_series(study.series_uid) is not None,
        "cache": store.has_study(study.id),
        "upload": bool(study.upload_id and store.studies_of_upload(study.upload_id)),
    }
    for name, source in _files(store, study).items():
        if owned[name]:
            if name == "ct" and source.is_dir() and not (entry / name).exists():
                log.warning(
                    "Deleted study %s is put back without its images: a study holding its series since "
                    "keeps them.",
                    study.id,
                )
            continue
        if source.is_dir() and not (entry / name).exists():
            _move_dir(source, entry / name)


# -- after a kill ---------------------------------------------------------------------------------------
def recover(store: Store) -> list[str]:
    """Finish or undo what a killed deletion, restore or erasure left: at the server's start, with the data
    folder locked (no deletion is under way), before it deletes files no study owns. An entry out of place
    that a restore or erasure beside it is working on (`sarcoscope studies restore|erase`, which hold its
    study's `_working_on`) is theirs to finish: left as it is, logged. Returns the ids of the entries left as
    they are (their record cannot be read, logged once; or being worked on): the files no study owns may be
    theirs (a restore moves its files out before it commits its study's row)."""
    left = set()
    for path in trash_dir(store).iterdir():
        try:
            if not _recover(store, path):
                left.add(_study_id(path))
                log.warning(
                    "trash/%s/ is left as it is: another process (`sarcoscope studies restore` or `erase`) "
                    "is working on it and finishes it; the files no study owns are kept.",
                    path.name,
                )
        except UnreadableRecordError as exc:
            left.add(exc.study_id)
            log.warning(
                "%s: trash/%s/ is left as it is, and the files no study owns are kept.", exc.what, exc.entry
            )
    for lock in (store.data_dir / "locks").glob("trash-*.lock"):  # of restores and erasures since
        study_id = lock.name.removeprefix("trash-").removesuffix(".lock")
        if _ENTRY_RE.match(study_id) and (fd := _nobody_working_on(store, study_id)) is not None:
            _let_go(store, study_id, fd)
    return sorted(left)


def _recover(store: Store, path: Path) -> bool:
    """`recover` of one entry of trash/; False when a restore or erasure is working on it (left to it).
    UnreadableRecordError when its record is needed and cannot be read (what the deletion, restore or erasure
    left is then kept as it is)."""
    if _ENTRY_RE.match(path.name):  # kept: read only to tell whether it can be
        with contextlib.suppress(FileNotFoundError):  # taken out of place meanwhile by a restore or erasure
            _deleted_study(path)
        return True
    if (match := _OUT_OF_PLACE.match(path.name)) is None:  # a stopped restore's entry kept beside a later
        return True  # deletion of its study, a file
    study_id = match.group(1)
    if (fd := _nobody_working_on(store, study_id)) is None:
        return False
    try:
        if path.is_dir():  # not finished meanwhile by the restore or erasure that let go as it was looked at
            _recover_left(store, path)
    finally:
        _let_go(store, study_id, fd)
    return True


def _recover_left(store: Store, path: Path) -> None:
    """`_recover` of an entry out of place that no process works on: finished or undone."""
    if match := _DELETING.match(path.name):
        study_id = match.group(1)
        if store.has_study(study_id):  # the deletion did not commit: its record is not needed
            shutil.rmtree(path)
        else:
            finish(store, _study_of(path), path)
            log.warning("Finished the deletion of a study that a stopped server left half done.")
    elif match := _RESTORING.match(path.name):
        study_id = match.group(1)
        if store.has_study(study_id):  # restored: the entry's files are moved out (power lost after the
            # commit can undo renames not yet on the disk), to where its row says, then the emptied entry goes
            study = store.get_study(study_id)
            _move_out(path, _files(store, study), study)
            shutil.rmtree(path)
        elif (trash_dir(store) / study_id).is_dir():  # restored, then deleted again: that deletion is kept
            left = path.with_name(f".{study_id}.left-by-a-stopped-restore-{uuid.uuid4().hex[:8]}")
            os.replace(path, left)
            log.warning(
                "A stopped restore of deleted study %s left its entry while the study was deleted again "
                "since (that deletion is kept, restorable): the entry is kept as trash/%s/, neither listed "
                "nor restorable; look at it, then remove it.",
                study_id,
                left.name,
            )
        else:
            study = _study_of(path)
            _move_in(store, path, study)
            with _no_put_back(store):
                os.replace(path, trash_dir(store) / study_id)
            log.warning("Put back a deleted study whose restore was stopped half done.")
    elif (match := _ERASING.match(path.name)) and not _erasure_audited(store, match.group(1), path):
        with _no_put_back(store):  # stopped before the erasure was decided
            os.replace(path, trash_dir(store) / match.group(1))
    elif match := _ERASING.match(path.name) or _ERASED.match(path.name):
        _remove(path, match.group(1))
        log.warning("Finished the erasure of a deleted study that a stopped server left half done.")
