"""End-to-end in headless chromium: the L3 viewer on NiiVue (WebGL2, SwiftShader here), its fallback on server
PNGs when WebGL is off, and the label editor's fill (issue #15). See test_e2e.py for the set-up.

The NiiVue view reports what it shows in data attributes of #mpr and #l3-viewer (the voxel and HU under the
pointer, the window, the lines, the axial slice), which is what these tests read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import test_e2e
from test_e2e_first_use import _ctrl_wheel, _upload
from web_synth import synthetic_hu, write_exam, write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page


def _cursor(page: object, x: float, y: float) -> list[int]:
    """Voxel (x, y, z) and HU under the pointer after moving it to (x, y)."""
    page.mouse.move(x + 1, y)
    page.mouse.move(x, y)
    return [int(float(v)) for v in page.locator("#mpr").get_attribute("data-cursor").split(",")]


def _y_of_slice(page: object, box: dict, fx: float, z: int) -> float:
    """A canvas y (page px) at fraction fx of the width where the pointer is over slice z: slices are
    evenly spaced down a coronal or sagittal tile, so a few samples give the line y(z)."""
    x = box["x"] + box["width"] * fx

    def slice_at(y: float) -> int | None:
        page.mouse.move(x, y)
        cursor = page.locator("#mpr").get_attribute("data-cursor")
        return int(cursor.split(",")[2]) if cursor else None

    ys = np.linspace(box["y"] + 2, box["y"] + box["height"] - 2, 40)
    hits = [(y, s) for y in ys if (s := slice_at(y)) is not None]
    assert hits, f"no image under x = {x}"
    step = ys[1] - ys[0]
    on_z = [y for y, s in hits if s == z]
    if on_z:  # slice z is a band taller than a sample step (few slices, stretched): its middle
        top = next((y for y in np.arange(on_z[0] - step, on_z[0], 1.0) if slice_at(y) == z), on_z[0])
        bottom = next((y for y in np.arange(on_z[-1] + step, on_z[-1], -1.0) if slice_at(y) == z), on_z[-1])
        return float((top + bottom) / 2)
    if len({s for _, s in hits}) < 4:  # a short series: a strip a few pixels per slice high
        fine = np.arange(hits[0][0] - step, hits[-1][0] + step, 1.0)
        hits = [(y, s) for y in fine if (s := slice_at(y)) is not None]
    slope, intercept = np.polyfit([s for _, s in hits], [y for y, _ in hits], 1)
    guess = slope * z + intercept
    for y in sorted(np.arange(guess - 3, guess + 3.5, 0.5), key=lambda v: abs(v - guess)):
        if slice_at(y) == z:
            return float(y)
    raise AssertionError(f"slice {z} is not under x = {x}")


def _data(page: object, element: str, name: str) -> str:
    return page.locator(element).get_attribute(f"data-{name}") or ""


def _open_mpr(page: object, tmp_path: Path) -> tuple[str, dict]:
    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_selector("#mpr:not([hidden])")
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    return study_id, page.locator("#mpr-canvas").bounding_box()


def test_niivue_view_window_level_zoom_pan_crosshair_and_reset(
    page: object, server: str, tmp_path: Path
) -> None:
    _, box = _open_mpr(page, tmp_path)
    assert page.locator("#l3-grid").is_hidden()  # WebGL2 works: no server PNGs
    w, h = box["width"], box["height"]
    ax = (box["x"] + w * 0.21, box["y"] + h * 0.5)  # middle of the axial tile
    # The HU under the pointer is the volume's (the full int16 data, not an 8-bit image).
    x, y, z, hu = _cursor(page, *ax)
    assert hu == synthetic_hu(0)[z, y, x]

    # Right-drag: window/level on the HU data (wider to the right, level down when dragged down).
    page.mouse.move(*ax)
    page.mouse.down(button="right")
    page.mouse.move(ax[0] + 60, ax[1] + 30, steps=6)
    page.mouse.up(button="right")
    level, width = (int(v) for v in _data(page, "#mpr", "window").split(","))
    assert width > 400 and (level, width) != (40, 400)
    assert page.locator("#l3-window").inner_text() == f"W {width} · L {level}"

    # ctrl+wheel zooms around the pointer: the voxel under it stays, its neighbours move apart.
    p = (box["x"] + w * 0.12, box["y"] + h * 0.4)
    before = _cursor(page, *p)
    span = _cursor(page, p[0] + 40, p[1])[0] - before[0]
    _ctrl_wheel(page, *p, 6)
    assert _cursor(page, *p)[:3] == pytest.approx(before[:3], abs=1)
    zoomed_span = _cursor(page, p[0] + 40, p[1])[0] - before[0]
    assert abs(zoomed_span) * 2 < abs(span)
    # Middle-drag pans (the image follows the pointer), so does shift+drag.
    page.mouse.move(*p)
    page.mouse.down(button="middle")
    page.mouse.move(p[0] + 60, p[1], steps=5)
    page.mouse.up(button="middle")
    panned = _cursor(page, *p)
    assert panned[0] != before[0] and abs(panned[1] - before[1]) <= 1
    page.keyboard.down("Shift")
    page.mouse.move(*p)
    page.mouse.down()
    page.mouse.move(p[0] - 60, p[1], steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert _cursor(page, *p)[0] == pytest.approx(before[0], abs=1)
    # Reset: no zoom, no pan, the preset's window.
    page.click("#l3-reset")
    assert _cursor(page, *p)[:3] == pytest.approx(before[:3], abs=1)
    assert _cursor(page, p[0] + 40, p[1])[0] - before[0] == pytest.approx(span, abs=1)
    assert _data(page, "#mpr", "window") == "40,400"

    # Wheel over the axial tile: the next slice up; a click on the coronal tile moves the axial slice.
    z0 = int(_data(page, "#l3-viewer", "axial"))
    page.mouse.move(*ax)
    page.mouse.wheel(0, -100)
    page.wait_for_function(f"document.getElementById('l3-viewer').dataset.axial === '{z0 + 1}'")
    y9 = _y_of_slice(page, box, 0.56, 9)
    page.mouse.click(box["x"] + w * 0.56, y9)
    page.wait_for_function("document.getElementById('l3-viewer').dataset.axial === '9'")
    # the crosshair is not the line
    assert page.locator("#l3-selection-text").inner_text() == "Slice 6 · image 7"


def test_l3_lines_by_mouse_and_keyboard_on_niivue(page: object, server: str, tmp_path: Path) -> None:
    study_id, box = _open_mpr(page, tmp_path)
    api = f"{server}/api/studies/{study_id}"
    page.request.put(f"{api}/selection", data={"mode": "slice", "first": 5})
    page.reload()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert _data(page, "#l3-viewer", "lines") == "5"
    # Find the Slice line on the sagittal tile (the pointer's slice is 5 there) and drag it up.
    sx = box["x"] + box["width"] * 0.86
    line_y = _y_of_slice(page, box, 0.86, 5)
    above = _y_of_slice(page, box, 0.86, 8)
    page.mouse.move(sx, line_y)
    assert "over-line" in (page.locator("#mpr").get_attribute("class") or "")
    page.mouse.down()
    page.mouse.move(sx, above, steps=5)
    page.mouse.up()
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 8")
    assert page.request.get(api).json()["selection"] == {"mode": "slice", "first": 8, "last": 8}
    # Keyboard on the focused viewer: ↓ twice; Range: two lines named inferior and superior, Tab switches.
    page.focus("#mpr-canvas")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 6")
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 2")
    lo, hi = (int(v) for v in _data(page, "#l3-viewer", "lines").split(","))
    assert lo < hi
    page.focus("#mpr-canvas")
    page.keyboard.press("Tab")  # the superior line
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(700)
    assert page.request.get(api).json()["selection"] == {"mode": "range", "first": lo, "last": hi - 1}
    # Both lines on one slice: said as such, not "Range 10–10 (1 slices)".
    page.keyboard.press("Tab")
    for _ in range(hi - 1 - lo):
        page.keyboard.press("ArrowUp")
    shown = page.locator("#l3-selection-text").inner_text()
    assert shown == f"Range: slice {hi - 1} only (1 slice · image {hi})"


def test_a_short_series_reconstructions_are_tall_enough_to_place_the_lines(
    page: object, server: str, tmp_path: Path
) -> None:
    """Four 3 mm slices 384 mm wide: drawn to scale, NiiVue's coronal and sagittal tiles were strips 12 px
    high, 3 px a slice, where the lines could hardly be seen or grabbed. Stretched along z (at least a quarter
    of their width high), each slice is a band the lines are dragged across."""
    study_id = _upload(page, write_series(tmp_path / "series", hu=synthetic_hu(0)[:4]))
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    box = page.locator("#mpr-canvas").bounding_box()
    for fx in (0.56, 0.86):  # coronal, sagittal
        slice_px = (_y_of_slice(page, box, fx, 0) - _y_of_slice(page, box, fx, 3)) / 3
        assert slice_px >= 0.29 * box["width"] / 4 / 4 - 2, fx  # a quarter of the tile's width, 4 slices
    assert _data(page, "#l3-viewer", "lines") == "2"
    cx = box["x"] + box["width"] * 0.56
    y = {z: _y_of_slice(page, box, 0.56, z) for z in range(4)}

    def drag(z0: int, z1: int) -> None:
        page.mouse.move(cx, y[z0])
        page.mouse.down()
        page.mouse.move(cx, y[z1], steps=4)
        page.mouse.up()

    drag(2, 0)
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 0")
    page.click("#mode-range")
    test_e2e._wait_text(page, "study-message", "Saved selection: Range 0–3")
    drag(3, 1)
    test_e2e._wait_text(page, "study-message", "Saved selection: Range 0–1")
    assert page.request.get(f"{server}/api/studies/{study_id}").json()["selection"] == {
        "mode": "range",
        "first": 0,
        "last": 1,
    }


def test_a_line_dragged_past_the_image_stops_at_its_end(page: object, server: str, tmp_path: Path) -> None:
    """A line dragged above the image of a coronal or sagittal tile, where NiiVue has no voxel, went to
    slice 0, the lowest: a superior line pulled a little too far up dropped to the bottom of the series."""
    study_id, box = _open_mpr(page, tmp_path)
    assert _data(page, "#l3-viewer", "lines") == "6"
    sx = box["x"] + box["width"] * 0.86
    line, top = _y_of_slice(page, box, 0.86, 6), _y_of_slice(page, box, 0.86, 11)
    for y, z in ((top - 60, 11), (box["y"] + box["height"] + 40, 0)):  # above the image, below the canvas
        page.mouse.move(sx, line)
        page.mouse.down()
        page.mouse.move(sx, y, steps=5)
        page.mouse.up()
        test_e2e._wait_text(page, "study-message", f"Saved selection: Slice {z}")
        assert page.request.get(f"{server}/api/studies/{study_id}").json()["selection"]["first"] == z
        line = _y_of_slice(page, box, 0.86, z)


def test_a_window_chosen_in_the_label_editor_is_the_l3_views_too(
    page: object, server: str, tmp_path: Path
) -> None:
    """The Window list is one for both views: chosen in the label editor, the L3 view's list said it when
    the user came back, while its images kept the window they had (bone named, soft tissue shown)."""
    _open_mpr(page, tmp_path)
    page.click("#tab-label")
    page.select_option("#label-preset", "bone")
    page.click("#tab-l3")
    page.wait_for_selector("#tab-l3.active")  # shown (the link's hashchange comes after the click)
    assert page.locator("#l3-preset").input_value() == "bone"
    page.wait_for_function("document.getElementById('mpr').dataset.window === '400,1800'", timeout=10000)
    assert page.locator("#l3-window").inner_text() == "W 1800 · L 400"
    # A window set by hand (right-drag) stays when the preset was not changed meanwhile.
    box = page.locator("#mpr-canvas").bounding_box()
    ax = (box["x"] + box["width"] * 0.21, box["y"] + box["height"] * 0.5)
    page.mouse.move(*ax)
    page.mouse.down(button="right")
    page.mouse.move(ax[0] + 40, ax[1] + 20, steps=4)
    page.mouse.up(button="right")
    dragged = _data(page, "#mpr", "window")
    assert dragged != "400,1800"
    page.click("#tab-label")
    page.click("#tab-l3")
    page.wait_for_function("document.getElementById('tab-l3').classList.contains('active')")
    page.wait_for_function("document.getElementById('study-message').textContent === ''")
    assert _data(page, "#mpr", "window") == dragged


def test_tab_after_dragging_a_line_switches_to_the_other_line(
    page: object, server: str, tmp_path: Path
) -> None:
    """The hint says "drag the lines, or ↑/↓ (Tab: other line)"; but the drag kept the focus off the viewer,
    so Tab right after it moved the focus away and ↑ moved the dragged line again, not the other one."""
    study_id, box = _open_mpr(page, tmp_path)
    api = f"{server}/api/studies/{study_id}"
    page.request.put(f"{api}/selection", data={"mode": "range", "first": 4, "last": 7})
    page.reload()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert _data(page, "#l3-viewer", "lines") == "4,7"
    sx = box["x"] + box["width"] * 0.86
    inferior, below = _y_of_slice(page, box, 0.86, 4), _y_of_slice(page, box, 0.86, 3)
    page.mouse.move(sx, inferior)
    page.mouse.down()
    page.mouse.move(sx, below, steps=4)
    page.mouse.up()
    test_e2e._wait_text(page, "study-message", "Saved selection: Range 3–7")
    page.keyboard.press("Tab")  # the superior line
    page.keyboard.press("ArrowUp")
    page.wait_for_function("!document.getElementById('study-message').textContent.includes('Range 3–7')")
    assert page.locator("#study-message").inner_text().startswith("Saved selection: Range 3–8")
    assert page.request.get(api).json()["selection"] == {"mode": "range", "first": 3, "last": 8}


def _upload_phantom(page: object, tmp_path: Path, seed: int, **kind: str) -> str:
    """Upload a 160-pixel phantom volume of the given kind (make_volume's coverage or variant) as DICOM."""
    from sarcoscope.imaging import write_dicom_series
    from sarcoscope.phantom import make_volume

    pv = make_volume(seed, shape_xy=160, **kind)
    files = write_dicom_series(pv.hu, pv.spacing, tmp_path / "ct", origin=pv.origin, metadata=pv.metadata())
    return _upload(page, files)


def test_uncertain_count_shows_the_other_l3_candidate(page: object, server: str, tmp_path: Path) -> None:
    """Issue 14: without the sacrum the count is uncertain; the lines go to the more probable L3 and the
    other candidate is drawn as a dashed orange mark with its probability (not a line the user drags)."""
    study_id = _upload_phantom(page, tmp_path, 34, coverage="no-sacrum")
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    loc = page.request.get(f"{server}/api/studies/{study_id}").json()["localization"]
    first, other = loc["candidates"][:2]
    assert first["probability"] > other["probability"]
    page.wait_for_function("document.getElementById('l3-viewer').dataset.marks !== undefined")
    assert _data(page, "#l3-viewer", "marks") == str(other["l3_mid"])
    assert _data(page, "#l3-viewer", "lines") == str(loc["l3_mid"]) == str(first["l3_mid"])
    orange = page.evaluate(
        """() => { const c = document.getElementById('mpr-overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4)
          if (d[i] > 230 && Math.abs(d[i + 1] - 140) < 25 && d[i + 2] < 60 && d[i + 3] > 200) n++;
        return n; }"""
    )
    assert orange > 20


def _shown_whole(page: object, text: str) -> bool:
    """Whether `text`, inside #l3-flags, lies within the window and within every box around it that clips
    (a note scrolled out of sight, or cut at the window's bottom, is not shown)."""
    return page.evaluate(
        """(text) => {
        const root = document.getElementById('l3-flags');
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          const at = node.data.indexOf(text);
          if (at < 0) continue;
          const range = document.createRange();
          range.setStart(node, at);
          range.setEnd(node, at + text.length);
          const r = range.getBoundingClientRect();
          if (r.top < 0 || r.bottom > innerHeight || r.left < 0 || r.right > innerWidth) return false;
          for (let el = node.parentElement; el; el = el.parentElement) {
            if (getComputedStyle(el).overflowY === 'visible') continue;
            const box = el.getBoundingClientRect();
            if (r.top < box.top - 0.5 || r.bottom > box.top + el.clientHeight + 0.5) return false;
          }
          return true;
        }
        return false;
        }""",
        text,
    )


def test_an_uncertain_count_shows_both_candidates_and_every_flag_without_scrolling(
    page: object, server: str, tmp_path: Path
) -> None:
    """The localizer's note was two lines high and scrolled: a long counting_uncertain reason hid, at its
    end, the two L3 candidates with their probabilities (the actionable part) and any flag after it, at
    1366x768 and at 1920x1080 alike. Now a first line names both candidates and every flag, always in
    sight; the reasons scroll under it, and the images still fit the window. (Six lumbar vertebrae: an
    800-character reason, then a second flag.)"""
    study_id = _upload_phantom(page, tmp_path, 3, variant="six-lumbar")
    page.wait_for_function("document.getElementById('l3-flags').textContent.length > 0", timeout=120000)
    loc = page.request.get(f"{server}/api/studies/{study_id}").json()["localization"]
    first, other = loc["candidates"][:2]
    wanted = [f"slice {c['l3_mid']} (p={c['probability']:.2f}" for c in (first, other)]
    wanted += [f["flag"] for f in loc["flags"]]
    assert "counting_uncertain" in wanted and "low_confidence" in wanted
    for size in ((1366, 768), (1920, 1080)):
        _fits(page, size, ("#segment", "#l3-hint", "#mpr", "#l3-flags"))
        assert page.locator("#mpr").bounding_box()["height"] > size[1] / 2, size
        assert [t for t in wanted if not _shown_whole(page, t)] == [], size


def test_without_webgl_the_view_falls_back_to_server_images(server: str, tmp_path: Path) -> None:
    """Chromium with WebGL off: the PNG view, with zoom around the cursor, pan, reset and the lines."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(test_e2e.CHROMIUM), args=[*test_e2e.ARGS, "--disable-3d-apis"]
        )
        page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        _upload(page, write_series(tmp_path / "series"))
        page.wait_for_selector("#l3-grid:not([hidden])")
        page.wait_for_function(
            "document.getElementById('l3-confidence').textContent.length > 0", timeout=120000
        )
        assert page.locator("#mpr").is_hidden()
        canvas, box = page.locator("#axial-canvas"), page.locator("#axial-box").bounding_box()
        page.wait_for_function("document.getElementById('axial-canvas').width === 96")
        fitted = canvas.bounding_box()
        x, y = fitted["x"] + fitted["width"] * 0.3, fitted["y"] + fitted["height"] * 0.6

        def pixel_under(b: dict) -> tuple[float, float]:
            return ((x - b["x"]) * 96 / b["width"], (y - b["y"]) * 96 / b["height"])

        before = pixel_under(fitted)
        _ctrl_wheel(page, x, y, 6)
        zoomed = canvas.bounding_box()
        assert pixel_under(zoomed) == pytest.approx(before, abs=0.6)
        assert zoomed["width"] > 2 * fitted["width"]
        page.mouse.move(box["x"] + 50, box["y"] + 50)  # middle-drag to the left edge
        page.mouse.down(button="middle")
        page.mouse.move(box["x"] + 50 + zoomed["width"], box["y"] + 50, steps=5)
        page.mouse.up(button="middle")
        assert canvas.bounding_box()["x"] == pytest.approx(box["x"], abs=1)
        page.click("#axial-reset")
        assert canvas.bounding_box()["width"] == pytest.approx(fitted["width"], abs=1)
        # The reconstruction of a 12-slice series is not a thin strip: at least a quarter as tall as wide.
        recon = page.locator("#coronal-canvas").bounding_box()
        assert recon["height"] >= recon["width"] / 4 - 1
        page.focus("#coronal-canvas")
        page.keyboard.press("ArrowUp")
        test_e2e._wait_text(page, "study-message", "Saved selection")
        assert errors == []
        browser.close()


def test_fill_stays_in_the_body_and_the_labels_hu_range(page: object, server: str, tmp_path: Path) -> None:
    """Defect 8: a fill used to take every connected pixel of the clicked label (air, organs, fat). And a fill
    that worked left the "Nothing filled" of the one before in the status line."""
    from test_e2e_first_use import _segment

    from sarcoscope.conventions import DEFAULT_HU_RANGES

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    api = f"{server}/api/studies/{study_id}"
    # An empty label map as version 2: everything is one connected unlabelled region.
    r = page.request.post(
        f"{api}/labels?base_version=1",
        data=bytes(96 * 96),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 201
    page.reload()
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    page.keyboard.press("f")
    page.keyboard.press("1")  # muscle
    box = page.locator("#edit-cursor").bounding_box()

    def click(x: int, y: int) -> None:
        page.mouse.click(box["x"] + box["width"] * (x + 0.5) / 96, box["y"] + box["height"] * (y + 0.5) / 96)

    click(3, 3)  # air, outside the body: nothing
    test_e2e._wait_text(page, "study-message", "Nothing filled")
    assert page.locator("#save-labels").inner_text() == "Save"
    click(82, 48)  # the muscle wall
    page.wait_for_function("document.getElementById('save-labels').textContent === 'Save *'")
    assert page.locator("#study-message").inner_text() == ""  # no "Nothing filled" left over that fill
    page.keyboard.press("Control+s")
    test_e2e._wait_text(page, "study-message", "Saved as version 3")
    labels = np.frombuffer(page.request.get(f"{api}/labels").body(), np.uint8).reshape(96, 96)
    hu = synthetic_hu(0)[5]
    lo, hi = DEFAULT_HU_RANGES.as_dict()["muscle"]
    filled = labels == 1
    wall = (hu >= 40) & (hu <= 60)
    yy, xx = np.mgrid[:96, :96]
    organs = np.sqrt(((yy - 42) / 14.0) ** 2 + ((xx - 48) / 22.0) ** 2) < 1.0
    assert set(np.unique(labels)) == {0, 1}
    assert ((hu[filled] >= lo) & (hu[filled] <= hi)).all()  # no fat, no air, no bone
    assert not filled[organs].any()  # not through the fat into the organs (same HU as muscle)
    assert filled[wall & ~organs].mean() > 0.95  # the whole wall
    page.keyboard.press("Control+z")
    assert page.locator("#save-labels").inner_text() == "Save *"


def test_hu_brush_paints_the_stroke_drawn_and_stops_at_release(
    page: object, server: str, tmp_path: Path
) -> None:
    """With "HU range only" the brush started only once the slice's HU had come from the server: the part of
    the stroke drawn meanwhile was lost, and a stroke released before they came went on painting wherever
    the pointer moved afterwards, with the button up."""
    from test_e2e_first_use import _segment

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    api = f"{server}/api/studies/{study_id}"
    empty = bytes(96 * 96)  # version 2: no labels, so every painted pixel shows
    r = page.request.post(
        f"{api}/labels?base_version=1", data=empty, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status == 201
    page.reload()
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    held: list[object] = []  # the slice's HU are held back until the stroke has ended
    page.route("**/hu/*", lambda route: held.append(route))
    page.check("#hu-constrain")
    page.keyboard.press("1")  # muscle
    box = page.locator("#edit-cursor").bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + box["width"] * (x + 0.5) / 96, box["y"] + box["height"] * (y + 0.5) / 96

    # A stroke down the right muscle wall, drawn and released while the HU are on their way (asked for as
    # the pointer comes over the image: its readout says the HU under it).
    with page.expect_request("**/hu/5"):
        page.mouse.move(*at(82, 40))
    page.mouse.down()
    page.mouse.move(*at(82, 56), steps=8)
    page.mouse.up()
    page.mouse.move(*at(14, 40), steps=4)  # button up: over the left wall
    while not held:
        page.wait_for_timeout(20)
    held[0].continue_()
    page.wait_for_function("document.getElementById('save-labels').textContent === 'Save *'")
    page.mouse.move(*at(14, 56), steps=8)  # button up, the HU here: along the left wall
    page.mouse.move(*at(48, 21), steps=8)  # and to the top
    page.keyboard.press("Control+s")
    test_e2e._wait_text(page, "study-message", "Saved as version 3")
    labels = np.frombuffer(page.request.get(f"{api}/labels").body(), np.uint8).reshape(96, 96)
    assert (labels[40:57, 82] == 1).all()  # the whole stroke
    assert not labels[:, :60].any() and not labels[:30].any()  # nothing where the button was up


def test_label_editor_fits_its_image_again_when_the_window_is_resized(
    page: object, server: str, tmp_path: Path
) -> None:
    """The editor's image kept the size it had when drawn: after the window was made smaller (1280x720) the
    slice was cut off at the box's edges, and in a larger one it stayed small, until a slice change or
    "Reset view"."""
    from test_e2e_first_use import _segment

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    for width, height in ((1280, 720), (1920, 1200)):
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
        box = page.locator("#editor-box").bounding_box()
        image = page.locator("#editor-stack").bounding_box()
        assert image["x"] >= box["x"] - 0.5 and image["y"] >= box["y"] - 0.5  # all of it in the box
        assert image["x"] + image["width"] <= box["x"] + box["width"] + 0.5
        assert image["y"] + image["height"] <= box["y"] + box["height"] + 0.5
        # fitted: as wide or as high as the box (the slice is square)
        assert min(box["width"], box["height"]) == pytest.approx(image["width"], abs=1)


def _fits(page: object, size: tuple[int, int], parts: tuple[str, ...]) -> None:
    """At `size`, each of `parts` is inside the window and the page does not scroll (main, under the top
    bar, holds the views)."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    for part in parts:
        b = page.locator(part).bounding_box()
        assert b["y"] >= 0 and b["y"] + b["height"] <= size[1], (size, part, b)
    overflow = page.evaluate("(m => m.scrollHeight - m.clientHeight)(document.querySelector('main'))")
    assert overflow <= 0 and page.evaluate("document.scrollingElement.scrollHeight") <= size[1], size


def test_the_label_editor_fits_the_window(page: object, server: str, tmp_path: Path) -> None:
    """At 1280x720 the editor's box (72 % of the window's height under toolbars of three rows) reached 23 px
    below the window: the page scrolled, and the image's bottom, or the toolbars once scrolled down, were cut
    off. Now the box takes the height the toolbars leave, and the side panel scrolls on its own."""
    from test_e2e_first_use import _segment

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    for size in ((1280, 720), (1366, 768), (1920, 1080)):
        _fits(page, size, ("#tool-brush", "#save-labels", "#slice-next", "#editor-box", ".label-main > p"))
        box = page.locator("#editor-box").bounding_box()
        assert box["height"] > size[1] / 2, size
        page.locator("#versions").scroll_into_view_if_needed()  # far down the side panel
        assert page.locator("#versions").bounding_box()["y"] < size[1], size
        assert page.locator("#editor-box").bounding_box() == box, size
        page.locator("#analysis").scroll_into_view_if_needed()


REAL_NIFTI = Path("/work/shared/data/real/volumes/ts_example/example_ct.nii.gz")


@pytest.mark.skipif(not REAL_NIFTI.is_file(), reason=f"needs the real NIfTI volume at {REAL_NIFTI}")
def test_the_analysis_panel_shows_its_results_before_long_warnings(page: object, server: str) -> None:
    """On the real NIfTI (3 mm pixels, the body at the image's edge) the side panel opened on a 13-line
    coarse-pixel warning and a 4-line edge one: at 1366x768 SMI, the sarcopenia and myosteatosis verdicts
    were below the fold. Now each warning shows its first line (a click reads it whole) and the verdicts
    come before the table, all in sight without scrolling the panel."""
    from test_e2e_first_use import _segment

    page.set_viewport_size({"width": 1366, "height": 768})
    study_id = _upload(page, [REAL_NIFTI])
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 74)
    warnings = page.locator("#analysis-warnings li")
    assert warnings.count() >= 2
    first = warnings.filter(has_text="coarser than diagnostic CT")  # innerText reads it whole
    assert first.count() == 1
    side = page.locator(".label-side").bounding_box()
    bottom = min(768, side["y"] + side["height"])
    assert page.evaluate("document.querySelector('.label-side').scrollTop") == 0
    for part in ("#analysis-mode", "#analysis-warnings", "#smi", "#analysis .result"):
        b = page.locator(part).bounding_box()
        assert b["y"] >= side["y"] and b["y"] + b["height"] <= bottom, (part, b, bottom)
    line = float(page.locator("#analysis-warnings").evaluate("(el) => getComputedStyle(el).lineHeight")[:-2])
    assert first.bounding_box()["height"] < 2 * line  # one line, the rest hidden
    first.locator("summary").click()
    assert first.bounding_box()["height"] > 5 * line  # read whole


