"""A node killed (kill -9, the out-of-memory killer) while it received an image left that image, half-written,
as `incoming/<study>/<series>/.recv-<random>.tmp` for good. A node starting on the folder removes it once its
writer has ended, and leaves one that another node sharing the folder is receiving. No Orthanc needed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fresh_process import running_process
from orthanc_server import free_port
from sarcoscope.pacs.node import ListenSettings, Node


def _receiving(out: Path, image: Path) -> str:
    """A script in which a node on `out` receives `image` and stops halfway (its file made, not written): it
    says the file, and waits until it is killed."""
    return (
        "import sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from received import Received\n"
        "from sarcoscope.pacs.node import ListenSettings, Node\n"
        f"out = Path({str(out)!r})\n"
        "class Stalled(Received):\n"
        "    def encoded_dataset(self, include_meta=True):\n"
        "        (tmp,) = (out / 'incoming').glob('*/*/.recv-*.tmp')\n"
        "        print(tmp, flush=True)\n"
        "        sys.stdin.read()\n"
        "node = Node(ListenSettings(out=out, engine='threshold'))\n"
        f"node._on_store(Stalled(Path({str(image)!r})))\n"
    )


def _started(out: Path) -> Node:
    node = Node(ListenSettings(out=out, port=free_port(), engine="threshold"))
    node.start()
    node.shutdown()
    return node


def test_a_killed_nodes_half_received_image_is_removed_when_a_node_starts_and_a_receiving_ones_is_not(
    series: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "node"
    with running_process(_receiving(out, series[0])) as (receiver, said):
        half = Path(said)
        assert half.parent.parent.parent == out / "incoming"
        _started(out)  # another node on the same folder (another port): the image is being received
        assert half.is_file()
        receiver.kill()
        receiver.wait()
    with caplog.at_level(logging.INFO, logger="sarcoscope.pacs.node"):
        node = _started(out)
    assert not half.exists() and list(half.parent.iterdir()) == []
    assert not node._pending  # nothing was received whole: nothing to analyse
    said_removed = [r.getMessage() for r in caplog.records if "half-received" in r.getMessage()]
    assert said_removed == ["removed 1 image(s) that a stopped node left half-received"]
