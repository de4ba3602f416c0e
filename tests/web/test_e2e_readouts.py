"""End-to-end in headless chromium (see test_e2e.py): what the images say beside them, the HU under the
pointer and the orientation letters, on NiiVue, on the server's images and in the label editor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import test_e2e
from PIL import Image
from test_e2e_first_use import _segment, _upload
from test_e2e_viewer import _data, _open_mpr, _y_of_slice
from web_synth import synthetic_hu, write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page


def _cursor_slice(page: object) -> int:
    return int(_data(page, "#mpr", "cursor").split(",")[2])


def test_the_hu_readout_follows_a_dragged_line_and_the_keys(
    page: object, server: str, tmp_path: Path
) -> None:
    """The voxel and HU under the pointer were read on mouse moves only: dragging an L3 line, or moving it
    with a key, changed the slice under the pointer while the readout kept the previous slice's."""
    study_id, box = _open_mpr(page, tmp_path)
    page.request.put(f"{server}/api/studies/{study_id}/selection", data={"mode": "slice", "first": 5})
    page.reload()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    sx = box["x"] + box["width"] * 0.86  # the sagittal tile
    line_y, above = _y_of_slice(page, box, 0.86, 5), _y_of_slice(page, box, 0.86, 8)
    page.mouse.move(sx, line_y)
    assert _cursor_slice(page) == 5
    page.mouse.down()
    page.mouse.move(sx, above, steps=5)
    assert _data(page, "#l3-viewer", "lines") == "8"
    assert _cursor_slice(page) == 8  # the slice under the pointer, the line on it
    assert "slice 8 · image 9:" in page.locator("#l3-cursor").inner_text()  # (write_series: image z + 1)
    page.mouse.up()
    # Over the axial image, ↑ shows the next slice: the readout is of that slice's voxel.
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    assert _cursor_slice(page) == 8
    page.focus("#mpr-canvas")
    page.keyboard.press("ArrowUp")
    assert _data(page, "#l3-viewer", "axial") == "9"
    assert _cursor_slice(page) == 9
    assert "slice 9 · image 10:" in page.locator("#l3-cursor").inner_text()


def _letters(page: object, box: str, image: str | None = None) -> dict[str, str]:
    """The orientation letters shown in `box` (a CSS selector), by the edge of `image` (the box when none)
    they stand at, within 20 px inside it."""
    frame = page.locator(image or box).bounding_box()
    found = {}
    for letter in page.locator(f"{box} .orient").all():
        assert letter.is_visible()
        b = letter.bounding_box()
        cx, cy = b["x"] + b["width"] / 2 - frame["x"], b["y"] + b["height"] / 2 - frame["y"]
        edge = min(
            (cx, "left"), (frame["width"] - cx, "right"), (cy, "top"), (frame["height"] - cy, "bottom")
        )
        assert 0 < edge[0] < 20, (box, letter.inner_text(), edge)  # (outside it: a negative distance)
        found[edge[1]] = letter.inner_text()
    return found


def server_image_letters(page: object, server: str, study_id: str) -> list[str]:
    """The letters of the study's axial, coronal and sagittal server images, each as its left, right, top
    and bottom edge's ("RLAP": the standard axial image); a reconstruction's at its image's edges, not its
    box's."""
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_function("document.getElementById('coronal-canvas').width > 0", timeout=60000)
    # the localizer's note under the images makes their boxes lower: the letters are read after it came
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    images = (
        ("#axial-box", None),
        ("figure:has(#coronal-canvas) .canvas-box", "#coronal-canvas"),
        ("figure:has(#sagittal-canvas) .canvas-box", "#sagittal-canvas"),
    )
    edges = ("left", "right", "top", "bottom")
    return ["".join(_letters(page, *image)[edge] for edge in edges) for image in images]