def test_the_panel_tables_hu_columns_say_their_unit(page: object, server: str, tmp_path: Path) -> None:
    """The analysis panel's table headed its last column "SD", with no unit (the reports say "SD HU")."""
    from test_e2e_first_use import _segment

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    assert page.locator("#metrics thead th").all_inner_texts() == ["Tissue", "cm²", "mean HU", "SD HU"]
    card = page.locator("#analysis").locator("xpath=..")
    assert card.evaluate("(el) => el.scrollWidth <= el.clientWidth")  # the wider headers fit


def test_the_l3_view_fits_the_window(page: object, server: str, tmp_path: Path) -> None:
    """The L3 view's images were 70 % of the window's height under its toolbars: at 1280x720 (with the
    Series list of an upload of several series) the bottom of the reconstructions was below the window, and
    the localizer's note under them at 1366x768 too; the page scrolled. Now the images take the height the
    toolbars, the hint and the note leave, on NiiVue and on the server's images alike."""
    files = [f for paths in write_exam(tmp_path / "exam").values() for f in paths]
    study_id = _upload(page, files)
    for viewer in ("#mpr", "#l3-grid"):
        if viewer == "#l3-grid":  # without WebGL2
            page.goto(f"{server}/?png#/study/{study_id}")
            page.wait_for_selector("#l3-grid:not([hidden])")
        page.wait_for_selector("#series-bar:not([hidden])")
        page.wait_for_function("document.getElementById('l3-flags').textContent.length > 0", timeout=120000)
        for size in ((1280, 720), (1366, 768), (1920, 1080)):
            _fits(page, size, ("#series", "#segment", "#l3-hint", viewer, "#l3-flags"))
            assert page.locator(viewer).bounding_box()["height"] > size[1] / 2, (viewer, size)


