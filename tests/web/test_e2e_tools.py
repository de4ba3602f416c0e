"""End-to-end in headless chromium: the label editor's tools change only what the user sees, and the controls
say what the images show (see test_e2e.py for the set-up)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from test_e2e import _wait_text
from test_e2e_unsaved import _label_view, _stroke, pytestmark  # noqa: F401 (the module's skip mark)


def _labels(url: str, sid: str) -> np.ndarray:
    """The latest label version's slice(s) as the server has them."""
    r = httpx.get(f"{url}/api/studies/{sid}/labels")
    r.raise_for_status()
    return np.frombuffer(r.content, np.uint8).reshape([int(v) for v in r.headers["X-Label-Shape"].split(",")])


def test_the_eraser_leaves_hidden_labels_alone(tmp_path: Path, series: list[Path]) -> None:
    """With SAT hidden (its box unticked) to see the muscle's edge, an eraser stroke over the muscle wall
    erased the SAT under it too: a change the user could not see, saved with the next Save. The eraser now
    erases the labels shown only."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        before = _labels(url, sid)
        page.uncheck("#label-choice input[data-visible='2']")  # SAT hidden
        page.keyboard.press("e")
        _stroke(page, 0.75, 0.5)  # across the muscle wall and the SAT outside it
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        after = _labels(url, sid)
        assert (after == 1).sum() < (before == 1).sum()  # the muscle shown is erased
        assert ((before == 2) & (after != 2)).sum() == 0  # the hidden SAT is all there
