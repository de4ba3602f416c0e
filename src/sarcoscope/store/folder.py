"""The data folder's files: where a study's CT files, decoded images and kept uploads live, the locks that
order their writing and removal, and their removal when no study owns them any more."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select

from sarcoscope.store.errors import StoreError
from sarcoscope.store.files import PRIVATE_FILE_MODE, private_dir
from sarcoscope.store.models import Study
from sarcoscope.store.studies import STUDY_ID_RE, StudiesMixin, is_dicom_uid
from sarcoscope.store.trash import locks, moves

log = logging.getLogger(__name__)


class DataFolderMixin(StudiesMixin):
    """The files of the studies, by the study rows that own them."""

    def series_dir(self, study: Study) -> Path:
        """Where a study's CT files live: derived from validated UIDs only, never from user input."""
        if not (is_dicom_uid(study.study_uid) and is_dicom_uid(study.series_uid)):
            raise StoreError(f"Study {study.id} has invalid UIDs; refusing to build a path from them.")
        return self.data_dir / "ct" / study.study_uid / study.series_uid

    def cache_dir(self, study_id: str) -> Path:
        """The study's decoded images (HU array, geometry), so that opening it needs no DICOM decoding."""
        if not STUDY_ID_RE.match(study_id):
            raise StoreError(f"Invalid study id {study_id!r}; refusing to build a path from it.")
        return self.data_dir / "cache" / study_id

    @contextmanager
    def ct_lock(self, study_uid: str) -> Iterator[None]:
        """Held by whoever adds or removes files in `ct/<StudyUID>/`, deciding by the study rows read under
        it: a series' folder is filled only when no study has it, and removed only when none has it.
        Threads of this process: a lock; `sarcoscope studies restore` beside the server: then the data
        folder's `locks/ct-<n>.lock`. Lock order: `upload_lock` before it, never after;
        `trash.locks.no_put_back` and database transactions may be taken under it, and none of them is held
        while waiting for it. The start's `remove_orphan_files` takes it without waiting, holding no other."""
        bucket = self.ct_bucket(study_uid)
        with self._ct_locks[bucket], self._flocked(f"ct-{bucket}.lock"):
            yield

    def ct_bucket(self, study_uid: str) -> int:
        """Which of the ct locks `study_uid` shares (studies of one bucket wait for each other)."""
        return zlib.crc32(study_uid.encode()) % len(self._ct_locks)

    @contextmanager
    def upload_lock(self, upload_id: str) -> Iterator[None]:
        """Held by whoever opens another series of a kept upload (adds a study), restores a study of it, or
        moves or removes its folder, deciding by the upload's study rows or its folder read under it until
        what relies on them is committed or moved: so that its last study's deletion, the opening of another
        of its series and the restore of another of its studies agree on who has it (a restore keeps the
        upload only while it is in its place, a deletion takes it only when no study of it is left). Threads
        of this process: a lock; `sarcoscope studies restore` beside the server: then the data folder's
        `locks/upload-<n>.lock`. Lock order: `trash.locks.working_on` before it; `ct_lock`,
        `trash.locks.no_put_back` and database transactions under it, and none of them is held while
        waiting for it (a deletion commits its rows and lets go of its ct lock before it takes this one).
        The start's `remove_orphan_files` takes it without waiting, holding no other."""
        bucket = zlib.crc32(upload_id.encode()) % len(self._upload_locks)
        with self._upload_locks[bucket], self._flocked(f"upload-{bucket}.lock"):
            yield

    @contextmanager
    def _flocked(self, name: str) -> Iterator[None]:
        """An flock on the data folder's `locks/<name>`, which a `sarcoscope studies` command beside the
        server shares; let go when the process ends, even by a kill."""
        fd = self._lock_file(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # lets go of the flock

    def _lock_file(self, name: str) -> int:
        """An open descriptor of the data folder's `locks/<name>` (made private) to flock."""
        fd = os.open(private_dir(self.data_dir / "locks") / name, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def upload_dir(self, upload_id: str) -> Path:
        """Where the other series of an upload wait to be opened (see Study.upload_id)."""
        if not STUDY_ID_RE.match(upload_id):
            raise StoreError(f"Invalid upload id {upload_id!r}; refusing to build a path from it.")
        return self.data_dir / "uploads" / upload_id

    def studies_of_upload(self, upload_id: str) -> list[Study]:
        """The studies opened from one upload, oldest first."""
        with self.session() as s:
            q = select(Study).where(Study.upload_id == upload_id).order_by(Study.created_at)
            return list(s.scalars(q))

    @contextmanager
    def using_files(self, study_id: str) -> Iterator[Study]:
        """The study, for work on its files (reading its images, writing into its cache folder); its
        deletion removes them only once such work has ended, so that nothing written here outlives the
        study and nothing read is half removed. NotFoundError when the study is gone."""
        with self._in_use_changed:
            self._in_use[study_id] += 1
        try:
            yield self.get_study(study_id)
        finally:
            with self._in_use_changed:
                self._in_use[study_id] -= 1
                if not self._in_use[study_id]:
                    del self._in_use[study_id]
                    self._in_use_changed.notify_all()

    def new_tmp_dir(self) -> Path:
        path = self.data_dir / "tmp" / uuid.uuid4().hex
        private_dir(path)
        return path

    def remove_study_files(self, study: Study) -> None:
        """Delete every file of a study: its CT files, its decoded images, an emptied StudyUID folder, and
        its upload's other series when no study of that upload is left (they are the same patient's)."""
        series = self.series_dir(study)
        with self.ct_lock(study.study_uid):
            if self.find_series(study.series_uid) is None:  # not a study of the series uploaded again
                shutil.rmtree(series, ignore_errors=True)
            with contextlib.suppress(OSError):  # only when no other series of the study is left
                series.parent.rmdir()
        shutil.rmtree(self.cache_dir(study.id), ignore_errors=True)
        if study.upload_id:
            with self.upload_lock(study.upload_id):
                if not self.studies_of_upload(study.upload_id):
                    shutil.rmtree(self.upload_dir(study.upload_id), ignore_errors=True)

    def remove_orphan_files(self, *, keep_unowned: bool = False) -> list[Path]:
        """Delete what a killed process left behind: everything in `tmp/`, and CT series, image caches
        and kept uploads that no study row owns (an upload stopped before its row was committed, or a
        deletion stopped after it). Call with the data folder locked (`lock`). Returns what was deleted.

        An unowned folder goes only when the lock its filler holds is free (taken without waiting) and no
        study owns it under that lock: `sarcoscope studies restore` beside the starting server moves a
        study's files into place before it commits its row, and what it is filling is left to it.

        `keep_unowned`: only `tmp/`, while a kept deletion's record cannot be read (`trash.recover`): the
        files no study owns may be that study's, which only its record names."""
        removed = list((self.data_dir / "tmp").iterdir())
        for path in removed:
            _remove(path)
        if not keep_unowned:
            removed += self._remove_unowned()
        if removed:
            log.warning(
                "Removed %d files or folders left by an interrupted upload or deletion.", len(removed)
            )
        return removed

    def _remove_unowned(self) -> list[Path]:
        """`remove_orphan_files` of what no study owns; an emptied StudyUID folder too."""
        removed, busy = [], 0
        for path in self._unowned():
            with contextlib.ExitStack() as held:
                if not self._filler_kept_out(held, path):
                    busy += 1
                elif os.path.lexists(path) and not self._owned(path):  # gone: a failed restore took it back
                    _remove(path)
                    removed.append(path)
        for study_dir in (self.data_dir / "ct").iterdir():
            if study_dir.is_symlink() or not study_dir.is_dir():
                continue
            with contextlib.ExitStack() as held:
                if self._filler_kept_out(held, study_dir) and not any(study_dir.iterdir()):
                    study_dir.rmdir()
        if busy:
            log.info(
                "Kept %d folders no study owns yet: a `sarcoscope studies restore` beside the server is "
                "moving them into place.",
                busy,
            )
        return removed

    def _unowned(self) -> list[Path]:
        """CT series, image caches and kept uploads that no study row owns."""
        with self.session() as s:
            series = {(a, b) for a, b in s.execute(select(Study.study_uid, Study.series_uid))}
            ids = set(s.scalars(select(Study.id)))
            uploads = set(s.scalars(select(Study.upload_id).where(Study.upload_id.is_not(None))))
        unowned = []
        for study_dir in (self.data_dir / "ct").iterdir():
            if study_dir.is_symlink() or not study_dir.is_dir():  # never followed out of the folder
                unowned.append(study_dir)
                continue
            unowned += [p for p in study_dir.iterdir() if (study_dir.name, p.name) not in series]
        unowned += [p for p in (self.data_dir / "cache").iterdir() if p.name not in ids]
        unowned += [p for p in (self.data_dir / "uploads").iterdir() if p.name not in uploads]
        return unowned

    def _filler_kept_out(self, held: contextlib.ExitStack[None], path: Path) -> bool:
        """Take into `held`, without waiting, the lock a restore holds while it fills `path` (something in
        ct/, cache/ or uploads/) until its commit: a series' ct lock, a study's `trash.locks.working_on`,
        an upload's lock (a move's copy or mark beside a folder, across file systems: that folder's).
        False when someone holds it. Each is the first lock taken (the documented order: nothing is held
        while it is asked for), and only the owner's rows are read under it."""
        ct = self.data_dir / "ct"
        if ct in (path.parent, path.parent.parent):  # a StudyUID folder, or a series' folder in it
            bucket = self.ct_bucket((path if path.parent == ct else path.parent).name)
            return self._claimed(held, self._ct_locks[bucket], f"ct-{bucket}.lock")
        name = moves.moved_folder(path.name)  # a move's copy or mark: locked as the folder it is of
        if path.parent == self.data_dir / "uploads":
            bucket = zlib.crc32(name.encode()) % len(self._upload_locks)
            return self._claimed(held, self._upload_locks[bucket], f"upload-{bucket}.lock")
        if not STUDY_ID_RE.match(name):  # no study's decoded images: nobody fills it
            return True
        if (fd := locks.nobody_working_on(self, name)) is None:
            return False
        held.callback(locks.let_go, self, name, fd)
        return True

    def _claimed(self, held: contextlib.ExitStack[None], thread_lock: threading.Lock, name: str) -> bool:
        """`thread_lock` and the flock on `locks/<name>` (as `ct_lock` and `upload_lock` take them) into
        `held` when nobody holds them; False, never waiting, when someone does."""
        if not thread_lock.acquire(blocking=False):
            return False
        held.callback(thread_lock.release)
        fd = self._lock_file(name)
        held.callback(os.close, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _owned(self, path: Path) -> bool:
        """Whether a study owns `path` (something in ct/, cache/ or uploads/) now."""
        if path.parent.parent == self.data_dir / "ct":
            return self.find_series(path.name, path.parent.name) is not None
        if path.parent == self.data_dir / "cache":
            return self.has_study(path.name)
        if path.parent == self.data_dir / "uploads":
            return bool(self.studies_of_upload(path.name))
        return False  # not a StudyUID folder in ct/


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
