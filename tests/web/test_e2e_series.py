"""End-to-end in headless chromium: an upload of several series of one patient (see test_e2e.py for the
set-up). The web app opened the series with most slices and offered no way to analyse another but to
upload its files alone; now the L3 view lists the upload's series and opens another without uploading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import test_e2e
from test_e2e_first_use import _segment, _upload
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


def test_another_series_chosen_beside_an_unsaved_edit_asks_first(
    page: Any, server: str, tmp_path: Path
) -> None:
    """Another series chosen with a label edit unsaved opened it as a new study on the server before asking
    to discard the edit; Cancel kept the edit, but the Series list went on naming the other series (and
    choosing the shown one again did nothing)."""
    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    first = _upload(page, files)
    page.wait_for_selector("#series-bar:not([hidden])")
    _segment(page, server, first, 5)
    box = page.locator("#edit-cursor").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.1, steps=5)
    page.mouse.up()
    assert page.locator("#save-labels").inner_text() == "Save *"
    page.click("#tab-l3")
    page.wait_for_selector("#series-bar:not([hidden])")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.select_option("#series", label="Abdomen ART 6.0 · 6 slices · 6 mm · arterial")
    assert asked == ["Discard your unsaved label edits?"]
    assert _chosen(page).startswith("Abdomen PV 3.0")  # the series shown
    assert len(page.request.get(f"{server}/api/studies").json()) == 1  # none opened
    assert page.url.endswith(first)
    page.click("#tab-label")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    assert page.locator("#save-labels").inner_text() == "Save *"  # the edit kept


def test_a_study_opened_shows_neither_the_series_nor_the_hu_under_the_pointer_of_the_study_left(
    page: Any, server: str, tmp_path: Path
) -> None:
    """While study B's Series list loaded, study A's list stayed on screen under B's name (a series chosen
    from it was refused by the server), and the HU under the pointer went on saying A's last value until the
    mouse moved."""
    import httpx
    from web_synth import multipart, write_series

    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    _upload(page, files)
    page.wait_for_selector("#series-bar:not([hidden])")
    page.wait_for_function("!document.getElementById('study-message').textContent.startsWith('Loading')")
    box = page.locator("#mpr").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    page.mouse.move(box["x"] + box["width"] * 0.26, box["y"] + box["height"] * 0.5)
    page.wait_for_function("document.getElementById('l3-cursor').textContent.includes('HU')")
    other = httpx.post(f"{server}/api/studies", files=multipart(write_series(tmp_path / "b")), timeout=60)
    held: list[Any] = []
    page.route(f"**/api/studies/{other.json()['id']}/series", lambda route: held.append(route))
    page.goto(f"{server}/#/study/{other.json()['id']}")
    page.wait_for_function("document.getElementById('study-title').textContent.length > 0")
    for _ in range(500):
        if held:
            break
        page.wait_for_timeout(20)
    assert held, "no series request"
    assert page.locator("#series-bar").is_hidden()
    assert page.locator("#l3-cursor").inner_text() == ""
    for route in held:
        route.continue_()
