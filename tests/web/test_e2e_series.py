"""End-to-end in headless chromium: an upload of several series of one patient (see test_e2e.py for the
set-up). The web app opened the series with most slices and offered no way to analyse another but to
upload its files alone; now the L3 view lists the upload's series and opens another without uploading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import test_e2e
from test_e2e_first_use import _upload
from web_synth import write_exam

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page
_wait_text = test_e2e._wait_text


def _chosen(page: Any) -> str:
    return page.eval_on_selector("#series", "s => s.selectedOptions[0].textContent")


def test_the_series_of_an_upload_are_listed_and_another_opens_without_uploading(
    page: Any, tmp_path: Path
) -> None:
    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    first = _upload(page, files)
    page.wait_for_selector("#series-bar:not([hidden])")
    options = page.locator("#series option").all_inner_texts()
    assert options == [
        "Abdomen PV 3.0 · 12 slices · 3 mm · portal-venous · default",
        "Abdomen ART 6.0 · 6 slices · 6 mm · arterial",
        "Abdomen 9.0 · 4 slices · 9 mm · phase not stated",
    ]
    assert _chosen(page).startswith("Abdomen PV 3.0")
    assert "3 series in this upload" in page.locator("#series-note").inner_text()

    page.select_option("#series", label=options[1])
    page.wait_for_url(lambda url: "/#/study/" in url and not url.endswith(first))
    second = page.url.rsplit("/", 1)[-1]
    page.wait_for_function("document.getElementById('study-title').textContent.includes('Abdomen ART 6.0')")
    assert "6 slices" in page.locator("#study-title").inner_text()
    page.wait_for_function(
        "document.getElementById('series').selectedOptions[0].textContent.startsWith('Abdomen ART')"
    )

    page.select_option("#series", label=options[0])  # back: the study it was opened as, not a new one
    page.wait_for_url(lambda url: url.endswith(first))
    page.wait_for_function("document.getElementById('study-title').textContent.includes('Abdomen PV 3.0')")
    page.goto(page.url.split("#")[0] + "#/")
    page.wait_for_selector("#study-rows tr")
    assert page.locator("#study-rows tr").count() == 2 and second != first
