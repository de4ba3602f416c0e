"""End-to-end in headless chromium (see test_e2e.py): what a fast or impatient user does while the server is
slow (a button pressed again, a line moved, another study opened, the window changed) leaves the page right.
Each answer is held back with Playwright's routing (as in test_e2e_slow_server.py) until the user has acted.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import numpy as np
import test_e2e
from test_e2e_slow_server import (
    _held,
    _open_from_list,
    _segment,
    _segmenting,
    _settle,
    _shown,
    _two_studies,
    _wait_held,
    studies,
)
from web_synth import SHAPE, multipart, write_exam, write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page
_ = studies  # the fixture


def test_segment_stays_off_while_its_segmentation_runs(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "Segment selected" came back on while its segmentation ran when a line was moved (↑/↓, a drag):
    pressed again, it sent a second segmentation on the same version, refused as a conflict ("Not saved: ...
    version 1 was saved by ..."). Another study opened meanwhile had its Segment off until the first ended."""
    a, _ = studies
    # the server segments at once (the selection pressed on), its answer comes late: a slow segmentation
    # (held before the server sees it, the request would be refused for the line moved meanwhile)
    page.click("#study-rows tr:has-text('PAT-A')")
    _shown(page, "PAT-A")
    page.select_option("#engine", "threshold")
    held = _late_first(page, f"**/api/studies/{a}/segment")
    page.click("#segment")
    _wait_held(page, held)
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 7")
    assert page.locator("#segment").is_disabled()
    page.locator("#segment").click(force=True)  # (a disabled button takes no click)
    _open_from_list(page, "PAT-B")
    _shown(page, "PAT-B")
    page.wait_for_function("document.getElementById('segment').disabled === false")  # B is not segmenting
    _open_from_list(page, "PAT-A")  # still segmenting
    _shown(page, "PAT-A")
    page.wait_for_selector("#l3-confidence:not(:empty)")
    assert page.locator("#segment").is_disabled()
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_url("**/label", timeout=30000)
    _settle(page)
    assert page.locator("#study-message").get_attribute("class") == "message"  # no error
    assert [v["version"] for v in httpx.get(f"{server}/api/studies/{a}/versions").json()] == [1]


def test_another_studys_segmentation_ending_does_not_free_segment_while_the_localizer_runs(
    page: object, server: str, tmp_path: Path
) -> None:
    """A segmentation of patient A that ended while the user was on patient B, whose L3 was still being
    located, turned B's "Segment selected" on: pressed, it segmented B's middle slice shown before L3 was
    found (what waiting for the localizer is for)."""
    a, b = _two_studies(server, tmp_path)
    httpx.post(f"{server}/api/studies/{a}/localize", json={}, timeout=60).raise_for_status()
    page.goto(server)
    segment = _segmenting(page, a, "PAT-A")
    locate = _held(page, f"**/api/studies/{b}/localize")
    _open_from_list(page, "PAT-B")
    _wait_held(page, locate)
    test_e2e._wait_text(page, "study-message", "Locating L3…")
    assert page.locator("#segment").is_disabled()
    segment[0].continue_()
    test_e2e._wait_text(page, "toast", "The segmentation of PAT-A is done")
    assert page.locator("#segment").is_disabled()
    assert "Locating L3" in page.locator("#segment").get_attribute("title")
    locate[0].continue_()
    page.wait_for_function("document.getElementById('segment').disabled === false", timeout=60000)


