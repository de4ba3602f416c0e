"""End-to-end in headless chromium (see test_e2e.py): Segment and Import make a new label version and show
it; an unsaved edit is asked about before anything is sent, and nothing painted while the new version is
made is dropped without a word when it comes. A fill whose slice data are still on their way and Ctrl+Z
pressed meanwhile leave the labels shown, the labels saved and the undo history in agreement. Answers are
held back with Playwright's routing until the user has acted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import test_e2e
from test_e2e import _is_muscle_colour, _overlay_pixel, _wait_text
from test_e2e_slow_server import _held, _settle, _wait_held
from test_e2e_unsaved import _label_view, _stroke

pytestmark = test_e2e.pytestmark


def _versions(url: str, sid: str) -> list[tuple[int, str]]:
    return [(v["version"], v["source"]) for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()]


def _on_label_tab(page: Any) -> None:
    page.click("#tab-label")
    page.wait_for_selector("#pane-label:not([hidden])")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)


def _refused_while_replaced(page: Any, fy: float) -> None:
    """A stroke at height `fy` and Ctrl+S, while a new version is made: refused, saying why."""
    _stroke(page, 0.06, fy)
    _wait_text(page, "study-message", "Nothing painted: a new version of the labels is being made")
    assert not _is_muscle_colour(_overlay_pixel(page, 0.1, fy))
    page.keyboard.press("Control+s")
    _wait_text(page, "study-message", "Nothing saved: a new version of the labels is being made")


def _segmenting_with_an_edit(page: Any, sid: str) -> list[Any]:
    """Paint a stroke (unsaved), then "Segment selected" on the L3 tab; its request is held."""
    _stroke(page, 0.06, 0.08)
    page.click("#tab-l3")
    page.wait_for_selector("#segment:visible")
    held = _held(page, f"**/api/studies/{sid}/segment")
    page.click("#segment")
    _wait_held(page, held)
    return held


def test_strokes_and_ctrl_s_while_segmenting_wait_and_the_segmentation_is_shown(
    tmp_path: Path, series: list[Path]
) -> None:
    """ "Segment selected" with an edit unsaved asked to discard it, then left it on screen, editable and
    savable, while the segmentation ran: Ctrl+S meanwhile saved the edit just discarded (and the segmentation
    was then refused as a conflict), strokes painted meanwhile were dropped without a word, and back on the
    label tab when it ended the page still showed the old labels as "Save *" while strokes did nothing."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
        held = _segmenting_with_an_edit(page, sid)
        assert asked == ["Segmenting makes a new version: discard your unsaved edit?"]
        _on_label_tab(page)
        _refused_while_replaced(page, 0.92)
        held[0].continue_()
        page.wait_for_selector("#versions li:has-text('v2 ·')", timeout=30000)
        _settle(page)
        assert _versions(url, sid) == [(2, "segment"), (1, "segment")]
        assert page.locator("#save-labels").inner_text() == "Save"
        for fy in (0.08, 0.92):  # air in the segmentation: neither stroke
            assert _overlay_pixel(page, 0.1, fy)[3] == 0
        _stroke(page, 0.06, 0.3)  # the new version is editable
        assert page.locator("#save-labels").inner_text() == "Save *"
        assert errors == []


def test_a_segmentation_that_fails_leaves_the_edit_editable(tmp_path: Path, series: list[Path]) -> None:
    """Agreeing to discard an edit for a segmentation that then fails does not lose it: it is still on screen,
    unsaved, and strokes are painted again."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        page.on("dialog", lambda d: d.accept())
        held = _segmenting_with_an_edit(page, sid)
        detail = json.dumps({"detail": "Engine down."})
        held[0].fulfill(status=500, content_type="application/json", body=detail)
        _wait_text(page, "study-message", "Engine down. Your unsaved edit is kept.")
        _on_label_tab(page)
        assert page.locator("#save-labels").inner_text() == "Save *"
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        _stroke(page, 0.06, 0.92)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.92))
        assert _versions(url, sid) == [(1, "segment")]


def test_strokes_and_ctrl_s_while_importing_wait_and_the_import_is_shown(
    tmp_path: Path, series: list[Path]
) -> None:
    """Import with an edit unsaved asked to discard it, then left it editable while the file was imported: a
    stroke painted meanwhile made "Save *" and was dropped without a word when the imported version came, and
    Ctrl+S meanwhile saved the discarded edit (the import was then refused as a conflict)."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
        npy = tmp_path / "slice5.npy"
        imported = np.zeros((96, 96), np.uint8)
        imported[60:] = 1  # muscle in the lower part only
        np.save(npy, imported)
        page.set_input_files("#import-files", str(npy))
        _stroke(page, 0.06, 0.08)
        held = _held(page, f"**/api/studies/{sid}/labels/import?*")
        page.click("#import-form button[type=submit]")
        _wait_held(page, held)
        assert asked == ["Discard your unsaved edit?"]
        page.evaluate("window.scrollTo(0, 0)")
        _refused_while_replaced(page, 0.3)
        held[0].continue_()
        _wait_text(page, "study-message", "Imported as version 2")
        _settle(page)
        assert _versions(url, sid) == [(2, "import"), (1, "segment")]
        assert page.locator("#save-labels").inner_text() == "Save"
        assert _overlay_pixel(page, 0.1, 0.08)[3] == 0 and _overlay_pixel(page, 0.1, 0.3)[3] == 0
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.8))


