"""Atomic file writes: an interrupted run never leaves a half-written checkpoint, model, card or pointer;
and output folders checked before the work that fills them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sarcoscope.errors import OutputError, SarcoscopeError

#: errno values that say the disk (or the user's quota) is full: the server's or machine's fault, never the
#: input's, said as such (HTTP 507 in the web app).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file `.<name>.<random>.tmp` in the same folder, then move it over
    `path`. The temporary file is a locked_temp_file, locked until it is in place: those of `path` that
    writers killed (kill -9, the out-of-memory killer) left, a cohort's rows or a case's file list, are
    removed first; a running writer's are not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    removed = remove_left_files(path.parent.glob(f"{glob.escape(prefix)}{'?' * 8}.tmp"))  # mkstemp's names
    if removed:  # by count: the folder may be named after a patient
        logger.info("Removed %d unfinished temporary file(s) that stopped runs left.", removed)
    fd, tmp_name = locked_temp_file(path.parent, prefix, ".tmp")
    tmp = Path(tmp_name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; kept files get the user's usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # its lock goes once it is in place (or removed)


def _umask() -> int:
    """The process's umask, read without changing it where the system can tell (Linux): setting it to 0 and
    back, the only portable way, opens a moment in which a file another thread creates (the web server's
    uploads, label versions) gets mode 0666, writable by everyone."""
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # the moment's files are private, not open to everyone
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()
_PROC_STATUS = Path("/proc/self/status")


class LockHeld(Exception):
    """Another process holds the lock `claim_lock` asked for; `holder` is its process id, as it wrote it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def claim_lock(path: Path) -> int:
    """Claim the lock file `path` (created 0600) for this process: an open descriptor holding an exclusive
    lock until it is closed or the process ends, even by a kill, so no stale lock outlives a crash.
    Raises LockHeld when another process (or another claim of this one) holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(holder) from None
        except OSError:  # no locks on this file system
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # its holder removed the file as it let go (holding_lock's `remove`): claim the new one
    with contextlib.suppress(OSError):  # a full disk: the lock holds, its holder unnamed
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    return fd


@contextlib.contextmanager
def holding_lock(path: Path, busy: Callable[[str], str], *, remove: bool = False) -> Iterator[None]:
    """Hold the lock file `path` (claim_lock) while the block runs, so that two runs never write one output
    at once. Held by another process: OutputError(busy(its process id)). On a file system without locks (an
    NFS share mounted without them) the block runs unguarded, with a warning, as before there were locks.
    `remove`: the file is deleted as the lock is let go (a lock beside the user's folders leaves nothing)."""
    try:
        fd: int | None = claim_lock(path)
    except LockHeld as held:
        raise OutputError(busy(held.holder)) from None
    except OSError as exc:
        logger.warning(
            "cannot lock %s (%s): make sure no other run writes there", path.parent, exc.strerror or exc
        )
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            if remove:
                with contextlib.suppress(OSError):
                    path.unlink()
            os.close(fd)


#: The lock file of a LockedTempDir `<folder>` is `<folder>.lock`, beside it.
LOCK_SUFFIX = ".lock"


class LockedTempDir:
    """A temporary folder `<prefix><random><suffix>` in `parent` (private: `mode` 0700 unless asked; the
    umask applies) whose maker holds its lock file (claim_lock) from before the folder is made until it is
    removed: `remove_left_folders` removes it only when it can take that lock, so only once its maker has
    ended, by any means (kill -9 included). A flock is the kernel's, so this holds across PID namespaces
    (containers sharing /tmp), where a process id says nothing, and a process id reused by another process
    keeps nothing. Removed by `cleanup` (or the `with` block's end); where the file system has no locks,
    made without its lock file."""

    def __init__(self, parent: str | Path, prefix: str, suffix: str = "", mode: int = 0o700) -> None:
        while True:
            fd, lock = tempfile.mkstemp(prefix=prefix, suffix=suffix + LOCK_SUFFIX, dir=parent)
            os.close(fd)
            try:
                held: int | None = claim_lock(Path(lock))
            except LockHeld:  # a sweep found it before its folder was made, and removes it: another name
                continue
            except OSError:  # no locks on this file system: a folder without one (remove_left_folders)
                os.unlink(lock)
                held = None
            name = lock.removesuffix(LOCK_SUFFIX)
            try:
                os.mkdir(name, mode)
                break
            except BaseException as exc:
                if held is not None:  # the folder is not this one's: only its lock file goes
                    _let_go(None, Path(lock), held)
                if not isinstance(exc, FileExistsError):
                    raise
        self.name = name
        self._finalizer = weakref.finalize(self, _let_go, Path(name), Path(lock), held)

    def cleanup(self) -> None:
        """Remove the folder, then its lock file, and let go of the lock."""
        self._finalizer()

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def _let_go(folder: Path | None, lock: Path, fd: int | None) -> None:
    """Remove `folder` (gone already when it was renamed into place), then its lock file `lock` held as
    `fd`; a folder that could not be removed is said (a warning, _said_where) and keeps its lock file, for
    the next sweep to try again."""
    try:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            if os.path.lexists(folder):
                logger.warning("Could not remove %s (patient data): remove it.", _said_where(folder))
                return
        if fd is not None:
            lock.unlink(missing_ok=True)  # held: nobody else removes it now
    finally:
        if fd is not None:
            os.close(fd)


def _said_where(folder: Path) -> str:
    """A LockedTempDir folder as a log (a server's, a Dask worker's: collected, shared) says it: an
    images_temp_dir folder by its name, which names no patient; an output's unfinished copy (PARTIAL) by
    the folder it is in, as its name holds the output folder's, which may be a patient's (a batch case's)."""
    if _IMAGES_DIR.fullmatch(folder.name):
        return f"the temporary folder {folder}"
    hidden = "a hidden `.<output>.<random>.partial`"
    return f"an unfinished copy of an output folder ({hidden}) in {folder.parent}"


def remove_left_folders(
    parent: str | Path,
    named: re.Pattern[str],
    lockless_ended: Callable[[re.Match[str]], bool] = lambda found: False,
) -> list[str]:
    """Remove this user's LockedTempDir folders in `parent` (names that fullmatch `named`) whose lock file
    can be taken without waiting (their maker has ended), and the lock files a maker killed between making
    one and its folder (or removing the folder and it) left; never another user's. A folder without a
    lock file (an earlier version's, or on a file system without locks) goes when `lockless_ended` says its
    maker has ended. Returns the names of the folders removed."""
    try:
        names = [entry.name.removesuffix(LOCK_SUFFIX) for entry in os.scandir(parent)]
    except OSError:
        return []
    found = {name: match for name in sorted(set(names)) if (match := named.fullmatch(name))}
    removed = []
    for name, match in found.items():
        folder, lock = Path(parent) / name, Path(parent) / (name + LOCK_SUFFIX)
        # looked at now, not as listed: a folder's lock file is made before it, and may not be listed
        if _foreign(folder, stat.S_ISDIR) or _foreign(lock, stat.S_ISREG):
            continue
        made = os.path.isdir(folder)
        if not os.path.lexists(lock):
            if made and lockless_ended(match):
                shutil.rmtree(folder, ignore_errors=True)
                if not os.path.lexists(folder):
                    removed.append(name)
            continue
        try:
            fd = claim_lock(lock)
        except (LockHeld, OSError):  # held (its maker runs), or not to be locked: left alone
            continue
        _let_go(folder, lock, fd)
        if made and not os.path.lexists(folder):
            removed.append(name)
    return removed


#: The unfinished copy of an output folder `out` that a run writes beside it and renames into place at the
#: end (export.writer's set of outputs, deidentify's copy): `.out.<random>.partial`, a LockedTempDir
#: (partial_beside); the random part has no dot, so group 1 is `out`'s name. An earlier version's has no
#: lock file (the writer's: 12 hex digits).
PARTIAL = re.compile(r"\.(.+)\.([A-Za-z0-9_]+)\.partial")


def partial_beside(out_dir: Path, mode: int = 0o700) -> LockedTempDir:
    """The folder (PARTIAL) in which a run writes what becomes `out_dir`; its lock file is held until it is
    cleaned up, so only a run that has ended leaves one for `remove_left_partials`."""
    return LockedTempDir(out_dir.parent, prefix=f".{out_dir.name}.", suffix=".partial", mode=mode)


def remove_left_partials(out_dir: Path, *, lockless: bool = False) -> None:
    """Remove the unfinished copies that runs killed (kill -9, the out-of-memory killer) left beside their
    output folders in `out_dir`'s parent: those whose lock nobody holds (remove_left_folders), whatever
    output they were for; with `lockless`, `out_dir`'s own without a lock file too (the caller holds a lock
    that keeps any other run from writing it). Logged by count only (an output folder may be named after
    a patient)."""
    removed = remove_left_folders(
        out_dir.parent, PARTIAL, lambda found: lockless and found[1] == out_dir.name
    )
    if removed:
        logger.info("Removed %d unfinished output folder(s) that stopped runs left.", len(removed))


def locked_temp_file(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """mkstemp (an open descriptor and the name of a new private file `<prefix><random><suffix>` in
    `folder`) whose descriptor holds a flock on the file until it is closed: `remove_left_files` removes the
    file only when it can take that lock, so only once its writer has closed it or ended (kill -9
    included). Where the file system has no locks, the file is made without one (and never removed so)."""
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a sweep took it before this one did, and removes it: another name
            os.close(fd)
            continue
        except OSError:  # no locks on this file system
            return fd, name
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(name)):
                return fd, name
        except FileNotFoundError:  # a sweep took it and removed it before this one locked it
            pass
        os.close(fd)


def remove_left_files(paths: Iterable[Path]) -> int:
    """Remove the locked_temp_file files among `paths` (this user's regular files) whose lock can be taken
    without waiting: their writer has ended without removing them. Returns how many were removed."""
    removed = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # gone (renamed into place), a link, or not readable: left alone
            continue
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_uid != os.getuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(found, os.lstat(path)):  # not renamed into place meanwhile
                os.unlink(path)
                removed += 1
        except OSError:  # held (its writer runs), no locks here, or gone meanwhile: left alone
            continue
        finally:
            os.close(fd)
    return removed


def _foreign(path: Path, is_kind: Callable[[int], bool]) -> bool:
    """Whether `path` is there but not this user's, or not of the kind asked (a symlink, for one)."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return not is_kind(found.st_mode) or found.st_uid != os.getuid()


#: What a temporary folder holds patient data for outside any output: an extracted zip, a series retrieved
#: from a PACS, a validation's predicted label maps not kept (images_temp_dir).
_TEMP_KINDS = ("zip", "dicomweb", "predictions")
#: Such a folder, named by the process that made it: one left by a process that died (the out-of-memory
#: killer, kill -9, a cluster's job kill; a batch case's worker is expected to die so) is removed by the
#: next images_temp_dir of any run of its user, once nobody holds its lock file (LockedTempDir).
_IMAGES_DIR = re.compile(rf"sarcoscope-({'|'.join(_TEMP_KINDS)})-(\d+)-[A-Za-z0-9_]+")


def images_temp_dir(what: str) -> LockedTempDir:
    """A private (0700) temporary folder for `what` (_TEMP_KINDS) patient data, removed when it is closed;
    the ones that this user's processes that died left are removed first (remove_dead_images): every run
    that makes one sweeps, so no command leaves them for good."""
    if what not in _TEMP_KINDS:
        raise ValueError(f"images_temp_dir of unknown kind {what!r}")
    remove_dead_images()
    return LockedTempDir(tempfile.gettempdir(), prefix=f"sarcoscope-{what}-{os.getpid()}-")


def remove_dead_images() -> None:
    """Remove this user's images_temp_dir folders whose maker has ended (remove_left_folders; never another
    user's, nor a running process's, in whatever PID namespace it runs); logged at INFO by the folders'
    names, which name no patient. One without a lock file, made before there were any, goes when the
    process its name gives is no longer running, as then."""
    removed = remove_left_folders(tempfile.gettempdir(), _IMAGES_DIR, _process_ended)
    if removed:
        logger.info(
            "Removed %d temporary folder(s) of stopped sarcoscope runs from %s: %s",
            len(removed),
            tempfile.gettempdir(),
            ", ".join(removed),
        )


def _process_ended(found: re.Match[str]) -> bool:
    """Whether no process (that this one may signal) has the id an images_temp_dir name gives."""
    try:
        os.kill(int(found[2]), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # running (another user's pid)
        return False
    return False


def warn_if_shared(path: Path, what: str) -> None:
    """Say in the log when the file of a secret (`what`: "secret key file", "token file") is open to other
    users of the machine: it stays usable (refusing would stop a running site over a chmod), but anyone
    sharing the machine could copy it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # read a moment ago: whoever reads it next says what is wrong
        return
    if mode & 0o077:
        logger.warning("The %s %s is readable by other users (mode %o): chmod 600 it.", what, path, mode)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_output_folder(out_dir: Path, *, replaced: bool = False) -> None:
    """Refuse an output folder that cannot be written, before any work (an analysis can take minutes).

    `replaced`: the folder is swapped for a new one holding the outputs (and the other files it held), as
    `analyze` writes them; then it may not be the current folder or one above it (a process's working
    folder cannot be swapped), the home folder or a file system's root."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"Output path {out_dir} exists and is not a folder.")
    if replaced:
        target, cwd = out_dir.resolve(), Path.cwd().resolve()
        if target == cwd or target in cwd.parents or target == Path.home().resolve():
            raise OutputError(
                f"Output folder {out_dir} is the current folder, one above it or the home folder; the "
                "outputs are written as a new folder swapped in for it. Give them a folder of their own, "
                f"e.g. -o {out_dir / 'sarcoscope-out'}."
            )
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"Cannot create the output folder {out_dir}: {parent} is not a folder.")
    # the outputs are written beside out_dir and swapped in: its parent (or first existing ancestor) must
    # take new entries
    for folder in (parent, out_dir) if out_dir.is_dir() else (parent,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"Cannot write the outputs into {out_dir}: {folder} is not writable.")


def check_outside_input(out_dir: Path, source: Path, what: str = "input folder") -> None:
    """Refuse an output folder that is the input folder or one inside it: a later run would read what was
    written there as input (the SEG, SR and QC capture as more series, de-identified copies as another
    patient's, a case's outputs as another study)."""
    if not Path(source).is_dir():
        return
    out, inside = Path(out_dir).resolve(), Path(source).resolve()
    if out == inside or inside in out.parents:
        raise OutputError(
            f"The output folder {out_dir} is {'the' if out == inside else 'inside the'} {what} {source}: a "
            "later run would read the outputs as input. Choose a folder outside it."
        )


def read_csv(
    path: Path, what: str, error: type[SarcoscopeError] = SarcoscopeError
) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows (dicts by header) of a UTF-8 CSV file that a user gave (a byte-order mark allowed).

    A file that cannot be read, is not UTF-8 (Excel's "CSV" saves Windows-1252) or is not CSV is one `error`
    naming the file (and the line of the first bad byte), not a crash; `what` names the file ("Manifest").
    """
    import codecs
    import csv
    import io

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"Cannot read {what} file {path}: {exc}") from None
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{what} file {path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as "
            "UTF-8 (in Excel: CSV UTF-8)."
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as exc:
        raise error(f"{what} file {path}: not a readable CSV file ({exc}).") from None
    return list(reader.fieldnames or []), rows


def read_npy(path: Path, error: type[SarcoscopeError] = SarcoscopeError) -> np.ndarray:
    """The array of a .npy file that a user gave; a file that is not one is one `error` naming it (numpy
    takes a file without the .npy header for a pickle, and its message advises loading it unsafely)."""
    import numpy as np

    try:
        with open(path, "rb") as fh:
            if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise error(f"{path} is not a NumPy array file (a .npy file starts with \\x93NUMPY).")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise error(f"Cannot read {path}: {exc}") from None


#: Bytes deflated per task by `write_gzip`; each chunk after the first is primed with the 32 KiB before it.
GZIP_CHUNK = 1 << 22
_WINDOW = 1 << 15


def write_gzip(data: bytes | memoryview, out: BinaryIO, level: int = 1, threads: int | None = None) -> None:
    """Write `data` to `out` as one gzip member, deflated in chunks on `threads` threads (default: all cores).

    As pigz does: each chunk is raw deflate primed with the 32 KiB before it and ended by a sync flush, so
    the chunks join into one ordinary deflate stream that any gzip reader (a browser's included) reads.
    zlib releases the GIL while it deflates, so two cores nearly halve the time of a large file (the web
    viewer's CT). The bytes differ from gzip.GzipFile's; what they decompress to does not.
    """
    import struct
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    view = memoryview(data).cast("B")
    starts = range(0, max(len(view), 1), GZIP_CHUNK)  # one (empty) chunk for empty data

    def deflate(start: int) -> bytes:
        primer = {"zdict": bytes(view[start - _WINDOW : start])} if start else {}
        deflater = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, **primer)
        body = deflater.compress(view[start : start + GZIP_CHUNK])
        last = start + GZIP_CHUNK >= len(view)
        return body + deflater.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    # magic, deflate, no flags, mtime 0 (the bytes depend on the content only), extra flags, unknown OS
    out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + (b"\x04" if level == 1 else b"\x00") + b"\xff")
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        for piece in pool.map(deflate, starts):
            out.write(piece)
    out.write(struct.pack("<II", zlib.crc32(view), len(view) & 0xFFFFFFFF))
