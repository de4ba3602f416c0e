"""End-to-end: what the label editor says and shows when the server does not answer (Debian's chromium,
driven by Playwright, against a live server; see test_e2e)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_e2e
from test_e2e import CHROMIUM, _is_muscle_colour, _overlay_pixel, _wait_text
from test_e2e_unsaved import _label_view, _stroke, _wait_held

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)
server, page = test_e2e.server, test_e2e.page


def test_a_save_without_answer_says_so_and_keeps_the_edit(tmp_path: Path, series: list[Path]) -> None:
    """The status line said only "Failed to fetch" (the browser's words)."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        _stroke(page, 0.06, 0.08)
        page.route("**/labels?base_version=*", lambda route: route.abort())  # the server is down
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Not saved: The server did not answer")
        assert "Your edit is still on screen" in page.locator("#study-message").inner_text()
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.unroute("**/labels?base_version=*")
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")


def test_an_upload_without_answer_can_be_chosen_again(page: Any, server: str, series: list[Path]) -> None:
    """After an upload the server did not answer (stopped, the network down), the file chooser kept the
    files: choosing the same ones again once the server was back was no change to the browser, and
    nothing happened (a refused upload did clear it)."""
    page.route(
        "**/api/studies", lambda route: route.abort() if route.request.method == "POST" else route.fallback()
    )
    page.set_input_files("#pick-files", [str(f) for f in series])
    _wait_text(page, "upload-error", "The upload was interrupted")
    assert page.evaluate("document.getElementById('pick-files').files.length") == 0
    page.unroute("**/api/studies")
    page.set_input_files("#pick-files", [str(f) for f in series])
    page.wait_for_url("**/#/study/*", timeout=60000)
    assert page.locator("#upload-error").inner_text() == ""


def test_a_refused_file_is_named_as_the_user_named_it(page: Any, tmp_path: Path) -> None:
    """A NIfTI that is no CT (a segmentation mask: values 0 to 33) was refused as "the values of
    part000000.nii.gz do not look like Hounsfield units": the name the server stored it under, which the user
    never saw; with a few files tried in turn, which one was refused could not be told. The message names
    the user's file now."""
    import nibabel as nib
    import numpy as np

    mask = np.zeros((32, 32, 8), np.int16)
    mask[8:24, 8:24] = 33
    path = tmp_path / "vertebrae_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 3.0, 1.0])), path)
    page.set_input_files("#pick-files", str(path))
    _wait_text(page, "upload-error", "the values of vertebrae_mask.nii.gz do not look like Hounsfield units")
    assert "part0" not in page.locator("#upload-error").inner_text()


def _base_shows(page: Any, url: str) -> bool:
    """True when the editor's image is exactly the PNG at `url` (as the browser decodes it)."""
    return bool(
        page.evaluate(
            """async (src) => {
                const bitmap = await createImageBitmap(await (await fetch(src)).blob());
                const c = new OffscreenCanvas(bitmap.width, bitmap.height);
                c.getContext('2d').drawImage(bitmap, 0, 0);
                const want = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const base = document.getElementById('edit-base');
                const got = base.getContext('2d').getImageData(0, 0, base.width, base.height).data;
                return want.length === got.length && want.every((v, i) => v === got[i]);
            }""",
            url,
        )
    )


def _transparent(page: Any, canvas: str) -> bool:
    """True when no image is drawn on the canvas with id `canvas`: every pixel transparent."""
    return bool(
        page.evaluate(
            """(id) => { const c = document.getElementById(id);
                   return c.getContext('2d').getImageData(0, 0, c.width, c.height).data
                       .every((v, i) => i % 4 !== 3 || v === 0); }""",
            canvas,
        )
    )


def test_a_slice_whose_image_fails_is_blank_and_loads_when_asked_again(
    tmp_path: Path, series: list[Path]
) -> None:
    """An image that failed left the previous slice's image under this slice's labels (strokes were made
    against the wrong anatomy), and the failure was kept: the slice never loaded until a reload."""
    selection = {"mode": "range", "first": 3, "last": 5}
    with _label_view(tmp_path, series, selection) as (_, page, url, sid):
        image = f"{url}/api/studies/{sid}/image/axial/4?preset=soft_tissue"
        assert _base_shows(page, image.replace("/4?", "/3?"))
        page.route("**/image/axial/4?*", lambda route: route.abort())
        page.click("#slice-next")
        _wait_text(page, "study-message", "The image of slice 4 could not be loaded")
        assert page.locator("#slice-text").inner_text().startswith("slice 4 ")
        assert _transparent(page, "edit-base")  # no image under the labels
        page.unroute("**/image/axial/4?*")
        page.click("#slice-prev")
        page.click("#slice-next")
        page.wait_for_function("document.getElementById('study-message').textContent === ''")
        assert _base_shows(page, image)


def test_a_stroke_before_the_slices_image_comes_is_refused_not_painted_blind(
    tmp_path: Path, series: list[Path]
) -> None:
    """On to the next slice (▶, PgUp, the wheel) while the server was slow with its image, the editor still
    showed the slice left, and a stroke made on it was painted into the new slice's labels: traced on the
    wrong anatomy, and shown over it until the image came. Now the stroke waits for the image, as it waits
    for the labels, and says so."""
    selection = {"mode": "range", "first": 3, "last": 5}
    with _label_view(tmp_path, series, selection) as (_, page, url, sid):
        image = f"{url}/api/studies/{sid}/image/axial/4?preset=soft_tissue"
        held: list[Any] = []
        page.route("**/image/axial/4?*", lambda route: held.append(route))
        page.click("#slice-next")
        _wait_held(page, held)
        assert page.locator("#slice-text").inner_text().startswith("slice 4 ")
        _stroke(page, 0.06, 0.08)
        _wait_text(page, "study-message", "Nothing painted: the image of slice 4 is still loading")
        assert page.locator("#save-labels").inner_text() == "Save"
        held[0].continue_()
        page.unroute("**/image/axial/4?*")
        page.wait_for_function("document.getElementById('study-message').textContent === ''")
        assert _base_shows(page, image)
        assert not _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        _stroke(page, 0.06, 0.08)  # on the image shown: painted
        assert page.locator("#save-labels").inner_text() == "Save *"
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))


