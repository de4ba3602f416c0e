"""Safe extraction of a zip of DICOM files (no path traversal, no links, bounded size against zip bombs).

Zip bombs are bounded twice, on the bytes actually written (counted while extracting, not taken from the
headers, which a crafted zip can fake): the whole archive may expand at most MAX_RATIO times its own size
(beyond a small allowance) and at most `max_bytes` in total (SARCOSCOPE_MAX_UNZIPPED_MB, default 4 GiB).
Extraction stops at the limit and removes everything it wrote.

A disk (or quota) that fills while extracting is not the archive's fault: it is an OutputError (from the
OSError), which the web app answers as the server's (507), not as a bad upload.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from sarcoscope.errors import InputError, OutputError
from sarcoscope.fileio import DISK_FULL

#: Default cap on the uncompressed size of one archive; a CT study is rarely above 2 GB.
DEFAULT_MAX_BYTES = 4 << 30
#: Environment variable setting that cap in MiB (for sites with larger studies).
MAX_BYTES_ENV = "SARCOSCOPE_MAX_UNZIPPED_MB"
MAX_MEMBERS = 200_000
#: The archive may expand at most this many times its own size (DICOM compresses about 2-10x, images
#: with much air up to ~50x)...
MAX_RATIO = 200.0
#: ...except that this much may always be extracted (a few highly compressible test images).
RATIO_ALLOWANCE_BYTES = 64 << 20
_CHUNK = 1 << 20


def max_unzipped_bytes() -> int:
    """The configured cap on one archive's uncompressed size (SARCOSCOPE_MAX_UNZIPPED_MB)."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        mib = float(text)
    except ValueError:
        mib = -1.0
    if not mib > 0:
        raise InputError(f"{MAX_BYTES_ENV} must be a positive number of MiB, got {text!r}")
    return int(mib * (1 << 20))


def _safe_member_path(name: str, archive: Path) -> PurePosixPath | None:
    """Relative path of a member, None for entries to ignore; InputError for dangerous names."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in path.parts:
        raise InputError(
            f"unsafe path {name!r} in zip {archive}: entries must stay inside the archive folder"
        )
    if not path.parts or posix.endswith("/") or path.parts[0] == "__MACOSX":
        return None
    return path


def extract_zip(archive: Path, dest: Path, max_bytes: int | None = None) -> int:
    """Extract `archive` into the (empty) folder `dest`; return the number of files written.

    Refuses (InputError) and leaves `dest` empty when the archive is unsafe, encrypted, damaged or expands
    beyond min(`max_bytes`, MAX_RATIO x its size + RATIO_ALLOWANCE_BYTES). When the disk of `dest` fills,
    `dest` is left empty too, and the error is an OutputError whose __cause__ is the OSError; its message
    names the archive but not `dest` (a temporary folder).
    """
    cap_bytes = max_unzipped_bytes() if max_bytes is None else max_bytes
    limit = min(cap_bytes, int(MAX_RATIO * archive.stat().st_size) + RATIO_ALLOWANCE_BYTES)
    why = "the size limit" if limit == cap_bytes else f"{MAX_RATIO:g} times its size (zip bomb?)"
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive} is not a readable zip file: {exc}") from exc
    try:
        with zf:
            return _extract_members(zf, archive, dest, limit, why)
    except BaseException:
        for entry in dest.iterdir() if dest.is_dir() else ():  # nothing partial stays behind
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        raise


def _too_big(archive: Path, limit: int, why: str) -> InputError:
    return InputError(f"zip file {archive} expands beyond {limit / 2**20:.0f} MiB ({why}); refused")


def _extract_members(zf: zipfile.ZipFile, archive: Path, dest: Path, limit: int, why: str) -> int:
    members = zf.infolist()
    if not members:
        raise InputError(f"zip file {archive} is empty")
    if len(members) > MAX_MEMBERS:
        raise InputError(f"zip file {archive} has {len(members)} entries (limit {MAX_MEMBERS})")
    if sum(m.file_size for m in members) > limit:  # declared sizes: refuse before writing anything
        raise _too_big(archive, limit, why)
    written = 0
    n_files = 0
    for member in members:
        rel = _safe_member_path(member.filename, archive)
        if rel is None or member.is_dir():
            continue
        if member.flag_bits & 0x1:  # zipfile would raise RuntimeError asking for a password
            raise InputError(
                f"zip entry {member.filename} in {archive} is encrypted (password-protected); "
                "extract it first or upload an unencrypted zip"
            )
        if stat.S_ISLNK(member.external_attr >> 16):
            raise InputError(f"zip file {archive} contains a symbolic link ({member.filename}); refused")
        target = dest.joinpath(*rel.parts)
        if not target.resolve().is_relative_to(dest.resolve()):
            raise InputError(f"unsafe path {member.filename!r} in zip {archive}; refused")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # fails where a file has a folder's name
            with zf.open(member) as src, open(target, "wb") as out:
                size = 0
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if written > limit:
                        raise _too_big(archive, limit, why)
                    if size > member.file_size:
                        raise InputError(
                            f"zip entry {member.filename} in {archive} expands beyond its declared size; "
                            "refused"
                        )
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                raise OutputError(
                    f"Cannot extract zip {archive}: {exc.strerror} (the disk is full); "
                    "free space and try again."
                ) from exc
            raise InputError(f"cannot extract {member.filename} from {archive}: {exc}") from exc
        n_files += 1
    if n_files == 0:
        raise InputError(f"zip file {archive} contains no files")
    return n_files
