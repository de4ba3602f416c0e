"""End-to-end: an edit on screen is never marked saved when it is not, and never discarded without asking
(Debian's chromium, driven by Playwright, against a live server; see test_e2e)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_e2e import (
    ARGS,
    CHROMIUM,
    _is_muscle_colour,
    _overlay_pixel,
    _running,
    _submit_login,
    _wait_text,
)
from web_synth import multipart, write_series

from sarcoscope.web import WebSettings, create_app

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


@contextmanager
def _label_view(
    tmp_path: Path, series: list[Path], selection: dict[str, Any] | None = None, **settings: Any
) -> Iterator[tuple[Any, Any, str, str]]:
    """(the app, a page on the label view of a study segmented at `selection` (default: slice 5), the
    server URL, the study id); `settings`: more WebSettings."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    app = create_app(
        WebSettings(data_dir=tmp_path / "data", default_engine="threshold", prerender=False, **settings)
    )
    with _running(app.state.ctx.settings, app) as url:
        sid = httpx.post(f"{url}/api/studies", files=multipart(series), timeout=60).json()["id"]
        selection = selection or {"mode": "slice", "first": 5}
        httpx.put(f"{url}/api/studies/{sid}/selection", json=selection).raise_for_status()
        httpx.post(
            f"{url}/api/studies/{sid}/segment", json={"engine": "threshold"}, timeout=60
        ).raise_for_status()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
            page.goto(f"{url}/#/study/{sid}/label")
            page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
            page.keyboard.press("1")  # paint muscle
            page.fill("#brush-size", "8")
            page.dispatch_event("#brush-size", "input")
            yield app, page, url, sid
            browser.close()


def _stroke(page: Any, fx: float, fy: float) -> None:
    """A horizontal brush stroke from (fx, fy), fractions of the editor's width and height."""
    box = page.locator("#edit-cursor").bounding_box()
    x0, y0 = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * 0.2, y0, steps=8)
    page.mouse.up()


def _holding(held: list[Any]) -> Any:
    """A route handler that holds the requests back in `held` (answered with their continue_())."""
    return lambda route: held.append(route)


def _wait_held(page: Any, held: list[Any]) -> None:
    for _ in range(1500):
        if held:
            return
        page.wait_for_timeout(20)
    raise AssertionError("no request was made")


def _one_request_for_two_presses(page: Any, pattern: str, press: Any, again: Any, said: str) -> None:
    """`press()`, then `again()` while the request it made (matching `pattern`) is held back, as on a slow
    server; let through, that one request was all, and the page says `said` (no conflict)."""
    held: list[Any] = []
    page.route(pattern, _holding(held))
    press()
    _wait_held(page, held)
    again()
    page.wait_for_timeout(300)
    for route in held:
        route.continue_()
    page.unroute(pattern)
    _wait_text(page, "study-message", said)
    page.wait_for_load_state("networkidle")
    assert len(held) == 1, pattern
    assert page.locator("#study-message").inner_text().startswith(said), pattern


def test_a_stroke_painted_while_a_save_runs_stays_unsaved(tmp_path: Path, series: list[Path]) -> None:
    """The save sends the labels as they were when it started; a stroke painted meanwhile keeps the editor
    "Save *" (and the leave-page warning) until it is saved itself."""
    with _label_view(tmp_path, series) as (app, page, _, _sid):
        store = app.state.ctx.store
        save = store.save_version

        def slow_save(*args: Any, **kwargs: Any) -> Any:  # a large stack or a busy disk
            time.sleep(2.0)
            return save(*args, **kwargs)

        _stroke(page, 0.06, 0.08)  # stroke A
        store.save_version = slow_save
        page.keyboard.press("Control+s")
        page.wait_for_timeout(300)
        _stroke(page, 0.06, 0.92)  # stroke B, while "Saving…"
        _wait_text(page, "study-message", "Saved as version 2; your newer strokes are not saved yet")
        store.save_version = save
        # the page says it saved: Save is pressable at once, for stroke B (a key press while it was still
        # disabled was ignored silently, and the test waited for a save that never started)
        assert page.locator("#save-labels").text_content() == "Save *"
        assert page.locator("#save-labels").is_enabled()
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 3.")
        page.reload()
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.92))


def test_ctrl_s_pressed_again_while_saving_is_not_a_conflict(tmp_path: Path, series: list[Path]) -> None:
    """Ctrl+S pressed again while a slow save ran sent the labels a second time on the same base version: the
    server refused it as a conflict, and the page said "Not saved: ... version 2 was saved by <you> ... Reload
    to see their changes", of an edit that had been saved."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        save = partial(page.keyboard.press, "Control+s")
        _one_request_for_two_presses(page, "**/labels?base_version=*", save, save, "Saved as version 2.")
        assert page.locator("#study-message").inner_text() == "Saved as version 2."
        assert page.locator("#toast").is_hidden()
        assert [v["version"] for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()] == [2, 1]


def test_a_save_refused_for_a_colleagues_version_can_be_saved_on_top_of_it(
    tmp_path: Path, series: list[Path]
) -> None:
    """A save refused because a colleague saved a version meanwhile left the edit unsaveable: the page said
    so, every further Save was refused the same way, and reloading discarded it. Now the page asks, and
    saves it as the next version on top of theirs, which stays in the history."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        theirs = httpx.get(f"{url}/api/studies/{sid}/labels").content  # version 1's labels, unchanged
        httpx.post(
            f"{url}/api/studies/{sid}/labels?base_version=1",
            content=theirs,
            headers={"Content-Type": "application/octet-stream"},
        ).raise_for_status()
        asked: list[str] = []
        page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 3")
        assert "version 2 was saved by" in asked[0] and "on top of version 2" in asked[0]
        assert [v["version"] for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()] == [3, 2, 1]
        assert httpx.get(f"{url}/api/studies/{sid}/labels?version=2").content == theirs  # kept
        assert httpx.get(f"{url}/api/studies/{sid}/labels?version=3").content != theirs  # the stroke
        assert page.locator("#save-labels").inner_text() == "Save"  # nothing left unsaved
        page.reload()
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))


