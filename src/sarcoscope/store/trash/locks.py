"""The locks of the trash: `no_put_back` (an entry put back in place, or looked for) and each study's
`working_on` (a restore or erasure under way), which `recover` claims alone (`nobody_working_on`) to finish
or undo what a killed one left."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sarcoscope.fileio import LockHeld, claim_lock
from sarcoscope.store.files import PRIVATE_FILE_MODE, private_dir

if TYPE_CHECKING:
    from sarcoscope.store.store import Store

_PUT_BACK_LOCK = threading.Lock()


@contextlib.contextmanager
def no_put_back(store: Store) -> Iterator[None]:
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
def working_on(store: Store, study_id: str) -> Iterator[None]:
    """Held by a restore or an erasure of `study_id` from before it looks at its entry until its last step:
    a shared flock (restores and erasures decide among themselves by renames), which `recover` cannot take
    then, so it leaves their entries out of place to them; let go when the process ends, even by a kill,
    which is when `recover` must finish or undo what they left. Waits only while `recover` handles that
    study's entries, or the start's `Store.remove_orphan_files` its decoded images no study owns (a
    restore's, moved into place before its commit, are left to it). Its file is removed by whoever lets go
    of it last (nothing named by an erased study's id is left); one waiting for it then takes a file made
    anew."""
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
            let_go(store, study_id, fd)


def nobody_working_on(store: Store, study_id: str) -> int | None:
    """`study_id`'s lock (`working_on`) held alone, an open descriptor to let go with `let_go`; None while
    a restore or erasure of it holds it (never waits)."""
    try:
        return claim_lock(_entry_lock(store, study_id))
    except LockHeld:
        return None


def let_go(store: Store, study_id: str, fd: int) -> None:
    """Let go of a study's lock held alone (exclusive), removing its file: a restore or erasure waiting for
    it takes a new one."""
    try:
        path = _entry_lock(store, study_id)
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                path.unlink()
    finally:
        os.close(fd)
