"""End-to-end: the browser UI in Debian's headless chromium, driven by Playwright, against a live server.

Needs /usr/bin/chromium (`apt-get install -y chromium`) and the `playwright` Python package; the browser
that `playwright install` would download is never used. Set SARCOSCOPE_SCREENSHOTS=<folder> to save
screenshots of the main screens (docs/screenshots/ is made that way).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest

from sarcoscope.phantom.io import write_phantom
from sarcoscope.web import WebSettings, create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _running(settings: WebSettings, app: Any = None) -> Iterator[str]:
    """The app (made from `settings` unless given) on a free loopback port in a background thread; yields
    its base URL."""
    import uvicorn

    app = app if app is not None else create_app(settings)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        app.state.ctx.store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with _running(WebSettings(data_dir=tmp_path / "data")) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        # bypass_csp: Playwright's wait_for_function evaluates strings, which the app's CSP forbids.
        context = browser.new_context(
            viewport={"width": 1360, "height": 840}, accept_downloads=True, bypass_csp=True
        )
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server)
        app_ready(pg)
        yield pg
        assert errors == [], f"JavaScript errors: {errors}"
        browser.close()


def app_ready(page: object) -> None:
    """Wait until the page has its settings and its handlers (app.js binds them after reading /api/config):
    files chosen before that are not uploaded, which a loaded machine showed as an upload that never came."""
    page.wait_for_function("document.querySelector('#engine option') !== null", timeout=120000)


def _shot(page: object, name: str) -> None:
    """Save a screenshot as a small 256-colour PNG when SARCOSCOPE_SCREENSHOTS names a folder."""
    folder = os.environ.get("SARCOSCOPE_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        shot = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.Resampling.LANCZOS)
        shot.quantize(256).save(Path(folder) / f"{name}.png", optimize=True)


def _wait_text(page: object, element_id: str, prefix: str) -> None:
    page.wait_for_function(
        "([id, prefix]) => document.getElementById(id).textContent.startsWith(prefix)",
        arg=[element_id, prefix],
    )


def _overlay_pixel(page: object, fx: float, fy: float) -> list[int]:
    """RGBA of the label overlay at a fraction (fx, fy) of its width and height."""
    return page.evaluate(
        """([fx, fy]) => { const c = document.getElementById('edit-overlay');
             const x = Math.floor(c.width * fx), y = Math.floor(c.height * fy);
             return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data); }""",
        [fx, fy],
    )


def _is_muscle_colour(rgba: list[int]) -> bool:
    """Overlay colour of label 1 (conventions.LABEL_COLORS), allowing for alpha premultiplication."""
    return rgba[3] > 0 and max(abs(a - b) for a, b in zip(rgba[:3], (220, 50, 50), strict=True)) <= 3


def _muscle_area(page: object) -> float:
    return float(page.locator("#metrics tr[data-tissue=muscle] td.area").inner_text())


def test_upload_select_segment_edit_save_reload_export(page: object, server: str, tmp_path: Path) -> None:
    # A small phantom abdomen (256x256, 5 mm slices, T10 to the pubis) with known L3 slices.
    phantom = write_phantom(tmp_path / "phantom", seed=1, shape_xy=256, slice_thickness_mm=5.0)
    truth = phantom["truth"]
    files = sorted(Path(phantom["paths"]["dicom"]).iterdir())
    page.set_input_files("#pick-files", [str(f) for f in files])
    page.wait_for_url("**/#/study/*", timeout=30000)
    study_id = page.url.rsplit("/", 1)[-1]
    # The first localization imports the level stage: slow on a loaded machine.
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    study = page.request.get(f"{server}/api/studies/{study_id}").json()
    loc, sel = study["localization"], study["selection"]
    assert "error" not in loc, loc
    # The automatic localization pre-places the single mid-L3 Slice line, as `sarcoscope analyze` measures
    # by default (truth within a slice or two); Range (the L3 body, averaged) is an explicit choice.
    assert sel == {"mode": "slice", "first": loc["l3_mid"], "last": loc["l3_mid"]}
    assert abs(sel["first"] - truth["l3_mid_index"]) <= 2
    assert "auto L3 confidence" in page.locator("#l3-confidence").inner_text()
    lines = page.locator("#l3-viewer").get_attribute("data-lines")
    assert lines == str(sel["first"])

    # L3 lines: Range shows two lines on the reconstructions, Slice one.
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 2")
    assert page.locator("#l3-selection-text").inner_text().startswith("Range")
    _shot(page, "l3-selection")
    page.click("#mode-slice")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 1")
    mid = loc["l3_mid"]
    assert page.locator("#l3-selection-text").inner_text() == f"Slice {mid} · image {mid + 1}"
    _wait_text(page, "study-message", "Saved selection")
    page.click("#mode-range")
    page.wait_for_function("document.getElementById('l3-viewer').dataset.lines.split(',').length === 2")
    # keyboard: move the first line up by two slices
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_timeout(700)
    sel = page.request.get(f"{server}/api/studies/{study_id}").json()["selection"]
    assert sel["mode"] == "range" and sel["first"] == loc["l3_lower_endplate"] + 2
    n_selected = sel["last"] - sel["first"] + 1

    # Download selected DICOM (de-identified by default): one original slice per selected slice.
    with page.expect_download() as info:
        page.click("#download-dicom")
    with zipfile.ZipFile(info.value.path()) as zf:
        names = zf.namelist()
        assert names == [f"slice{i:04d}.dcm" for i in range(sel["first"], sel["last"] + 1)]
        ds = pydicom.dcmread(io.BytesIO(zf.read(names[0])))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("ANON-")

    # Segment, then paint a muscle stroke outside the body (air): the muscle area must grow.
    page.click("#segment")
    page.wait_for_url("**/label", timeout=30000)
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
    assert page.locator("#slice-text").inner_text().endswith(f"of {n_selected})")
    # the form offers the server's bounds (it offered 50-260 cm where the server takes 100-250)
    assert [page.get_attribute("#height", k) for k in ("min", "max")] == ["100", "250"]
    page.fill("#height", "172")
    page.click("#patient-form button[type=submit]")
    page.wait_for_function("document.getElementById('smi').textContent.includes('cm²/m²')")
    _shot(page, "labeling")
    before = _muscle_area(page)

    def stroke(x: float, y: float, length: float) -> None:
        box = page.locator("#edit-cursor").bounding_box()
        x0, y0 = box["x"] + box["width"] * x, box["y"] + box["height"] * y
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * length, y0, steps=8)
        page.mouse.up()

    page.keyboard.press("1")  # paint muscle
    page.fill("#brush-size", "8")
    page.dispatch_event("#brush-size", "input")
    # "HU range only": a muscle stroke over air (-1000 HU) paints nothing.
    page.check("#hu-constrain")
    stroke(0.06, 0.08, 0.2)
    assert _overlay_pixel(page, 0.1, 0.08)[3] == 0
    page.uncheck("#hu-constrain")
    stroke(0.06, 0.08, 0.2)
    assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))
    assert page.locator("#save-labels").inner_text() == "Save *"
    page.keyboard.press("Control+s")
    _wait_text(page, "study-message", "Saved as version 2")
    page.wait_for_function(
        "(before) => parseFloat(document.querySelector('#metrics tr[data-tissue=muscle] td.area')"
        ".textContent) > before",
        arg=before,
    )
    after = _muscle_area(page)

    # Undo / redo work locally.
    stroke(0.06, 0.2, 0.0)
    page.keyboard.press("Control+z")
    assert page.locator("#redo").is_enabled()
    assert page.locator("#save-labels").inner_text() == "Save"  # back to version 2: nothing unsaved
    page.keyboard.press("Control+y")
    assert page.locator("#save-labels").inner_text() == "Save *"

    # Meanwhile someone else saves version 3: this page's next save is refused, not merged or overwritten.
    saved = page.request.get(f"{server}/api/studies/{study_id}/labels").body()
    other = page.request.post(
        f"{server}/api/studies/{study_id}/labels?base_version=2",
        data=saved,
        headers={"Content-Type": "application/octet-stream", "X-Label-Note": "colleague"},
    )
    assert other.status == 201
    page.keyboard.press("Control+s")
    _wait_text(page, "study-message", "Not saved")
    assert "version 3 was saved by" in page.locator("#toast").inner_text()

    # Reload: the saved edit and the updated analysis persist.
    page.reload()
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
    assert _muscle_area(page) == pytest.approx(after)
    assert "version 3" in page.locator("#analysis-version").inner_text()
    assert _is_muscle_colour(_overlay_pixel(page, 0.1, 0.08))

    # An earlier version can be viewed read-only and restored (as a new version on top).
    page.click("#versions li:has-text('v1 ·') button")
    page.wait_for_selector("#readonly-banner:not([hidden])")
    page.wait_for_function(  # the analysis panel refreshes asynchronously after the version loads
        "() => document.getElementById('analysis-version').textContent.includes('version 1')"
    )
    assert _muscle_area(page) == pytest.approx(before)
    page.click("#restore-version")
    _wait_text(page, "study-message", "Restored as version 4")
    assert page.locator("#readonly-banner").is_hidden()
    page.click("#versions li:has-text('v3 ·') button")
    page.click("#restore-version")
    _wait_text(page, "study-message", "Restored as version 5")
    page.wait_for_function(
        "() => document.getElementById('analysis-version').textContent.includes('version 5')"
    )
    assert _muscle_area(page) == pytest.approx(after)

    # Export DICOM SEG of the edited version: de-identified by default, like the DICOM download.
    with page.expect_download() as info:
        page.click("#export-dicom-seg")
    seg = pydicom.dcmread(info.value.path())
    assert seg.Modality == "SEG" and info.value.suggested_filename.endswith("-v5-deid.seg.dcm")
    assert seg.PatientID == ds.PatientID and seg.PatientIdentityRemoved == "YES"
    page.uncheck("#deidentify-exports")
    with page.expect_download() as info:
        page.click("#export-dicom-seg")
    assert info.value.suggested_filename.endswith("-v5.seg.dcm")

    page.goto(server)
    page.wait_for_selector("#study-rows tr")
    assert "edited" in page.locator("#study-rows").inner_text()
    _shot(page, "studies")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#study-rows button:has-text('Delete')")
    page.wait_for_selector("#no-studies:not([hidden])")


def test_a_deleted_study_is_not_shown_from_the_pages_memory(
    page: object, server: str, tmp_path: Path
) -> None:
    """Back to a study after deleting it in the list showed its patient, images and lines from the page's
    memory (with "No study with id ..." in a corner of the status line); a link to a study that is gone
    showed an empty page (the error only in the browser's console)."""
    from test_e2e_first_use import _upload
    from web_synth import write_series

    study_id = _upload(page, write_series(tmp_path / "series"))
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=120000)
    page.click("#nav-studies")
    page.wait_for_selector("#study-rows tr")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#study-rows button:has-text('Delete')")
    page.wait_for_selector("#no-studies:not([hidden])")
    gone = f"No study with id '{study_id}'"
    # said in the toast (shown 8 s, so not asked to be visible still: a loaded machine may look later) or
    # the status line; each reach starts with both empty
    said = "(gone) => [document.getElementById('toast'), document.getElementById('study-message')]"
    said += ".some((el) => el.textContent.startsWith(gone))"
    clear = "for (const id of ['toast', 'study-message']) document.getElementById(id).textContent = ''"
    for reach in ("back", "link"):
        page.evaluate(clear)
        if reach == "back":
            page.go_back()
        else:  # a link followed from elsewhere: the page loaded anew at the study's address
            page.goto("about:blank")
            page.goto(f"{server}/#/study/{study_id}")
        page.wait_for_function(said, arg=gone)
        assert page.locator("#view-study").is_hidden(), reach
        assert page.locator("#study-title").inner_text() == "", reach
        page.wait_for_selector("#no-studies:not([hidden])")  # the study list, where it is not
        assert page.url == f"{server}/#/", reach