def test_an_edit_is_not_saved_on_top_of_a_colleagues_version_of_other_slices(
    tmp_path: Path, series: list[Path]
) -> None:
    """An edit of slice 5 refused because a colleague segmented slice 7 meanwhile was offered "save on top of
    version 2": accepted, the server stored the edit's labels as slice 7's (a version's slices are its
    base's), measured there as L3. Now the page says why it cannot go on top, offers nothing, and the
    server refuses an edit sent for other slices than its base version's."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        base = httpx.get(f"{url}/api/studies/{sid}").json()["selection_version"]
        theirs = {"mode": "slice", "first": 7, "base_version": base}
        httpx.put(f"{url}/api/studies/{sid}/selection", json=theirs).raise_for_status()
        segment = {"engine": "threshold", "base_version": 1, "first": 7}
        httpx.post(f"{url}/api/studies/{sid}/segment", json=segment, timeout=60).raise_for_status()
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Not saved: your edit is based on version 1")
        page.wait_for_timeout(500)
        said = page.locator("#study-message").inner_text()
        assert "Version 2 is of slice 7, your edit of slice 5: it cannot be saved on top of it" in said
        assert asked == []
        assert [v["version"] for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()] == [2, 1]
        assert page.locator("#save-labels").inner_text() == "Save *"  # still on screen, unsaved


def test_the_pacs_push_sends_the_version_on_screen_and_asks_about_an_unsaved_edit(
    tmp_path: Path, series: list[Path]
) -> None:
    """ "Push SEG, SR and QC to the PACS" pushed whatever version was latest on the server: one a colleague
    saved after this page loaded its version went into the hospital's PACS unseen, under this user's
    name; and an unsaved edit on screen was left out without a word (an export asks). Now the version shown
    is pushed, and with an edit unsaved the page asks first."""
    with _label_view(tmp_path, series, dicomweb_url="http://127.0.0.1:9/dicom-web") as (_, page, url, sid):
        theirs = httpx.get(f"{url}/api/studies/{sid}/labels").content
        httpx.post(
            f"{url}/api/studies/{sid}/labels?base_version=1",
            content=theirs,
            headers={"Content-Type": "application/octet-stream"},
        ).raise_for_status()  # version 2, not on this page
        pushed: list[str] = []
        done = {"stored": 3, "already_stored": 0, "version": 1, "study_uid": "1.2", "warnings": []}
        done["objects"] = [{"modality": m} for m in ("SEG", "SR", "OT")]
        page.route(
            "**/pacs/push*", lambda route: (pushed.append(route.request.url), route.fulfill(json=done))
        )
        page.click("#pacs-push")
        _wait_text(page, "pacs-push-status", "Stored SEG, SR, OT of label version 1")
        assert pushed[0].endswith(f"/api/studies/{sid}/pacs/push?version=1")

        _stroke(page, 0.06, 0.08)
        asked: list[str] = []
        page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.click("#pacs-push")
        page.wait_for_timeout(500)
        assert asked and asked[0].startswith("Your unsaved edit is not pushed: version 1, as saved, is.")
        assert len(pushed) == 1


def test_patient_facts_applied_twice_while_saving_are_not_a_conflict(
    tmp_path: Path, series: list[Path]
) -> None:
    """Apply pressed again (or Enter) while a slow save of the patient facts ran sent them again as changed
    from the facts the form was loaded with: refused, the page said they "were changed (in another tab or
    by another user)", of facts it had just saved."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        page.fill("#height", "171")
        page.fill("#weight", "66")

        def enter() -> None:  # submits the form, unless its button is disabled
            page.focus("#weight")
            page.keyboard.press("Enter")

        apply = partial(page.click, "#patient-form button[type=submit]")
        _one_request_for_two_presses(page, "**/patient", apply, enter, "Patient facts saved.")
        assert page.locator("#study-message").inner_text() == "Patient facts saved."
        patient = httpx.get(f"{url}/api/studies/{sid}").json()["patient"]
        assert (patient["height_cm"], patient["weight_kg"]) == (171, 66)


