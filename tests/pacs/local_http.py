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


def ct_series(series_uid: str, n_instances: int | None) -> bytes:
    """A QIDO-RS answer listing one CT series (None: without its instance count, as some servers send)."""
    item: dict = {"0020000E": {"vr": "UI", "Value": [series_uid]}, "00080060": {"vr": "CS", "Value": ["CT"]}}
    if n_instances is not None:
        item["00201209"] = {"vr": "IS", "Value": [n_instances]}
    return json.dumps([item]).encode()


def retrieved(handler: BaseHTTPRequestHandler, files: list[Path], boundary: str = "testboundary") -> None:
    """Answer a WADO-RS retrieval with `files`, whole."""
    parts = b"".join(
        f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes()
        for f in files
    )
    body = parts + f"\r\n--{boundary}--\r\n".encode()
    answer(handler, body, f'multipart/related; type="application/dicom"; boundary={boundary}')


class StreamingHandler(BaseHTTPRequestHandler):
    """A handler that logs nothing and answers in HTTP/1.0 (a body without Content-Length ends with the
    connection: what `streamed` needs)."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass


def streamed(
    handler: BaseHTTPRequestHandler, blobs: list[bytes], boundary: str = "testboundary", closed: bool = True
) -> None:
    """Answer a WADO-RS retrieval with `blobs` as they are, without Content-Length (the handler's
    protocol_version must be HTTP/1.0: the body ends with the connection, so a short one cannot be told by
    the transport), and with the closing boundary only when `closed`."""
    handler.send_response(200)
    handler.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
    handler.end_headers()
    for blob in blobs:
        handler.wfile.write(f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + blob)
    if closed:
        handler.wfile.write(f"\r\n--{boundary}--\r\n".encode())
    handler.wfile.flush()


@contextmanager
def series_server(
    study: str, series: str, listed: int | None, answers: list[tuple[list[bytes], bool]]
) -> Iterator[str]:
    """A DICOMweb server whose study `study` lists one CT series `series` of `listed` instances (None: the
    count left out) and whose n-th retrieval of it sends `answers[n]` (the last from then on): the parts,
    and whether the closing boundary ends them (else the response just stops, as one whose connection
    dropped; see `streamed`). Yields its URL."""
    served: list[int] = []

    class Handler(StreamingHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == f"/studies/{study}/series":
                answer(self, ct_series(series, listed))
            elif path == f"/studies/{study}/series/{series}":
                blobs, closed = answers[min(len(served), len(answers) - 1)]
                served.append(len(blobs))
                streamed(self, blobs, closed=closed)
            else:
                self.send_error(404)

    with serve(Handler) as url:
        yield url
