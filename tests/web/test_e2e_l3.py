"""End-to-end in headless chromium: the L3 view's selection while the localizer runs, when the mode changes
and from the keyboard (see test_e2e.py for the set-up). The localizer is replaced by one that places L3 on
slices 8-10 of the synthetic series and answers when the test lets it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import test_e2e
from test_e2e_first_use import _upload
from test_e2e_viewer import _open_mpr, _y_of_slice
from web_synth import synthetic_hu, write_series

import sarcoscope.level.localization as localization

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page
_wait_text = test_e2e._wait_text


class _Localized:
    """What the localizer returns, as the web app reads it: L3 on slices 8-10 (middle 9), L4 on 3-7."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "l3_mid": 9,
            "l3_lower_endplate": 8,
            "l3_upper_endplate": 10,
            "confidence": 0.9,
            "flags": [],
            "vertebrae": {
                "L4": {"first": 3, "last": 7, "center": 5},
                "L3": {"first": 8, "last": 10, "center": 9},
            },
        }


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Set it to let the localizer answer (it waits at most 30 s)."""
    event = threading.Event()

    def held(volume: Any) -> _Localized:  # a real localizer takes seconds on a real CT
        event.wait(30)
        return _Localized()

    monkeypatch.setattr(localization, "locate_l3", held)
    yield event
    event.set()


def _lines(page: Any) -> str:
    return page.locator("#l3-viewer").get_attribute("data-lines") or ""


def test_segment_waits_for_the_localizer_or_a_hand_placed_line(
    page: Any, tmp_path: Path, release: threading.Event
) -> None:
    """ "Segment selected" was enabled while "Locating L3…" ran, and segmented the middle slice shown
    before L3 was found."""
    _upload(page, write_series(tmp_path / "a"))
    _wait_text(page, "study-message", "Locating L3…")
    # the localizer is asked while the images load (its hold keeps it running): the lines come with them
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines")
    assert _lines(page) == "6"  # the middle slice, until L3 is found
    segment, download = page.locator("#segment"), page.locator("#download-dicom")
    assert segment.is_disabled() and "Locating L3" in (segment.get_attribute("title") or "")
    assert download.is_disabled()  # it downloaded the middle slice shown before L3 was found
    release.set()
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert segment.is_enabled() and download.is_enabled() and _lines(page) == "9"

    # Lines placed by hand while the localizer runs: segmenting them is the user's choice, and they stay.
    release.clear()
    page.goto(page.url.split("#")[0])
    _upload(page, write_series(tmp_path / "b", seed=3, patient_id="PAT-3"))
    _wait_text(page, "study-message", "Locating L3…")
    assert segment.is_disabled()
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    _wait_text(page, "study-message", "Saved selection: Slice 7")
    assert segment.is_enabled()
    release.set()
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert _lines(page) == "7" and segment.is_enabled()


def test_changing_the_mode_keeps_the_lines_placed_by_hand(
    page: Any, tmp_path: Path, release: threading.Event
) -> None:
    """Range → Slice → Range put back the localizer's range in place of the one the user had placed, and
    Slice its middle slice in place of the user's."""
    release.set()
    _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert _lines(page) == "9"
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    _wait_text(page, "study-message", "Saved selection: Slice 10")
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '8,10'")  # L3's body
    page.focus("#l3-viewer")
    for _ in range(3):  # the inferior line
        page.keyboard.press("ArrowDown")
    _wait_text(page, "study-message", "Saved selection: Range 5–10")
    page.click("#mode-slice")
    _wait_text(page, "study-message", "Saved selection: Slice 10")  # the user's slice, in the range
    page.click("#mode-range")
    _wait_text(page, "study-message", "Saved selection: Range 5–10")
    assert _lines(page) == "5,10"


def test_arrow_keys_move_the_lines_after_a_click_on_a_control(
    page: Any, tmp_path: Path, release: threading.Event
) -> None:
    """After a click on Slice or Range (the focus on the button), ↑/↓ did nothing: the hint offers them."""
    release.set()
    _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '8,10'")
    page.keyboard.press("ArrowDown")  # the inferior line
    _wait_text(page, "study-message", "Saved selection: Range 7–10")
    page.click("#mode-slice")
    _wait_text(page, "study-message", "Saved selection: Slice 9")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    _wait_text(page, "study-message", "Saved selection: Slice 11")
    page.click("#deidentify")
    page.keyboard.press("ArrowDown")
    _wait_text(page, "study-message", "Saved selection: Slice 10")


