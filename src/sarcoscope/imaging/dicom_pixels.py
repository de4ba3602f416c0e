"""Pixel data of one single-frame CT series -> HU: check, decode once, rescale in place.

What would give a wrong image rather than an error (pixel data longer or shorter than Rows x Columns say, an
unknown transfer syntax, a zero or non-finite rescale) raises InputError naming the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from sarcoscope.errors import InputError
from sarcoscope.imaging.volume import AIR_HU, check_hounsfield, fill_to_air

#: Beyond these a RescaleSlope/RescaleIntercept cannot map stored CT values to HU (unsigned 16-bit data
#: stored with an intercept of -32768 is the widest use seen).
MAX_SLOPE = 1000.0
MAX_INTERCEPT = 40000.0


@dataclass
class DicomFile:
    path: Path
    ds: Dataset  # parsed with the pixel data deferred (read from the file when decoded)


def raw_text(ds: Dataset, keyword: str) -> str | None:
    """A string-VR value without pydicom's value conversion (the scan reads ~10 tags of every file, and
    conversion costs more than parsing the file). Multiple values stay joined by backslashes."""
    try:
        elem = ds.get_item(keyword)
    except KeyError:
        return None
    if elem is None or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, list | tuple | pydicom.multival.MultiValue):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.strip(" \x00") or None


def float_list(ds: Dataset, keyword: str) -> list[float] | None:
    text = raw_text(ds, keyword)
    if text is None:
        return None
    try:
        return [float(v) for v in text.split("\\")]
    except ValueError:
        return None


def _rescale_value(f: DicomFile, keyword: str) -> float | None:
    """The first value of RescaleSlope or RescaleIntercept; None when the file has no such attribute. One
    that is there but empty or not a number is refused: read as the default (1 or 0), HU would be wrong."""
    if keyword not in f.ds:
        return None
    values = float_list(f.ds, keyword)
    if not values:
        text = raw_text(f.ds, keyword)
        raise InputError(
            f"{f.path} has {'an empty ' + keyword if text is None else f'{keyword} {text!r}, not a number'}; "
            "the stored values cannot be turned into Hounsfield units"
        )
    return values[0]


def _rescale_of(f: DicomFile) -> tuple[float, float, bool]:
    """(slope, intercept, present) of one image."""
    slope, intercept = _rescale_value(f, "RescaleSlope"), _rescale_value(f, "RescaleIntercept")
    if slope is None and intercept is None:
        return 1.0, 0.0, False
    return 1.0 if slope is None else slope, 0.0 if intercept is None else intercept, True


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; files without file meta are native little endian."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None:
        return UID(ts)
    return ImplicitVRLittleEndian if ds.is_implicit_VR in (True, None) else ExplicitVRLittleEndian


def _check_native_length(f: DicomFile, n_bytes: int, bits_allocated: int) -> None:
    """Refuse uncompressed pixel data whose length is not what Rows x Columns say: read anyway, a wrong
    Rows or Columns tag gives a plausible-looking but wrong image (and wrong areas)."""
    rows, cols = int(f.ds.Rows), int(f.ds.Columns)
    expected = rows * cols * max(bits_allocated // 8, 1)
    if n_bytes < expected:
        raise InputError(f"truncated pixel data in {f.path}: {n_bytes} bytes for {rows}x{cols} pixels")
    if n_bytes > expected + expected % 2:  # one padding byte keeps an odd length even
        raise InputError(
            f"{f.path}: Rows x Columns ({rows}x{cols}) do not match the pixel data ({n_bytes} bytes, "
            f"{n_bytes // max(bits_allocated // 8, 1)} pixels); the header is wrong or the file is damaged"
        )


def _decode(f: DicomFile, fast: bool) -> np.ndarray:
    """Stored pixel values of one image, (rows, columns)."""
    ds = f.ds
    rows, cols = int(ds.Rows), int(ds.Columns)
    if fast:
        try:
            data = ds.PixelData or b""  # deferred: read from the file now (None when empty)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read the pixel data of {f.path}: {exc}") from exc
        _check_native_length(f, len(data), 16)
        dtype = "<i2" if int(ds.PixelRepresentation) == 1 else "<u2"
        return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    if not _transfer_syntax(ds).is_compressed:
        try:
            n_bytes = len(ds.PixelData or b"")
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read the pixel data of {f.path}: {exc}") from exc
        _check_native_length(f, n_bytes, int(ds.get("BitsAllocated", 16)))
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"cannot decode pixel data of {f.path} ({_transfer_syntax(ds).name}): "
            + " ".join(str(exc).split())  # one line per failed decoder plugin
        ) from exc
    if arr.shape != (rows, cols):
        raise InputError(f"unexpected pixel array shape {arr.shape} in {f.path}")
    return arr


def _check_decodable(files: list[DicomFile]) -> None:
    for f in files:
        ts = _transfer_syntax(f.ds)
        if not ts.is_transfer_syntax:
            raise InputError(
                f"{f.path} declares the transfer syntax {ts}, which is not a DICOM transfer syntax this "
                "reader knows (a private or damaged TransferSyntaxUID); export the series uncompressed"
            )
    for ts in {_transfer_syntax(f.ds) for f in files}:
        if not ts.is_compressed:
            continue
        example = next(f.path for f in files if _transfer_syntax(f.ds) == ts)
        try:
            available = get_decoder(ts).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise InputError(
                f"{example} uses the compressed transfer syntax {ts.name} ({ts}), which cannot be "
                "decoded here (supported: JPEG 2000, JPEG lossless/baseline, JPEG-LS, RLE)"
            )


def to_hu(files: list[DicomFile], warnings: list[str]) -> np.ndarray:
    """Decode every image once into a preallocated (z, y, x) array and rescale it to HU in place."""
    first = files[0].ds
    rows, cols = int(first.Rows), int(first.Columns)
    rescales = [_rescale_of(f) for f in files]
    present = [p for _, _, p in rescales]
    if not all(present) and any(present):
        raise InputError(f"some images of the series in {files[0].path.parent} lack RescaleSlope/Intercept")
    for f, (slope, intercept, _) in zip(files, rescales, strict=True):
        usable = math.isfinite(slope) and math.isfinite(intercept) and slope != 0
        if not (usable and abs(slope) <= MAX_SLOPE and abs(intercept) <= MAX_INTERCEPT):
            raise InputError(
                f"{f.path} has an unusable RescaleSlope/RescaleIntercept ({slope:g}, {intercept:g}); "
                "the stored values cannot be turned into Hounsfield units"
            )
    integral = all(float(s).is_integer() and float(i).is_integer() for s, i, _ in rescales)
    bits_allocated = int(first.get("BitsAllocated", 16))
    bits_stored = int(first.get("BitsStored", bits_allocated))
    signed = int(first.get("PixelRepresentation", 0)) == 1
    _check_decodable(files)

    hu = np.empty((len(files), rows, cols), dtype=np.int16 if integral else np.float32)
    n_padding = n_low = 0
    for k, (f, (slope, intercept, _)) in enumerate(zip(files, rescales, strict=True)):
        ts = _transfer_syntax(f.ds)
        fast = not ts.is_compressed and ts.is_little_endian and bits_allocated == 16
        stored = _decode(f, fast)
        pad = f.ds.get("PixelPaddingValue")
        out = hu[k]
        in_range = -(2**15) <= AIR_HU - intercept < 2**15  # the int16 arithmetic below cannot overflow
        if (
            integral
            and slope == 1
            and in_range
            and (signed or bits_stored <= 15)
            and stored.dtype.itemsize <= 2
        ):
            # Fast path (nearly every CT): int16 in place while the slice is in cache.
            out[...] = stored
            if fast and bits_stored < 16:
                shift = 16 - bits_stored
                if signed:
                    np.left_shift(out, shift, out=out)
                    np.right_shift(out, shift, out=out)
                else:
                    np.bitwise_and(out, (1 << bits_stored) - 1, out=out)
            low = AIR_HU - int(intercept)
            if pad is not None:
                mask = out == int(pad)
                n_padding += int(np.count_nonzero(mask))
                out[mask] = low
            if out.min() < low:
                n_low += int(np.count_nonzero(out < low))
                np.maximum(out, low, out=out)
            if intercept > 0:
                np.minimum(out, 32767 - int(intercept), out=out)
            out += int(intercept)
        else:
            if fast and bits_stored < 16:
                raw = stored.astype(np.int64) & ((1 << bits_stored) - 1)
                if signed:
                    raw[raw >= 1 << (bits_stored - 1)] -= 1 << bits_stored
                values = raw.astype(np.float64)
            else:
                values = stored.astype(np.float64)
            values = values * slope + intercept
            if pad is not None:
                mask = stored == int(pad)
                n_padding += int(np.count_nonzero(mask))
                values[mask] = AIR_HU
            n_low += int(np.count_nonzero(values < AIR_HU))
            np.maximum(values, AIR_HU, out=values)
            out[...] = np.minimum(np.rint(values), 32767) if integral else values
        if "PixelData" in f.ds:
            del f.ds.PixelData  # headers are kept; pixel bytes are not needed any more

    where = files[0].path.parent
    untagged = "" if all(present) else " (without RescaleSlope/RescaleIntercept)"
    check_hounsfield(hu, f"the images in {where}{untagged}", warnings)
    fill_to_air(hu, warnings)  # after: a mask's or a normalised image's 0 border is no fill
    if untagged:
        warnings.append(
            "no RescaleSlope/RescaleIntercept in the files; values look like HU (air present), used as is"
        )
    if n_padding:
        warnings.append(f"{n_padding} padding pixels (PixelPaddingValue) set to {AIR_HU} HU (air)")
    if n_low > 0.001 * hu.size:
        warnings.append(
            f"{n_low} pixels below {AIR_HU} HU (outside the scanner's field of view) set to {AIR_HU}"
        )
    return hu
