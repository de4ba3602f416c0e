"""End-to-end in headless chromium: the label editor's tools change only what the user sees, and the controls
say what the images show (see test_e2e.py for the set-up)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import test_e2e
from test_e2e import _wait_text
from test_e2e_unsaved import _label_view, _stroke
from test_e2e_viewer import _data, _open_mpr, _y_of_slice

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page


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


def test_the_window_list_says_custom_after_a_right_drag(page: object, server: str, tmp_path: Path) -> None:
    """After a right-drag (window/level) the Window list went on saying "soft tissue" for a window that was
    not, and choosing "soft tissue" there did nothing (the browser sends no change for the option already
    chosen): back to the preset only by choosing another first, or by Reset view, which also undid the zoom.
    The list now says "custom" for a window dragged, also after the label tab; choosing the preset sets it."""
    _, box = _open_mpr(page, tmp_path)
    assert page.locator("#l3-preset").input_value() == "soft_tissue"
    ax = (box["x"] + box["width"] * 0.21, box["y"] + box["height"] * 0.5)
    page.mouse.move(*ax)
    page.mouse.down(button="right")
    page.mouse.move(ax[0] + 60, ax[1] + 30, steps=6)
    page.mouse.up(button="right")
    assert _data(page, "#mpr", "window") != "40,400"
    custom = page.locator("#l3-preset option:checked")
    assert (page.locator("#l3-preset").input_value(), custom.inner_text()) == ("custom", "custom")
    page.click("#tab-label")
    page.click("#tab-l3")
    page.wait_for_selector("#segment:visible")
    assert page.locator("#l3-preset").input_value() == "custom"  # the window dragged is still shown
    page.select_option("#l3-preset", "soft_tissue")
    assert _data(page, "#mpr", "window") == "40,400"
    assert page.locator("#l3-preset").input_value() == "soft_tissue"


def test_the_editor_keys_line_is_one_line_from_1280_px(tmp_path: Path, series: list[Path]) -> None:
    """The label editor's line of keys wrapped onto a second line below 1440 px (at 1280, 1360 and 1366 px
    wide, the common laptop and reading-room widths), taking that line from the image. It is shorter now
    (same keys) and one line from 1280 px."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        for width, height in ((1280, 720), (1360, 840), (1366, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(200)
            lines = page.evaluate(
                "() => { const p = document.getElementById('edit-keys');"
                " return p.getBoundingClientRect().height / parseFloat(getComputedStyle(p).lineHeight); }"
            )
            assert round(lines) == 1, width
        assert "or wheel slice" in page.locator("#edit-keys").inner_text()


def test_the_brush_outline_is_sharp_and_where_the_brush_paints_when_zoomed(
    tmp_path: Path, series: list[Path]
) -> None:
    """The brush's outline was drawn on a canvas of the image's pixels: zoomed in (or on a high-DPI screen)
    it was a blurred band several image pixels wide, hiding the edge being painted. It is drawn at the
    screen's pixels now: a ring one pixel wide, as large as the brush (8 image pixels), round the pointer."""
    import io

    from PIL import Image
    from test_e2e_first_use import _ctrl_wheel

    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        page.fill("#opacity", "0")  # the image alone under the outline
        page.dispatch_event("#opacity", "input")
        box = page.locator("#editor-box").bounding_box()
        cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.3
        _ctrl_wheel(page, cx, cy, 8)
        page.mouse.move(cx + 5, cy)
        page.mouse.move(cx, cy)
        page.wait_for_timeout(200)
        image = page.locator("#edit-cursor").bounding_box()
        radius = 4 * image["width"] / 96  # CSS px: 4 image pixels, the synthetic image is 96 wide
        half = int(radius) + 20
        shot = page.screenshot(clip={"x": cx - half, "y": cy, "width": 2 * half, "height": 1})
        row = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), int)[0]
        yellow = [x - half for x, (r, g, b) in enumerate(row) if r - b > 40]  # the outline over grey
        assert yellow, "no outline"
        left, right = [x for x in yellow if x < 0], [x for x in yellow if x > 0]
        assert len(left) <= 3 and len(right) <= 3, yellow  # one line each side, not a blurred band
        assert abs(np.mean(left) + radius) <= 2 and abs(np.mean(right) - radius) <= 2, (yellow, radius)