def test_the_server_images_and_the_label_editor_are_lettered(
    page: object, server: str, tmp_path: Path
) -> None:
    """NiiVue letters every edge; the server's images (the view without WebGL2 or a GPU) and the label
    editor had no letters: which side is the patient's right had to be known. A reconstruction's letters
    stood at its box's edges: on this short series (an image 100 px high in a box 573 px high) S and I stood
    226 px above and below it."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    assert server_image_letters(page, server, study_id) == ["RLAP", "RLSI", "APSI"]
    _segment(page, server, study_id, 5)
    assert _letters(page, "#editor-box") == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_the_images_stay_in_place_when_the_readouts_come(page: object, server: str, tmp_path: Path) -> None:
    """The HU readout, shown once the pointer is over an image, made the hint's line wrap (1360 px wide, with
    the 'server images' box): the images moved down 15 px under the pointer, which then pointed at another
    slice than the one it had read."""
    _open_mpr(page, tmp_path)
    for width in (1360, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        page.reload()
        page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
        page.mouse.move(0, 0)
        box = page.locator("#mpr-canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
        assert "HU" in page.locator("#l3-cursor").inner_text()
        assert page.locator("#mpr-canvas").bounding_box() == box, width


def _image_edge(page: object, x: float, inside: float, outside: float) -> float:
    """The page y, between `inside` (over the image) and `outside` (not), where the image under x ends: NiiVue
    reads a voxel under the pointer on the image only."""
    while abs(outside - inside) > 0.5:
        middle = (inside + outside) / 2
        page.mouse.move(x, middle)
        if _data(page, "#mpr", "cursor"):
            inside = middle
        else:
            outside = middle
    return inside


def _white_pixels(page: object, x: float, y: float) -> int:
    """Pixels of a letter's white in the 16 x 16 page px from (x - 8, y) down."""
    rgb = np.asarray(
        Image.open(io.BytesIO(page.screenshot(clip={"x": x - 8, "y": y, "width": 16, "height": 16})))
    )
    return int((rgb[..., :3].min(axis=2) > 200).sum())


def test_the_reconstructions_of_a_short_series_say_s_and_i(page: object, server: str, tmp_path: Path) -> None:
    """NiiVue letters its tiles in mid-grey without an outline (its fontColor 0.5): soft tissue in the soft
    tissue window is that grey, and the top and bottom edges of a short series' coronal and sagittal images
    run through the body, so their S and I could not be seen (the axial image's letters stand on air). The
    letters are drawn over NiiVue's images now, white on a dark outline, readable on any tissue."""
    _upload(page, write_series(tmp_path / "series", hu=synthetic_hu(0)[:4]))
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    box = page.locator("#mpr-canvas").bounding_box()
    middle, bottom = box["y"] + box["height"] / 2, box["y"] + box["height"]
    for fx in (0.56, 0.855):  # the middle of the coronal and the sagittal image
        x = box["x"] + box["width"] * fx
        top, end = _image_edge(page, x, middle, box["y"]), _image_edge(page, x, middle, bottom)
        assert end - top > 60, (fx, top, end)  # stretched: the letters have room
        page.mouse.move(box["x"] + 2, box["y"] + 2)  # (no readout: nothing drawn for it)
        assert _white_pixels(page, x, top) >= 8, ("S", fx)
        assert _white_pixels(page, x, end - 16) >= 8, ("I", fx)


def test_the_chosen_slice_says_its_dicom_image_number(tmp_path: Path) -> None:
    """The slice numbers are indices from 0 counted from the feet, and the DICOM Instance Number, the "image
    38" a PACS viewer shows and a researcher notes the L3 slice by, was shown nowhere: on a head-first series
    (image 1 at the top) slice 5 of 12 is image 7, and the L3 slice picked in the PACS could not be found
    in the app nor the app's checked there. The selection, the axial caption and the label editor now say
    the image number beside the slice number."""
    import pydicom
    from test_e2e_unsaved import _label_view

    files = write_series(tmp_path / "series")
    for f in files:  # numbered head first, as a scanner numbers a head-first series
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = len(files) + 1 - int(ds.InstanceNumber)
        ds.save_as(f)
    with _label_view(tmp_path, files) as (_, page, url, sid):
        assert page.request.get(f"{url}/api/studies/{sid}").json()["image_numbers"] == list(range(12, 0, -1))
        assert page.locator("#slice-text").inner_text() == "slice 5 · image 7 (1 of 1)"
        page.click("#tab-l3")
        page.wait_for_function("document.getElementById('axial-index').textContent.includes('image')")
        assert page.locator("#l3-selection-text").inner_text() == "Slice 5 · image 7"
        assert page.locator("#axial-index").inner_text() == "slice 5 (0–11) · image 7"
        page.click("#mode-range")
        lo, hi = (int(v) for v in page.locator("#l3-viewer").get_attribute("data-lines").split(","))
        lo, hi = min(lo, hi), max(lo, hi)
        shown = page.locator("#l3-selection-text").inner_text()
        assert shown == f"Range {lo}–{hi} ({hi - lo + 1} slices · images {12 - hi}–{12 - lo})"


