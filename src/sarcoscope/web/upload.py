"""Receiving a CT upload: the multipart body is parsed while it streams in and each file is written straight
into the upload's own folder under the data folder (owner-only).

Nothing is held in memory or copied through the system's temporary folder (on many Linux systems a RAM
disk, and outside the data folder's protection). A server killed mid-upload leaves only that folder,
which the next start deletes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from sarcoscope.store import StorageError
from sarcoscope.store.files import open_private
from sarcoscope.web.volumes import NIFTI_SUFFIXES, UploadedPart

MAX_FILES = 20000
MAX_FIELDS = 20
MAX_FIELD_BYTES = 1024


def _suffix(name: str) -> str:
    """The server's file suffix for a part: only .zip and NIfTI are read differently from DICOM."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return ".zip"
    return next((s for s in NIFTI_SUFFIXES if lower.endswith(s)), ".dcm")


class _Receiver:
    """python-multipart callbacks: file parts named `files` go to disk, short text fields to memory.

    The callbacks run on the event loop, so file operations are queued and done by `flush` in a worker
    thread after each chunk, in order (one chunk may end a file and begin the next).
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.names: list[str] = []
        self.paths: list[Path] = []
        self.sizes: list[int] = []
        self.fields: dict[str, str] = {}
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._field: bytearray | None = None
        self._queue: list[Path | bytes | None] = []  # a path opens a file, bytes are written, None closes
        self._out: BinaryIO | None = None

    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise HTTPException(400, "Every part of the upload needs a Content-Disposition name.")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != "files":
                raise HTTPException(422, f"Send the files in the field 'files', not '{self._name[:64]}'.")
            if len(self.paths) >= MAX_FILES:
                raise HTTPException(413, f"Too many files in one upload (at most {MAX_FILES}).")
            client_name = options[b"filename"].decode("utf-8", "replace").replace("\\", "/")
            # The client's base name is kept for messages and the suffix only, never for a path.
            name = PurePosixPath(client_name).name[:255]
            path = self.work / f"part{len(self.paths):06d}{_suffix(name)}"
            self.names.append(name)
            self.paths.append(path)
            self.sizes.append(0)
            self._queue.append(path)
        else:
            if len(self.fields) >= MAX_FIELDS:
                raise HTTPException(413, f"Too many form fields (at most {MAX_FIELDS}).")
            if self._name == "files":
                raise HTTPException(422, "Field 'files' must carry files, not text.")
            self._field = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            self._field += data[start:end]
            if len(self._field) > MAX_FIELD_BYTES:
                raise HTTPException(413, f"Form field '{self._name[:64]}' is too long.")
        else:
            self._queue.append(data[start:end])
            self.sizes[-1] += end - start

    def on_part_end(self) -> None:
        if self._field is not None:
            self.fields[self._name] = self._field.decode("utf-8", "replace")
            self._field = None
        else:
            self._queue.append(None)

    def flush(self) -> None:
        """Carry out the queued file operations (in a worker thread, off the event loop)."""
        for op in self._queue:
            if isinstance(op, Path):
                self._out = open_private(op)
            elif op is None:
                self.close()
            else:
                assert self._out is not None
                self._out.write(op)
        self._queue.clear()

    def close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            out.close()  # closed even when writing what it buffered fails

    @property
    def parts(self) -> list[UploadedPart]:
        return [UploadedPart(n, p, s) for n, p, s in zip(self.names, self.paths, self.sizes, strict=True)]


async def receive_upload(request: Request, work: Path) -> tuple[list[UploadedPart], str | None]:
    """The uploaded files (saved in `work`) and the optional `series_uid` field; 4xx for a bad body, and a
    StorageError (507 when the disk is full) naming no folder when a file cannot be written."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise HTTPException(415, "Send the files as multipart/form-data (field 'files').")
    if b"boundary" not in options:
        raise HTTPException(400, "The multipart/form-data content type names no boundary.")
    receiver = _Receiver(work)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await run_in_threadpool(receiver.flush)
        parser.finalize()
        receiver.close()  # writes what it buffered: a full disk may show only here
    except FormParserError as exc:
        raise HTTPException(400, f"The upload is not valid multipart/form-data: {exc}") from None
    except OSError as exc:  # a full disk: 507 by its reason only (the caller removes `work`)
        raise StorageError.of("the upload", exc) from None
    finally:
        with contextlib.suppress(OSError):  # a failure said already
            receiver.close()
    if not receiver.parts:
        raise HTTPException(422, "No files received: send them in the multipart field 'files'.")
    return receiver.parts, receiver.fields.get("series_uid")
