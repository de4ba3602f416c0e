"""An oblique series (ImageOrientationPatient not along the body's axes) on NiiVue: the voxel and HU under
the pointer, the crosshair and the lines, and its orientation letters said to be approximate; on the
server's images: their letters, from the series' direction. See test_e2e.py for the set-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import test_e2e
from test_e2e_first_use import _segment, _upload
from test_e2e_readouts import _letters, server_image_letters
from test_e2e_viewer import _cursor, _data
from web_synth import SPACING, synthetic_hu, turned

from sarcoscope.imaging import CTMetadata, write_dicom_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page

HU = synthetic_hu()


def _open(page: object, out: Path, tilt: float, spin: float, seed: int) -> dict:
    meta = CTMetadata(patient_id=f"PAT-{seed}", series_description="oblique")
    files = write_dicom_series(HU, SPACING, out, direction=turned(tilt, spin), metadata=meta, seed=seed)
    _upload(page, files)
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    return page.locator("#mpr-canvas").bounding_box()


def _rows_of_slices(page: object, x: float, box: dict) -> dict[int, float]:
    """The middle row (page px) of each slice's band down the canvas at x, as the pointer reads it."""
    rows: dict[int, list[float]] = {}
    for y in np.arange(box["y"] + 1, box["y"] + box["height"] - 1, 1.0):
        page.mouse.move(x, y)
        cursor = _data(page, "#mpr", "cursor")
        if cursor:
            rows.setdefault(int(cursor.split(",")[2]), []).append(float(y))
    return {z: float(np.median(ys)) for z, ys in rows.items()}


def test_an_oblique_series_is_read_and_lettered_as_shown(page: object, server: str, tmp_path: Path) -> None:
    """NiiVue draws a tilted series in its voxels' grid (its tiles are the images' planes), but the view
    found the voxel under the pointer through the scanner's millimetres: off the grid, the HU readout stayed
    blank and the crosshair and the lines were placed off their slices. The letters are the nearest body
    axes': 'oblique 25°' (the rows' direction is 24.8° off the body's) says they are approximate."""
    box = _open(page, tmp_path / "oblique", 20, 15, seed=5)
    assert _data(page, "#mpr", "oblique") == "25"
    w, h = box["width"], box["height"]
    for fx, fy in ((0.12, 0.4), (0.21, 0.5), (0.3, 0.62)):  # the axial tile
        x, y, z, hu = _cursor(page, box["x"] + w * fx, box["y"] + h * fy)
        assert z == int(_data(page, "#l3-viewer", "axial"))
        assert hu == HU[z, y, x]
    # A click on the coronal tile shows the axial slice under the pointer; the line is dragged to it.
    x = box["x"] + w * 0.56
    rows = _rows_of_slices(page, x, box)
    page.mouse.click(x, rows[9])
    page.wait_for_function("document.getElementById('l3-viewer').dataset.axial === '9'")
    page.mouse.move(x, rows[int(_data(page, "#l3-viewer", "lines"))])
    page.mouse.down()
    page.mouse.move(x, rows[9], steps=5)
    page.mouse.up()
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 9")

    # A series a degree off the axes, its images turned a quarter (rows toward anterior: the readers keep
    # such a layout): NiiVue turns its grid to the body's axes, the voxel under the pointer is still its own.
    page.goto(server)
    box = _open(page, tmp_path / "straight", 1, 90, seed=6)
    assert _data(page, "#mpr", "oblique") == ""
    x, y, z, hu = _cursor(page, box["x"] + w * 0.21, box["y"] + h * 0.5)
    assert hu == HU[z, y, x]


def test_the_server_images_of_an_oblique_series_are_lettered_by_its_direction(
    page: object, server: str, tmp_path: Path
) -> None:
    """The server's images (and the label editor's) are the voxels' grid as stored, lettered R/L, A/P, S/I
    whatever the series' direction: a series turned a quarter (rows toward posterior, columns toward the
    patient's right) and tilted 20° read R on its anterior edge. The letters are now the server's, from the
    series' direction, and the tilt is said as on NiiVue. Its image captioned 'Coronal' (one voxel row, the
    A/P, S/I lettered one) showed a sagittal plane: each is named by the plane it shows."""
    meta = CTMetadata(patient_id="PAT-PNG", series_description="oblique")
    files = write_dicom_series(
        HU, SPACING, tmp_path / "turned", direction=turned(20, 90), metadata=meta, seed=7
    )
    study_id = _upload(page, files)
    assert server_image_letters(page, server, study_id) == ["APLR", "APSI", "LRSI"]
    captions = page.locator("#l3-grid figcaption").all_inner_texts()
    assert [caption.split()[0] for caption in captions] == ["Axial", "Sagittal", "Coronal"]
    notes = page.locator("#l3-grid .oblique-note")
    assert notes.all_inner_texts() == ["oblique 20°: letters approximate"] * 3
    _segment(page, server, study_id, 5)
    assert _letters(page, "#editor-box") == {"left": "A", "right": "P", "top": "L", "bottom": "R"}
    assert page.locator("#editor-box .oblique-note").inner_text() == "oblique 20°: letters approximate"