def test_the_server_reconstructions_follow_the_window(page: object, server: str, tmp_path: Path) -> None:
    """Without WebGL2 the coronal and sagittal images kept the size they were drawn at: after the window was
    made smaller they ran out of their boxes (the lower part and the lines there behind a scroll bar of the
    box), and in a larger window they stayed small, until the crosshair moved."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_function("document.getElementById('coronal-canvas').width > 300")
    for size in ((1280, 720), (1920, 1080)):
        page.set_viewport_size({"width": size[0], "height": size[1]})
        page.wait_for_timeout(500)  # the image is drawn again when it has come (it is cached)
        for plane in ("coronal", "sagittal"):
            image = page.locator(f"#{plane}-canvas").bounding_box()
            box = page.locator(f"#{plane}-canvas").locator("..").bounding_box()
            for at, extent in (("x", "width"), ("y", "height")):  # inside its box
                assert box[at] - 0.5 <= image[at] <= image[at] + image[extent] <= box[at] + box[extent] + 0.5
            assert image["width"] == pytest.approx(box["width"], abs=1) or image["height"] == pytest.approx(
                box["height"], abs=1
            ), (size, plane, image, box)


def test_only_the_left_button_drags_a_line_on_the_server_reconstructions(
    page: object, server: str, tmp_path: Path
) -> None:
    """Without WebGL2 any button pressed on the coronal or sagittal image took the nearest L3 line to the
    pointer and saved it there: a middle-drag (pan, as the hint says) or a right click (for the context
    menu) moved the slice measured without a word. The left button drags the lines, as on NiiVue."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    api = f"{server}/api/studies/{study_id}"
    page.request.put(f"{api}/selection", data={"mode": "slice", "first": 6, "last": 6})
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '6'")
    page.wait_for_function("document.getElementById('coronal-canvas').style.width !== ''")  # drawn
    box = page.locator("#coronal-canvas").bounding_box()
    x = box["x"] + box["width"] / 2
    for button in ("middle", "right"):
        page.mouse.move(x, box["y"] + box["height"] * 0.15)
        page.mouse.down(button=button)
        page.mouse.move(x, box["y"] + box["height"] * 0.1, steps=2)
        page.mouse.up(button=button)
        page.keyboard.press("Escape")  # (the context menu)
        assert page.locator("#l3-viewer").get_attribute("data-lines") == "6", button
    page.mouse.move(x, box["y"] + (11 - 6 + 0.5) * box["height"] / 12)  # on the line (slice 6 of 12)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.15, steps=3)
    page.mouse.up()
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice ")
    moved = int(page.locator("#l3-viewer").get_attribute("data-lines"))
    assert moved > 6
    assert page.request.get(api).json()["selection"] == {"mode": "slice", "first": moved, "last": moved}


