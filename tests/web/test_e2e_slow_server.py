"""End-to-end in headless chromium (see test_e2e.py): a slow server's answer for a study the user has left
(by the study list, Back, a link) is not applied to the study opened since. Each answer is held back with
Playwright's routing until the user has moved on, then let through.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import test_e2e
from web_synth import multipart, synthetic_hu, write_series

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page


def _two_studies(server: str, tmp_path: Path) -> tuple[str, str]:
    """Studies A (patient PAT-A, the synthetic abdomen upside down) and B (PAT-B), uploaded by the API."""
    ids = []
    for name, hu in (("A", synthetic_hu(1)[:, ::-1]), ("B", synthetic_hu(2))):
        files = write_series(tmp_path / name, seed=ord(name), patient_id=f"PAT-{name}", hu=hu.copy())
        r = httpx.post(f"{server}/api/studies", files=multipart(files), timeout=60)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids[0], ids[1]


def _held(page: object, pattern: str) -> list:
    held: list = []
    page.route(pattern, lambda route: held.append(route))
    return held


def _wait_held(page: object, held: list) -> None:
    for _ in range(1500):
        if held:
            return
        page.wait_for_timeout(20)
    raise AssertionError("no request was made")


def _open_from_list(page: object, patient: str) -> None:
    page.click("#nav-studies")
    page.click(f"#study-rows tr:has-text('{patient}')")


def _settle(page: object) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)


def _shown(page: object, patient: str) -> None:
    page.wait_for_function(
        "(p) => document.getElementById('study-title').textContent.startsWith(p)", arg=patient
    )


def _segment(server: str, studies: tuple[str, str]) -> None:
    """Version 1 of each study: slice 5 by the threshold engine."""
    for sid in studies:
        api = f"{server}/api/studies/{sid}"
        httpx.put(f"{api}/selection", json={"mode": "slice", "first": 5}).raise_for_status()
        httpx.post(f"{api}/segment", json={"engine": "threshold"}, timeout=60).raise_for_status()


@pytest.fixture
def studies(page: object, server: str, tmp_path: Path) -> tuple[str, str]:
    """Studies A and B, located (too few slices: lines by hand), the page on the study list."""
    ids = _two_studies(server, tmp_path)
    for sid in ids:
        httpx.post(f"{server}/api/studies/{sid}/localize", json={}, timeout=60).raise_for_status()
    page.goto(server)
    page.wait_for_selector("#study-rows tr:has-text('PAT-B')")
    return ids


def test_a_study_read_after_the_user_went_back_to_the_list_is_not_shown(
    page: object, studies: tuple[str, str]
) -> None:
    """A study is read from the server before it is shown; an answer that came after the user had gone back
    to the study list showed the study under the list (both views at once, the address the list's)."""
    a, _ = studies
    held = _held(page, f"**/api/studies/{a}")
    page.click("#study-rows tr:has-text('PAT-A')")
    _wait_held(page, held)
    page.click("#nav-studies")
    page.wait_for_selector("#view-studies:not([hidden])")
    held[0].continue_()
    _settle(page)
    assert page.locator("#view-study").is_hidden()
    assert page.locator("#study-title").inner_text() == ""


def test_a_volume_arriving_after_another_study_was_opened_is_not_drawn_over_it(
    page: object, studies: tuple[str, str]
) -> None:
    """NiiVue adds a volume when it comes: patient A's, arriving after the user had gone on to patient B, was
    drawn over B's images (as an overlay), under B's name."""
    a, _ = studies
    held = _held(page, f"**/api/studies/{a}/volume.nii.gz")
    page.click("#study-rows tr:has-text('PAT-A')")
    _wait_held(page, held)
    _open_from_list(page, "PAT-B")
    page.wait_for_function("document.getElementById('mpr').dataset.window === '40,400'", timeout=60000)
    page.mouse.move(0, 0)
    page.wait_for_timeout(500)  # (not "network idle": A's volume is still held)
    before = page.locator("#mpr-canvas").screenshot()
    held[0].continue_()
    page.wait_for_timeout(3000)  # A's volume read and, before the fix, drawn
    _settle(page)
    _shown(page, "PAT-B")
    assert page.locator("#mpr-canvas").screenshot() == before


def _segmenting(page: object, study_id: str, patient: str) -> list:
    """Open the study from the list and press "Segment selected" (threshold); its request is held."""
    page.click(f"#study-rows tr:has-text('{patient}')")
    _shown(page, patient)
    page.select_option("#engine", "threshold")
    held = _held(page, f"**/api/studies/{study_id}/segment")
    page.click("#segment")
    _wait_held(page, held)
    return held


def test_a_segmentation_ending_after_another_study_was_opened_leaves_the_user_there(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """ "Segment selected" went on, when the server answered, to the label view of the study open *then*: a
    user who had gone on to patient B was taken to B's label view (where an unsaved edit would have been
    dropped). Now the user stays, told that A's segmentation is done."""
    a, b = studies
    held = _segmenting(page, a, "PAT-A")
    _open_from_list(page, "PAT-B")
    _shown(page, "PAT-B")
    held[0].continue_()
    test_e2e._wait_text(page, "toast", "The segmentation of PAT-A is done")
    _settle(page)
    assert page.evaluate("location.hash") == f"#/study/{b}"
    assert page.locator("#pane-l3").is_visible() and page.locator("#pane-label").is_hidden()
    assert httpx.get(f"{server}/api/studies/{a}").json()["latest_version"] == 1


def test_a_selection_saved_after_another_study_was_opened_does_not_make_it_the_one_edited(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """Moving an L3 line saves the selection, and the study the server returns was kept as the page's: one
    answered after the user had gone on to patient B made patient A the page's study again, so B's next line
    move was saved as A's selection."""
    a, b = studies
    page.click("#study-rows tr:has-text('PAT-A')")
    _shown(page, "PAT-A")
    held = _held(page, f"**/api/studies/{a}/selection")
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowUp")  # slice 6 -> 7, saved 0.4 s later
    _wait_held(page, held)
    _open_from_list(page, "PAT-B")
    _shown(page, "PAT-B")
    held[0].continue_()
    page.unroute(f"**/api/studies/{a}/selection")
    _settle(page)
    page.focus("#l3-viewer")
    page.keyboard.press("ArrowDown")  # B: slice 6 -> 5
    test_e2e._wait_text(page, "study-message", "Saved selection: Slice 5")
    assert httpx.get(f"{server}/api/studies/{a}").json()["selection"]["first"] == 7
    assert httpx.get(f"{server}/api/studies/{b}").json()["selection"]["first"] == 5


def test_labels_arriving_after_another_study_was_opened_are_not_shown_on_it(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A label view reads its labels as it opens: A's, arriving after the user had gone on to B's label view,
    replaced B's on screen, and Save would have stored them as B's next version."""
    a, b = studies
    _segment(server, studies)
    r = httpx.post(  # B's version 2: no labels
        f"{server}/api/studies/{b}/labels?base_version=1",
        content=bytes(96 * 96),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    held = _held(page, f"**/api/studies/{a}/labels")
    page.goto(f"{server}/#/study/{a}/label")
    _wait_held(page, held)
    page.goto(f"{server}/#/study/{b}/label")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    held[0].continue_()
    _settle(page)
    _shown(page, "PAT-B")
    painted = page.evaluate(
        """() => { const c = document.getElementById('edit-overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert painted == 0
    assert page.locator("#save-labels").inner_text() == "Save"


def test_a_save_answered_after_another_study_was_opened_leaves_that_one_editable(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A label save answered after the user had gone on (edits discarded, as asked) set its version as the
    page's: B's next save was sent as based on A's new version, and refused."""
    from test_e2e_unsaved import _stroke

    a, b = studies
    _segment(server, studies)
    page.goto(f"{server}/#/study/{a}/label")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    page.on("dialog", lambda dialog: dialog.accept())
    _stroke(page, 0.06, 0.08)
    held = _held(page, f"**/api/studies/{a}/labels?base_version=*")
    page.keyboard.press("Control+s")
    _wait_held(page, held)
    page.goto(f"{server}/#/study/{b}/label")  # "Discard your unsaved label edits?": yes
    _shown(page, "PAT-B")
    page.wait_for_selector("#metrics tr[data-tissue=muscle]", timeout=60000)
    held[0].continue_()
    _settle(page)
    _stroke(page, 0.06, 0.08)
    page.keyboard.press("Control+s")
    test_e2e._wait_text(page, "study-message", "Saved as version 2.")
    for sid in studies:
        assert [v["version"] for v in httpx.get(f"{server}/api/studies/{sid}/versions").json()] == [2, 1]


def test_server_images_arriving_after_another_study_was_opened_are_not_drawn_on_it(
    server: str, tmp_path: Path
) -> None:
    """Without WebGL the L3 view draws server PNGs as they come: patient A's coronal image, arriving after the
    user had gone on to patient B, was drawn in B's coronal view."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    a, _ = _two_studies(server, tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(test_e2e.CHROMIUM), args=[*test_e2e.ARGS, "--disable-3d-apis"]
        )
        page = browser.new_context(viewport={"width": 1360, "height": 840}, bypass_csp=True).new_page()
        page.goto(server)
        held = _held(page, f"**/api/studies/{a}/image/coronal/*")
        page.click("#study-rows tr:has-text('PAT-A')")
        _wait_held(page, held)
        _open_from_list(page, "PAT-B")
        _shown(page, "PAT-B")
        page.wait_for_selector("#l3-grid:not([hidden])")
        page.wait_for_timeout(1500)  # B's images drawn (not "network idle": A's coronal image is held)
        coronal = "document.getElementById('coronal-canvas').toDataURL()"
        before = page.evaluate(coronal)
        held[0].continue_()
        _settle(page)
        _shown(page, "PAT-B")
        assert page.evaluate(coronal) == before
        browser.close()


def _slow_network(page: object, bytes_per_second: float) -> object:
    """The page's network slowed to `bytes_per_second`; returns the CDP session (for _loaded)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    _throttle(cdp, bytes_per_second)
    return cdp


def _throttle(cdp: object, bytes_per_second: float) -> None:
    conditions = {"offline": False, "latency": 0, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**conditions, "downloadThroughput": bytes_per_second})


def _says_part_loaded(page: object) -> None:
    page.wait_for_function(  # part of the volume, said in MB
        "/^Loading the images… [1-9][0-9]? % \\(\\d+\\.\\d of \\d+\\.\\d MB\\)$/"
        ".test(document.getElementById('study-message').textContent)",
        timeout=30000,
    )


def _loaded(page: object, cdp: object) -> None:
    """The network as it is again: the volume comes, is shown, and the status line is emptied."""
    _throttle(cdp, -1)
    page.wait_for_function("document.getElementById('mpr').dataset.window", timeout=60000)
    page.wait_for_function("!document.getElementById('study-message').textContent.startsWith('Loading')")


def test_a_volume_that_takes_a_while_to_come_says_how_far_it_is(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A large volume (hundreds of slices, tens of MB) said "Loading the images…" and nothing more until it
    came, a minute on a slow network: the user could not tell a slow download from a stalled one. The status
    line now says how much has come; emptied once the images are shown. (The network here is slowed so that
    the small test volume takes a few seconds.)"""
    a, _ = studies
    size = len(httpx.get(f"{server}/api/studies/{a}/volume.nii.gz").content)
    cdp = _slow_network(page, size / 3)
    page.click("#study-rows tr:has-text('PAT-A')")
    _says_part_loaded(page)
    _loaded(page, cdp)


def test_a_study_opened_again_while_its_volume_comes_says_so(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    """A study left for the list while its volume came, then opened again, showed an empty status line and a
    black viewer until the volume came: the view took the volume on its way for one already shown and said
    nothing. It now waits for that volume, saying how far it is."""
    a, _ = studies
    size = len(httpx.get(f"{server}/api/studies/{a}/volume.nii.gz").content)
    cdp = _slow_network(page, size / 6)
    page.click("#study-rows tr:has-text('PAT-A')")
    _says_part_loaded(page)
    _open_from_list(page, "PAT-A")
    _shown(page, "PAT-A")
    _says_part_loaded(page)
    _loaded(page, cdp)
