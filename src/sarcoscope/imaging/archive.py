"""Safe extraction of a zip of DICOM files (no path traversal, no links, bounded size against zip bombs)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from sarcoscope.errors import InputError

#: Limits for one archive; a CT study is rarely above 2 GB uncompressed.
MAX_TOTAL_BYTES = 16 << 30
MAX_MEMBERS = 200_000
#: A member this large must not expand more than MAX_RATIO times (DICOM compresses about 2-10x).
RATIO_CHECK_BYTES = 16 << 20
MAX_RATIO = 200.0
_CHUNK = 1 << 20


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


def extract_zip(archive: Path, dest: Path) -> int:
    """Extract `archive` into the (empty) folder `dest`; return the number of files written."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{archive} is not a readable zip file: {exc}") from exc
    with zf:
        members = zf.infolist()
        if not members:
            raise InputError(f"zip file {archive} is empty")
        if len(members) > MAX_MEMBERS:
            raise InputError(f"zip file {archive} has {len(members)} entries (limit {MAX_MEMBERS})")
        declared = sum(m.file_size for m in members)
        if declared > MAX_TOTAL_BYTES:
            raise InputError(
                f"zip file {archive} would expand to {declared / 2**30:.1f} GiB "
                f"(limit {MAX_TOTAL_BYTES / 2**30:.0f} GiB)"
            )
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
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > RATIO_CHECK_BYTES and ratio > MAX_RATIO:
                raise InputError(
                    f"zip entry {member.filename} in {archive} expands {ratio:.0f} times (zip bomb?); refused"
                )
            target = dest.joinpath(*rel.parts)
            if not target.resolve().is_relative_to(dest.resolve()):
                raise InputError(f"unsafe path {member.filename!r} in zip {archive}; refused")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(member) as src, open(target, "wb") as out:
                    size = 0
                    while chunk := src.read(_CHUNK):
                        size += len(chunk)
                        written += len(chunk)
                        if size > member.file_size or written > MAX_TOTAL_BYTES:
                            raise InputError(
                                f"zip entry {member.filename} in {archive} expands beyond its declared size; "
                                "refused"
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise InputError(f"cannot extract {member.filename} from {archive}: {exc}") from exc
            n_files += 1
        if n_files == 0:
            raise InputError(f"zip file {archive} contains no files")
        return n_files