def test_one_slice_or_a_few_are_not_a_failure_and_one_has_no_reconstructions(
    page: Any, server: str, tmp_path: Path
) -> None:
    """A single slice or a short series (the synthetic one: 33 mm) said "Automatic localization failed" in
    red for what is normal there (the user picks the slices), and a single slice showed coronal and sagittal
    tiles one pixel high."""
    confidence, flags = page.locator("#l3-confidence"), page.locator("#l3-flags")
    _upload(page, write_series(tmp_path / "short"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert confidence.inner_text().startswith("too few slices to locate L3 automatically")
    assert "covers only 33 mm" in flags.inner_text()
    assert "low" not in confidence.get_attribute("class") and "note" in flags.get_attribute("class")
    assert page.locator("#mpr").get_attribute("data-planes") == "axial,coronal,sagittal"

    page.goto(server)
    study_id = _upload(page, write_series(tmp_path / "one", 5, "PAT-5", synthetic_hu()[5:6]))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert confidence.inner_text() == "single slice: analysed as given"
    assert "low" not in confidence.get_attribute("class") and "note" in flags.get_attribute("class")
    page.wait_for_function("document.getElementById('mpr').dataset.planes === 'axial'")
    assert "no coronal or sagittal" in flags.inner_text()
    page.goto(f"{server}/?png#/study/{study_id}")  # the server's images (no WebGL2): the axial one alone
    page.wait_for_function("document.getElementById('axial-canvas').width === 96")
    assert page.locator("#coronal-canvas").is_hidden() and page.locator("#sagittal-canvas").is_hidden()


def test_a_single_slice_offers_slice_but_not_range(page: Any, server: str, tmp_path: Path) -> None:
    """Range (two lines) was offered on a single slice, which has no range to place."""
    _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert page.locator("#mode-range").is_enabled()

    page.goto(server)
    _upload(page, write_series(tmp_path / "one", 5, "PAT-5", synthetic_hu()[5:6]))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    mode_range = page.locator("#mode-range")
    assert mode_range.is_disabled()
    assert mode_range.get_attribute("title") == "A single slice has no range: Slice measures it"
    assert "a single slice has no range: Slice measures it" in page.locator("#l3-hint").inner_text()
    assert page.locator("#study-title").inner_text().endswith("· 1 slice")
    mode_range.click(force=True)  # a click on the unavailable control changes nothing
    assert page.locator("#l3-selection-text").inner_text() == "Slice 0 · image 1"
    page.click("#mode-slice")
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")  # one slice: the line stays on it, and is saved
    _wait_text(page, "study-message", "Saved selection: Slice 0")
    assert page.locator("#l3-viewer").get_attribute("data-lines") == "0"


def test_a_click_on_the_server_reconstructions_leaves_the_lines_where_they_are(
    page: Any, server: str, tmp_path: Path
) -> None:
    """Without WebGL2 a left press anywhere on the coronal or sagittal image took the nearest L3 line there
    and saved it: a click to look (or to focus the window) changed the slice every measurement is made on,
    without a word. As on NiiVue, a press within a few pixels of a line drags it; a click elsewhere shows
    that axial slice and leaves the lines."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    api = f"{server}/api/studies/{study_id}"
    page.request.put(f"{api}/selection", data={"mode": "slice", "first": 6, "last": 6})
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '6'")
    page.wait_for_function("document.getElementById('coronal-canvas').style.width !== ''")  # drawn
    page.wait_for_load_state("networkidle")
    for plane in ("coronal", "sagittal"):
        box = page.locator(f"#{plane}-canvas").bounding_box()
        x = box["x"] + box["width"] / 2

        def y_of(z: int, box: dict = box) -> float:  # the middle of slice z's band (12 slices)
            return box["y"] + (12 - 1 - z + 0.5) * box["height"] / 12

        page.mouse.click(x, y_of(9))  # a look at slice 9
        page.wait_for_function("document.getElementById('l3-viewer').dataset.axial === '9'")
        page.mouse.move(x, y_of(2))  # a drag begun away from the line
        page.mouse.down()
        page.mouse.move(x, y_of(4), steps=3)
        page.mouse.up()
        page.wait_for_timeout(500)
        assert _lines(page) == "6", plane
        assert page.request.get(api).json()["selection"] == {"mode": "slice", "first": 6, "last": 6}
    box = page.locator("#coronal-canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + (11 - 6 + 0.5) * box["height"] / 12 + 3)  # near the line: it is dragged
    page.mouse.down()
    page.mouse.move(x, box["y"] + (11 - 8 + 0.5) * box["height"] / 12, steps=3)
    page.mouse.up()
    _wait_text(page, "study-message", "Saved selection: Slice 8")
    assert page.request.get(api).json()["selection"] == {"mode": "slice", "first": 8, "last": 8}


def test_the_lines_cross_the_reconstruction_not_the_black_beside_it(page: Any, tmp_path: Path) -> None:
    """On NiiVue's coronal and sagittal tiles the L3 lines ran the whole tile's width: past the image into the
    black beside it (a panned image, a reconstruction fitted by its height) and up to the next tile. They
    now run across the image only."""
    _, box = _open_mpr(page, tmp_path)
    assert _lines(page) == "6"
    tile_left = box["x"] + box["width"] * 0.42
    x, y = tile_left + box["width"] * 0.1, _y_of_slice(page, box, 0.56, 6)
    page.keyboard.down("Shift")  # pan the images 150 px to the right
    page.mouse.move(x, y + 10)
    page.mouse.down()
    page.mouse.move(x + 150, y + 10, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    image_left = next(
        px
        for px in np.arange(tile_left + 4, tile_left + 300, 2.0)  # (the axial tile ends at tile_left)
        if (page.mouse.move(px, y), page.locator("#mpr").get_attribute("data-cursor"))[1]
    )
    assert image_left > tile_left + 100  # the black beside the image
    overlay = page.locator("#mpr-overlay").bounding_box()
    yellow = page.evaluate(
        """([y, x0, x1]) => { const o = document.getElementById('mpr-overlay');
        const dpr = o.width / o.clientWidth, xs = [];
        for (const row of [Math.round(y * dpr) - 1, Math.round(y * dpr), Math.round(y * dpr) + 1]) {
          const d = o.getContext('2d').getImageData(0, row, o.width, 1).data;
          for (let x = Math.round(x0 * dpr); x < Math.round(x1 * dpr); x++)
            if (d[4 * x] > 230 && d[4 * x + 1] > 180 && d[4 * x + 2] < 120 && d[4 * x + 3] > 200)
              xs.push(x / dpr);
        }
        return xs; }""",
        [y - overlay["y"], tile_left - overlay["x"], tile_left - overlay["x"] + 300],
    )
    assert yellow, "no line on the coronal tile"
    assert min(yellow) >= image_left - overlay["x"] - 2, (min(yellow), image_left - overlay["x"])


def test_lines_moved_from_a_selection_a_colleague_changed_since_are_not_saved_over_it_unasked(
    page: Any, server: str, tmp_path: Path, release: threading.Event
) -> None:
    """Two users moved the L3 lines of one study: the later save silently replaced the earlier one. Now the
    page says who changed it and when, and shows their selection (Cancel) or saves its lines over it (OK).
    Its own successive saves, the second moved before the first was answered, are no conflict."""
    release.set()
    sid = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    assert _lines(page) == "9"
    held: list[Any] = []
    page.route(  # the first save is held; the next ones go
        f"**/api/studies/{sid}/selection", lambda route: route.continue_() if held else held.append(route)
    )
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    for _ in range(500):  # the first save, sent 0.4 s after the key, is held
        if held:
            break
        page.wait_for_timeout(20)
    page.keyboard.press("ArrowUp")  # moved from the selection the held save has not answered yet
    held[0].continue_()
    _wait_text(page, "study-message", "Saved selection: Slice 11")

    with httpx.Client(base_url=server, timeout=60) as bob:
        assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
        base = bob.get(f"/api/studies/{sid}").json()["selection_version"]
        theirs = {"mode": "range", "first": 3, "last": 5, "base_version": base}
        assert bob.put(f"/api/studies/{sid}/selection", json=theirs).status_code == 200
        asked: list[str] = []
        page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        page.keyboard.press("ArrowDown")
        _wait_text(page, "study-message", "Showing the selection bob saved: Range 3–5")
        assert asked[0].startswith("Not saved: the L3 selection was changed to slices 3–5 by bob at ")
        offer = "OK: save yours (Slice 10 · image 11) over it. Cancel: show their selection (slices 3–5)."
        assert offer in asked[0]
        assert _lines(page) == "3,5"
        assert bob.get(f"/api/studies/{sid}").json()["selection"]["first"] == 3

        theirs = {"mode": "slice", "first": 6, "base_version": base + 1}
        assert bob.put(f"/api/studies/{sid}/selection", json=theirs).status_code == 200
        page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
        page.click("#mode-slice")
        _wait_text(page, "study-message", "Saved selection: Slice 4")
        assert "changed to slice 6 by bob" in asked[1]
        assert bob.get(f"/api/studies/{sid}").json()["selection"] == {"mode": "slice", "first": 4, "last": 4}


def _segment_asked(page: Any) -> list[dict[str, Any]]:
    """The bodies of the page's POST /segment requests, as sent."""
    asked: list[dict[str, Any]] = []
    page.on("request", lambda r: r.url.endswith("/segment") and asked.append(r.post_data_json))
    return asked


def test_segment_after_showing_a_colleagues_selection_segments_theirs(
    page: Any, server: str, tmp_path: Path, release: threading.Event
) -> None:
    """After a conflict answered "show their selection", "Segment selected" asked the server for the page's
    own old slices (refused as changed since): Segment pressed on stale lines showed theirs and went on to
    segment the old ones. Now, pressed on stale lines, it stops on theirs, shown; pressed again, it segments
    the colleague's selection, and their choice stays theirs (not stamped as the page's user's)."""
    release.set()
    sid = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0")
    page.select_option("#engine", "threshold")
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    _wait_text(page, "study-message", "Saved selection: Slice 10")
    asked = _segment_asked(page)
    dialogs: list[str] = []
    with httpx.Client(base_url=server, timeout=60) as bob:
        assert bob.post("/api/session", json={"user": "bob"}).status_code == 200
        base = bob.get(f"/api/studies/{sid}").json()["selection_version"]
        theirs = {"mode": "range", "first": 3, "last": 5, "base_version": base}
        assert bob.put(f"/api/studies/{sid}/selection", json=theirs).status_code == 200

        # Segment pressed on the page's stale lines: the conflict is asked, theirs is shown, nothing is made
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.click("#segment")
        _wait_text(page, "study-message", "Showing the selection bob saved: Range 3–5")
        page.wait_for_timeout(500)
        assert asked == [] and _lines(page) == "3,5"
        assert "Cancel: show their selection (slices 3–5)" in dialogs[0]

        # pressed again: their slices, on their version, are segmented
        page.click("#segment")
        page.wait_for_function("location.hash.endsWith('/label')", timeout=120000)
        assert [(a["first"], a["last"]) for a in asked] == [(3, 5)]
        study = bob.get(f"/api/studies/{sid}").json()
        assert study["selection"] == {"mode": "range", "first": 3, "last": 5}
        assert study["selection_by"] == "bob" and study["selection_version"] == base + 1
        assert study["latest_version"] == 1 and len(dialogs) == 1


def test_the_image_edge_shows_against_niivues_background(page: Any, tmp_path: Path) -> None:
    """NiiVue's background was black, as a CT's air is: where an image ended could not be seen, so a warning
    that the body runs into the image's edge (the real 3 mm NIfTI's, on the patient's left) could not be
    checked. The background is a dark grey now; the air inside the image stays black."""
    import io

    from PIL import Image

    _, box = _open_mpr(page, tmp_path)
    x = box["x"] + box["width"] * 0.21 + 40  # the axial tile's middle (its crosshair) + 40 px
    top = next(
        y
        for y in np.arange(box["y"] + 1, box["y"] + box["height"] / 2, 1.0)
        if (page.mouse.move(x, y), page.locator("#mpr").get_attribute("data-cursor"))[1]
    )
    assert float((page.locator("#mpr").get_attribute("data-cursor") or "").split(",")[3]) < -900  # air
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)
    shot = page.screenshot(clip={"x": x, "y": box["y"], "width": 1, "height": top - box["y"] + 8})
    column = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), int)[:, 0]
    outside, air = column[: int(top - box["y"]) - 3], column[int(top - box["y"]) + 2 :]
    assert outside.min() - air.max() >= 25, (outside, air)