def test_segmenting_over_corrected_labels_asks_before_anything_is_sent(
    tmp_path: Path, series: list[Path]
) -> None:
    """ "Segment selected" over labels corrected by hand asked whether to segment anyway only after it had
    sent the selection (and said "Saved selection"): declined, the work had begun all the same."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        _stroke(page, 0.06, 0.08)
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.click("#tab-l3")
        page.wait_for_selector("#segment:visible")
        _settle(page)
        sent: list[str] = []
        page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if r.method != "GET" else None)
        page.click("#segment")
        page.wait_for_function("document.getElementById('segment').disabled === false")
        _settle(page)
        assert len(asked) == 1 and "version 2) were made or corrected by hand" in asked[0]
        assert sent == []
        assert _versions(url, sid) == [(2, "edit"), (1, "segment")]


def _blank_label_view(page: Any, url: str, sid: str, versions: int = 1) -> None:
    """Versions 2, ...: an empty label map (one unlabelled region), the last one shown; paint muscle."""
    for base in range(1, versions + 1):
        r = httpx.post(
            f"{url}/api/studies/{sid}/labels?base_version={base}",
            content=bytes(96 * 96) if base == 1 else bytes(96 * 95) + b"\x03" * 96,  # (versions differ)
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
    page.reload()
    page.wait_for_selector(f"#versions li:has-text('v{versions + 1} ·')", timeout=30000)
    page.keyboard.press("1")


def _click_pixel(page: Any, x: int, y: int) -> None:
    box = page.locator("#edit-cursor").bounding_box()
    page.mouse.click(box["x"] + box["width"] * (x + 0.5) / 96, box["y"] + box["height"] * (y + 0.5) / 96)


WALL = (82, 48)  # the muscle wall of the synthetic abdomen, at slice 5


def _wall_filled(page: Any) -> bool:
    return _is_muscle_colour(_overlay_pixel(page, (WALL[0] + 0.5) / 96, (WALL[1] + 0.5) / 96))


def test_ctrl_z_while_a_fill_waits_for_its_slice_data_undoes_the_fill(
    tmp_path: Path, series: list[Path]
) -> None:
    """A fill waits for its slice's HU and body from the server. Ctrl+Z pressed meanwhile undid the stroke
    before it, then the fill landed and was recorded with that stroke in its undo step: the next Ctrl+Z
    brought back the stroke just undone, and the label shown, its history and what Save stored disagreed.
    Now Ctrl+Z pressed while a fill is on its way undoes that fill, once it lands."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _blank_label_view(page, url, sid)
        _stroke(page, 0.06, 0.08)  # stroke A, in the air
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        page.keyboard.press("f")
        held = _held(page, f"**/api/studies/{sid}/body/*")
        _click_pixel(page, *WALL)
        _wait_held(page, held)
        page.keyboard.press("Control+z")
        held[0].continue_()
        _settle(page)
        # the fill came and was undone: stroke A is still there, unsaved
        assert not _wall_filled(page)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.keyboard.press("Control+y")  # the fill again
        assert _wall_filled(page) and _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        page.keyboard.press("Control+z")
        page.keyboard.press("Control+z")  # stroke A
        assert not _wall_filled(page) and _overlay_pixel(page, 0.1, 0.08)[3] == 0
        assert page.locator("#save-labels").inner_text() == "Save"  # version 2 again
        page.keyboard.press("Control+y")  # stroke A again, saved as shown
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 3.")
        saved = np.frombuffer(httpx.get(f"{url}/api/studies/{sid}/labels").content, np.uint8).reshape(96, 96)
        assert saved[WALL[1], WALL[0]] == 0 and saved[8, 9] == 1