def test_restore_and_import_pressed_twice_make_one_version(tmp_path: Path, series: list[Path]) -> None:
    """'Restore this version' double-clicked, or 'Import as new version' pressed twice, while the server was
    slow sent the request twice on the same base version: the second was refused as a conflict, and the page
    said the labels had been changed by someone else."""
    import numpy as np

    with _label_view(tmp_path, series) as (_, page, url, sid):
        npy = tmp_path / "slice5.npy"
        np.save(npy, np.ones((96, 96), np.uint8))
        page.set_input_files("#import-files", str(npy))
        for button, pattern, said in (
            ("#import-form button[type=submit]", "**/labels/import?*", "Imported as version 2"),
            ("#restore-version", "**/restore", "Restored as version 3."),
        ):
            if button == "#restore-version":
                page.click("#versions li:has-text('v1 ·') button")
                page.wait_for_selector("#readonly-banner:not([hidden])")
                # the analysis panel refreshes after the version loads, moving what is below it: a double
                # click aimed before that landed beside the button (no request, on a loaded machine)
                page.wait_for_function(
                    "() => document.getElementById('analysis-version').textContent.includes('version 1')"
                )
            _one_request_for_two_presses(page, pattern, page.locator(button).dblclick, lambda: None, said)
        versions = httpx.get(f"{url}/api/studies/{sid}/versions").json()
        assert [v["version"] for v in versions] == [3, 2, 1]


def test_an_import_after_a_restore_builds_on_the_restored_version(tmp_path: Path, series: list[Path]) -> None:
    """After "Restore this version" the page still took the version before the restore as the latest: an
    import then was refused as a conflict ("version 3 was saved by <you> ... Reload to see their changes")."""
    import numpy as np

    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.click("#versions li:has-text('v1 ·') button")
        page.click("#restore-version")
        _wait_text(page, "study-message", "Restored as version 3.")
        npy = tmp_path / "slice5.npy"
        np.save(npy, np.ones((96, 96), np.uint8))
        page.set_input_files("#import-files", str(npy))
        page.click("#import-form button[type=submit]")
        _wait_text(page, "study-message", "Import")
        page.wait_for_function(
            "!document.getElementById('study-message').textContent.startsWith('Importing')"
        )
        assert page.locator("#study-message").inner_text().startswith("Imported as version 4")
        assert [v["version"] for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()] == [4, 3, 2, 1]


def test_segmenting_asks_before_it_discards_an_unsaved_edit(tmp_path: Path, series: list[Path]) -> None:
    with _label_view(tmp_path, series) as (_, page, url, sid):
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _stroke(page, 0.06, 0.08)
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.click("#tab-l3")
        page.wait_for_selector("#segment:visible")
        page.click("#segment")
        page.wait_for_timeout(500)
        assert dialogs and "discard your unsaved edit" in dialogs[0]
        # dismissed: nothing segmented, the edit still there to save
        assert [v["source"] for v in httpx.get(f"{url}/api/studies/{sid}/versions").json()] == ["segment"]
        page.click("#tab-label")
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        assert page.locator("#save-labels").inner_text() == "Save *"
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))


def test_discarded_edits_do_not_come_back(tmp_path: Path, series: list[Path]) -> None:
    """Leaving the study and confirming "Discard" kept the strokes in memory: opening the study again
    showed them under "Save *" (Save did nothing), and the next stroke made them savable."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        page.on("dialog", lambda d: d.accept())
        _stroke(page, 0.06, 0.08)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
        page.click("#nav-studies")
        page.wait_for_selector("#study-rows tr")
        page.goto(f"{url}/#/study/{sid}/label")
        page.wait_for_selector("#metrics tr[data-tissue=muscle]")
        page.wait_for_function("document.getElementById('save-labels').textContent === 'Save'")
        assert _overlay_pixel(page, 0.1, 0.08)[3] == 0  # air, as saved


def test_back_after_keeping_an_edit_still_leads_to_the_study_list(tmp_path: Path, series: list[Path]) -> None:
    """Back from a study with an unsaved edit asks first; kept ("Cancel"), the study list's entry in the
    browser's history was replaced by the study's, so the next Back (after a save, say) skipped the list and
    went to an older page, or left the app."""
    with _label_view(tmp_path, series) as (_, page, _url, sid):
        page.click("#nav-studies")
        page.click("#study-rows tr")
        page.click("#tab-label")
        page.wait_for_selector("#metrics tr[data-tissue=muscle]")
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.dismiss() if len(asked) == 1 else d.accept()))
        _stroke(page, 0.06, 0.08)
        page.evaluate("history.back()")  # the L3 tab: the same study, nothing asked
        page.wait_for_selector("#pane-l3:not([hidden])")
        page.evaluate("history.back()")  # the list: asked, and kept
        _wait_held(page, asked)
        page.wait_for_function(f"location.hash === '#/study/{sid}'")
        assert asked == ["Discard your unsaved label edits?"]
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.evaluate("history.back()")  # asked again, discarded: the list
        page.wait_for_selector("#view-studies:not([hidden])")
        assert asked == ["Discard your unsaved label edits?"] * 2
        assert page.evaluate("location.hash") == "#/"


def test_segmenting_over_corrected_labels_asks_and_says_it_is_working(
    tmp_path: Path, series: list[Path]
) -> None:
    """ "Segment selected" made the uncorrected segmentation the latest version without a word, and while it
    ran the status line said "Saved selection: …"."""
    with _label_view(tmp_path, series) as (app, page, url, sid):
        dialogs: list[str] = []

        def answer(dialog: Any) -> None:  # no the first time, yes the second
            dialogs.append(dialog.message)
            if len(dialogs) > 1:
                dialog.accept()
            else:
                dialog.dismiss()

        page.on("dialog", answer)
        _stroke(page, 0.06, 0.08)
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.click("#tab-l3")
        page.wait_for_selector("#segment:visible")
        page.click("#segment")
        page.wait_for_function("document.getElementById('segment').disabled === false")
        assert "version 2) were made or corrected by hand" in dialogs[0]
        assert len(httpx.get(f"{url}/api/studies/{sid}/versions").json()) == 2  # declined: nothing made
        store = app.state.ctx.store
        save = store.save_version

        def slow_save(*args: Any, **kwargs: Any) -> Any:  # a U-Net on a large range takes a while
            time.sleep(1.5)
            return save(*args, **kwargs)

        store.save_version = slow_save
        page.click("#segment")
        _wait_text(page, "study-message", "Segmenting slice 5 · image ")
        page.wait_for_url("**/label", timeout=30000)
        store.save_version = save
        assert len(dialogs) == 2
        assert httpx.get(f"{url}/api/studies/{sid}/versions").json()[0]["source"] == "segment"


def test_the_panel_and_a_read_only_version_say_what_they_omit(tmp_path: Path, series: list[Path]) -> None:
    """The analysis beside an unsaved edit gave the saved version's numbers without a word; "view" on an
    earlier version (far down the side panel) left its read-only banner scrolled away, and strokes on it
    did nothing, silently."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        assert page.locator("#analysis-unsaved").is_hidden()
        _stroke(page, 0.06, 0.08)
        assert page.locator("#analysis-unsaved").is_visible()
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.wait_for_selector("#analysis-unsaved", state="hidden")
        page.click("#versions li:has-text('v1 ·') button")
        page.wait_for_selector("#readonly-banner:not([hidden])")
        banner = page.locator("#readonly-banner").bounding_box()
        assert banner["y"] >= 0 and banner["y"] + banner["height"] <= 840  # in the window
        _stroke(page, 0.06, 0.08)  # where version 2 has the stroke
        _wait_text(page, "study-message", "Version 1 is read-only")
        assert _overlay_pixel(page, 0.1, 0.08)[3] == 0  # nothing painted