def test_space_drag_pans_the_editor_after_a_toolbar_control_was_clicked(
    page: object, server: str, tmp_path: Path
) -> None:
    """Space+drag pans, as the hint says; but after a click on a toolbar control (Undo, a tool, "HU range
    only"), which keeps the focus, Space was that control's: the drag painted a stroke instead of panning,
    and Space pressed the control again (one more Undo, the checkbox toggled)."""
    from test_e2e_first_use import _segment

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    _segment(page, server, study_id, 5)
    box = page.locator("#edit-cursor").bounding_box()
    mid = (box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)

    def drag(dx: float, space: bool) -> None:
        page.mouse.move(*mid)
        if space:
            page.keyboard.down(" ")
        page.mouse.down()
        page.mouse.move(mid[0] + dx, mid[1], steps=5)
        page.mouse.up()
        if space:
            page.keyboard.up(" ")

    page.keyboard.press("1")
    drag(60, space=False)
    drag(-60, space=False)
    page.click("#undo")  # the second stroke undone; the focus stays on Undo
    _ctrl_wheel(page, *mid, 4)
    overlay = page.evaluate("document.getElementById('edit-overlay').toDataURL()")
    for control in ("#undo", "#hu-constrain"):
        if control == "#hu-constrain":
            page.click(control)  # checked; the focus stays on it
        checked = page.is_checked("#hu-constrain")
        before = page.locator("#editor-stack").bounding_box()
        drag(-80 if control == "#undo" else 80, space=True)
        after = page.locator("#editor-stack").bounding_box()
        assert after["x"] != pytest.approx(before["x"], abs=5), control  # panned
        assert page.evaluate("document.getElementById('edit-overlay').toDataURL()") == overlay, control
        assert page.locator("#redo").is_enabled(), control  # no new stroke, and Undo not pressed again
        assert page.locator("#undo").is_enabled(), control
        assert page.is_checked("#hu-constrain") == checked, control
    # Away from the image Space presses the focused button, as always.
    page.mouse.move(5, 5)
    page.focus("#redo")
    page.keyboard.press(" ")
    assert page.locator("#redo").is_disabled()  # the undone stroke is back


