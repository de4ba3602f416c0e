"""The store's refusals, one class per kind: the web layer maps each to an HTTP status, the CLI says its
message."""

from __future__ import annotations

from sarcoscope.errors import SarcoscopeError
from sarcoscope.store.models import Study


def reason_of(exc: BaseException) -> str:
    """An error's reason for a log or a client: an OSError's without its path, which names a study's files
    by their DICOM UIDs (or an upload's by the client's names, often the patient's)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


class StoreError(SarcoscopeError):
    """A request the store cannot carry out; the web layer maps subclasses to HTTP status codes."""


class NotFoundError(StoreError):
    """No study / label version with that id."""


class ConflictError(StoreError):
    """The request conflicts with what is stored (duplicate series, stale label version)."""


class StorageError(StoreError):
    """The data folder could not take a file (a full disk, a quota, an I/O error). The message gives the
    system's reason only: the file's path may hold the client's names (a zip's folders, often the
    patient's), and it goes to the client and the server's log."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @classmethod
    def of(cls, what: str, exc: OSError) -> StorageError:
        return cls(f"The server could not store {what}: {reason_of(exc)}.", exc.errno)


class StaleVersionError(ConflictError):
    """A save based on a label version that is no longer the latest; `latest_indices`: that one's slices
    (an edit of other slices cannot be saved on top of it)."""

    def __init__(self, message: str, latest: int | None, latest_indices: list[int] | None = None) -> None:
        super().__init__(message)
        self.latest = latest
        self.latest_indices = latest_indices


class SelectionConflictError(ConflictError):
    """An L3 selection change based on a selection someone else changed since; `study` holds theirs."""

    def __init__(self, message: str, study: Study) -> None:
        super().__init__(message)
        self.study = study