def test_back_to_latest_no_longer_says_read_only(tmp_path: Path, series: list[Path]) -> None:
    """After "Back to latest" the status line still said "Version 1 is read-only: ... to edit" (from a stroke
    tried on version 1) over the latest version, editable again."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        _stroke(page, 0.06, 0.08)
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.click("#versions li:has-text('v1 ·') button")
        page.wait_for_selector("#readonly-banner:not([hidden])")
        _stroke(page, 0.06, 0.3)
        _wait_text(page, "study-message", "Version 1 is read-only")
        page.click("#back-to-latest")
        page.wait_for_selector("#readonly-banner", state="hidden")
        assert "read-only" not in page.locator("#study-message").inner_text()
        _stroke(page, 0.06, 0.3)  # and it is editable
        assert page.locator("#save-labels").inner_text() == "Save *"


def test_an_export_beside_an_unsaved_edit_says_the_edit_is_not_in_it(
    tmp_path: Path, series: list[Path]
) -> None:
    """An export (report PDF, SEG ...) clicked with an edit unsaved downloaded the saved version without a
    word: the report for the patient's record lacked the correction just made. Now it asks first."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        asked: list[str] = []

        def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if len(asked) > 1 else dialog.dismiss()

        page.on("dialog", answer)
        with page.expect_download() as info:  # nothing unsaved: no question
            page.click("#export-csv")
        assert info.value.suggested_filename.endswith("-v1-deid.csv") and asked == []
        page.evaluate("window.scrollTo(0, 0)")  # up from the exports, far down the side panel
        _stroke(page, 0.06, 0.08)
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.click("#export-csv")  # cancelled
        assert len(asked) == 1 and "not in this export" in asked[0] and "version 1" in asked[0]
        with page.expect_download() as info:  # asked again, and exported as saved
            page.click("#export-csv")
        assert len(asked) == 2 and info.value.suggested_filename.endswith("-v1-deid.csv")
        assert page.locator("#save-labels").inner_text() == "Save *"  # the edit is still there


def test_ctrl_s_on_the_l3_tab_saves_an_unsaved_label_edit(tmp_path: Path, series: list[Path]) -> None:
    """Ctrl+S on the L3 tab did nothing and said nothing (the browser's "Save page" is kept away): an edit
    made in the label editor stayed unsaved. Now it is saved; with nothing to save the page says why."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.click("#tab-l3")
        page.keyboard.press("Control+s")
        page.wait_for_function("document.getElementById('save-labels').textContent === 'Save'")
        versions = page.request.get(f"{url}/api/studies/{sid}/versions").json()
        assert max(v["version"] for v in versions) == 2
        # the tab's own work done first (its volume, the localizer): its "Locating L3…", said once the volume
        # has come, took the place of the answer below when the machine was slow (also after the network
        # was idle: drawing the volume took longer than the idle wait, then the localizer was asked)
        for _ in range(600):
            if page.request.get(f"{url}/api/studies/{sid}").json()["localization"] is not None:
                break
            page.wait_for_timeout(200)
        page.wait_for_function(
            "!document.getElementById('segment').disabled"
            " && !document.getElementById('study-message').textContent.includes('Locating L3')"
        )
        page.keyboard.press("Control+s")
        assert "Nothing to save" in page.inner_text("#study-message")


def test_undoing_every_edit_leaves_nothing_unsaved(tmp_path: Path, series: list[Path]) -> None:
    """Undo back to the saved labels still said "Save *" and that the analysis lacked an unsaved edit, asked
    before leaving, and Save made a version identical to the one before it, marked as edited by hand."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        _stroke(page, 0.06, 0.08)
        _stroke(page, 0.06, 0.3)
        page.keyboard.press("Control+z")
        assert page.locator("#save-labels").inner_text() == "Save *"  # one stroke left
        page.keyboard.press("Control+z")
        assert page.locator("#save-labels").inner_text() == "Save"
        assert page.locator("#save-labels").is_disabled() and page.locator("#analysis-unsaved").is_hidden()
        page.keyboard.press("Control+y")
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        page.keyboard.press("Control+z")  # back to version 1: unsaved against version 2
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.keyboard.press("Control+y")
        assert page.locator("#save-labels").inner_text() == "Save"


