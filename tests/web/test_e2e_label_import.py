"""End-to-end: the labeling view's "Import labels" control in headless chromium (see test_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import test_e2e
from web_synth import SHAPE, write_series

# The browser fixtures and the chromium skip of the main end-to-end test.
pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page
_wait_text = test_e2e._wait_text


def test_import_a_slice_o_matic_tag_file_as_a_new_version(
    page: object, server: str, tmp_path: Path, write_tag, alberta_tags
) -> None:
    page.set_input_files("#pick-files", [str(f) for f in write_series(tmp_path / "series")])
    page.wait_for_url("**/#/study/*", timeout=30000)
    study_id = page.url.rsplit("/", 1)[-1]
    page.request.put(f"{server}/api/studies/{study_id}/selection", data={"mode": "slice", "first": 5})
    page.goto(f"{server}/#/study/{study_id}/label")
    page.wait_for_selector("#import-form")
    labels = np.zeros(SHAPE[1:], np.uint8)
    labels[20:40, 10:80], labels[50:60, 30:60] = 1, 3
    tag = write_tag(tmp_path / "slice5.tag", alberta_tags(labels))

    page.set_input_files("#import-files", str(tag))
    assert page.locator("#import-mapping").input_value() == "slice-o-matic-alberta"  # chosen for .tag
    page.click("#import-form button[type=submit]")
    _wait_text(page, "study-message", "Imported as version 1")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
    assert "import" in page.locator("#versions").inner_text()
    saved = page.request.get(f"{server}/api/studies/{study_id}/labels")
    assert saved.headers["x-label-indices"] == "5"
    assert np.array_equal(np.frombuffer(saved.body(), np.uint8).reshape(labels.shape), labels)

    # A file that does not fit the study: the reason is shown, nothing is saved.
    page.set_input_files("#import-files", str(write_tag(tmp_path / "small.tag", np.zeros((8, 8), np.uint8))))
    page.click("#import-form button[type=submit]")
    _wait_text(page, "study-message", "the study's CT has shape")
    assert "small.tag" in page.locator("#study-message").inner_text()
    assert len(page.request.get(f"{server}/api/studies/{study_id}/versions").json()) == 1
