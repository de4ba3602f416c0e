"""End-to-end: a viewer's page shows their role and has the controls of changes and deletions off, each saying
why, and sends no change (Debian's chromium, driven by Playwright, against a live server; see test_e2e)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_api import delete_study
from test_e2e import ARGS, CHROMIUM, _submit_login, _wait_text
from test_e2e_unsaved import _accounts, _stroke

from sarcoscope.web.accounts import set_role

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


def test_a_viewer_sees_the_write_controls_off_with_the_reason(tmp_path: Path, series: list[Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _accounts(tmp_path, series, ("dr. eddie", "dr. vera")) as (app, url, _, sid):
        set_role(app.state.ctx.store, "dr. vera", "viewer")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
            sent: list[tuple[str, str]] = []
            page.on("request", lambda r: sent.append((r.method, urlsplit(r.url).path)))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            _submit_login(page, "veras-password-1", "dr. vera")
            page.wait_for_selector("#view-studies:not([hidden]) :text('PAT-001')")
            assert page.locator("#user-box").inner_text().startswith("Signed in as dr. vera")
            assert page.locator("#user-role").inner_text() == "viewer"

            def off(selector: str, reason: str) -> None:
                control = page.locator(selector)
                assert control.is_disabled(), selector
                title = control.get_attribute("title") or ""
                assert title.startswith(f"Not allowed: your role (viewer) may not {reason}"), selector

            off("#study-rows button", "delete studies")
            off("#pick-files", "change studies")
            off("#pick-folder", "change studies")
            page.click("#study-rows tr")  # the study opens: its images, L3 lines and labels are shown
            page.wait_for_selector("#pane-l3:not([hidden])")
            page.wait_for_function("document.getElementById('l3-viewer').dataset.lines === '5'")
            for selector in ("#segment", "#mode-slice", "#mode-range"):
                off(selector, "change studies")
            page.focus("#l3-viewer")
            page.keyboard.press("ArrowUp")  # the L3 line stays where the editor put it
            assert page.locator("#l3-viewer").get_attribute("data-lines") == "5"
            assert page.locator("#study-message").inner_text().startswith("Not allowed: your role (viewer)")

            page.click("#tab-label")
            page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=30000)
            for selector in (
                "#save-labels",
                "#tool-brush",
                "#undo",
                "#height",
                "#patient-form button[type=submit]",
                "#import-form button[type=submit]",
            ):
                off(selector, "change studies")
            _stroke(page, 0.06, 0.08)  # nothing is painted, and said why
            assert page.locator("#save-labels").inner_text() == "Save"
            assert page.locator("#study-message").inner_text().startswith("Not allowed: your role (viewer)")
            changes = [(m, path) for m, path in sent if m != "GET" and path != "/api/session"]
            assert changes == []  # not even the localizer was asked (it places the L3 selection)
            # the server is the guard all the same
            r = page.request.put(f"{url}/api/studies/{sid}/selection", data={"mode": "slice", "first": 6})
            assert r.status == 403 and "viewer" in r.json()["detail"]
            assert errors == [], f"JavaScript errors: {errors}"
            browser.close()
        assert [v.version for v in app.state.ctx.store.list_versions(sid)] == [1]


def test_a_role_that_may_no_longer_delete_stops_showing_the_deleted_studies(
    tmp_path: Path, series: list[Path]
) -> None:
    """An admin's page listing the deleted studies (their patients' IDs) kept listing them after the admin's
    role was lowered: the page learns of it at its next use and turned the controls off, but left the list
    on screen, and open, until the study list was read again."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with _accounts(tmp_path, series, ("dr. ada", "dr. eddie")) as (app, url, client, sid):
        store = app.state.ctx.store
        set_role(store, "dr. ada", "admin")
        delete_study(client, sid, store).raise_for_status()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
            page.clock.install()
            page.goto(url)
            _submit_login(page, "adas-password-1", "dr. ada")
            page.click("#deleted-studies summary")
            page.wait_for_selector("#deleted-rows tr:has-text('PAT-001')")
            set_role(store, "dr. ada", "editor")
            page.clock.fast_forward(61_000)  # the page asks for its role at most once a minute of use
            page.keyboard.press("Shift")
            _wait_text(page, "toast", "Your role is now editor")
            assert page.locator("#deleted-studies").is_hidden()
            assert page.locator("#deleted-rows tr").count() == 0
            browser.close()