def test_ctrl_s_saves_from_any_control_and_never_opens_the_browsers_save_dialog(
    tmp_path: Path, series: list[Path]
) -> None:
    """Ctrl+S with the focus in Height (cm) opened the browser's "Save page" dialog, the labels unsaved."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        page.evaluate(  # after the app's own listener, before any view's
            "window.addEventListener('keydown', (e) => { if (e.key === 's') window.browserSave = "
            "!e.defaultPrevented; }, {capture: true})"
        )
        _stroke(page, 0.06, 0.08)
        page.click("#height")
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Saved as version 2.")
        assert page.evaluate("window.browserSave") is False
        page.click("#tab-l3")  # nothing to save there, and no dialog either
        page.wait_for_selector("#segment:visible")
        for control in ("#l3-preset", "#mpr-canvas"):  # NiiVue's canvas keeps its keys to itself
            page.focus(control)
            page.evaluate("window.browserSave = undefined")
            page.keyboard.press("Control+s")
            assert page.evaluate("window.browserSave") is False


@contextmanager
def _accounts(
    tmp_path: Path, series: list[Path], users: tuple[str, ...]
) -> Iterator[tuple[Any, str, Any, str]]:
    """A server with accounts `users` ("dr. alice": password "alices-password-1"), the first signed in on
    an httpx client that uploaded `series` and segmented slice 5: (app, URL, client, study id)."""
    from sarcoscope.store import Store
    from sarcoscope.web.accounts import add_user

    store = Store(tmp_path / "data")
    store.migrate()
    for name in users:
        add_user(store, name, f"{name[4:]}s-password-1")
    store.close()
    app = create_app(WebSettings(data_dir=tmp_path / "data", default_engine="threshold", prerender=False))
    with _running(app.state.ctx.settings, app) as url, httpx.Client(base_url=url, timeout=60) as c:
        first = {"user": users[0], "password": f"{users[0][4:]}s-password-1"}
        c.post("/api/session", json=first).raise_for_status()
        sid = c.post("/api/studies", files=multipart(series)).json()["id"]
        c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5}).raise_for_status()
        c.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).raise_for_status()
        yield app, url, c, sid


def test_unsaved_edits_are_not_saved_under_the_next_users_name(tmp_path: Path, series: list[Path]) -> None:
    """A session that ends while an edit is unsaved shows the sign-in form; whoever signs in next with
    another account starts from the saved labels, so the audit never names them for someone else's strokes
    (the same user signing in again keeps the edit)."""
    from sqlalchemy import delete

    from sarcoscope.store.models import LoginSession

    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _accounts(tmp_path, series, ("dr. alice", "dr. bob")) as (app, url, c, sid):
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
            page.goto(f"{url}/#/study/{sid}/label")
            _submit_login(page, "alices-password-1", "dr. alice")
            page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
            page.keyboard.press("1")
            _stroke(page, 0.06, 0.08)
            assert page.locator("#save-labels").inner_text() == "Save *"

            def sessions_end() -> None:  # every session ends (expired, signed out elsewhere)
                with app.state.ctx.store.session() as s:
                    s.execute(delete(LoginSession))
                page.keyboard.press("Control+s")
                page.wait_for_selector("#view-login:not([hidden])")

            sessions_end()
            _submit_login(page, "alices-password-1", "dr. alice")  # the same user: the edit stays
            page.wait_for_selector("#view-study:not([hidden])")
            assert page.locator("#save-labels").inner_text() == "Save *"
            sessions_end()
            _submit_login(page, "bobs-password-1", "dr. bob")
            page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
            page.wait_for_function("document.getElementById('user-box').textContent.includes('dr. bob')")
            assert (
                page.locator("#save-labels").inner_text() == "Save"
                and page.locator("#save-labels").is_disabled()
            )
            page.keyboard.press("Control+s")
            page.wait_for_timeout(500)
            browser.close()
        versions = c.get(f"/api/studies/{sid}/versions")
    assert versions.status_code == 401  # alice's session went too
    assert [v.author for v in app.state.ctx.store.list_versions(sid)] == [
        "dr. alice"
    ]  # the segmentation only


def test_a_stroke_goes_no_further_than_its_slice(tmp_path: Path, series: list[Path]) -> None:
    """The wheel turned while painting showed the next slice, and the rest of the stroke was painted on it,
    outside the stroke's undo step: Ctrl+Z took back the first slice's part and left the other, unsaved
    ("Save *"), for a Save to store."""
    with _label_view(tmp_path, series, {"mode": "range", "first": 4, "last": 6}) as (_, page, _url, _sid):
        page.wait_for_function("document.getElementById('slice-text').textContent.includes('1 of 3')")
        box = page.locator("#edit-cursor").bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.06, box["y"] + box["height"] * 0.08
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * 0.1, y0, steps=4)
        page.mouse.wheel(0, -100)  # the next slice, the button still down
        page.wait_for_function("document.getElementById('slice-text').textContent.includes('2 of 3')")
        page.mouse.move(x0 + box["width"] * 0.1, y0 + box["height"] * 0.2, steps=4)
        page.mouse.up()
        assert page.locator("#save-labels").inner_text() == "Save *"  # (the first slice's part)
        page.keyboard.press("Control+z")
        page.wait_for_function("document.getElementById('slice-text').textContent.includes('1 of 3')")
        assert page.locator("#save-labels").inner_text() == "Save"


def test_ctrl_z_with_the_button_down_ends_the_stroke(tmp_path: Path, series: list[Path]) -> None:
    """Ctrl+Z pressed while painting (the button still down) undid the stroke so far, and the stroke went on
    painting with no undo step of its own: what it painted next could not be undone, only saved."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        box = page.locator("#edit-cursor").bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.06, box["y"] + box["height"] * 0.08
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * 0.1, y0, steps=4)
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.keyboard.press("Control+z")
        assert page.locator("#save-labels").inner_text() == "Save"
        page.mouse.move(x0 + box["width"] * 0.1, y0 + box["height"] * 0.2, steps=4)
        page.mouse.up()
        assert _overlay_pixel(page, 0.16, 0.2)[3] == 0  # nothing painted after the undo
        assert page.locator("#save-labels").inner_text() == "Save" and page.locator("#undo").is_disabled()