def _turned_on_server_images(page: object, server: str, tmp_path: Path, seed: int) -> None:
    """A series tilted 20° and turned a quarter, uploaded and shown on the server's images (its coronal
    reconstruction captioned "Sagittal"), once the localizer's note under them came (it makes them lower)."""
    meta = CTMetadata(patient_id=f"PAT-{seed}", series_description="oblique")
    files = write_dicom_series(
        HU, SPACING, tmp_path / "turned", direction=turned(20, 90), metadata=meta, seed=seed
    )
    page.goto(f"{server}/?png#/study/{_upload(page, files)}")
    page.wait_for_function("document.getElementById('coronal-canvas').width > 0", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)


def test_a_server_image_that_fails_is_named_as_its_caption(page: object, server: str, tmp_path: Path) -> None:
    """A reconstruction that could not be loaded was named by its stored plane, not by what it shows: of a
    quarter-turned series, the image captioned 'Sagittal' was said to be 'The coronal image'."""
    _turned_on_server_images(page, server, tmp_path, seed=8)
    page.wait_for_load_state("networkidle")
    page.route("**/image/coronal/**", lambda route: route.abort())
    axial = page.locator("#axial-canvas").bounding_box()
    page.mouse.click(axial["x"] + axial["width"] * 0.3, axial["y"] + axial["height"] * 0.7)  # another row
    page.wait_for_function("document.getElementById('study-message').textContent.includes('could not be')")
    said = page.locator("#study-message").inner_text()
    assert said.startswith("The sagittal image could not be loaded from the server"), said
    assert page.locator("figure:has(#coronal-canvas) .plane-name").inner_text() == "Sagittal"


def _overlap(a: dict, b: dict) -> bool:
    """True when the boxes (bounding_box's) share any area."""
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_the_oblique_note_leaves_the_letters_clear_on_narrow_images(
    page: object, server: str, tmp_path: Path
) -> None:
    """The server images' "oblique 20°: letters approximate" (179 px wide) stood on one line from the top
    left corner: on images narrower than about 370 px (at a window 1000 px wide, all three) it ran over the
    top letter. It then wrapped before the middle of the image, which on this short series' reconstructions
    (bands about 57 px high at a window 800 px wide) ran over the left letter. It covers no letter now at
    any of these widths, the window resized with the images shown (they are drawn again). Nor does it cover
    the labels drawn on the images (the Slice line's "L3 · 6", the localizer's vertebrae): at 1000 px, in
    the corner, it covered "L3 · 6"."""
    page.set_viewport_size({"width": 1000, "height": 800})
    _turned_on_server_images(page, server, tmp_path, seed=9)
    for width in (1000, 800, 700):
        drawn = page.evaluate(_WIDTHS)
        page.set_viewport_size({"width": width, "height": 800})
        if width != 1000:  # the reconstructions drawn again, at the window's width
            page.wait_for_function(f"(drawn) => ({_WIDTHS})().every((w, i) => w !== drawn[i])", arg=drawn)
        for box in page.locator("#l3-grid .canvas-box").all():
            note = box.locator(".oblique-note")
            assert note.inner_text().replace("\n", " ") == "oblique 20°: letters approximate"
            where = note.bounding_box()
            for edge in ("top", "left", "right", "bottom"):
                letter = box.locator(f".orient.{edge}").bounding_box()
                assert not _overlap(where, letter), (width, box.get_attribute("id"), edge, where, letter)
            canvas = box.locator("canvas").get_attribute("id")
            for label in page.evaluate(_LABELS, canvas):
                assert not _overlap(where, label), (width, canvas, where, label)


_WIDTHS = "() => ['coronal', 'sagittal'].map((p) => document.getElementById(`${p}-canvas`).style.width)"