def test_the_editor_shows_the_ct_pixels_the_labels_are_painted_on(tmp_path: Path, series: list[Path]) -> None:
    """The editor's CT was smoothed (the browser's bilinear scaling) under labels drawn as sharp squares: on
    coarse pixels (3 mm, 4 mm here) a pixel's label and the blurred grey under it did not match, and the
    edge of a muscle could not be told to the pixel. The CT is drawn as its pixels now, as the labels are:
    across the image's middle row (SAT -100, muscle 50, VAT -90, organs 40 HU, soft-tissue window) no
    screen pixel has a grey between them, where smoothing made a ramp at each of the row's edges."""
    import io

    from PIL import Image

    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        page.fill("#opacity", "0")  # the CT alone
        page.dispatch_event("#opacity", "input")
        page.mouse.move(5, 5)  # no brush outline over the row
        image = page.locator("#edit-cursor").bounding_box()
        assert image["width"] / 96 >= 5  # an image pixel is several screen pixels wide
        y = image["y"] + image["height"] * 0.5
        shot = page.screenshot(clip={"x": image["x"], "y": y, "width": image["width"], "height": 1})
        grey = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), int)[0]
        fat, muscle = int(np.median(grey[grey < 70])), int(np.median(grey[(grey > 100) & (grey < 200)]))
        between = np.count_nonzero((grey > fat + 20) & (grey < muscle - 20))
        assert between <= 2, (between, fat, muscle)


def test_a_large_image_shrunk_or_barely_magnified_in_the_editor_stays_smooth(tmp_path: Path) -> None:
    """Drawn as its pixels at any size, a diagnostic CT's 512 pixels in a smaller box lost rows and columns
    unevenly (nearest-neighbour shrinking: the noise's grain turned to stripes). Its pixels are shown once
    one is two screen pixels wide or more: zoomed in, as on a coarse series at fit."""
    from test_e2e_first_use import _ctrl_wheel
    from web_synth import synthetic_hu, write_series

    large = write_series(tmp_path / "large", hu=np.kron(synthetic_hu()[:3], np.ones((1, 8, 8), np.int16)))
    with _label_view(tmp_path, large, {"mode": "slice", "first": 1}) as (_, page, _url, _sid):
        shown = page.locator("#edit-base")

        def rendering() -> str:
            return str(page.evaluate("getComputedStyle(document.getElementById('edit-base')).imageRendering"))

        assert shown.bounding_box()["width"] < 768  # 768 pixels shrunk into the box
        assert rendering() == "auto"
        box = page.locator("#editor-box").bounding_box()
        _ctrl_wheel(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 8)
        assert shown.bounding_box()["width"] >= 2 * 768
        assert rendering() == "pixelated"


def test_the_editors_image_edge_shows_against_its_box(tmp_path: Path, series: list[Path]) -> None:
    """The editor's box was black around the image, as a CT's air is: where the image ended could not be
    seen, so a warning that the body runs into the image's edge could not be checked. The box is a dark
    grey now; the air inside the image stays black."""
    import io

    from PIL import Image

    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        page.mouse.move(5, 5)
        image = page.locator("#edit-cursor").bounding_box()
        box = page.locator("#editor-box").bounding_box()
        assert image["x"] - box["x"] > 20  # the box is wider than the image
        y = image["y"] + 2  # the image's top row: air
        shot = page.screenshot(clip={"x": box["x"], "y": y, "width": image["x"] - box["x"] + 10, "height": 1})
        row = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), int)[0]
        outside, air = row[: int(image["x"] - box["x"]) - 3], row[int(image["x"] - box["x"]) + 2 :]
        assert outside.min() - air.max() >= 25, (outside, air)


def test_the_quality_score_says_its_scale_and_when_to_review(tmp_path: Path, series: list[Path]) -> None:
    """The analysis panel said "Segmentation quality: 0.62" and no more unless the score was flagged: a
    number without its scale or the score below which a slice is to be reviewed (0.5, where a signal is a
    coin flip) read as a good mark. It says both now, from the analysis' own threshold."""
    with _label_view(tmp_path, series) as (_, page, url, sid):
        quality = httpx.get(f"{url}/api/studies/{sid}/analysis").json()["quality"]
        assert quality["status"] == "computed"
        text = page.locator("#quality").inner_text()
        assert text.startswith(f"Segmentation quality: {quality['score_text']} of 1 (review below 0.5)"), text