def test_the_axial_image_says_l_on_its_right(page: Any, tmp_path: Path) -> None:
    """NiiVue lettered the left and top edges only: the axial image had "R" on its left and nothing on its
    right, where the coronal tile's left "R" stood next to it, so the axial image read "R ... R" (on the real
    NIfTI too). Every edge is lettered now: the axial image's right edge says L (the patient's left)."""
    import io

    from PIL import Image

    _, box = _open_mpr(page, tmp_path)
    y = box["y"] + box["height"] / 2
    right = box["x"] + box["width"] * 0.3  # the axial image's right edge (the next image is the coronal's)
    while (page.mouse.move(right + 1, y), page.locator("#mpr").get_attribute("data-cursor"))[1]:
        right += 1
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)
    shot = page.screenshot(clip={"x": right - 24, "y": y - 14, "width": 24, "height": 28})
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), int)
    text = (rgb.min(axis=2) > 110) & (rgb.max(axis=2) - rgb.min(axis=2) < 40)  # grey letters on black air
    assert text.sum() >= 8, text.sum()


def test_the_localizer_is_asked_while_the_volume_loads(
    page: Any, tmp_path: Path, release: threading.Event
) -> None:
    """It was asked only once the volume was shown (5.6 s later on a 306-slice series): now at once, the
    volume and L3 come together, and its lines are drawn when the volume comes."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/localize") else None)
    volumes: list = []
    page.route("**/volume.nii.gz", lambda route: volumes.append(route))
    release.set()  # L3 on slices 8-10
    _upload(page, write_series(tmp_path / "a"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=60000)
    assert volumes and len(asked) == 1, (volumes, asked)  # located, the volume still held
    assert _lines(page) == "9" and page.locator("#segment").is_enabled()
    volumes[0].continue_()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert _lines(page) == "9" and page.locator("#l3-viewer").get_attribute("data-axial") == "9"
    assert page.locator("#study-message").inner_text() == ""
    assert len(asked) == 1