def test_lines_moved_after_segmenting_are_said_beside_the_numbers(tmp_path: Path, series: list[Path]) -> None:
    """Lines moved on the L3 tab after segmenting change nothing until segmented, while the label tab went on
    showing the labels and numbers of the slices segmented, without a word: a user could take them for the
    slices the lines now show."""
    with _label_view(tmp_path, series, {"mode": "range", "first": 4, "last": 6}) as (_, page, url, sid):
        assert page.locator("#lines-moved").is_hidden()  # the lines are on the slices labelled
        httpx.put(f"{url}/api/studies/{sid}/selection", json={"mode": "slice", "first": 7}).raise_for_status()
        page.click("#tab-l3")
        page.wait_for_selector("#pane-l3:not([hidden])")
        page.click("#tab-label")
        page.wait_for_selector("#lines-moved:not([hidden])")
        said = page.locator("#lines-moved").inner_text()
        assert "of slices 4–6 · images 5–7;" in said and "on slice 7 · image 8 now" in said


def test_lines_moved_just_before_the_label_tab_is_opened_are_said_beside_the_numbers(
    tmp_path: Path, series: list[Path]
) -> None:
    """The note said lines moved after segmenting only once the server had their move: ↑ pressed on the L3
    tab, then the label tab opened before the move was saved (0.4 s after the key, or a slow answer), and the
    label tab showed slice 5's numbers without a word while the lines were on slice 6."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):  # slice 5 segmented
        page.click("#tab-l3")
        page.wait_for_selector("#pane-l3:not([hidden])")
        page.wait_for_selector("#l3-confidence:not(:empty)")  # located: the lines are where they stay
        held: list[Any] = []
        page.route("**/selection", _holding(held))
        page.focus("#l3-viewer")
        page.keyboard.press("ArrowUp")
        page.click("#tab-label")
        page.wait_for_selector("#metrics tr[data-tissue=muscle]")
        _wait_held(page, held)
        page.wait_for_timeout(300)
        assert page.locator("#lines-moved").is_visible()
        said = page.locator("#lines-moved").inner_text()
        assert "of slice 5 · image 6;" in said and "on slice 6 · image 7 now" in said
        for route in held:
            route.continue_()


def test_reloading_with_patient_facts_typed_but_not_applied_asks_first(
    tmp_path: Path, series: list[Path]
) -> None:
    """The page warned before a reload (or closing the tab) only for an unsaved label edit: Height and Weight
    typed in the Patient card and not applied were dropped without a word (leaving the study says so), and the
    analysis went on without SMI or BMI. Now the browser asks first, as for an edit."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        asked: list[str] = []

        def answer(dialog: Any) -> None:
            asked.append(dialog.type)
            dialog.accept()

        page.on("dialog", answer)
        page.click("#analysis")  # the user's first gesture on the page (a browser asks only after one)
        page.reload()
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        assert asked == []  # nothing typed: nothing to ask about
        page.click("#analysis")
        page.fill("#height", "171")
        page.fill("#weight", "64")
        page.reload()
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        assert asked == ["beforeunload"]