@contextmanager
def _login_page(settings: WebSettings) -> Iterator[tuple[object, str]]:
    """A browser page on a server started with `settings`, showing the login form; yields (page, URL)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _running(settings) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#view-login:not([hidden])")
        yield page, url
        browser.close()


def _submit_login(page: object, secret: str, user: str | None = None) -> None:
    if user is not None:
        page.fill("#login-user", user)
    page.fill("#login-token", secret)
    page.click("#login-form button[type=submit]")


def test_login_with_access_token(tmp_path: Path) -> None:
    settings = WebSettings(data_dir=tmp_path / "data", token="a-long-access-token", token_user="dr.alice")
    with _login_page(settings) as (page, _):
        assert page.locator("#login-user-field").is_hidden()  # one user, named by the server
        assert page.locator("#login-secret-name").inner_text() == "Access token"
        _submit_login(page, "wrong-token")
        page.wait_for_selector("#login-error:has-text('access token is wrong')")
        _submit_login(page, "a-long-access-token")
        page.wait_for_selector("#view-studies:not([hidden])")
        assert page.locator("#user-box").inner_text().startswith("Signed in as dr.alice")
        page.click("#user-box button")  # sign out
        page.wait_for_selector("#view-login:not([hidden])")


def test_signing_out_leaves_no_patient_data_in_the_page(tmp_path: Path) -> None:
    """On a shared workstation the next person at the browser finds the sign-in form and nothing else: no
    study list (patient IDs) hidden in the page, and they sign in once."""
    from web_synth import write_series, zip_bytes

    from sarcoscope.store import Store
    from sarcoscope.web.accounts import add_user

    store = Store(tmp_path / "data")
    store.migrate()
    add_user(store, "dr. alice", "alices-password-1")
    add_user(store, "dr. bob", "bobs-password-1")
    store.close()
    upload = {
        "name": "ct.zip",
        "mimeType": "application/zip",
        "buffer": zip_bytes(write_series(tmp_path / "s")),
    }
    with _login_page(WebSettings(data_dir=tmp_path / "data")) as (page, url):
        _submit_login(page, "alices-password-1", "dr. alice")
        page.wait_for_selector("#view-studies:not([hidden])")
        assert page.request.post(f"{url}/api/studies", multipart={"files": upload}).status == 201
        page.goto(f"{url}/#/")
        page.wait_for_selector("#view-studies:not([hidden]) :text('PAT-001')")
        page.click("#user-box button")  # sign out
        page.wait_for_selector("#view-login:not([hidden])")
        assert "PAT-001" not in page.content()
        _submit_login(page, "bobs-password-1", "dr. bob")
        page.wait_for_selector("#view-studies:not([hidden]) :text('PAT-001')")
        assert page.locator("#view-login").is_hidden()
        assert page.locator("#user-box").inner_text().startswith("Signed in as dr. bob")


def test_a_session_that_expires_leaves_no_patient_on_an_unattended_screen(tmp_path: Path) -> None:
    """A workstation left with a study list open: when the session expires, the page shows the sign-in form
    by itself, not at the next click, so the patients' data is not on screen for whoever comes by."""
    from web_synth import write_series, zip_bytes

    upload = {
        "name": "ct.zip",
        "mimeType": "application/zip",
        "buffer": zip_bytes(write_series(tmp_path / "s")),
    }
    settings = WebSettings(data_dir=tmp_path / "data", token="a-long-access-token", session_hours=4 / 3600)
    with _login_page(settings) as (page, url):
        _submit_login(page, "a-long-access-token")
        page.wait_for_selector("#view-studies:not([hidden])")
        assert page.request.post(f"{url}/api/studies", multipart={"files": upload}).status == 201
        page.evaluate("location.reload()")  # the list with the patient, read with the session
        page.wait_for_selector("#view-studies:not([hidden]) :text('PAT-001')")
        page.wait_for_selector("#view-login:not([hidden])", timeout=12000)  # nothing touched meanwhile
        assert page.locator("#view-studies").is_hidden()


