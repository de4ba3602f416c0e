"""The L3 view on a software WebGL renderer (no GPU: SwiftShader, llvmpipe; headless Chromium here, many
hospital remote desktops): a long series is shown as server images at once, not after minutes of NiiVue
building its textures (311 slices of 512x512: 225 s with the page frozen, measured here). See
test_e2e.py for the set-up."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import test_e2e
from test_e2e_first_use import _upload
from web_synth import synthetic_hu, write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page


def _long_series(out: Path) -> list[Path]:
    """108 slices of 288x288 (9 million voxels, over the software renderer's budget): the synthetic
    abdomen, three times finer, nine times over."""
    hu = np.tile(synthetic_hu().repeat(3, axis=1).repeat(3, axis=2), (9, 1, 1))
    return write_series(out, hu=hu)


def test_a_long_series_on_software_webgl_is_shown_as_server_images(
    page: object, server: str, tmp_path: Path
) -> None:
    renderer = page.evaluate(
        """() => { const gl = document.createElement('canvas').getContext('webgl2');
             const info = gl.getExtension('WEBGL_debug_renderer_info');
             return gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER); }"""
    )
    assert "SwiftShader" in renderer, renderer  # what this test is about: no GPU
    _upload(page, _long_series(tmp_path / "series"))
    opened = time.monotonic()
    page.wait_for_selector("#l3-grid:not([hidden])", timeout=20000)
    assert page.locator("#mpr").is_hidden()
    assert "no GPU" in page.locator("#l3-hint").inner_text()
    # the choice is not the user's: the box says so (ticked, greyed, its title why)
    choice = page.locator("#server-images")
    assert choice.is_checked() and choice.is_disabled()
    page.wait_for_function("document.getElementById('coronal-canvas').width > 0", timeout=20000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=60000)
    # The line is dragged on the server's coronal image; Segment is pressed.
    line = int(page.locator("#l3-viewer").get_attribute("data-lines").split(",")[0])
    recon = page.locator("#coronal-canvas").bounding_box()
    y = recon["y"] + (107 - line + 0.5) * recon["height"] / 108
    x = recon["x"] + recon["width"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y - 10 * recon["height"] / 108, steps=4)
    page.mouse.up()
    assert int(page.locator("#l3-viewer").get_attribute("data-lines")) == line + 10
    test_e2e._wait_text(page, "study-message", "Saved selection")
    assert page.locator("#segment").is_enabled()
    usable = time.monotonic() - opened
    assert usable < 30, f"the L3 view took {usable:.0f} s to become usable"


def test_each_study_is_shown_on_the_view_its_size_allows(page: object, server: str, tmp_path: Path) -> None:
    """The choice is the study's: a short series opened after a long one is on NiiVue, and the long one,
    opened again, on the server's images (each view made once, kept for the next study that needs it)."""
    long = _upload(page, _long_series(tmp_path / "long"))
    page.wait_for_selector("#l3-grid:not([hidden])", timeout=20000)
    page.goto(page.url.split("#")[0])
    _upload(page, write_series(tmp_path / "short", seed=4, patient_id="PAT-SHORT"))
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert page.locator("#l3-grid").is_hidden() and "no GPU" not in page.locator("#l3-hint").inner_text()
    page.evaluate(f"location.hash = '#/study/{long}'")
    page.wait_for_selector("#l3-grid:not([hidden])", timeout=20000)
    assert page.locator("#mpr").is_hidden() and "no GPU" in page.locator("#l3-hint").inner_text()
    page.wait_for_function(
        "document.getElementById('axial-index').textContent.startsWith('slice ')", timeout=20000
    )
    z, image = page.locator("#axial-index").inner_text().removeprefix("slice ").split(" (0–107) · image ")
    assert int(image) == int(z) + 1


def test_the_user_chooses_the_server_images_and_back(page: object, server: str, tmp_path: Path) -> None:
    """NiiVue slow on a machine (it builds textures of the whole volume, the page frozen): the user could not
    choose the server's images, used only on a software renderer for a long series, nor come back. The
    'server images' box does both, for the open study at once, and the browser remembers the choice."""
    study = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    choice = page.locator("#server-images")
    assert choice.is_visible() and choice.is_enabled() and not choice.is_checked()
    choice.check()
    page.wait_for_selector("#l3-grid:not([hidden])", timeout=20000)
    assert page.locator("#mpr").is_hidden()
    assert page.locator("#l3-hint").inner_text().startswith("server images, as chosen")
    page.wait_for_function("document.getElementById('coronal-canvas').width > 0", timeout=20000)
    # The lines work on them: ↑ moves the line and saves it.
    line = int(page.locator("#l3-viewer").get_attribute("data-lines"))
    page.focus("#coronal-canvas")
    page.keyboard.press("ArrowUp")
    test_e2e._wait_text(page, "study-message", f"Saved selection: Slice {line + 1}")
    # Remembered: the study opened again (a new page) is on the server's images.
    page.goto(f"{server}/#/study/{study}")
    page.wait_for_selector("#l3-grid:not([hidden])", timeout=20000)
    assert page.locator("#mpr").is_hidden() and choice.is_checked()
    # And back to NiiVue, remembered too.
    choice.uncheck()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert page.locator("#l3-grid").is_hidden() and not page.locator("#mpr").is_hidden()
    assert "server images" not in page.locator("#l3-hint").inner_text()
    page.reload()
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    assert page.locator("#l3-grid").is_hidden() and not choice.is_checked()