def test_a_window_chosen_while_the_images_load_is_the_one_shown(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A Window preset chosen while "Loading the images…" (a large volume) was not applied: the list said
    bone, NiiVue showed the soft-tissue window it was opened with, and choosing bone again did nothing."""
    a, _ = studies
    level, width = httpx.get(f"{server}/api/config").json()["windows"]["bone"]
    held = _held(page, f"**/api/studies/{a}/volume.nii.gz")
    page.click("#study-rows tr:has-text('PAT-A')")
    _wait_held(page, held)
    page.select_option("#l3-preset", "bone")
    held[0].continue_()
    page.wait_for_function("document.getElementById('mpr').dataset.window", timeout=60000)
    _settle(page)
    assert page.locator("#mpr").get_attribute("data-window") == f"{round(level)},{round(width)}"
    assert page.locator("#l3-window").inner_text() == f"W {round(width)} · L {round(level)}"


def test_a_message_said_while_the_images_load_stays_when_they_come(
    page: object, studies: tuple[str, str]
) -> None:
    """The images coming cleared the status line whatever it said then: Ctrl+S's "Nothing to save" (or
    "Saved as version 2.") vanished when the volume finished loading, so the user saw no answer."""
    a, _ = studies
    held = _held(page, f"**/api/studies/{a}/volume.nii.gz")
    page.click("#study-rows tr:has-text('PAT-A')")
    _wait_held(page, held)
    page.keyboard.press("Control+s")
    page.wait_for_function("document.getElementById('study-message').textContent.includes('Nothing to save')")
    held[0].continue_()
    page.wait_for_function("document.getElementById('mpr').dataset.window", timeout=60000)
    _settle(page)
    assert "Nothing to save" in page.inner_text("#study-message")


def test_a_segmentation_or_series_ending_after_going_back_to_the_list_leaves_the_user_there(
    page: object, server: str, tmp_path: Path
) -> None:
    """ "Segment selected", or another series chosen in the Series list, went on when the server answered to
    the study's label view or the series' study, even when the user had gone back to the study list
    meanwhile (to search it, upload, open another study): the list was replaced under their hands. Now the
    user stays on the list, told what was done."""
    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    r = httpx.post(f"{server}/api/studies", files=multipart(files), timeout=60)
    assert r.status_code == 201, r.text
    page.goto(server)

    def back_to_the_list_before(answer: object, said: str) -> None:
        page.click("#nav-studies")
        page.wait_for_selector("#view-studies:not([hidden])")
        answer.continue_()
        # the toast's text stays after it hides (3 s): a loaded machine may take longer to settle
        page.wait_for_function("(s) => document.getElementById('toast').textContent.startsWith(s)", arg=said)
        _settle(page)
        assert page.evaluate("location.hash") == "#/", said
        assert page.locator("#view-studies").is_visible() and page.locator("#view-study").is_hidden()
        assert page.locator("#toast").text_content().startswith(said)

    held = _segmenting(page, r.json()["id"], "PAT-EXAM")
    back_to_the_list_before(held[0], "The segmentation of PAT-EXAM is done")
    page.click("#study-rows tr:has-text('PAT-EXAM')")
    page.wait_for_selector("#series-bar:not([hidden])")
    held = _held(page, "**/series")
    page.select_option("#series", index=1)
    _wait_held(page, held)
    back_to_the_list_before(held[0], "The series Abdomen ART 6.0")


def _held_first(page: object, pattern: str) -> list:
    """Hold back the first request matching `pattern` (sent on with its continue_()); the others go on."""
    held: list = []
    page.route(pattern, lambda route: route.continue_() if held else held.append(route))
    return held


class _LateAnswer:
    """A request the server answers at once, its answer given to the page only by continue_(): a slow
    network, or a server that took long for it (unlike a held request, the server sees it at once)."""

    def __init__(self, route: object) -> None:
        self.route, self.response = route, route.fetch()

    def continue_(self) -> None:
        self.route.fulfill(response=self.response)


def _late_first(page: object, pattern: str) -> list:
    """The first request matching `pattern` answered late (_LateAnswer); the others at once."""
    late: list = []
    page.route(pattern, lambda route: route.continue_() if late else late.append(_LateAnswer(route)))
    return late


def test_patient_facts_applied_while_the_analysis_loads_are_in_its_numbers(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """The analysis panel showed whichever analysis came last, not the one asked for last: facts applied
    while the label view's first analysis was still coming (height, weight, sex typed at once) were shown
    computed, then replaced by that first analysis, made without them: SMI "not computed (height unknown)"
    beside a height of 171 cm."""
    a, _ = studies
    _segment(server, studies)
    held = _late_first(page, f"**/api/studies/{a}/analysis?*")
    page.goto(f"{server}/#/study/{a}/label")
    _wait_held(page, held)
    page.fill("#height", "171")
    page.fill("#weight", "66")
    page.select_option("#sex", "M")
    page.click("#patient-form button[type=submit]")
    test_e2e._wait_text(page, "study-message", "Patient facts saved.")
    assert page.locator("#smi").inner_text().endswith("cm²/m²")
    held[0].continue_()
    _settle(page)
    assert page.locator("#smi").inner_text().endswith("cm²/m²")


def test_the_selection_saved_is_the_last_one_shown(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Each line move saves the selection; a second move while the first save was on its way was sent beside
    it, and the server could store them in either order: here the first, slice 7, while the page showed 8
    (opened again, the study came back with its line a slice off what the user had placed)."""
    a, _ = studies
    page.click("#study-rows tr:has-text('PAT-A')")
    _shown(page, "PAT-A")
    first = _held_first(page, f"**/api/studies/{a}/selection")
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")  # slice 6 -> 7, saved 0.4 s later: held
    _wait_held(page, first)
    page.keyboard.press("ArrowUp")  # 7 -> 8, saved 0.4 s later
    page.wait_for_timeout(1500)
    first[0].continue_()
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 8")
    _settle(page)
    assert page.locator("#l3-viewer").get_attribute("data-lines") == "8"
    assert httpx.get(f"{server}/api/studies/{a}").json()["selection"]["first"] == 8


def _label_view_of_versions(page: object, server: str, studies: tuple[str, str], n: int) -> None:
    """Study A segmented (version 1), with versions up to `n` (empty labels) saved after it; the page on its
    label view."""
    a, _ = studies
    _segment(server, studies)
    for base in range(1, n):
        r = httpx.post(
            f"{server}/api/studies/{a}/labels?base_version={base}",
            content=bytes(96 * 96),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 201, r.text
    page.goto(f"{server}/#/study/{a}/label")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)