def test_a_screen_left_unattended_signs_out_after_the_idle_time_and_one_in_use_does_not(
    tmp_path: Path,
) -> None:
    """The session lasted --session-hours (12 h) however long the workstation stood unattended, the patients'
    data on its screen. It now ends after the idle time without use; work that sends no request (keys,
    clicks, the wheel: painting labels) keeps it, the page saying so (GET /api/session)."""
    settings = WebSettings(
        data_dir=tmp_path / "data", token="a-long-access-token", session_hours=1.0, idle_minutes=0.1
    )
    with _login_page(settings) as (page, _url):
        _submit_login(page, "a-long-access-token")
        page.wait_for_selector("#view-studies:not([hidden])")
        for _ in range(12):  # 12 s in use, twice the idle time: no request of the page's own
            page.keyboard.press("Shift")
            page.wait_for_timeout(1000)
        assert page.locator("#view-login").is_hidden() and page.locator("#view-studies").is_visible()
        page.wait_for_selector("#view-login:not([hidden])", timeout=12000)  # then nothing touched
        assert page.locator("#view-studies").is_hidden()


def test_model_choice_is_offered_for_unet_and_recorded(
    page: object, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segmentation step offers the installed models (the site default preselected) for the U-Net only,
    and the label version records the model the user chose."""
    import json
    import shutil

    from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, load_model_card
    from sarcoscope.segmentation.registry import MODELS_DIR_ENV, ModelRegistry

    shipped = load_model_card(DEFAULT_MODEL_DIR)["model_id"]
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "registry"))
    copy = tmp_path / "site-model"  # the shipped network under another id: a second installed model
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    card = json.loads((copy / "model_card.json").read_text()) | {"model_id": "site-model"}
    (copy / "model_card.json").write_text(json.dumps(card))
    ModelRegistry().add(copy)

    phantom = write_phantom(tmp_path / "phantom", seed=1, shape_xy=192, slice_thickness_mm=5.0)
    page.set_input_files("#pick-files", [str(f) for f in sorted(Path(phantom["paths"]["dicom"]).iterdir())])
    page.wait_for_url("**/#/study/*", timeout=30000)
    study_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_function("document.getElementById('l3-confidence').textContent.length > 0", timeout=30000)
    page.select_option("#engine", "threshold")
    assert page.locator("#model-choice").is_hidden()
    page.select_option("#engine", "unet")
    assert page.locator("#model-choice").is_visible()
    assert page.locator("#model").input_value() == shipped
    assert page.locator("#model option").all_inner_texts() == [f"{shipped} (default)", "site-model"]
    page.select_option("#model", "site-model")
    page.click("#segment")
    page.wait_for_url("**/label", timeout=60000)
    versions = page.request.get(f"{server}/api/studies/{study_id}/versions").json()
    assert versions[0]["engine"] == "unet" and versions[0]["model_id"].startswith("site-model+refine-v")


def test_login_with_an_account_and_sign_out(tmp_path: Path) -> None:
    from sarcoscope.store import Store
    from sarcoscope.web.accounts import add_user

    store = Store(tmp_path / "data")
    store.migrate()
    add_user(store, "dr. bob", "bobs-password-1")
    store.close()
    with _login_page(WebSettings(data_dir=tmp_path / "data")) as (page, url):
        assert page.locator("#login-secret-name").inner_text() == "Password"
        _submit_login(page, "not-his-password", "dr. bob")
        page.wait_for_selector("#login-error:has-text('Wrong user name or password')")
        _submit_login(page, "bobs-password-1")
        page.wait_for_selector("#view-studies:not([hidden])")
        assert page.locator("#user-box").inner_text().startswith("Signed in as dr. bob")
        cookie = next(c for c in page.context.cookies() if c["name"] == "sarcoscope_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.click("#user-box button")  # sign out: the session ends on the server too
        page.wait_for_selector("#view-login:not([hidden])")
        stale = page.request.get(
            f"{url}/api/studies", headers={"Cookie": f"sarcoscope_session={cookie['value']}"}
        )
        assert stale.status == 401
        page.reload()
        page.wait_for_selector("#view-login:not([hidden])")


def test_search_criteria_are_never_in_a_request_url(tmp_path: Path) -> None:
    """The study list's search and the PACS panel's search sent their criteria (a patient's name or ID) in
    the URL's query string: the server's own access log leaves it out, but a reverse proxy in front of it
    logs the URL in its error log (nginx 'request: "GET /api/pacs/studies?patient_name=..."', Caddy's
    http.log.error 'uri') whenever the server is restarting or slow. They now go in a POST body."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    nothing_there = (
        f"http://127.0.0.1:{_free_port()}/dicom-web"  # the PACS search fails: its URL is what counts
    )
    settings = WebSettings(data_dir=tmp_path / "data", dicomweb_url=nothing_there)
    with _running(settings) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_context(bypass_csp=True).new_page()
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(url)
        page.wait_for_selector("#pacs-form")
        listing = ("/api/studies", "/api/studies/search")
        with page.expect_request(lambda r: urlsplit(r.url).path in listing, timeout=15000):
            page.fill("#study-search", "Jansen")
        page.fill("#pacs-patient_name", "Jansen*")
        page.fill("#pacs-patient_id", "12345678")
        page.click("#pacs-form button[type=submit]")
        page.wait_for_function("document.getElementById('pacs-error').textContent.length > 0", timeout=30000)
        browser.close()
    assert not [u for u in urls if "Jansen" in u or "12345678" in u], urls
