"""A request handler served on a free loopback port, for tests of how sarcoscope meets a misbehaving
DICOMweb server (busy, truncating, answering oddly), which a real Orthanc cannot be made to be."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` until the block ends; yields the server's base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def answer(
    handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "application/dicom+json"
) -> None:
    """A 200 answer with `body`."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def ct_series(series_uid: str, n_instances: int) -> bytes:
    """A QIDO-RS answer listing one CT series."""
    return json.dumps(
        [
            {
                "0020000E": {"vr": "UI", "Value": [series_uid]},
                "00080060": {"vr": "CS", "Value": ["CT"]},
                "00201209": {"vr": "IS", "Value": [n_instances]},
            }
        ]
    ).encode()


def retrieved(handler: BaseHTTPRequestHandler, files: list[Path], boundary: str = "testboundary") -> None:
    """Answer a WADO-RS retrieval with `files`, whole."""
    parts = b"".join(
        f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes()
        for f in files
    )
    body = parts + f"\r\n--{boundary}--\r\n".encode()
    answer(handler, body, f'multipart/related; type="application/dicom"; boundary={boundary}')
