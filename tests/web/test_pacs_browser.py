"""The PACS panel in Debian's headless chromium (Playwright) against a live app and a real Orthanc: search by
patient ID, open the study's series, import the CT series, then push the results from the labeling view.
Skips without chromium, Playwright, Orthanc or the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_e2e

from orthanc_server import ct_files, start_orthanc
from sarcoscope.web import WebSettings

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


def test_search_import_and_push_from_the_panel(tmp_path: Path, shared_data: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    files = ct_files(shared_data)
    with start_orthanc(tmp_path / "orthanc") as orthanc:
        study_uid = orthanc.upload(files)
        settings = WebSettings(data_dir=tmp_path / "data", dicomweb_url=orthanc.dicomweb)
        with test_e2e._running(settings) as url, sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
            # bypass_csp: Playwright's wait_for_function evaluates a string, which the CSP forbids
            page = browser.new_context(bypass_csp=True).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.fill("#pacs-patient_id", "99000")
            page.click("#pacs-form button[type=submit]")
            page.click("#pacs-rows tr", timeout=15000)
            page.click("#pacs-rows .pacs-series button:text('Import')", timeout=15000)
            page.wait_for_url("**/#/study/*", timeout=60000)
            study_id = page.url.rsplit("/", 1)[-1]
            api = page.request
            assert api.put(f"{url}/api/studies/{study_id}/selection", data={"mode": "slice", "first": 1}).ok
            assert api.post(f"{url}/api/studies/{study_id}/segment", data={"engine": "threshold"}).ok
            # the labels were made behind the page's back: it is reloaded to show them, as a push names the
            # label version shown (the server refuses one without, and the page showed none before)
            page.goto(f"{url}/#/study/{study_id}/label")
            page.reload()
            page.wait_for_selector("#versions li:has-text('v1 ·')", state="attached", timeout=30000)
            page.click("#pacs-push", timeout=30000)
            page.wait_for_function(
                "document.getElementById('pacs-push-status').textContent.startsWith('Stored')",
                timeout=60000,
            )
            assert "SEG, SR, OT" in page.locator("#pacs-push-status").inner_text()
            browser.close()
            assert errors == [], f"JavaScript errors: {errors}"
        modalities = sorted(s["00080060"]["Value"][0] for s in orthanc.series_of(study_uid))
        assert modalities == ["CT", "OT", "SEG", "SR"]