def test_ctrl_s_applies_patient_facts_typed_in_the_card(tmp_path: Path, series: list[Path]) -> None:
    """Ctrl+S pressed after typing the height in the Patient card did nothing and said nothing (it saves a
    label edit, and there was none): the facts stayed unapplied, the analysis without SMI, while the user
    took them for saved. Ctrl+S now applies them too, as Apply (or Enter) does."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        assert "not computed" in page.locator("#smi").inner_text()
        page.fill("#height", "171")
        page.keyboard.press("Control+s")
        _wait_text(page, "study-message", "Patient facts saved.")
        page.wait_for_function("!document.getElementById('smi').textContent.includes('not computed')")
        assert httpx.get(f"{url}/api/studies/{sid}").json()["patient"]["height_cm"] == 171
        assert len(httpx.get(f"{url}/api/studies/{sid}/versions").json()) == 1  # no label version made


def test_the_versions_list_says_which_slices_each_version_measures(
    tmp_path: Path, series: list[Path]
) -> None:
    """The Versions list named each version's source, author and time but not its slices: a version segmented
    on slices 4–6 and one on slice 8 read alike, and a user restoring one could not tell that it measures
    other slices than the one shown (an average of three instead of the L3 slice)."""
    with _label_view(tmp_path, series, {"mode": "range", "first": 4, "last": 6}) as (_, page, url, sid):
        httpx.put(f"{url}/api/studies/{sid}/selection", json={"mode": "slice", "first": 8}).raise_for_status()
        segment = {"engine": "threshold", "base_version": 1}
        httpx.post(f"{url}/api/studies/{sid}/segment", json=segment, timeout=60).raise_for_status()
        page.reload()
        page.wait_for_selector("#versions li:has-text('v2')", timeout=30000)
        rows = page.locator("#versions li").all_inner_texts()
        assert "slice 8" in rows[0] and "slices 4–6" in rows[1], rows


def test_an_edit_discarded_on_leaving_is_not_said_unsaved_in_the_next_study(
    tmp_path: Path, series: list[Path]
) -> None:
    """Patient A's edit, discarded as agreed when patient B (not segmented yet) was opened, was still said on
    B's label tab: 'Save *' (pressable, saving nothing), 'Your unsaved edit is not in these numbers' and Undo
    on (undoing nothing), as if B had an unsaved edit."""
    with _label_view(tmp_path, series) as (_, page, url, _sid):
        files = write_series(tmp_path / "b", seed=2, patient_id="PAT-B")
        b = httpx.post(f"{url}/api/studies", files=multipart(files), timeout=60).json()["id"]
        _stroke(page, 0.06, 0.08)
        assert page.locator("#save-labels").inner_text() == "Save *"
        page.once("dialog", lambda dialog: dialog.accept())  # "Discard your unsaved label edits?"
        page.evaluate(f"location.hash = '#/study/{b}/label'")
        _wait_text(page, "study-message", "No labels yet")
        assert page.locator("#save-labels").inner_text() == "Save"
        assert page.locator("#save-labels").is_disabled()
        assert page.locator("#undo").is_disabled()
        assert page.locator("#analysis-unsaved").is_hidden()


def test_a_save_is_said_saved_when_the_versions_list_cannot_be_read_after_it(
    tmp_path: Path, series: list[Path]
) -> None:
    """A save the server stored, followed by a failed read of the Versions list (a dropped connection, a 500),
    was said 'Not saved: … Your edit is still on screen: press Save again.' (Save then off: nothing unsaved),
    so the user took version 2 for lost. The save now says it saved; the list says why it is missing, and the
    analysis of version 2 is shown."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _stroke(page, 0.06, 0.08)
        failing = {"status": 500, "content_type": "application/json", "body": '{"detail": "Server busy."}'}
        page.route(f"**/api/studies/{sid}/versions", lambda route: route.fulfill(**failing))
        page.keyboard.press("Control+s")
        page.wait_for_selector("#versions li.error")
        assert page.locator("#study-message").inner_text() == "Saved as version 2."
        assert "Server busy." in page.locator("#versions").inner_text()
        page.wait_for_function("document.getElementById('analysis-version').textContent.includes('2')")
        assert len(httpx.get(f"{url}/api/studies/{sid}/versions").json()) == 2


def test_a_sideways_wheel_does_not_change_the_slice_edited(tmp_path: Path, series: list[Path]) -> None:
    """A sideways scroll over the label editor (a trackpad swiped left or right, Shift+wheel) went one slice
    down per event, as if the wheel had turned down: the user went on painting on another slice than the
    one they were correcting without having asked for it. Only the wheel's up and down change the slice."""
    with _label_view(tmp_path, series, {"mode": "range", "first": 4, "last": 6}) as (_, page, _url, _sid):
        page.click("#slice-next")
        _wait_text(page, "slice-text", "slice 5 · image 6 (2 of 3)")
        box = page.locator("#edit-cursor").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(120, 0)
        page.mouse.wheel(-120, 0)
        page.wait_for_timeout(300)
        assert page.locator("#slice-text").inner_text() == "slice 5 · image 6 (2 of 3)"
        page.mouse.wheel(0, -120)  # up: a more superior slice
        _wait_text(page, "slice-text", "slice 6 · image 7 (3 of 3)")