def test_a_failed_quality_score_says_so_and_is_tried_again_and_an_edit_shows_its_engine_versions(
    tmp_path: Path, series: list[Path]
) -> None:
    """The panel showed nothing of the quality score when a version had none: not that its score failed,
    nor a way to try again, nor, for an edit, the score of the engine's version it started from. It says
    why there is none; "Try again" scores the version; an edit shows its engine version's score, so named."""
    from sqlalchemy import update

    from sarcoscope.store import LabelVersion
    from sarcoscope.web.analysis import AnalysisCache

    with _label_view(tmp_path, series) as (app, page, url, sid):
        ctx = app.state.ctx
        ctx.jobs.wait()
        scored = httpx.get(f"{url}/api/studies/{sid}/analysis").json()["quality"]
        failed = "an error while computing it (MemoryError; the server log says where)"
        with ctx.store.session() as s:  # as stored by another server process whose score failed
            s.execute(
                update(LabelVersion).where(LabelVersion.study_id == sid).values(quality={"failed": failed})
            )
        ctx.analyses = AnalysisCache(ctx.store, ctx.volumes)
        page.reload()
        page.wait_for_selector("#quality-score")
        assert (
            page.locator("#quality-reason").inner_text() == f"not scored: the quality score failed: {failed}"
        )
        assert page.locator("#quality-score").inner_text() == "Try again"
        page.click("#quality-score")
        page.wait_for_selector("#quality b")
        text = page.locator("#quality").inner_text()
        assert text.startswith(f"Segmentation quality: {scored['score_text']} of 1 (review below 0.5)"), text
        labels = _labels(url, sid).copy()
        labels[0, :10, :10] = 1
        httpx.post(
            f"{url}/api/studies/{sid}/labels", params={"base_version": 1}, content=labels.tobytes()
        ).raise_for_status()
        page.reload()
        page.wait_for_selector("#quality-origin")
        assert (
            page.locator("#quality-reason")
            .inner_text()
            .startswith("not scored: label version 2 was edited by hand, not made by an engine here")
        )
        said = (
            f"It started from the engine's version 1, scored {scored['score_text']} of 1 (review below 0.5)"
        )
        assert page.locator("#quality-origin").inner_text().startswith(said)
        assert page.locator("#quality-score").count() == 0


def _cdp_mouse(page: object) -> object:
    """mouse(kind, x, y, buttons): a raw mouse event (Playwright's mouse always sends the release)."""
    cdp = page.context.new_cdp_session(page)

    def mouse(kind: str, x: float, y: float, buttons: int) -> None:
        button = "left" if buttons or kind != "mouseMoved" else "none"
        event = {"type": kind, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": 1}
        cdp.send("Input.dispatchMouseEvent", event)

    return mouse


def test_a_stroke_whose_release_was_lost_stops_painting(tmp_path: Path, series: list[Path]) -> None:
    """A brush stroke whose button release the page never got (let go over another window, a window switch
    mid-stroke: the browser then says the pointer capture is lost) went on painting wherever the pointer
    moved with no button down, until the next click. It now ends there."""
    from test_e2e import _is_muscle_colour, _overlay_pixel

    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        box = page.locator("#edit-cursor").bounding_box()
        raw = _cdp_mouse(page)

        def mouse(kind: str, fx: float, fy: float, buttons: int) -> None:
            raw(kind, box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, buttons)

        mouse("mouseMoved", 0.05, 0.1, 0)
        mouse("mousePressed", 0.05, 0.1, 1)
        mouse("mouseMoved", 0.1, 0.1, 1)
        mouse("mouseMoved", 0.1, 0.3, 0)  # back over the image, the button up: its release was lost
        mouse("mouseMoved", 0.2, 0.3, 0)
        page.wait_for_timeout(200)
        assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.1))  # painted while the button was down
        assert not _is_muscle_colour(_overlay_pixel(page, 0.15, 0.3))  # and nothing after


