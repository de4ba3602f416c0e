"""write_gzip: one ordinary gzip member from chunks deflated in parallel."""

from __future__ import annotations

import gzip
import io
import zlib

import numpy as np
import pytest

from sarcoscope.fileio import GZIP_CHUNK, write_gzip


def _ct_like_bytes() -> bytes:
    """Three and a half chunks of int16 'HU': air, a body, a repeating pattern that crosses chunk borders
    (the primed window must carry it over)."""
    rng = np.random.default_rng(7)
    n = (GZIP_CHUNK * 7) // 4  # int16: 3.5 chunks of bytes
    hu = np.full(n, -1000, np.int16)
    hu[n // 5 : n - n // 5] = rng.normal(40, 30, n - 2 * (n // 5)).astype(np.int16)
    hu[::997] = np.arange(len(hu[::997]), dtype=np.int16)
    return hu.tobytes()


@pytest.mark.parametrize("size", [0, 1, 100, GZIP_CHUNK - 1, GZIP_CHUNK, GZIP_CHUNK + 1])
def test_any_size_decompresses_to_the_data(size: int) -> None:
    data = bytes(np.random.default_rng(size).integers(0, 4, size, dtype=np.uint8))
    out = io.BytesIO()
    write_gzip(data, out)
    assert gzip.decompress(out.getvalue()) == data


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_large_file_is_one_gzip_member_whatever_the_threads(threads: int) -> None:
    data = _ct_like_bytes()
    out = io.BytesIO()
    write_gzip(memoryview(data), out, threads=threads)
    raw = out.getvalue()
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip: checks the CRC-32 and the length
    assert reader.decompress(raw) == data
    assert reader.eof and reader.unused_data == b""  # one member, nothing after it
    # as small as gzip's own at the same level (the primed window keeps matches across chunk borders)
    plain = gzip.compress(data, compresslevel=1, mtime=0)
    assert len(raw) <= len(plain) * 1.01
