"""highdicom's table of the DICOM standard's modules, decoded one module at a time.

The first SEG, SR or secondary capture a process builds makes highdicom read its whole table of the
standard's modules and their attributes (a 22 MB JSON file: 0.3-1.4 s of CPU and 110 MB at its peak, 60 MB
kept), though such an object looks at a few dozen of its 436 modules. `sarcoscope analyze` paid that in every
process, about a tenth of its time and the peak of its memory. The same table, stored one line per module
(`highdicom_modules.tsv.gz`, written by `scripts/update_highdicom_table.py` from the installed highdicom and
checked against it by the tests), stays compressed in memory, and each module is decompressed and decoded
when highdicom first asks for it: each line is a gzip member of its own (the file as a whole is still the
one TSV to `zcat`), and the first line lists the modules with the size of their member.

Only for the highdicom version the file was made from: with any other, highdicom's own table is left in use.
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
import zlib
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

TABLE_FILE = "highdicom_modules.tsv.gz"

#: highdicom's function that loads the whole table (in highdicom._standard_utils, imported by name elsewhere).
_LOADER = "get_module_attribute_map"


class ModuleTable(Mapping[str, list[dict[str, Any]]]):
    """Module key -> its attributes as highdicom lists them ({keyword, type, path}), decoded on access.

    Kept as the file's compressed bytes (0.6 MB) and where each module's gzip member lies in them: the
    whole table decompressed was 13 MB resident for the rest of every process that wrote a SEG, SR or QC
    capture, at the peak of an analysis's memory (issue 18), and an analysis reads a few dozen modules."""

    def __init__(self, data: bytes, rows: dict[str, tuple[int, int]]) -> None:
        self._data = data
        self._rows = rows
        self._decoded: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, key: str) -> list[dict[str, Any]]:
        items = self._decoded.get(key)
        if items is None:
            start, end = self._rows[key]  # KeyError for an unknown module, as highdicom's dict gives
            row = gzip.decompress(self._data[start:end])
            text = row[row.index(b"\t") + 1 :]
            items = [{"keyword": k, "type": t, "path": p} for k, t, p in json.loads(text)]
            self._decoded[key] = items
        return items

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def encode_table(version: str, table: Mapping[str, list[dict[str, Any]]]) -> bytes:
    """The file's content for highdicom `version`'s `table`: a line with the version and the modules' keys
    and member sizes, then one line per module, each line a gzip member of its own."""
    members = []
    for key, items in table.items():
        rows = [[item["keyword"], item["type"], item["path"]] for item in items]
        line = f"{key}\t{json.dumps(rows, separators=(',', ':'))}\n"
        members.append((key, gzip.compress(line.encode("utf-8"), compresslevel=9, mtime=0)))
    sizes = json.dumps([[key, len(member)] for key, member in members], separators=(",", ":"))
    header = gzip.compress(f"highdicom\t{version}\t{sizes}\n".encode(), compresslevel=9, mtime=0)
    return header + b"".join(member for _, member in members)


def decode_table(data: bytes) -> tuple[str, ModuleTable]:
    """The highdicom version a file was made from, and its table."""
    first = zlib.decompressobj(wbits=31)  # gzip; stops at the end of the first member
    _, version, sizes = first.decompress(data).decode("utf-8").rstrip("\n").split("\t")
    start = len(data) - len(first.unused_data)
    rows: dict[str, tuple[int, int]] = {}
    for key, size in json.loads(sizes):
        rows[key] = (start, start + size)
        start += size
    return version, ModuleTable(data, rows)


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