REAL_J2K = Path("/work/shared/data/real/dicom_series/ts_thoracoabdominal_j2k")


def test_editor_slice_buttons_shortcuts_and_brush_outline(page: object, server: str, tmp_path: Path) -> None:
    """◀ and ▶ are disabled where they would do nothing (first and last slice); the tool shortcuts work with
    Caps Lock (or Shift); the brush outline follows [ and ] without a mouse move."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    page.request.put(
        f"{server}/api/studies/{study_id}/selection", data={"mode": "range", "first": 4, "last": 6}
    )
    r = page.request.post(f"{server}/api/studies/{study_id}/segment", data={"engine": "threshold"})
    assert r.status == 200, r.text()
    page.goto(f"{server}/#/study/{study_id}/label")
    page.reload()
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=120000)
    # the buttons are set once the slice's image is drawn, after its position is shown: wait for them
    buttons = "([p, n]) => document.getElementById('slice-prev').disabled === p"
    buttons += " && document.getElementById('slice-next').disabled === n"
    page.wait_for_function("document.getElementById('slice-text').textContent.includes('1 of 3')")
    page.wait_for_function(buttons, arg=[True, False])
    page.click("#slice-next")
    page.wait_for_function("document.getElementById('slice-text').textContent.includes('2 of 3')")
    page.wait_for_function(buttons, arg=[False, False])
    page.click("#slice-next")
    page.wait_for_function("document.getElementById('slice-text').textContent.includes('3 of 3')")
    page.wait_for_function(buttons, arg=[False, True])

    for key, tool in (("Shift+E", "eraser"), ("Shift+F", "fill"), ("Shift+B", "brush")):
        page.keyboard.press(key)
        assert "active" in (page.get_attribute(f"#tool-{tool}", "class") or ""), key

    box = page.locator("#edit-cursor").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    outline = (
        "(() => { const c = document.getElementById('edit-outline');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0, x0 = c.width, x1 = -1;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) { const x = ((i - 3) / 4) % c.width;"
        " n++; x0 = Math.min(x0, x); x1 = Math.max(x1, x); }"
        " return x1 - x0; })()"
    )
    small = page.evaluate(outline)
    for _ in range(10):
        page.keyboard.press("]")
    assert page.evaluate(outline) > small + 5  # the circle grew, the mouse did not move


@pytest.mark.slow
@pytest.mark.skipif(not REAL_J2K.is_dir(), reason=f"needs the real JPEG 2000 series at {REAL_J2K}")
def test_real_dicom_series_through_the_whole_viewer(page: object, server: str) -> None:
    """A real series (Siemens, JPEG 2000 lossless, 512x512, empty UIDs, T11/T12: no L3 to find): upload,
    lines by mouse and keys, window/level, zoom, pan, crosshair, segment, brush, undo, save, restore,
    exports."""
    files = sorted(REAL_J2K.iterdir())
    study_id = _upload(page, files)
    assert "generated UIDs" in page.locator("#toast").inner_text()
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    box = page.locator("#mpr-canvas").bounding_box()
    w, h = box["width"], box["height"]
    api = f"{server}/api/studies/{study_id}"
    ax = (box["x"] + w * 0.21, box["y"] + h * 0.5)
    x, y, z, hu = _cursor(page, *ax)
    hu_slice = np.frombuffer(page.request.get(f"{api}/hu/{z}").body(), "<i2").reshape(512, 512)
    assert hu == hu_slice[y, x]  # NiiVue shows the stored HU

    # Window: a preset, then right-drag.
    page.select_option("#l3-preset", "bone")
    assert _data(page, "#mpr", "window") == "400,1800"
    page.mouse.move(*ax)
    page.mouse.down(button="right")
    page.mouse.move(ax[0] - 50, ax[1] - 20, steps=5)
    page.mouse.up(button="right")
    assert _data(page, "#mpr", "window") != "400,1800"
    # Zoom around the pointer, pan, reset.
    before = _cursor(page, *ax)
    _ctrl_wheel(page, *ax, 4)
    assert _cursor(page, *ax)[:2] == pytest.approx(before[:2], abs=2)
    page.mouse.down(button="middle")
    page.mouse.move(ax[0] + 80, ax[1] + 40, steps=4)
    page.mouse.up(button="middle")
    assert _cursor(page, *ax)[:2] != before[:2]
    page.click("#l3-reset")
    assert _cursor(page, *ax)[:2] == pytest.approx(before[:2], abs=2)
    # Crosshair: a click on the sagittal tile at slice 15 shows axial slice 15.
    page.mouse.click(box["x"] + w * 0.86, _y_of_slice(page, box, 0.86, 15))
    page.wait_for_function("document.getElementById('l3-viewer').dataset.axial === '15'")

    # Lines: Range, the inferior line dragged to slice 8 on the coronal tile, the superior one by keys.
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 2")
    lo, hi = (int(v) for v in _data(page, "#l3-viewer", "lines").split(","))
    y8 = _y_of_slice(page, box, 0.56, 8)
    page.mouse.move(box["x"] + w * 0.56, _y_of_slice(page, box, 0.56, lo))
    page.mouse.down()
    page.mouse.move(box["x"] + w * 0.56, y8, steps=4)
    page.mouse.up()
    test_e2e._wait_text(page, "study-message", f"Saved selection: Range 8–{hi}")
    page.focus("#mpr-canvas")
    page.keyboard.press("Tab")
    for _ in range(hi - 10):
        page.keyboard.press("ArrowDown")
    page.wait_for_timeout(700)
    assert page.request.get(api).json()["selection"] == {"mode": "range", "first": 8, "last": 10}

    # Segment (threshold: quick), paint, undo, save, restore.
    page.select_option("#engine", "threshold")
    page.click("#segment")
    page.wait_for_url("**/label", timeout=60000)
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    # its files are numbered head first (Instance Number 286 for the lowest slice, 267 for the top one)
    assert page.request.get(api).json()["image_numbers"] == list(range(286, 266, -1))
    assert page.locator("#slice-text").inner_text() == "slice 8 · image 278 (1 of 3)"
    editor = page.locator("#edit-cursor").bounding_box()
    page.keyboard.press("b")
    page.keyboard.press("1")

    def stroke(fy: float) -> None:
        page.mouse.move(editor["x"] + editor["width"] * 0.05, editor["y"] + editor["height"] * fy)
        page.mouse.down()
        page.mouse.move(editor["x"] + editor["width"] * 0.2, editor["y"] + editor["height"] * fy, steps=6)
        page.mouse.up()

    stroke(0.05)
    assert page.locator("#save-labels").inner_text() == "Save *"
    page.keyboard.press("Control+z")
    assert page.locator("#redo").is_enabled()
    page.keyboard.press("Control+y")
    page.keyboard.press("Control+s")
    test_e2e._wait_text(page, "study-message", "Saved as version 2")
    assert page.evaluate("getComputedStyle(document.querySelector('#versions li')).listStyleType") == "none"
    page.click("#versions li:has-text('v1 ·') button")
    page.wait_for_selector("#readonly-banner:not([hidden])")
    page.click("#restore-version")
    test_e2e._wait_text(page, "study-message", "Restored as version 3")

    # Every export of a DICOM study downloads (de-identified by default) under its format's name.
    suffixes = {
        "dicom-seg": ".seg.dcm",
        "dicom-sr": ".sr.dcm",
        "dicom-qc": ".qc.dcm",
        "nifti": ".nii.gz",
        "csv": ".csv",
        "json": ".json",
        "overlay": ".png",
        "html": ".html",
        "pdf": ".pdf",
    }
    for fmt, suffix in suffixes.items():
        with page.expect_download(timeout=60000) as info:
            page.click(f"#export-{fmt}")
        assert info.value.suggested_filename.endswith(f"-v3-deid{suffix}"), fmt
        if fmt == "pdf":
            assert Path(info.value.path()).read_bytes().startswith(b"%PDF-")
        if fmt == "html":
            report = Path(info.value.path()).read_text()
            assert "Sarcopenia" in report or "SMI" in report


def _wheel(page: object, deltas: list[float]) -> None:
    """Wheel events at the pointer, the page's clock stopped: all come at once, as in one quick gesture."""
    for delta in deltas:
        page.mouse.wheel(0, delta)


