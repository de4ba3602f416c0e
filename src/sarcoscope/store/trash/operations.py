"""What is done with the trash, in the order a study goes through it: a deletion kept (`begin`, `finish`),
the kept deletions listed (`deleted_studies`, `kept_deletion`, `shown_to`), erased (`erase`,
`erase_expired`) or restored (`restore`), and what a kill left finished or undone at the next start
(`recover`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from sarcoscope.store.errors import ConflictError, NotFoundError, StoreError, reason_of
from sarcoscope.store.files import atomic_private_file, private_dir, sync_dir
from sarcoscope.store.models import AuditEvent, LabelVersion, Study, as_utc, utcnow
from sarcoscope.store.trash import locks, moves, records
from sarcoscope.store.trash.records import RECORD, VERSIONS, DeletedStudy, UnreadableRecordError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sarcoscope.store.store import Store

log = logging.getLogger(__name__)

#: How often a restore or erase takes an entry again that was put back as it looked for it
#: (`locks.no_put_back`): more would be that many erases or restores of it, each refused, at that moment.
_TRIES = 3


# -- a deletion kept ------------------------------------------------------------------------------------
def begin(store: Store, s: Session, study: Study, actor: str) -> Path:
    """Write the record of `study`'s rows (its label versions read in the deleting transaction `s`, before
    they go) to `.<id>.deleting/`, on the disk before the rows go (fsync: power lost after the commit finds
    it whole); a failure here fails the deletion, so nothing is deleted unkept."""
    rows = s.scalars(
        select(LabelVersion).where(LabelVersion.study_id == study.id).order_by(LabelVersion.version)
    )
    versions = [records.row_values(v, frozenset({"id"})) for v in rows]
    record = {
        "deletion_id": uuid.uuid4().hex,
        "deleted_at": utcnow().isoformat(),
        "deleted_by": actor,
        "study": records.row_values(study),
        "n_versions": len(versions),
    }
    pending = records.trash_dir(store) / f".{study.id}.deleting"
    shutil.rmtree(pending, ignore_errors=True)
    private_dir(pending)
    for name, content in ((VERSIONS, versions), (RECORD, record)):  # RECORD last: the entry is whole
        with atomic_private_file(pending / name, durable=True) as f:
            f.write(json.dumps(content).encode())
    sync_dir(pending.parent)
    sync_dir(store.data_dir)  # which names trash/, made by the first deletion
    return pending


def finish(store: Store, study: Study, pending: Path) -> None:
    """Move the deleted study's files into its entry and make the entry whole. Its series' folder only when
    no study holds the series again (uploaded again since), its upload's other series only when no study of
    that upload is left (as `Store.remove_study_files` decides)."""
    files = moves.study_files(store, study)
    with store.ct_lock(study.study_uid):
        if store.find_series(study.series_uid) is None and files["ct"].is_dir():
            moves.move_dir(files["ct"], pending / "ct")
        with contextlib.suppress(OSError):  # only when no other series of the study is left
            files["ct"].parent.rmdir()
    if files["cache"].is_dir():
        moves.move_dir(files["cache"], pending / "cache")
    if study.upload_id:
        with store.upload_lock(study.upload_id):
            if not store.studies_of_upload(study.upload_id) and files["upload"].is_dir():
                moves.move_dir(files["upload"], pending / "upload")
    os.replace(pending, records.trash_dir(store) / study.id)


# -- the kept deletions listed --------------------------------------------------------------------------
def deleted_studies(store: Store) -> list[DeletedStudy]:
    """The kept deletions, most recent first (not those whose record cannot be read: `shown_to` names
    them)."""
    return records.kept(store)[0]


def kept_deletion(store: Store, study_id: str) -> DeletedStudy:
    """The kept deletion of `study_id` as it is now; NotFoundError when there is none."""
    try:
        return records.deleted_study(records.kept_entry(store, study_id))
    except FileNotFoundError:  # restored or erased meanwhile
        raise records.not_kept(study_id) from None


def shown_to(store: Store, actor: str, client: str | None = None) -> tuple[list[DeletedStudy], list[str]]:
    """The kept deletions as listed to a person (the web page's Deleted studies, `sarcoscope studies
    deleted`), and the ids of those whose record cannot be read (logged): audited as `view-deleted-studies`
    (who, when, which and how many), as being shown a study is, for the list names their patients."""
    kept, unreadable = records.kept(store)
    for study_id in unreadable:
        log.warning("The record of deleted study %s cannot be read: it is kept, not listed.", study_id)
    listed: dict[str, Any] = {"count": len(kept), "ids": [d.id for d in kept]}
    if unreadable:
        listed["unreadable"] = unreadable
    store.audit(actor, "view-deleted-studies", None, listed, client)
    return kept, unreadable


# -- erased ---------------------------------------------------------------------------------------------
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
    if not records.ENTRY_RE.match(study_id):
        raise records.not_kept(study_id)
    with locks.working_on(store, study_id):
        _erase(store, study_id, actor, client, deleted_at)


def _erase(
    store: Store, study_id: str, actor: str, client: str | None, deleted_at: dt.datetime | None
) -> None:
    """`erase`, under its study's `locks.working_on`."""
    entry = records.trash_dir(store) / study_id
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
        kept = records.deleted_study(claimed)
        sync_dir(claimed.parent)  # the entry out of place on the disk before the event that decides it
        if deleted_at is not None and kept.deleted_at != deleted_at:
            raise ConflictError(
                f"Not erased: study {study_id} was restored and deleted again since you were shown it (by "
                f"{kept.deleted_by} at {kept.deleted_at:%Y-%m-%d %H:%M} UTC, with {kept.n_versions} label "
                "versions). Look at the deleted studies again first."
            )
        erased = None if kept.deletion_id is None else {"deletion_id": kept.deletion_id}
        store.audit_erasure(actor, study_id, erased, records.study_of(claimed).study_uid, client)
    except BaseException:
        with locks.no_put_back(store):
            os.replace(claimed, entry)
        raise
    _remove(claimed, study_id)


def _not_erasable(store: Store, study_id: str) -> StoreError | None:
    """Why an erase found no entry (None: it is back, put back by a restore that failed: take it again).
    Looked at under `locks.no_put_back`, in the order the entry moves: .restoring before the study row,
    which a restore writes before it removes .restoring."""
    entry = records.trash_dir(store) / study_id
    with locks.no_put_back(store):
        if entry.is_dir():
            return None
        if entry.with_name(f".{study_id}.restoring").is_dir() or store.has_study(study_id):
            return ConflictError(f"Not erased: study {study_id} was restored since you were shown it.")
        if entry.with_name(f".{study_id}.erasing").is_dir():  # refused, it is put back: try again
            return _being_erased(study_id, restoring=False)
    return records.not_kept(study_id)


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
    kept = records.deleted_study(claimed)
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
    `locks.no_put_back`."""
    if not records.ENTRY_RE.match(study_id):
        return records.not_kept(study_id)
    entry = records.trash_dir(store) / study_id
    with locks.no_put_back(store):
        if entry.is_dir():
            return None
        if entry.with_name(f".{study_id}.erasing").is_dir():
            return _being_erased(study_id, restoring=True)
        if entry.with_name(f".{study_id}.restoring").is_dir():  # failed, it is put back; done, none is kept
            return ConflictError(
                f"Study {study_id} is being restored by someone else. Try again in a moment."
            )
    return records.not_kept(study_id)


# -- restored -------------------------------------------------------------------------------------------
def restore(store: Store, study_id: str, actor: str, client: str | None = None) -> Study:
    """Put a kept deletion back: its files, its study row and every label version, as they were. Refused
    (ConflictError) when its series is held by a study again, or its images are not kept with it."""
    if not records.ENTRY_RE.match(study_id):
        raise records.not_kept(study_id)
    with locks.working_on(store, study_id):
        for _ in range(_TRIES):
            if (study := _restore(store, study_id, actor, client)) is not None:
                return study
    raise _being_erased(study_id, restoring=True)


def _restore(store: Store, study_id: str, actor: str, client: str | None) -> Study | None:
    """`restore`, once; None when the entry was out of place as it was looked for, and is back."""
    try:
        entry = records.kept_entry(store, study_id)
        study = records.study_of(entry)
        versions = records.versions_of(entry)
    except (NotFoundError, FileNotFoundError):  # being erased, or erased
        if (why := _not_restorable(store, study_id)) is not None:
            raise why from None
        return None
    files = moves.study_files(store, study)
    with _upload_locked(store, study), store.ct_lock(study.study_uid):
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
        if not (restoring / "ct").is_dir():  # left with a study holding the series then (`moves.move_in`)
            with locks.no_put_back(store):
                os.replace(restoring, entry)
            raise ConflictError(
                f"Study {study_id} is not restored: its images are not kept with it (they stayed with a "
                "study of the same series that held them when this deletion was put back; that study's own "
                "deletion keeps them, when it is kept). It stays kept with its label versions until it is "
                "erased."
            )
        try:
            moves.move_out(restoring, files, study)
            moves.sync_moves(restoring, files)
            store.restore_rows(study, versions, actor, client)
        except BaseException:  # what was moved out goes back: the deletion is kept as it was
            moves.move_in(store, restoring, study)
            with locks.no_put_back(store):
                os.replace(restoring, entry)
            raise
    shutil.rmtree(restoring)
    return study


def _upload_locked(store: Store, study: Study) -> contextlib.AbstractContextManager[None]:
    """`Store.upload_lock` of the study's kept upload, if it has one: held by a restore or a put-back from
    its look at the upload's folder or studies (`moves.move_out`, `moves.move_in`) to its commit or
    put-back, so that a deletion of the upload's last study meanwhile either takes the upload first (the
    study is restored without it) or leaves it to this study."""
    return store.upload_lock(study.upload_id) if study.upload_id else contextlib.nullcontext()


# -- after a kill ---------------------------------------------------------------------------------------
def recover(store: Store) -> list[str]:
    """Finish or undo what a killed deletion, restore or erasure left: at the server's start, with the data
    folder locked (no deletion is under way), before it deletes files no study owns. An entry out of place
    that a restore or erasure beside it is working on (`sarcoscope studies restore|erase`, which hold its
    study's `locks.working_on`) is theirs to finish: left as it is, logged. Returns the ids of the entries
    left as they are (their record cannot be read, logged once; or being worked on): the files no study owns
    may be theirs (a restore moves its files out before it commits its study's row)."""
    left = set()
    for path in records.trash_dir(store).iterdir():
        try:
            if not _recover(store, path):
                left.add(records.study_id_of(path))
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
        if records.ENTRY_RE.match(study_id) and (fd := locks.nobody_working_on(store, study_id)) is not None:
            locks.let_go(store, study_id, fd)
    return sorted(left)


def _recover(store: Store, path: Path) -> bool:
    """`recover` of one entry of trash/; False when a restore or erasure is working on it (left to it).
    UnreadableRecordError when its record is needed and cannot be read (what the deletion, restore or erasure
    left is then kept as it is)."""
    if records.ENTRY_RE.match(path.name):  # kept: read only to tell whether it can be
        with contextlib.suppress(FileNotFoundError):  # taken out of place meanwhile by a restore or erasure
            records.deleted_study(path)
        return True
    if (
        match := records.OUT_OF_PLACE.match(path.name)
    ) is None:  # a stopped restore's entry kept beside a later
        return True  # deletion of its study, a file
    study_id = match.group(1)
    if (fd := locks.nobody_working_on(store, study_id)) is None:
        return False
    try:
        if path.is_dir():  # not finished meanwhile by the restore or erasure that let go as it was looked at
            _recover_left(store, path)
    finally:
        locks.let_go(store, study_id, fd)
    return True


def _recover_left(store: Store, path: Path) -> None:
    """`_recover` of an entry out of place that no process works on: finished or undone."""
    if match := records.DELETING.match(path.name):
        study_id = match.group(1)
        if store.has_study(study_id):  # the deletion did not commit: its record is not needed
            shutil.rmtree(path)
        else:
            finish(store, records.study_of(path), path)
            log.warning("Finished the deletion of a study that a stopped server left half done.")
    elif match := records.RESTORING.match(path.name):
        study_id = match.group(1)
        if store.has_study(study_id):  # restored: the entry's files are moved out (power lost after the
            # commit can undo renames not yet on the disk), to where its row says, then the emptied entry goes
            study = store.get_study(study_id)
            with _upload_locked(store, study):
                moves.move_out(path, moves.study_files(store, study), study)
            shutil.rmtree(path)
        elif (
            records.trash_dir(store) / study_id
        ).is_dir():  # restored, then deleted again: that deletion is kept
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
            study = records.study_of(path)
            with _upload_locked(store, study), store.ct_lock(study.study_uid):
                moves.move_in(store, path, study)
                with locks.no_put_back(store):
                    os.replace(path, records.trash_dir(store) / study_id)
            log.warning("Put back a deleted study whose restore was stopped half done.")
    elif (match := records.ERASING.match(path.name)) and not _erasure_audited(store, match.group(1), path):
        with locks.no_put_back(store):  # stopped before the erasure was decided
            os.replace(path, records.trash_dir(store) / match.group(1))
    elif match := records.ERASING.match(path.name) or records.ERASED.match(path.name):
        _remove(path, match.group(1))
        log.warning("Finished the erasure of a deleted study that a stopped server left half done.")