def test_a_line_drag_whose_release_was_lost_stops_at_the_last_slice_dragged_to(
    page: object, server: str, tmp_path: Path
) -> None:
    """An L3 line dragged with the button released where the page never got it (over another window) went on
    following the pointer with no button down, and the next click anywhere saved it there: another slice
    measured. The drag now ends at the slice it was dragged to with the button down, and saves it."""
    study_id, box = _open_mpr(page, tmp_path)
    api = f"{server}/api/studies/{study_id}"
    page.request.put(f"{api}/selection", data={"mode": "slice", "first": 5})
    page.reload()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    sx = box["x"] + box["width"] * 0.86
    y5, y8, y2 = (_y_of_slice(page, box, 0.86, z) for z in (5, 8, 2))
    mouse = _cdp_mouse(page)
    mouse("mouseMoved", sx, y5, 0)
    mouse("mousePressed", sx, y5, 1)
    mouse("mouseMoved", sx, (y5 + y8) / 2, 1)
    mouse("mouseMoved", sx, y8, 1)
    mouse("mouseMoved", sx, y2, 0)  # the button up, its release lost
    _wait_text(page, "study-message", "Saved selection: Slice 8")
    assert _data(page, "#l3-viewer", "lines") == "8"
    assert page.request.get(api).json()["selection"]["first"] == 8
    # The same on the server's images (no WebGL2): the line stays at the slice it was dragged to.
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_selector("#coronal-canvas:visible")
    page.wait_for_function("document.getElementById('coronal-canvas').height > 20")
    page.wait_for_load_state("networkidle")
    canvas = None
    while canvas != (canvas := page.locator("#coronal-canvas").bounding_box()):  # laid out
        page.wait_for_timeout(200)

    def y_of(z: int) -> float:  # the middle of slice z's band (12 slices, the first at the bottom)
        return canvas["y"] + (12 - 1 - z + 0.5) * canvas["height"] / 12

    cx = canvas["x"] + canvas["width"] / 2
    mouse("mouseMoved", cx, y_of(8), 0)
    mouse("mousePressed", cx, y_of(8), 1)
    mouse("mouseMoved", cx, y_of(9), 1)
    mouse("mouseMoved", cx, y_of(10), 1)
    mouse("mouseMoved", cx, y_of(3), 0)  # the button up, its release lost
    _wait_text(page, "study-message", "Saved selection: Slice 10")
    page.wait_for_timeout(300)
    assert page.request.get(api).json()["selection"]["first"] == 10


def test_a_screen_reader_hears_which_tool_label_mode_and_tab_are_chosen(
    tmp_path: Path, series: list[Path]
) -> None:
    """The tool, the label painted, Slice/Range and the tab chosen were shown by colour alone (a class): a
    screen reader said "Brush, button" for each tool, never which one was on, and the label list called itself
    a radio group without radios. They now say it (aria-pressed, aria-selected)."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):

        def pressed(selector: str) -> list[str | None]:
            return page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('aria-pressed'))")

        def selected() -> list[str | None]:
            return [page.get_attribute(f"#tab-{t}", "aria-selected") for t in ("l3", "label")]

        assert pressed("#tool-brush, #tool-eraser, #tool-fill") == ["true", "false", "false"]
        page.keyboard.press("e")
        assert pressed("#tool-brush, #tool-eraser, #tool-fill") == ["false", "true", "false"]
        assert pressed("#label-choice button") == ["true", "false", "false", "false"]  # muscle ("1")
        page.keyboard.press("3")
        assert pressed("#label-choice button") == ["false", "false", "true", "false"]
        assert page.get_attribute("#label-choice", "role") == "group"
        assert selected() == ["false", "true"]
        page.click("#tab-l3")
        page.wait_for_selector("#segment:visible")
        assert selected() == ["true", "false"]
        assert pressed("#mode-slice, #mode-range") == ["true", "false"]
        page.click("#mode-range")
        assert pressed("#mode-slice, #mode-range") == ["false", "true"]


def test_an_export_on_a_slow_server_says_it_is_coming_and_is_made_once(
    tmp_path: Path, series: list[Path]
) -> None:
    """An export (a PDF report, a DICOM SEG) that the server took seconds to make showed nothing until the
    file came: the button looked dead, a second click asked for it again and two files came. Now the button
    is off and the status line says the file is being made until it comes."""
    from test_e2e_unsaved import _holding, _wait_held

    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        held: list[object] = []
        page.route("**/export/csv?*", _holding(held))
        page.click("#export-csv")
        _wait_held(page, held)
        assert page.locator("#export-csv").is_disabled()
        assert page.locator("#study-message").inner_text() == "Preparing the download…"
        page.click("#export-csv", force=True)  # pressed again while it comes: nothing more asked
        page.wait_for_timeout(300)
        assert len(held) == 1
        with page.expect_download() as info:
            held[0].continue_()
        assert info.value.suggested_filename.endswith(".csv")
        page.wait_for_function("!document.getElementById('export-csv').disabled")
        assert page.locator("#study-message").inner_text() == ""
        assert len(held) == 1


def _pinch(page: object, x: float, y: float, events: int, delta: float) -> None:
    """A trackpad's pinch: many ctrl+wheel events of a few pixels each (a mouse's notch is 100)."""
    page.mouse.move(x, y)
    page.keyboard.down("Control")
    for _ in range(events):
        page.mouse.wheel(0, delta)
    page.keyboard.up("Control")
    page.wait_for_timeout(100)


def test_a_trackpad_pinch_zooms_by_how_far_the_fingers_move(
    page: object, server: str, tmp_path: Path
) -> None:
    """Each ctrl+wheel event zoomed by 1.25 whatever its size: a trackpad's pinch, dozens of events of a few
    pixels, shot the view to the largest zoom at the slightest touch, in the L3 view and the label editor.
    The zoom now follows the wheel's distance (1.25 for a mouse's notch of 100, as before)."""
    study_id, box = _open_mpr(page, tmp_path)
    p = (box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.4)

    def span() -> int:  # image columns across 120 screen pixels (about 20: a column more or less is 5 %)
        page.mouse.move(p[0] + 120, p[1])
        right = int(_data(page, "#mpr", "cursor").split(",")[0])
        page.mouse.move(*p)
        return right - int(_data(page, "#mpr", "cursor").split(",")[0])

    before = span()
    _pinch(page, *p, 10, -2)  # 20 px in all: a fifth of a notch
    assert span() >= before * 0.9
    _pinch(page, *p, 1, -100)  # a mouse's notch: 1.25 as before
    assert span() == pytest.approx(before / 1.25, abs=2)
    # The label editor (and the server images' axial view: the same zoom code)
    from test_e2e_first_use import _segment

    _segment(page, server, study_id, 5)
    editor = page.locator("#editor-box").bounding_box()
    width = page.locator("#editor-stack").bounding_box()["width"]
    e = (editor["x"] + editor["width"] / 2, editor["y"] + editor["height"] / 2)
    _pinch(page, *e, 10, -2)
    assert page.locator("#editor-stack").bounding_box()["width"] <= width * 1.1
    _pinch(page, *e, 1, -100)
    assert page.locator("#editor-stack").bounding_box()["width"] == pytest.approx(width * 1.25**1.2, rel=0.02)


def test_browser_shortcuts_with_alt_leave_the_tool_and_label_alone(
    tmp_path: Path, series: list[Path]
) -> None:
    """Alt+F (the browser's menu on Windows and Linux) switched the tool to Fill and Alt+2 (the second browser
    tab on Linux) the label painted to SAT, unseen behind the menu or the other tab: the next click flooded a
    region, the next stroke painted SAT. The editor's letter and digit keys now leave Alt alone."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        for key in ("Alt+f", "Alt+e", "Alt+2", "Alt+]"):
            page.keyboard.press(key)
        assert "active" in (page.get_attribute("#tool-brush", "class") or "")
        assert "active" in (page.get_attribute("#label-choice button[data-label='1']", "class") or "")
        assert page.locator("#brush-size-text").inner_text().startswith("8 px")
        page.keyboard.press("f")  # the keys alone still work
        assert "active" in (page.get_attribute("#tool-fill", "class") or "")


