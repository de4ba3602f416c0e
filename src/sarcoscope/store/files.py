"""Files of the data folder are readable by their owner only (0700 folders, 0600 files), whatever the umask:
the folder holds patient data (CT files, decoded images, the SQLite database)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`mkdir -p path`, every folder it creates owner-only."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # created by another thread in between
            continue
        os.chmod(folder, PRIVATE_DIR_MODE)
    return path


def open_private(path: Path) -> BinaryIO:
    """A new (or truncated) file for writing, owner-only from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


@contextmanager
def atomic_private_file(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A file written under a temporary name and renamed to `path` once complete: readers never see
    half a file, and a failed write leaves nothing behind. `durable`: on the disk, its content and its name
    (fsync), when it returns: for a file that a database commit after it relies on, which power lost after
    the commit must not find empty or missing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open_private(tmp) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            sync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_dir(path: Path) -> None:
    """Put the names in the folder `path` on the disk (fsync): a file created or renamed in it is found
    there after power is lost."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """Put a folder's files, its subfolders and their names on the disk (fsync), as copied: before the
    original is removed (symbolic links are names only)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_dir(Path(folder))


def make_private(path: Path) -> None:
    """Restrict an existing file or folder to its owner (folders 0700, files 0600)."""
    os.chmod(path, PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_FILE_MODE)
