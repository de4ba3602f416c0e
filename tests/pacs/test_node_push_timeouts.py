"""`listen --push-to` a PACS that does not answer: the TCP connection was opened without a timeout, so a host
that drops the connection request (a firewall, a wrong address) held the node for the system's own limit
(over two minutes on Linux, per send and per retry), and a peer that never answered said only "refused
the association". Each wait now has a bound (connect, then each answer), and the error says which wait ran
out. The peers are on 127.0.0.1: a listener whose queue is full (the connection request is dropped, as a
firewall does), one that takes the connection and says nothing, a closed port, and a pynetdicom Storage SCP
that answers a store too late."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orthanc_server import free_port
from sarcoscope.errors import InputError
from sarcoscope.pacs.node import Peer, send_c_store


@pytest.fixture
def silent() -> Iterator[Peer]:
    """A port that takes the connection and never answers the association request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        taken: list[socket.socket] = []
        thread = threading.Thread(target=lambda: taken.append(listener.accept()[0]), daemon=True)
        thread.start()
        yield Peer("PACS", "127.0.0.1", listener.getsockname()[1])
        for conn in taken:
            conn.close()


@pytest.fixture
def slow() -> Iterator[Peer]:
    """A Storage SCP that answers each store after 3 s."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    def on_store(event: evt.Event) -> int:
        time.sleep(3)
        return 0x0000

    ae = AE(ae_title="SLOWPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield Peer("SLOWPACS", "127.0.0.1", port)
    finally:
        server.shutdown()


def _refused(files: list[Path], peer: Peer, **timeouts: float) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(InputError) as refused:
        send_c_store(files, peer, "SARCOSCOPE", **timeouts)
    return " ".join(str(refused.value).split()), time.monotonic() - start


def test_a_peer_that_drops_the_connection_request_is_given_up_after_the_connect_timeout(
    dropping: Peer, series: list[Path]
) -> None:
    message, took = _refused(series[:1], dropping, connect_timeout=1.0)
    assert took < 10 and "did not answer the connection within 1 s" in message
    assert f"PACS@127.0.0.1:{dropping.port}" in message and "nothing was sent" in message


def test_a_closed_port_is_said_at_once(series: list[Path]) -> None:
    message, took = _refused(series[:1], Peer("PACS", "127.0.0.1", free_port()))
    assert took < 10 and "refused the connection or cannot be reached" in message


def test_a_peer_that_never_answers_the_association_is_given_up_after_the_timeout(
    silent: Peer, series: list[Path]
) -> None:
    message, took = _refused(series[:1], silent, timeout=1.0)
    assert took < 10 and "did not answer the association request within 1 s" in message


def test_a_store_answered_too_late_is_given_up_after_the_timeout(slow: Peer, series: list[Path]) -> None:
    message, took = _refused(series[:1], slow, timeout=1.0)
    assert took < 10 and "did not answer the store of CT within 1 s" in message


@pytest.fixture
def strict() -> Iterator[Peer]:
    """A Storage SCP that takes associations called CALLEDPACS only."""
    from pynetdicom import AE, AllStoragePresentationContexts

    ae = AE(ae_title="CALLEDPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.require_called_aet = True
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        yield Peer("WRONGNAME", "127.0.0.1", port)
    finally:
        server.shutdown()


def test_a_rejected_association_names_the_ae_titles(strict: Peer, series: list[Path]) -> None:
    message, _ = _refused(series[:1], strict)
    assert "rejected the association" in message and "SARCOSCOPE" in message and "WRONGNAME" in message


def _send_failure(tmp_path: Path, **settings: Any) -> str:
    """The error.txt of a phantom series that a node with `settings` analysed and could not send."""
    from received import Received

    from sarcoscope.pacs.node import ListenSettings, Node
    from sarcoscope.phantom.io import write_phantom

    write_phantom(tmp_path / "phantom", seed=2, shape_xy=96, slice_thickness_mm=5.0)
    node = Node(ListenSettings(out=tmp_path / "node", settle=0.0, engine="threshold", **settings))
    node.incoming.mkdir(parents=True)
    node.results.mkdir()
    for f in sorted((tmp_path / "phantom" / "dicom").glob("*.dcm")):
        assert node._on_store(Received(f)) == 0
    start = time.monotonic()
    node.process_settled(now=start)
    (uid,) = node.failed
    assert time.monotonic() - start < 60  # the analysis, and about a second for the connection
    return " ".join((node.results / uid / "error.txt").read_text().split())


def test_the_node_sends_with_its_timeouts_and_says_which_ran_out(dropping: Peer, tmp_path: Path) -> None:
    error = _send_failure(tmp_path, push_to=dropping, push_connect_timeout=1.0)
    assert "did not answer the connection within 1 s" in error and "sent again in 300 s" in error


def test_the_node_pushes_to_dicomweb_with_the_same_timeouts(dropping: Peer, tmp_path: Path) -> None:
    # the DICOMweb push waited 60 s for the connection, whatever --push-connect-timeout said
    error = _send_failure(
        tmp_path, push_dicomweb=f"http://127.0.0.1:{dropping.port}", push_connect_timeout=0.5
    )
    assert "did not take the connection within 0.5 s" in error and "sent again in 300 s" in error


def test_listen_refuses_a_timeout_of_zero(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sarcoscope.cli import app

    args = ["listen", "-o", str(tmp_path / "node"), "--engine", "threshold", "--push-timeout", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "must be more than 0 seconds" in " ".join(result.output.split())