def test_a_stroke_while_a_version_loads_is_refused_not_dropped(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "view" on an earlier version showed nothing until its labels came: a stroke painted meanwhile on the
    labels still shown made them "Save *", and was dropped without a word when the version came."""
    from test_e2e_unsaved import _stroke

    a, _ = studies
    _label_view_of_versions(page, server, studies, 2)
    held = _held(page, f"**/api/studies/{a}/labels?version=1")
    page.click("#versions li:has-text('v1 ·') button")
    _wait_held(page, held)
    _stroke(page, 0.06, 0.08)
    assert page.locator("#save-labels").inner_text() == "Save"
    test_e2e._wait_text(page, "study-message", "Nothing painted: the labels are still loading")
    held[0].continue_()
    page.wait_for_selector("#readonly-banner:not([hidden])")
    assert page.locator("#study-message").inner_text() == ""


def test_a_line_moved_just_before_opening_another_study_is_saved_for_its_own(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """↑/↓ save the selection 0.4 s after the last key; another study opened within that time had the lines
    it opened with (its middle slice) saved as its selection, as if placed by hand, so that its localizer's
    L3, still to come, was not proposed; and the move was lost for the study it was made in."""
    a, b = studies
    api = f"{server}/api/studies"
    assert httpx.get(f"{api}/{b}").json()["selection"] is None  # (too short for the localizer to propose)
    page.click("#study-rows tr:has-text('PAT-A')")
    _shown(page, "PAT-A")
    page.clock.install(time=10**12)  # the page's timers wait (B is opened within the 0.4 s) ...
    page.clock.pause_at(10**12 + 1000)
    page.focus("#l3-viewer")
    # waits for A's save itself, sent 0.4 s (the page's time, slow on a loaded machine) after the resume:
    # a fixed wait after it could end before, and A's selection was read while still none
    with page.expect_response(_selection_saved(a)) as saved:
        page.keyboard.press("ArrowUp")  # slice 6 -> 7
        page.evaluate(f"location.hash = '#/study/{b}'")  # (a link, Back)
        _shown(page, "PAT-B")
        page.clock.resume()  # ... until now
    assert saved.value.ok
    _settle(page)
    selections = [httpx.get(f"{api}/{sid}").json()["selection"] for sid in (a, b)]
    assert selections == [{"mode": "slice", "first": 7, "last": 7}, None]


def test_a_line_moved_just_before_the_page_is_reloaded_or_closed_is_saved(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """↑/↓ save the selection 0.4 s after the last key: the page reloaded (F5) or closed within that time
    dropped the save with its timer, so the move was lost without a word (the server kept none, the study
    opened again showed its middle slice)."""
    a, _ = studies
    page.click("#study-rows tr:has-text('PAT-A')")
    _shown(page, "PAT-A")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '6'")
    page.clock.install(time=10**12)  # the page's timers wait: the page is reloaded within the 0.4 s
    page.clock.pause_at(10**12 + 1000)
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")  # slice 6 -> 7
    page.reload()
    for _ in range(500):  # the save, sent as the page went, reaches the server
        selection = httpx.get(f"{server}/api/studies/{a}").json()["selection"]
        if selection is not None:
            break
        page.wait_for_timeout(20)
    assert selection == {"mode": "slice", "first": 7, "last": 7}


def _selection_saved(study: str) -> object:
    """Matches the response to the page's PUT of study `study`'s selection (for page.expect_response)."""
    return lambda r: r.request.method == "PUT" and r.url.endswith(f"/api/studies/{study}/selection")


def test_a_line_dragged_while_another_study_opens_stays_that_studys(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A line dragged (here on the server's images) while another study opened (a link, Back) went on moving
    in that study: its line followed the pointer and, let go, was saved as its selection (patient B measured
    on a slice the user never chose), while the drag was lost for the study it was made in."""
    a, b = studies
    api = f"{server}/api/studies"
    httpx.put(f"{api}/{b}/selection", json={"mode": "slice", "first": 3}).raise_for_status()
    page.goto(f"{server}/?png#/study/{a}")
    _shown(page, "PAT-A")
    page.wait_for_function("document.getElementById('coronal-canvas').style.width !== ''")  # drawn
    _settle(page)
    box = page.locator("#coronal-canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + (11 - 6 + 0.5) * box["height"] / 12)  # on the line (slice 6 of 12)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.3, steps=3)
    dragged = page.locator("#l3-viewer").get_attribute("data-lines")
    assert dragged != "6"
    page.evaluate(f"location.hash = '#/study/{b}'")
    _shown(page, "PAT-B")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '3'")
    page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=3)
    page.mouse.up()
    _settle(page)
    assert page.locator("#l3-viewer").get_attribute("data-lines") == "3"
    selections = [httpx.get(f"{api}/{sid}").json()["selection"] for sid in (a, b)]
    z = int(dragged)
    assert selections == [{"mode": "slice", "first": z, "last": z}, {"mode": "slice", "first": 3, "last": 3}]


def _line_moved_while_its_save_waits(page: object, server: str, study: str, patient: str) -> None:
    """Study `study` opened with its line on slice 6 (saved), then ↑↑ (6 -> 8): the page's timers are
    paused, so the save of the move (0.4 s after the last key) waits until the test resumes them."""
    selection = {"mode": "slice", "first": 6}
    httpx.put(f"{server}/api/studies/{study}/selection", json=selection).raise_for_status()
    page.click(f"#study-rows tr:has-text('{patient}')")
    _shown(page, patient)
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '6'")
    page.clock.install(time=10**12)
    page.clock.pause_at(10**12 + 1000)
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.locator("#l3-viewer").get_attribute("data-lines") == "8"


def test_download_selected_dicom_right_after_moving_the_line_has_the_slice_shown(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "Download selected DICOM" zipped the server's selection, which ↑/↓ save 0.4 s after the last key:
    pressed within that time it gave slice 6 while the line showed 8 (and with no selection saved yet, a
    short series' middle slice, it was refused)."""
    import io
    import zipfile

    a, _ = studies
    _line_moved_while_its_save_waits(page, server, a, "PAT-A")
    with page.expect_download() as info:
        page.click("#download-dicom")
    with zipfile.ZipFile(io.BytesIO(info.value.path().read_bytes())) as zf:
        assert zf.namelist() == ["slice0008.dcm"]


def test_range_pressed_right_after_moving_the_line_is_the_selection_saved(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Range pressed within 0.4 s of ↑/↓ was saved at once, then the keys' save, still waiting, came after
    it: the server kept "Slice 8" (the study opened again showed one line, and "Saved selection: Slice 8" was
    said) while the page showed the range."""
    a, _ = studies
    _line_moved_while_its_save_waits(page, server, a, "PAT-A")
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 2")
    page.clock.resume()
    page.wait_for_timeout(1000)  # (the page's time: the keys' save, before the fix, is sent)
    _settle(page)
    shown = [int(z) for z in page.locator("#l3-viewer").get_attribute("data-lines").split(",")]
    selection = httpx.get(f"{server}/api/studies/{a}").json()["selection"]
    assert selection == {"mode": "range", "first": min(shown), "last": max(shown)}
    assert page.locator("#study-message").inner_text().startswith("Saved selection: Range")


def test_a_line_moved_just_before_opening_another_study_is_saved_when_keys_move_that_ones(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """↑/↓ in study A, then study B opened and its line moved with ↑ within 0.4 s: B's key cancelled the
    timer of A's save, so A's move was lost (the server kept slice 6 while the user had left it on 8)."""
    a, b = studies
    _line_moved_while_its_save_waits(page, server, a, "PAT-A")
    httpx.put(f"{server}/api/studies/{b}/selection", json={"mode": "slice", "first": 6}).raise_for_status()
    page.click("#nav-studies")
    page.click("#study-rows tr:has-text('PAT-B')")
    _shown(page, "PAT-B")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '6'")
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    page.clock.resume()
    page.wait_for_timeout(1000)  # (the page's time: the saves are sent)
    _settle(page)
    for sid, line in ((a, 8), (b, 7)):
        selection = httpx.get(f"{server}/api/studies/{sid}").json()["selection"]
        assert (selection["mode"], selection["first"]) == ("slice", line), sid


def test_switching_tabs_while_l3_is_located_locates_it_once(
    page: object, server: str, tmp_path: Path
) -> None:
    """Back on the L3 tab while its localizer ran (a few seconds on a real CT), the view asked for another
    localization: the server ran the localizer twice, and the first to end said L3 was found (Segment on)
    while the other still ran."""
    a, _ = _two_studies(server, tmp_path)
    page.goto(server)
    held = _held(page, f"**/api/studies/{a}/localize")
    page.click("#study-rows tr:has-text('PAT-A')")
    _wait_held(page, held)
    page.click("#tab-label")
    page.wait_for_selector("#pane-label:not([hidden])")
    page.click("#tab-l3")
    test_e2e._wait_text(page, "study-message", "Locating L3…")
    page.wait_for_timeout(500)
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_selector("#l3-confidence:not(:empty)", timeout=60000)
    _settle(page)
    assert page.locator("#study-message").inner_text() == "" and page.locator("#segment").is_enabled()


def test_the_version_viewed_is_the_last_one_asked_for(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "view" on version 1, then on version 2 while version 1 was still coming: version 2 was shown, then
    replaced by version 1 when it came, so that "Restore this version" restored another version than the one
    the user had chosen last."""
    a, _ = studies
    _label_view_of_versions(page, server, studies, 3)
    held = _held(page, f"**/api/studies/{a}/labels?version=1")
    page.click("#versions li:has-text('v1 ·') button")
    _wait_held(page, held)
    page.click("#versions li:has-text('v2 ·') button")
    test_e2e._wait_text(page, "readonly-version", "2")
    held[0].continue_()
    _settle(page)
    assert page.locator("#readonly-version").inner_text() == "2"
    assert page.locator("#analysis-version").inner_text() == "· version 2"


def _rows(page: object) -> list[str]:
    """The patient of each row of the study list."""
    return page.eval_on_selector_all("#study-rows tr", "rows => rows.map((r) => r.cells[0].textContent)")


def test_the_study_list_shows_the_answer_to_the_last_search_typed(
    page: object, studies: tuple[str, str]
) -> None:
    """Each search typed asks the server for the list; an answer that came after a newer one (a slow server)
    replaced it: the list showed the studies of the search before, under the search the user typed last."""
    held = _held_first(page, "**/api/studies/search")  # the first search (PAT-A) held; PAT-B goes on
    page.fill("#study-search", "PAT-A")
    _wait_held(page, held)
    page.fill("#study-search", "PAT-B")
    page.wait_for_function("document.querySelectorAll('#study-rows tr').length === 1")
    assert _rows(page) == ["PAT-B"]
    held[0].continue_()
    _settle(page)
    assert _rows(page) == ["PAT-B"]


def test_undo_while_a_version_loads_is_refused_not_applied_to_the_labels_leaving(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Undo (Ctrl+Z, or its button, still on) while "view" loaded an earlier version undid a step on the
    labels about to be replaced: they showed "Save *" for an edit nobody made, and the undo was dropped
    without a word when the version came (its history is its own). Now Undo and Redo are off until the
    labels are shown, and the key says why nothing was undone."""
    from test_e2e_unsaved import _stroke

    a, _ = studies
    _label_view_of_versions(page, server, studies, 2)
    _stroke(page, 0.06, 0.08)
    page.keyboard.press("Control+s")
    test_e2e._wait_text(page, "study-message", "Saved as version 3.")
    assert page.locator("#undo").is_enabled()
    held = _held(page, f"**/api/studies/{a}/labels?version=1")
    page.click("#versions li:has-text('v1 ·') button")
    _wait_held(page, held)
    assert page.locator("#undo").is_disabled() and page.locator("#redo").is_disabled()
    page.keyboard.press("Control+z")
    test_e2e._wait_text(page, "study-message", "Nothing undone: the labels are still loading")
    assert page.locator("#save-labels").inner_text() == "Save"
    held[0].continue_()
    page.wait_for_selector("#readonly-banner:not([hidden])")
    _settle(page)
    assert page.locator("#study-message").inner_text() == ""
    assert page.locator("#save-labels").inner_text() == "Save"
    assert page.locator("#undo").is_disabled()


def test_ctrl_s_while_a_version_loads_after_discarding_the_edit_saves_nothing(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "view" on an earlier version with an edit unsaved asks to discard it; agreed, the edit stayed
    "Save *" until the version came, and Ctrl+S meanwhile saved it as a new version: the edit the user had
    just discarded, made the latest labels (and "Back to latest" showed it)."""
    from test_e2e_unsaved import _stroke

    a, _ = studies
    _label_view_of_versions(page, server, studies, 2)
    _stroke(page, 0.06, 0.08)
    assert page.locator("#save-labels").inner_text() == "Save *"
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    held = _held(page, f"**/api/studies/{a}/labels?version=1")
    page.click("#versions li:has-text('v1 ·') button")
    _wait_held(page, held)
    assert asked == ["Discard your unsaved edit?"]
    assert page.locator("#save-labels").inner_text() == "Save"
    assert page.locator("#save-labels").is_disabled()
    page.keyboard.press("Control+s")
    page.locator("#save-labels").click(force=True)  # (a disabled button takes no click)
    held[0].continue_()
    page.wait_for_selector("#readonly-banner:not([hidden])")
    _settle(page)
    assert [v["version"] for v in httpx.get(f"{server}/api/studies/{a}/versions").json()] == [2, 1]
    page.click("#back-to-latest")
    page.wait_for_selector("#readonly-banner", state="hidden")
    _settle(page)
    assert page.locator("#save-labels").inner_text() == "Save"
    assert test_e2e._overlay_pixel(page, 0.1, 0.08)[3] == 0  # version 2: no labels


def test_delete_pressed_again_while_a_study_is_deleted_asks_once_and_deletes_once(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A study's Delete pressed again while its deletion was on its way (a slow server; a double click)
    asked "Delete study ...?" again and, agreed, sent a second deletion, refused: "Study ... not found"."""
    a, _ = studies
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    held: list = []
    page.route(
        lambda url: url.split("?")[0].endswith(f"/api/studies/{a}"),  # the DELETE names the version seen
        lambda route: held.append(route) if route.request.method == "DELETE" else route.continue_(),
    )
    delete = page.locator("#study-rows tr:has-text('PAT-A') button")
    delete.click()
    _wait_held(page, held)
    delete.click(force=True)  # (a disabled button takes no click)
    assert len(asked) == 1
    assert "kept for 30 days" in asked[0] and "an admin can restore it" in asked[0]  # not lost for good
    assert page.locator("#study-rows tr:has-text('PAT-A') button").inner_text() == "Deleting…"
    held[0].continue_()
    # the list read again after the deletion (its answer unread, the DELETE never lets the network idle)
    page.wait_for_selector("#study-rows tr:has-text('PAT-A')", state="detached")
    assert len(asked) == 1 and len(held) == 1
    assert page.locator("#toast").is_hidden()
    assert page.evaluate("location.hash") in ("", "#/")
    assert _rows(page) == ["PAT-B"]
    assert httpx.get(f"{server}/api/studies/{a}").status_code == 404


def test_another_study_opens_its_labels_at_their_first_slice(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """The label editor kept the slice position of the study open before ("2 of 3"), so another study opened
    on its second labelled slice, not its first."""
    for sid in studies:
        api = f"{server}/api/studies/{sid}"
        httpx.put(f"{api}/selection", json={"mode": "range", "first": 4, "last": 6}).raise_for_status()
        httpx.post(f"{api}/segment", json={"engine": "threshold"}, timeout=60).raise_for_status()
    a, b = studies
    for sid, patient in ((a, "PAT-A"), (b, "PAT-B")):
        page.goto(f"{server}/#/study/{sid}/label")
        _shown(page, patient)
        page.wait_for_function("document.getElementById('slice-text').textContent.includes('1 of 3')")
        page.click("#slice-next")
        page.wait_for_function("document.getElementById('slice-text').textContent.includes('2 of 3')")


def test_patient_facts_typed_but_not_applied_are_said_when_the_study_is_left(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Facts typed in the Patient card and not applied were dropped without a word when another study (or
    the list) was opened: the card shows the next study's facts. Now a toast says so; applied facts say
    nothing."""
    a, b = studies
    _segment(server, studies)
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    page.fill("#height", "171")
    page.goto(f"{server}/#/study/{b}/label")
    _shown(page, "PAT-B")
    test_e2e._wait_text(page, "toast", "The patient facts typed for PAT-A were not applied")
    assert page.locator("#height").input_value() == ""  # B's (none), not A's typed 171
    assert httpx.get(f"{server}/api/studies/{a}").json()["patient"]["height_cm"] is None
    page.evaluate("document.getElementById('toast').textContent = ''")
    page.fill("#height", "172")
    page.click("#patient-form button[type=submit]")
    test_e2e._wait_text(page, "study-message", "Patient facts saved.")
    page.click("#nav-studies")
    page.wait_for_selector("#view-studies:not([hidden])")
    _settle(page)
    assert page.locator("#toast").inner_text() == ""  # applied: nothing to say


def test_a_study_without_labels_shows_nothing_of_the_study_left(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Patient B, not segmented yet, opened on its label tab after patient A's version 1 was viewed kept A's
    side of the editor: 'Viewing version 1 (read-only)' with Restore and Back to latest, 'Analysis · version
    1', A's note 'These labels and numbers are of slices 4–6; the L3 lines are on slice 8 now' and A's
    'slice 4 (1 of 3)', beside 'No labels yet' for B."""
    a, _b = studies
    api = f"{server}/api/studies/{a}"
    httpx.put(f"{api}/selection", json={"mode": "range", "first": 4, "last": 6}).raise_for_status()
    for base in (None, 1):  # versions 1 and 2
        segment = {"engine": "threshold", "base_version": base}
        httpx.post(f"{api}/segment", json=segment, timeout=60).raise_for_status()
    httpx.put(f"{api}/selection", json={"mode": "slice", "first": 8}).raise_for_status()
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    assert page.locator("#lines-moved").is_visible()
    page.click("#versions li:has-text('v1') button")  # view version 1
    page.wait_for_selector("#readonly-banner:not([hidden])")
    _open_from_list(page, "PAT-B")
    page.click("#tab-label")
    _shown(page, "PAT-B")
    test_e2e._wait_text(page, "study-message", "No labels yet")
    _settle(page)
    assert page.locator("#readonly-banner").is_hidden()
    assert page.locator("#lines-moved").is_hidden()
    assert page.locator("#analysis-version").inner_text() == ""
    assert page.locator("#slice-text").inner_text() == ""
    assert page.locator("#analysis").inner_text() == "No labels yet."


def test_a_label_file_chosen_for_one_study_is_not_imported_into_the_next(
    page: object, server: str, studies: tuple[str, str], tmp_path: Path, write_tag, alberta_tags
) -> None:
    """The Import labels chooser kept the file chosen in patient A's study when patient B was opened: B's
    "Import as new version" imported A's file as B's labels (version 1 of B, A's labels in B's numbers)."""
    a, b = studies
    for sid in studies:
        slice5 = {"mode": "slice", "first": 5}
        httpx.put(f"{server}/api/studies/{sid}/selection", json=slice5).raise_for_status()
    labels = np.zeros(SHAPE[1:], np.uint8)
    labels[20:40, 10:80] = 1
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    test_e2e._wait_text(page, "study-message", "No labels yet")
    page.set_input_files("#import-files", str(write_tag(tmp_path / "PAT-A_slice5.tag", alberta_tags(labels))))
    _open_from_list(page, "PAT-B")
    page.click("#tab-label")
    _shown(page, "PAT-B")
    test_e2e._wait_text(page, "study-message", "No labels yet")
    page.click("#import-form button[type=submit]")
    test_e2e._wait_text(page, "study-message", "Choose a label file first.")
    _settle(page)
    assert httpx.get(f"{server}/api/studies/{b}/versions").json() == []


def test_a_study_whose_images_load_does_not_show_the_localizer_result_of_the_study_left(
    page: object, server: str, tmp_path: Path
) -> None:
    """While patient B's volume loaded (a large study, a slow network), the L3 tab showed patient A's
    localizer result beside B's name: 'too few slices to locate L3 automatically' and A's note 'The volume
    covers only 33 mm along the body (12 slices)…' (for a located study: its 'auto L3 confidence' and
    flags), though B's L3 had not been looked for yet. (B's localizer, asked alongside its volume, is held
    too.)"""
    a, b = _two_studies(server, tmp_path)
    httpx.post(f"{server}/api/studies/{a}/localize", json={}, timeout=60).raise_for_status()
    page.goto(f"{server}/#/study/{a}")
    _shown(page, "PAT-A")
    page.wait_for_selector("#l3-confidence:not(:empty)", timeout=60000)
    held = _held(page, f"**/api/studies/{b}/volume.nii.gz")
    located = _held(page, f"**/api/studies/{b}/localize")
    _open_from_list(page, "PAT-B")
    _wait_held(page, held)
    _wait_held(page, located)
    _shown(page, "PAT-B")
    assert page.locator("#l3-confidence").inner_text() == ""
    assert page.locator("#l3-flags").inner_text() == ""
    located[0].continue_()
    held[0].continue_()
    page.wait_for_selector("#l3-confidence:not(:empty)", timeout=60000)  # B's own, once located
    assert "12 slices" in page.locator("#l3-flags").inner_text()


def test_a_study_whose_labels_load_does_not_show_the_labels_and_numbers_of_the_study_left(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """While patient B's labels loaded (a slow server), its label tab showed patient A's: A's image with A's
    labels in the editor, A's numbers ('Analysis · version 1', areas, SMI), A's versions and exports (their
    links A's) under B's name, numbers a user could take for B's."""
    a, b = studies
    _segment(server, studies)
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    held = _held(page, f"**/api/studies/{b}/labels")
    _open_from_list(page, "PAT-B")
    page.click("#tab-label")
    _wait_held(page, held)
    _shown(page, "PAT-B")
    assert page.locator("#metrics").count() == 0
    assert page.locator("#analysis-version").inner_text() == ""
    assert page.locator("#exports button").count() == 0
    assert page.locator("#versions li").count() == 0
    assert page.locator("#slice-text").inner_text() == ""
    drawn = page.evaluate(
        """() => ['edit-base', 'edit-overlay'].map((id) => { const c = document.getElementById(id);
             return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v > 0); })"""
    )
    assert drawn == [False, False]  # nothing of A's image or labels
    held[0].continue_()
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    assert f"/api/studies/{b}/" in page.locator("#exports button").first.get_attribute("data-href")


def test_segment_waits_for_the_localizer_while_the_images_load(
    page: object, server: str, tmp_path: Path
) -> None:
    """A study not located yet: "Segment selected" and "Download selected DICOM" were on while its volume
    loaded, with the lines on the middle slice the study opens at (the images still black): pressed, the
    middle slice was segmented and measured, not the L3 the localizer was about to find. They wait for the
    localizer (asked alongside the volume) from the moment the study opens, unless the user places the
    lines, and not for the volume: once located, a long series can be segmented before it is shown."""
    a, _ = _two_studies(server, tmp_path)
    page.goto(server)
    held = _held(page, f"**/api/studies/{a}/volume.nii.gz")
    located = _held(page, f"**/api/studies/{a}/localize")
    _open_from_list(page, "PAT-A")
    _wait_held(page, held)
    _wait_held(page, located)
    _shown(page, "PAT-A")
    assert page.locator("#segment").is_disabled()
    assert page.locator("#download-dicom").is_disabled()
    located[0].continue_()
    page.wait_for_selector("#l3-confidence:not(:empty)", timeout=60000)  # located
    page.wait_for_function("document.getElementById('segment').disabled === false")
    assert page.locator("#download-dicom").is_enabled()
    held[0].continue_()


def test_labels_that_cannot_be_loaded_are_said_with_the_servers_reason(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Labels the server could not send (a 500, a 409 for images gone from its disk, the network down) were
    said nowhere: patient B's label tab stayed black with 'Loading…' in the Analysis card for ever, and
    'view' (or Back to latest) on a version did nothing, the reason only in the browser's console."""
    a, b = studies
    _segment(server, studies)
    reason = "Internal server error (OSError); the server log has the details."
    failing = {"status": 500, "content_type": "application/json", "body": f'{{"detail": "{reason}"}}'}
    page.route(f"**/api/studies/{b}/labels", lambda route: route.fulfill(**failing))
    page.goto(f"{server}/#/study/{b}/label")
    _shown(page, "PAT-B")
    test_e2e._wait_text(page, "study-message", f"The labels could not be loaded: {reason}")
    assert "Loading" not in page.locator("#analysis").inner_text()
    httpx.put(f"{server}/api/studies/{a}/selection", json={"mode": "slice", "first": 5}).raise_for_status()
    httpx.post(
        f"{server}/api/studies/{a}/segment", json={"engine": "threshold", "base_version": 1}, timeout=60
    ).raise_for_status()
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    page.wait_for_selector("#versions li:has-text('v1 ·') button")
    page.route(f"**/api/studies/{a}/labels?version=1", lambda route: route.fulfill(**failing))
    page.click("#versions li:has-text('v1 ·') button")
    test_e2e._wait_text(page, "study-message", f"The labels could not be loaded: {reason}")


def _editing(page: object, server: str, a: str) -> list:
    """Open patient A's label tab and paint a stroke (unsaved); returns the dialogs asked from then on (each
    answered Cancel)."""
    page.goto(f"{server}/#/study/{a}/label")
    _shown(page, "PAT-A")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]")
    box = page.locator("#edit-cursor").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.06, box["y"] + box["height"] * 0.08)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.26, box["y"] + box["height"] * 0.08, steps=8)
    page.mouse.up()
    test_e2e._wait_text(page, "save-labels", "Save *")
    asked: list = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    return asked


def _still_editing(page: object, a: str, asked: list) -> None:
    """Nothing asked, the page still on A's label tab with its stroke unsaved."""
    _settle(page)
    assert asked == []
    assert page.url.endswith(f"/#/study/{a}/label")
    assert page.locator("#save-labels").inner_text() == "Save *"


def test_an_upload_ending_while_another_study_is_edited_leaves_the_user_there(
    page: object, server: str, studies: tuple[str, str], tmp_path: Path
) -> None:
    """An upload started on the study list and left to run while the user labelled patient A opened the new
    study when it ended: the user was taken away from A mid-edit, with 'Discard your unsaved label edits?'
    popping up unasked (OK, or Enter, lost the edit). Now the user stays where they are and a toast says the
    upload is done."""
    a, _ = studies
    _segment(server, studies)
    held: list = []
    page.route(
        f"{server}/api/studies",
        lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
    )
    page.set_input_files(
        "#pick-files", [str(f) for f in write_series(tmp_path / "c", seed=5, patient_id="PAT-C")]
    )
    _wait_held(page, held)
    asked = _editing(page, server, a)
    held[0].continue_()
    test_e2e._wait_text(page, "toast", "The upload of PAT-C is done")
    _still_editing(page, a, asked)


def test_a_pacs_import_ending_while_another_study_is_edited_leaves_the_user_there(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A series imported from the PACS (a retrieval of minutes) opened its study when it ended, wherever the
    user was by then: taken away from patient A mid-edit, with 'Discard your unsaved label edits?' asked
    unasked for. Now the user stays and a toast says the import is done. (The PACS is Playwright's routes.)"""
    a, b = studies
    _segment(server, studies)
    fake = {
        "**/api/pacs": {"configured": True},
        "**/api/pacs/search": {
            "studies": [
                {
                    "study_uid": "1.2.3",
                    "patient_name": "DOE^J",
                    "patient_id": "PAT-B",
                    "study_date": "20240131",
                    "accession_number": None,
                    "description": "CT",
                    "modalities": ["CT"],
                    "n_series": 1,
                }
            ],
            "more": False,
        },
        "**/api/pacs/studies/1.2.3/series": [
            {"series_uid": "1.2.3.4", "modality": "CT", "description": "abdomen", "n_instances": 12}
        ],
    }
    for pattern, answer in fake.items():
        page.route(pattern, partial(lambda answer, route: route.fulfill(json=answer), answer))
    held: list = []
    page.route("**/api/pacs/studies/1.2.3/series/1.2.3.4/import", lambda route: held.append(route))
    page.reload()
    page.click("#pacs-form button[type=submit]")
    page.click("#pacs-rows tr")
    page.click("#pacs-rows .pacs-series button:text('Import')")
    _wait_held(page, held)
    asked = _editing(page, server, a)
    held[0].fulfill(json={"id": b, "patient_id": "PAT-B"})
    test_e2e._wait_text(page, "toast", "The import of PAT-B is done")
    _still_editing(page, a, asked)