def test_the_versions_and_the_l3_lines_say_the_image_number(tmp_path: Path) -> None:
    """The selection and captions said "slice 5 · image 7", but the versions list ("v1 · slice 5 · segment")
    and the L3 lines' labels ("L3 · 5") named the slice by its index only, which no PACS viewer shows. They
    say its image number too; a study stored before image numbers were kept says the index alone."""
    import json

    import pydicom
    from test_e2e_unsaved import _label_view

    files = write_series(tmp_path / "series")
    for f in files:  # numbered head first: slice z is image 12 - z
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = len(files) + 1 - int(ds.InstanceNumber)
        ds.save_as(f)
    with _label_view(tmp_path, files) as (app, page, url, sid):
        page.add_init_script(_RECORD_TEXTS)
        assert page.locator("#versions li").first.inner_text().startswith("v1 · slice 5 · image 7 · segment")

        def line_label(canvas: str, text: str) -> None:
            page.wait_for_function(
                "([id, text]) => window.texts.some((t) => t.canvas === id && t.text === text)",
                arg=[canvas, text],
                timeout=60000,
            )

        page.goto(f"{url}/#/study/{sid}")
        page.reload()  # (a new document: the recorder runs in it)
        line_label("mpr-overlay", "L3 · 5 · image 7")
        page.goto(f"{url}/?png#/study/{sid}")
        line_label("sagittal-canvas", "L3 · 5 · image 7")
        page.click("#mode-range")
        lo, hi = sorted(int(v) for v in page.locator("#l3-viewer").get_attribute("data-lines").split(","))
        line_label("sagittal-canvas", f"inferior · {lo} · image {12 - lo}")
        line_label("sagittal-canvas", f"superior · {hi} · image {12 - hi}")
        # stored before the image numbers were kept: the slice index alone, as before
        info_path = app.state.ctx.store.cache_dir(sid) / "volume.json"
        info = json.loads(info_path.read_text())
        del info["image_numbers"]
        info_path.write_text(json.dumps(info))
        page.request.put(f"{url}/api/studies/{sid}/selection", data={"mode": "slice", "first": 5})
        page.goto(f"{url}/?png#/study/{sid}/label")
        page.reload()  # (the study read again)
        page.wait_for_selector("#versions li", timeout=30000)
        assert page.locator("#versions li").first.inner_text().startswith("v1 · slice 5 · segment")
        page.goto(f"{url}/?png#/study/{sid}")
        line_label("sagittal-canvas", "L3 · 5")


#: Records where the text drawn on the canvases is, in page px ({canvas, text, x, y, width, height}).
_RECORD_TEXTS = """
window.texts = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
  const m = this.measureText(text), c = this.canvas.getBoundingClientRect();
  const left = this.textAlign === 'right' ? x - m.width : this.textAlign === 'center' ? x - m.width / 2 : x;
  window.texts.push({canvas: this.canvas.id, text: String(text), x: c.left + left,
    y: c.top + y - m.actualBoundingBoxAscent, width: m.width,
    height: m.actualBoundingBoxAscent + m.actualBoundingBoxDescent});
  return fillText.call(this, text, x, y, ...rest);
};
"""


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and (a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])
    )


def test_the_lines_labels_leave_the_orientation_letters_clear(
    page: object, server: str, tmp_path: Path
) -> None:
    """A line's label ("L3 · 5") and a vertebra's name stand at the coronal and sagittal images' left and
    right edges, where the orientation letters are: a line near the middle of the image (as L3 often is) hid
    the left letter ("R", "A") under its label, and a vertebra there the sagittal's "P" under its name ("L4"
    over "P" on a 1366x768 laptop). The labels now stand beside the letters, on NiiVue and on the server's
    images."""
    page.add_init_script(_RECORD_TEXTS)
    name = "L3 · 5 · image 6"  # the line's label (write_series numbers slice z image z + 1)
    page.goto(server)  # the page again, with the recorder
    study_id = _upload(page, write_series(tmp_path / "series"))
    page.request.put(f"{server}/api/studies/{study_id}/selection", data={"mode": "slice", "first": 5})
    for url, canvases in (
        (f"{server}/#/study/{study_id}", ["mpr-overlay"]),
        (f"{server}/?png#/study/{study_id}", ["coronal-canvas", "sagittal-canvas"]),
    ):
        page.goto(url)
        page.wait_for_function(
            "([ids, s]) => ids.every((id) => window.texts.some((t) => t.canvas === id && t.text === s))",
            arg=[canvases, name],
            timeout=60000,
        )
        page.wait_for_timeout(500)  # the images drawn again once all have come
        texts = page.evaluate("ids => window.texts.filter((t) => ids.includes(t.canvas))", canvases)
        labels = {(t["text"], t["x"], t["y"]): t for t in texts if t["text"] == name}.values()
        if canvases == ["mpr-overlay"]:
            letters = [t for t in texts if t["text"] in ("R", "A", "L", "P")]
        else:  # the server images' letters are the page's
            boxes = [page.locator(f"#{c}").locator("..").locator(".orient.left") for c in canvases]
            letters = [b.bounding_box() for b in boxes]
        assert len(labels) >= 2 and len(letters) >= 2, (labels, letters)
        for label in labels:
            for letter in letters:
                assert not _overlap(label, letter), (url, label, letter)