def test_a_volume_that_failed_to_load_loads_when_the_study_is_opened_again(
    page: Any, server: str, series: list[Path]
) -> None:
    """A volume that failed to load (a server error, the network down) left a black viewer whose message the
    localizer's "Locating L3…" then wiped; and the view kept the study's id as loaded, so opening the study
    again showed the black viewer without a word, until another study was opened."""
    from test_e2e_first_use import _upload

    page.route("**/volume.nii.gz", lambda route: route.fulfill(status=503, body="busy"))
    _upload(page, series)
    _wait_text(page, "study-message", "The volume could not be shown (")
    assert "open the study again to retry" in page.locator("#study-message").inner_text()
    page.unroute("**/volume.nii.gz")
    page.click("#nav-studies")
    page.click("#study-rows tr:has-text('PAT-001')")
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert page.locator("#study-message").inner_text() in ("", "Locating L3…")


def test_an_l3_image_that_fails_without_webgl_is_blank_and_loads_when_asked_again(
    page: Any, server: str, series: list[Path]
) -> None:
    """Without WebGL2 the L3 view draws the server's images: one that failed (the server busy, the network
    down for a moment) left the previous slice's image under the new slice's caption, where the user looks
    for L3, without a word."""
    from test_e2e_first_use import _upload

    study_id = _upload(page, series)
    page.goto(f"{server}/?png#/study/{study_id}")
    _wait_text(page, "axial-index", "slice 6 (0–11) · image 7")
    page.wait_for_function("document.getElementById('axial-canvas').width > 0")
    page.wait_for_load_state("networkidle")
    page.route("**/image/axial/11?*", lambda route: route.abort())
    page.focus("#l3-viewer")
    page.keyboard.press("PageUp")  # the line, and the axial image, to slice 11 (not one prefetched)
    _wait_text(page, "study-message", "The axial image of slice 11 could not be loaded")
    # the slice numbers of the report and the CLI, from 0 ("11 / 11" read as the 11th of 11)
    assert page.locator("#axial-index").inner_text() == "slice 11 (0–11) · image 12"
    assert _transparent(page, "axial-canvas")  # no image under the caption
    page.unroute("**/image/axial/11?*")
    page.keyboard.press("PageDown")
    page.keyboard.press("PageUp")
    page.wait_for_function("!document.getElementById('study-message').textContent.includes('could not')")
    assert not _transparent(page, "axial-canvas")
