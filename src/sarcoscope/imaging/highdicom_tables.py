"""highdicom's table of the DICOM standard's modules, decoded one module at a time.

The first SEG, SR or secondary capture a process builds makes highdicom read its whole table of the
standard's modules and their attributes (a 22 MB JSON file: 0.3-1.4 s of CPU and 110 MB at its peak, 60 MB
kept), though such an object looks at a few dozen of its 436 modules. `sarcoscope analyze` paid that in every
process, about a tenth of its time and the peak of its memory. The same table, stored one line per module
(`highdicom_modules.tsv.gz`, written by `scripts/update_highdicom_table.py` from the installed highdicom and
checked against it by the tests), is read in 0.05 s and each module decoded when highdicom first asks for it.

Only for the highdicom version the file was made from: with any other, highdicom's own table is left in use.
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

TABLE_FILE = "highdicom_modules.tsv.gz"

#: highdicom's function that loads the whole table (in highdicom._standard_utils, imported by name elsewhere).
_LOADER = "get_module_attribute_map"


class ModuleTable(Mapping[str, list[dict[str, Any]]]):
    """Module key -> its attributes as highdicom lists them ({keyword, type, path}), decoded on access.

    Kept as the file's bytes and where each module's row lies in them: decoding the 13 MB and splitting it
    into a string per row cost more than finding the rows (decode_table with 40 modules read: 40 -> 24 ms
    of CPU, issue 18), and an analysis reads a few dozen."""

    def __init__(self, text: bytes, rows: dict[str, tuple[int, int]]) -> None:
        self._text = text
        self._rows = rows
        self._decoded: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, key: str) -> list[dict[str, Any]]:
        items = self._decoded.get(key)
        if items is None:
            start, end = self._rows[key]  # KeyError for an unknown module, as highdicom's dict gives
            items = [{"keyword": k, "type": t, "path": p} for k, t, p in json.loads(self._text[start:end])]
            self._decoded[key] = items
        return items

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def encode_table(version: str, table: Mapping[str, list[dict[str, Any]]]) -> bytes:
    """The file's content for highdicom `version`'s `table`: a version line, then one line per module."""
    lines = [f"highdicom\t{version}\n"]
    for key, items in table.items():
        rows = [[item["keyword"], item["type"], item["path"]] for item in items]
        lines.append(f"{key}\t{json.dumps(rows, separators=(',', ':'))}\n")
    return gzip.compress("".join(lines).encode("utf-8"), compresslevel=9, mtime=0)


def decode_table(data: bytes) -> tuple[str, ModuleTable]:
    """The highdicom version a file was made from, and its table."""
    text = gzip.decompress(data)
    start = text.index(b"\n") + 1
    version = text[: start - 1].decode("utf-8").split("\t", 1)[1]
    rows: dict[str, tuple[int, int]] = {}
    while start < len(text):
        end = text.find(b"\n", start)
        end = len(text) if end < 0 else end
        tab = text.index(b"\t", start, end)
        rows[text[start:tab].decode("utf-8")] = (tab + 1, end)
        start = end + 1
    return version, ModuleTable(text, rows)


@functools.cache
def use_module_table() -> bool:
    """Make highdicom use the shipped table when it was made from this highdicom's version (once per
    process; True when in use). Objects built are the same either way: only how the table is read differs."""
    import highdicom
    from highdicom import _standard_utils

    try:
        version, table = decode_table(resources.files("sarcoscope.imaging").joinpath(TABLE_FILE).read_bytes())
    except OSError:  # not installed with the package (a repackaging): highdicom's own table, only slower
        return False
    if version != highdicom.__version__:
        return False
    whole = getattr(_standard_utils, _LOADER)
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] == "highdicom" and getattr(module, _LOADER, None) is whole:
            setattr(module, _LOADER, lambda: table)
    return True