def test_signing_out_with_patient_facts_typed_starts_the_page_again_without_asking(
    tmp_path: Path, series: list[Path]
) -> None:
    """Sign out with Height typed and not applied: the page (which starts again, empty, for the next person)
    stopped at the browser's own 'Leave site?' (the warning about facts not applied), and Cancel (or a
    headless browser's dismissal) left the patient's study on screen after the session had ended."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _accounts(tmp_path, series, ("dr. alice",)) as (_, url, _c, sid), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
        asked: list[str] = []
        page.on("dialog", lambda dialog: (asked.append(dialog.type), dialog.dismiss()))
        page.goto(f"{url}/#/study/{sid}/label")
        _submit_login(page, "alices-password-1", "dr. alice")
        page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
        page.fill("#height", "171")
        page.click("#user-box button:text('Sign out')")
        page.wait_for_selector("#view-login:not([hidden])", timeout=30000)
        assert asked == []
        assert page.locator("#view-study").is_hidden()
        browser.close()


def _version_2_then_view_1(page: Any, before_viewing: Any = lambda: None) -> None:
    """Save a stroke as version 2, then `before_viewing()` and "view" version 1 (read-only)."""
    _stroke(page, 0.06, 0.08)
    page.keyboard.press("Control+s")
    _wait_text(page, "study-message", "Saved as version 2.")
    page.wait_for_function("document.getElementById('analysis-version').textContent.includes('2')")
    before_viewing()
    page.click("#versions li:has-text('v1 ·') button")


def test_a_restore_whose_labels_then_fail_to_load_is_said_restored(
    tmp_path: Path, series: list[Path]
) -> None:
    """A restore the server made (version 3), followed by a failed load of the labels, was said only as an
    error ('Server busy.'): the user took the restore for failed and restored again (a duplicate version) or
    version 1 for lost. The page now says it was restored, and why its labels are not shown."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        _version_2_then_view_1(page)
        page.wait_for_selector("#readonly-banner:not([hidden])")
        failing = {"status": 500, "content_type": "application/json", "body": '{"detail": "Server busy."}'}
        page.route(f"**/api/studies/{sid}/labels", lambda route: route.fulfill(**failing))
        page.click("#restore-version")
        _wait_text(page, "study-message", "Restored as version 3")
        assert "Server busy." in page.locator("#study-message").inner_text()
        assert len(httpx.get(f"{url}/api/studies/{sid}/versions").json()) == 3


def test_viewing_an_older_version_does_not_go_on_saying_the_save(tmp_path: Path, series: list[Path]) -> None:
    """'Saved as version 2.' stayed on the status line while version 1 was viewed read-only: it read as if the
    labels on screen were version 2."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        _version_2_then_view_1(page)
        page.wait_for_selector("#readonly-banner:not([hidden])")
        assert "version 2" not in page.locator("#study-message").inner_text()


def test_an_analysis_that_fails_is_not_headed_with_the_previous_versions_number(
    tmp_path: Path, series: list[Path]
) -> None:
    """'view' on version 1 whose analysis the server failed to send kept 'Analysis · version 2' above the
    error: numbers read under the other version's name."""
    with _label_view(tmp_path, series) as (_, page, _url, sid):
        failing = {"status": 500, "content_type": "application/json", "body": '{"detail": "Server busy."}'}
        pattern = f"**/api/studies/{sid}/analysis?version=1"
        _version_2_then_view_1(page, lambda: page.route(pattern, lambda route: route.fulfill(**failing)))
        page.wait_for_selector("#analysis .error")
        assert "version 2" not in page.locator("#analysis-version").inner_text()


def test_an_upload_with_an_expired_session_shows_the_sign_in_form(tmp_path: Path, series: list[Path]) -> None:
    """An upload tried after the session had expired said 'Login required' under the upload box but showed
    no sign-in form until another request was made: the user could not tell how to go on."""
    from sqlalchemy import delete

    from sarcoscope.store.models import LoginSession

    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _accounts(tmp_path, series, ("dr. alice",)) as (app, url, _c, _sid), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
        page.goto(f"{url}/#/")
        _submit_login(page, "alices-password-1", "dr. alice")
        page.wait_for_selector("#study-rows tr")
        with app.state.ctx.store.session() as s:
            s.execute(delete(LoginSession))
        page.set_input_files("#pick-files", [str(f) for f in series])
        page.wait_for_selector("#view-login:not([hidden])", timeout=30000)
        browser.close()


def test_the_keys_lines_name_the_wheel_and_pgup_pgdn(tmp_path: Path, series: list[Path]) -> None:
    """The label editor's key line did not say that the wheel changes the slice, and the L3 view's hint did
    not say that PgUp/PgDn move the line by 5 slices: keys a user could not find."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        assert "or wheel slice" in page.locator("#pane-label").inner_text()
        page.click("#tab-l3")
        page.wait_for_function("document.getElementById('l3-hint').textContent.length > 0")
        assert "PgUp/PgDn: 5;" in page.locator("#l3-hint").inner_text()


def test_a_stroke_begun_in_the_border_around_the_image_is_said(tmp_path: Path, series: list[Path]) -> None:
    """A stroke begun in the black border beside the image (the editor's box is wider than the image)
    painted nothing and said nothing: the user could not tell a miss from a broken brush."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        box = page.locator("#editor-box").bounding_box()
        image = page.locator("#edit-cursor").bounding_box()
        assert image["x"] - box["x"] > 20  # a border to the left of the image
        x, y = (box["x"] + image["x"]) / 2, image["y"] + image["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 10, y, steps=3)
        page.mouse.up()
        _wait_text(page, "study-message", "Nothing painted: the stroke began outside the image")
        assert page.locator("#save-labels").inner_text() == "Save"