def _lines_wheel(page: object, x: float, y: float, lines: int) -> None:
    """A wheel event in lines (Firefox's deltaMode 1; 3 lines a notch) at (x, y) of the page."""
    page.evaluate(
        "([x, y, lines]) => document.elementFromPoint(x, y).dispatchEvent(new WheelEvent('wheel', "
        "{deltaY: lines, deltaMode: 1, clientX: x, clientY: y, bubbles: true, cancelable: true}))",
        [x, y, lines],
    )


def test_the_wheel_moves_the_slices_as_far_as_it_turned(page: object, server: str, tmp_path: Path) -> None:
    """The wheel moved one slice per event whatever its size: a trackpad's swipe, dozens of events of a few
    pixels, flew through the volume (20 slices for the distance of one notch), and a fast wheel, whose notches
    the browser sends summed into one event, moved one slice for three notches. Now a notch (100 px here, 3
    lines in Firefox) is a slice, notches summed are as many, and a trackpad's small events a slice per
    50 px; in the L3 view (NiiVue and the server images) and the label editor."""
    study_id, box = _open_mpr(page, tmp_path)
    page.clock.install(time=10**12)
    page.clock.pause_at(10**12 + 1000)  # performance.now() stands still: the events come as one gesture
    ax = (box["x"] + box["width"] * 0.21, box["y"] + box["height"] * 0.5)  # the axial tile
    page.mouse.move(*ax)

    def axial() -> int:
        return int(_data(page, "#l3-viewer", "axial"))

    z0 = axial()
    _wheel(page, [-5] * 20)  # a trackpad: 100 px up, one notch's distance
    assert axial() == z0 + 2  # the first at once, then a slice per 50 px (before: 20, up to the last slice)
    _wheel(page, [300])  # three notches down, sent as one event
    assert axial() == z0 - 1
    _wheel(page, [-100])  # a notch up
    assert axial() == z0
    _lines_wheel(page, *ax, 3)  # Firefox: 3 lines down
    assert axial() == z0 - 1

    page.goto(f"{server}/?png#/study/{study_id}")  # the server's images (no WebGL2)
    page.wait_for_selector("#l3-grid:not([hidden])")
    page.wait_for_function("document.getElementById('axial-canvas').width === 96")
    axial_box = page.locator("#axial-box").bounding_box()
    page.mouse.move(axial_box["x"] + axial_box["width"] / 2, axial_box["y"] + axial_box["height"] / 2)
    z0 = axial()
    _wheel(page, [-5] * 20)
    assert axial() == z0 + 2
    _wheel(page, [300])
    assert axial() == z0 - 1

    page.request.put(
        f"{server}/api/studies/{study_id}/selection", data={"mode": "range", "first": 1, "last": 10}
    )
    page.request.post(f"{server}/api/studies/{study_id}/segment", data={"engine": "threshold"})
    page.goto(f"{server}/#/study/{study_id}/label")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=120000)
    editor = page.locator("#editor-box").bounding_box()
    page.mouse.move(editor["x"] + editor["width"] / 2, editor["y"] + editor["height"] / 2)

    def shown() -> int:  # k of "slice z (k of n)"
        return int(page.locator("#slice-text").inner_text().split("(")[1].split()[0])

    k0 = shown()
    _wheel(page, [-300])  # three notches up, as one event
    page.wait_for_function(f"document.getElementById('slice-text').textContent.includes('({k0 + 3} of')")
    _wheel(page, [5] * 20)  # a trackpad: 100 px down
    page.wait_for_function(f"document.getElementById('slice-text').textContent.includes('({k0 + 1} of')")
