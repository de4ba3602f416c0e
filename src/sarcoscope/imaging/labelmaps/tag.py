"""Slice-O-Matic (TomoVision) `.tag` files: the per-pixel tissue tags of the slices a user segmented.

Format (sliceOmatic manual, appendix "TAG File Format"): an ASCII header of `keyword:value` pairs
separated by spaces, commas, tabs or line breaks (lines end in CR LF; keywords in any case; text after
`*` on a line is a comment), ended by a form feed (0x0C). Then one byte per pixel, row by row from the
top-left, on the pixel grid of the DICOM image it belongs to (`type:BYTE`; `x:` columns, `y:` rows,
`z:` images in the file, all optional). The tag values are a protocol's own ids (the Alberta protocol:
built-in mapping `slice-o-matic-alberta`), so a mapping is always needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sarcoscope.errors import LabelMapError

END_OF_HEADER = b"\x0c"
#: The header is a few hundred bytes; a file without a form feed this early is not a TAG file.
MAX_HEADER_BYTES = 64 * 1024


def parse_tag_header(text: str, path: Path) -> dict[str, str]:
    """Keyword (lower case) -> value of a TAG header; comments dropped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        for item in re.split(r"[ ,\t]+", line.split("*", 1)[0].strip()):
            if not item:
                continue
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise LabelMapError(f"TAG file {path}: header item '{item}' is not keyword:value.")
            fields[key.lower()] = value
    return fields


def _dimension(fields: dict[str, str], key: str, path: Path) -> int | None:
    if key not in fields:
        return None
    try:
        value = int(fields[key])
    except ValueError:
        value = 0
    if value < 1:
        raise LabelMapError(f"TAG file {path}: '{key}:{fields[key]}' is not a positive pixel count.")
    return value


def read_tag(path: Path, rows_cols: tuple[int, int] | None) -> np.ndarray:
    """The tags (z, y, x) uint8 of a TAG file; `rows_cols` is the image's size when the header lacks x/y."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabelMapError(f"Cannot read TAG file {path}: {exc}") from None
    end = data.find(END_OF_HEADER, 0, MAX_HEADER_BYTES)
    if end < 0:
        raise LabelMapError(
            f"{path} is not a Slice-O-Matic TAG file: no end of header (form feed, 0x0C) in its first "
            f"{MAX_HEADER_BYTES} bytes."
        )
    try:
        fields = parse_tag_header(data[:end].decode("ascii"), path)
    except UnicodeDecodeError:
        raise LabelMapError(f"{path} is not a Slice-O-Matic TAG file: its header is not text.") from None
    kind = fields.get("type", "BYTE").upper()
    if kind != "BYTE":
        raise LabelMapError(f"TAG file {path}: pixel type {kind}; TAG files hold one byte per pixel (BYTE).")
    cols, rows = _dimension(fields, "x", path), _dimension(fields, "y", path)
    if (cols is None) != (rows is None):
        raise LabelMapError(f"TAG file {path}: its header gives only one of x: and y:.")
    if rows is None or cols is None:
        if rows_cols is None:
            raise LabelMapError(
                f"TAG file {path} has no x:/y: size in its header; give its image so its grid is known."
            )
        rows, cols = rows_cols
    pixels = np.frombuffer(data, dtype=np.uint8, offset=end + 1)
    n_images = _dimension(fields, "z", path) or max(1, pixels.size // (rows * cols))
    expected = n_images * rows * cols
    if pixels.size != expected:
        raise LabelMapError(
            f"TAG file {path}: {pixels.size} bytes of tags after the header, but {n_images} image(s) of "
            f"{rows} rows x {cols} columns need {expected} (truncated, or made for another image)."
        )
    return pixels.reshape(n_images, rows, cols).copy()
