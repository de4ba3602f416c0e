"""How often NiiVue builds its textures of a study's volume: each build uploads the whole int16 volume
(texSubImage3D of type SHORT) and colours every slice, with the page frozen; on a software renderer it is
the load's slowest part. See test_e2e.py for the set-up."""

from __future__ import annotations

from pathlib import Path

import test_e2e
from test_e2e_first_use import _upload
from web_synth import write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page

#: Records the size of every int16 3D texture upload (NiiVue's volume texture) in window.volumeUploads.
COUNT_UPLOADS = """
(() => {
  const proto = WebGL2RenderingContext.prototype;
  const upload = proto.texSubImage3D;
  window.volumeUploads = [];
  proto.texSubImage3D = function (...args) {
    if (args[9] === this.SHORT) window.volumeUploads.push(args.slice(5, 8).join("x"));
    return upload.apply(this, args);
  };
})();
"""


def _uploads(page: object) -> list[str]:
    return page.evaluate("window.volumeUploads")


def test_a_volume_is_built_once_with_its_window(page: object, server: str, tmp_path: Path) -> None:
    """The preset window was set after the volume loaded: NiiVue built its textures with its own window,
    then again with the preset's (three times on the first study: the L3 view set the preset once more)."""
    page.add_init_script(COUNT_UPLOADS)
    page.goto(server)
    first = _upload(page, write_series(tmp_path / "first"))
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    assert _uploads(page) == ["96x96x12"]
    # Another preset: built again, once, with that window.
    page.select_option("#l3-preset", "bone")
    page.wait_for_function("document.getElementById('mpr').dataset.window === '400,1800'", timeout=10000)
    assert _uploads(page) == ["96x96x12"] * 2
    # Another study, opened with the preset shown: its volume is built once; the first, opened again, too.
    page.goto(server)
    second = _upload(page, write_series(tmp_path / "second", seed=3, patient_id="PAT-2"))
    assert second != first
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    assert _uploads(page) == ["96x96x12"]
    page.evaluate(f"location.hash = '#/study/{first}'")
    page.wait_for_function("window.volumeUploads.length >= 2", timeout=60000)
    page.wait_for_timeout(500)
    assert _uploads(page) == ["96x96x12"] * 2
    assert page.locator("#mpr").get_attribute("data-window") == "40,400"