def _pixel_centre(page: object, selector: str, x: int, y: int, shape: tuple[int, int]) -> tuple[float, float]:
    """The page point at the centre of pixel (x, y) of the image `selector` shows, `shape` (rows, columns)."""
    b = page.locator(selector).bounding_box()
    return b["x"] + (x + 0.5) * b["width"] / shape[1], b["y"] + (y + 0.5) * b["height"] / shape[0]


def test_the_label_editor_says_the_pixel_hu_and_label_under_the_pointer(
    page: object, server: str, tmp_path: Path
) -> None:
    """Every CT viewer says the HU under the pointer; the label editor said nothing (the L3 view only on
    NiiVue): whether a pixel at a muscle's edge was fat or muscle could be told by its grey only. It now says
    the pixel, the slice with its image number, the CT's HU (the stored value, not the window's grey: the
    series' noise makes each pixel's exact) and the label painted there."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    _segment(page, server, study_id, 5)
    hu = synthetic_hu(0)
    study = page.request.get(f"{server}/api/studies/{study_id}").json()
    labels = page.request.get(f"{server}/api/studies/{study_id}/labels")
    label_map = np.frombuffer(labels.body(), np.uint8).reshape(1, 96, 96)[0]
    image = study["image_numbers"][5]
    assert label_map[48, 82] == 1  # the muscle ring
    page.mouse.move(*_pixel_centre(page, "#edit-cursor", 82, 48, (96, 96)))
    text = f"x 82 · y 48 · slice 5 · image {image}: {hu[5, 48, 82]} HU · MUSCLE"
    page.wait_for_function(f"document.getElementById('edit-readout').textContent === {text!r}")
    page.mouse.move(*_pixel_centre(page, "#edit-cursor", 3, 90, (96, 96)))  # air, unlabelled
    text = f"x 3 · y 90 · slice 5 · image {image}: {hu[5, 90, 3]} HU · no label"
    page.wait_for_function(f"document.getElementById('edit-readout').textContent === {text!r}")
    page.mouse.move(*_pixel_centre(page, "#edit-cursor", 82, 48, (96, 96)))
    page.uncheck("[data-visible='1']")  # the muscle overlay hidden: its label is still said, as hidden
    page.mouse.move(*_pixel_centre(page, "#edit-cursor", 82, 48, (96, 96)))
    page.wait_for_function("document.getElementById('edit-readout').textContent.endsWith('MUSCLE (hidden)')")
    page.mouse.move(0, 0)  # off the image: nothing is said
    page.wait_for_function("document.getElementById('edit-readout').textContent === ''")
    assert page.locator("#edit-readout").is_hidden()


def test_the_server_images_say_the_hu_under_the_pointer(page: object, server: str, tmp_path: Path) -> None:
    """Without NiiVue (no WebGL2, a slow computer: the server's images) the HU under the pointer was not
    shown at all. The axial image now says it, of the slice shown: turned to the next slice with the wheel,
    the pointer still, the readout is of that slice's pixel. One HU request per slice, however far the
    pointer moves."""
    study_id = _upload(page, write_series(tmp_path / "series"))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/hu/" in r.url else None)
    page.goto(f"{server}/?png#/study/{study_id}")
    page.wait_for_function("document.getElementById('axial-canvas').width > 0", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    hu = synthetic_hu(0)
    numbers = page.request.get(f"{server}/api/studies/{study_id}").json()["image_numbers"]
    z = int(page.locator("#axial-index").inner_text().split()[1])
    for x in range(70, 90):
        page.mouse.move(*_pixel_centre(page, "#axial-canvas", x, 48, (96, 96)))
    text = f"x 89 · y 48 · slice {z} · image {numbers[z]}: {hu[z, 48, 89]} HU"
    page.wait_for_function(f"document.getElementById('l3-cursor').textContent === {text!r}")
    assert len(asked) == 1 and asked[0].endswith(f"/hu/{z}")
    page.mouse.wheel(0, -100)  # one slice up
    text = f"x 89 · y 48 · slice {z + 1} · image {numbers[z + 1]}: {hu[z + 1, 48, 89]} HU"
    page.wait_for_function(f"document.getElementById('l3-cursor').textContent === {text!r}")
    page.mouse.move(0, 0)
    page.wait_for_function("document.getElementById('l3-cursor').textContent === ''")