# The page boxes of the labels drawn on a reconstruction's canvas, from the drawing's geometry (l3png.js,
# state.js tag: 11 px text on a box 14 px high, its width the text's and 6 px; slice z's row is its band's
# middle, slice 0 at the bottom): the Slice line's "L3 · z · image n" 9 px above its line from 4 px in; on
# the sagittal one (stored plane) the vertebrae's names, centred on their middle slice, ending 6 px from the
# right edge.
_LABELS = """async (id) => {
  const canvas = document.getElementById(id);
  const study = await (await fetch(`/api/studies/${location.hash.split('/').pop()}`)).json();
  const r = canvas.getBoundingClientRect();
  const n = study.n_slices;
  const row = (z) => r.top + ((n - 1 - z + 0.5) * r.height) / n;
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = '11px system-ui, sans-serif';
  const box = (text, x, y, right) => {
    const w = ctx.measureText(text).width + 6;
    return {x: right ? x - w : x, y: y - 7, width: w, height: 14};
  };
  const z = Number(document.getElementById('l3-viewer').dataset.lines);
  const image = study.image_numbers ? ` · image ${study.image_numbers[z]}` : '';
  const labels = [box(`L3 · ${z}${image}`, r.left + 4, Math.round(row(z)) + 0.5 - 9, false)];
  if (id === 'sagittal-canvas') {
    for (const [name, v] of Object.entries((study.localization || {}).vertebrae || {})) {
      labels.push(box(name, r.right - 6, row(v.center), true));
    }
  }
  return labels;
}"""


def test_the_oblique_note_is_shortened_where_there_is_no_room_above_the_image(
    page: object, server: str, tmp_path: Path
) -> None:
    """Where neither the image's corners nor the box above it have room for the whole note (a box little
    higher than its band), it says "oblique 20°" in a corner, clear of the letters and of the labels drawn on
    the image (in the top corner it covered "L3 · 6": it is in the bottom one)."""
    page.set_viewport_size({"width": 800, "height": 800})
    _turned_on_server_images(page, server, tmp_path, seed=10)
    page.add_style_tag(content="#l3-grid .recon { height: 64px !important; flex: none !important; }")
    shortened = "[...document.querySelectorAll('#l3-grid .recon .oblique-note')].map((n) => n.textContent)"
    page.wait_for_function(f"{shortened}.every((text) => text === 'oblique 20°')")  # redrawn: box resized
    for box in page.locator("#l3-grid .canvas-box.recon").all():
        where = box.locator(".oblique-note").bounding_box()
        for edge in ("top", "left", "right", "bottom"):
            letter = box.locator(f".orient.{edge}").bounding_box()
            assert not _overlap(where, letter), (edge, where, letter)
        canvas = box.locator("canvas").get_attribute("id")
        for label in page.evaluate(_LABELS, canvas):
            assert not _overlap(where, label), (canvas, where, label)


# Records the text drawn on NiiVue's overlay canvas (mpr.js drawOverlay): each fillText's box (CSS px, from
# the browser's measure of it at the context's font, alignment and baseline).
_RECORD_OVERLAY = """
window.drawn = [];
const fillText = CanvasRenderingContext2D.prototype.fillText;
CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
  if (this.canvas.id === 'mpr-overlay') {
    const m = this.measureText(text);
    const left = this.textAlign === 'right' ? x - m.width : this.textAlign === 'center' ? x - m.width / 2 : x;
    window.drawn.push({text: String(text), x: left, y: y - m.actualBoundingBoxAscent, width: m.width,
      height: m.actualBoundingBoxAscent + m.actualBoundingBoxDescent});
  }
  return fillText.call(this, text, x, y, ...rest);
};
"""
# the texts of the last overlay drawn: from its last "Axial · slice ..." (the first tile's name)
_LAST_OVERLAY = """() => {
  const start = window.drawn.map((d) => d.text.startsWith('Axial')).lastIndexOf(true);
  return start < 0 ? null : window.drawn.slice(start);
}"""


def test_on_webgl_the_tiles_notes_leave_the_letters_and_labels_clear(
    page: object, server: str, tmp_path: Path
) -> None:
    """On NiiVue a short series' coronal and sagittal tiles are low bands (about 58 px high at a window 1000
    px wide), and their name and notes ("not to scale: height ×2.7", "oblique 20°: letters approximate"),
    stacked under the tile's top edge, covered the left and bottom letters and the Slice line's "L3 · 6". They
    now stand above such a tile: no text drawn on the overlay covers another, at windows 1000, 800 and 700 px
    wide, and each tile still says the series is oblique."""
    page.add_init_script(_RECORD_OVERLAY)
    page.goto(server)
    test_e2e.app_ready(page)
    _open(page, tmp_path / "turned", 20, 90, seed=12)
    for width in (1000, 800, 700):
        page.evaluate("window.drawn = []")
        page.set_viewport_size({"width": width, "height": 800})
        page.wait_for_function(
            f"({_LAST_OVERLAY})() !== null && document.getElementById('mpr-overlay').clientWidth < {width}"
        )
        texts = page.evaluate(_LAST_OVERLAY)
        said = [t["text"] for t in texts]
        assert said.count("oblique 20°: letters approximate") == 3, said
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                assert not _overlap(a, b), (width, a, b)
