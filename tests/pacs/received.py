"""A stand-in for the C-STORE event pynetdicom hands `Node._on_store`, so node tests can feed it files."""

from __future__ import annotations

from pathlib import Path

import pydicom


class Received:
    """What pynetdicom hands the C-STORE handler for one file."""

    def __init__(self, path: Path) -> None:
        self.dataset = pydicom.dcmread(path)
        self._raw = path.read_bytes()

    def encoded_dataset(self, include_meta: bool = True) -> bytes:
        return self._raw
