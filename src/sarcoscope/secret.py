"""Per-installation secrets kept in files readable by their owner only (session cookies, de-identification).

One mechanism for every secret: a random key written once, on first use, with 0600 permissions, and never
replaced afterwards (a key that changed would silently invalidate sessions or change every pseudonym).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import warn_if_shared

logger = logging.getLogger(__name__)

#: 256-bit keys; a file holding fewer bytes than MIN_SECRET_BYTES is refused as damaged.
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16


def load_or_create_secret(path: Path) -> bytes:
    """The secret stored in `path`, created (0600, random) when the file does not exist yet.

    Creation is race-free: the key is written to a private temporary file and hard-linked into place, which
    fails if another process created `path` first; then that process's key is used.
    """
    path = Path(path).expanduser()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_BYTES))
            try:
                os.link(tmp, path)  # the caller says what the key is for and that it must be kept
            except FileExistsError:
                pass  # another process was first: use its key
            finally:
                tmp.unlink()
        except OSError as exc:
            raise SarcoscopeError(f"Cannot create the secret key file {path}: {exc}") from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SarcoscopeError(f"Cannot read the secret key file {path}: {exc}") from exc
    if len(data) < MIN_SECRET_BYTES:
        raise SarcoscopeError(
            f"The secret key file {path} holds {len(data)} bytes (at least {MIN_SECRET_BYTES} needed); "
            "restore it from a backup, or remove it to start a new key."
        )
    warn_if_shared(path, "secret key file")
    return data