def test_ctrl_z_while_a_fill_that_fills_nothing_waits_leaves_the_step_before(
    tmp_path: Path, series: list[Path]
) -> None:
    """Ctrl+Z pressed while a fill waits is for that fill; when the fill then fills nothing (a click in the
    air: outside the body) the Undo used to take back the stroke before it, which the user did not ask for."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _blank_label_view(page, url, sid)
        _stroke(page, 0.06, 0.08)  # stroke A, in the air
        page.keyboard.press("f")
        held = _held(page, f"**/api/studies/{sid}/body/*")
        _click_pixel(page, 90, 90)  # the air in the image's corner: nothing to fill
        _wait_held(page, held)
        page.keyboard.press("Control+z")
        held[0].continue_()
        _settle(page)
        _wait_text(page, "study-message", "Nothing filled")
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))  # stroke A is still there
        page.keyboard.press("Control+z")  # and the next Undo takes it back
        assert _overlay_pixel(page, 0.1, 0.08)[3] == 0


def test_ctrl_z_while_an_hu_brush_stroke_waits_for_its_hu_undoes_that_stroke(
    tmp_path: Path, series: list[Path]
) -> None:
    """With "HU range only" a stroke waits for its slice's HU; Ctrl+Z pressed meanwhile undid the stroke
    before it, and the new one landed after: what was undone was not the stroke just drawn."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _blank_label_view(page, url, sid)
        # (held from the start: the pointer's readout asks for the slice's HU as it comes over the image)
        held = _held(page, f"**/api/studies/{sid}/hu/*")
        _stroke(page, 0.06, 0.08)  # stroke A, in the air (no HU range)
        page.check("#hu-constrain")
        _stroke(page, 0.75, (WALL[1] + 0.5) / 96)  # stroke B, across the muscle wall
        _wait_held(page, held)
        page.keyboard.press("Control+z")
        held[0].continue_()
        _settle(page)
        assert not _wall_filled(page)  # B came and was undone
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))  # A is still there
        page.keyboard.press("Control+y")
        assert _wall_filled(page)


def test_a_fill_landing_after_another_version_is_viewed_is_not_applied_to_it(
    tmp_path: Path, series: list[Path]
) -> None:
    """A fill still waiting for its slice's data when "view" showed an earlier version landed on that version:
    read-only, it showed the fill as "Save *" with Undo on, an edit on no version the user could save."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _blank_label_view(page, url, sid, versions=2)  # versions 2 and 3: no muscle
        page.keyboard.press("f")
        held = _held(page, f"**/api/studies/{sid}/body/*")
        _click_pixel(page, *WALL)
        _wait_held(page, held)
        page.click("#versions li:has-text('v2 ·') button")
        page.wait_for_selector("#readonly-banner:not([hidden])")
        held[0].continue_()
        _settle(page)
        assert not _wall_filled(page)
        assert page.locator("#save-labels").inner_text() == "Save"
        assert page.locator("#undo").is_disabled()
        page.click("#back-to-latest")
        page.wait_for_selector("#readonly-banner", state="hidden")
        _settle(page)
        assert not _wall_filled(page) and page.locator("#save-labels").inner_text() == "Save"


def test_a_fill_whose_slice_data_fail_says_nothing_was_filled(tmp_path: Path, series: list[Path]) -> None:
    """A fill whose slice HU or body the server failed to send did nothing without a word (an error only in
    the browser's console): the user could not tell the click from one that missed."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _blank_label_view(page, url, sid)
        page.keyboard.press("f")
        held = _held(page, f"**/api/studies/{sid}/body/*")
        _click_pixel(page, *WALL)
        _wait_held(page, held)
        held[0].fulfill(
            status=500, content_type="application/json", body=json.dumps({"detail": "Disk error."})
        )
        _wait_text(page, "study-message", "Nothing filled: the HU or body of slice 5 could not be loaded")
        assert "Disk error." in page.locator("#study-message").inner_text()
        assert page.locator("#save-labels").inner_text() == "Save" and not _wall_filled(page)
        assert errors == []