def test_each_labels_show_box_is_its_own_control_reached_by_tab(tmp_path: Path, series: list[Path]) -> None:
    """Each label's show/hide box was inside the label's button (interactive content in a button, invalid
    HTML): Tab went past the boxes, so a keyboard user could not hide a label, and a screen reader read a
    button holding a checkbox. Each label is now a box and a button side by side, both reached by Tab; the
    digit keys still choose the label painted."""
    with _label_view(tmp_path, series) as (_, page, _url, _sid):
        assert page.locator("#label-choice button input, #label-choice button button").count() == 0
        assert page.get_by_role("checkbox", name="show sat").count() == 1
        page.mouse.move(0, 0)  # (Space over an image pans)
        page.focus("#label-choice input[data-visible='1']")
        order = []
        for _ in range(4):
            page.keyboard.press("Tab")
            focused = "(e => e.dataset.label || 'box ' + e.dataset.visible)(document.activeElement)"
            order.append(page.evaluate(focused))
        assert order == ["1", "box 2", "2", "box 3"]
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Shift+Tab")  # SAT's box
        page.keyboard.press("Space")
        assert not page.is_checked("#label-choice input[data-visible='2']")
        assert page.evaluate("document.activeElement.dataset.visible") == "2"
        page.keyboard.press("3")  # the shortcut, the focus on a box
        assert "active" in (page.get_attribute("#label-choice button[data-label='3']", "class") or "")
        page.click("#label-choice input[data-visible='2']")
        assert page.is_checked("#label-choice input[data-visible='2']")
        assert "active" in (page.get_attribute("#label-choice button[data-label='3']", "class") or "")
