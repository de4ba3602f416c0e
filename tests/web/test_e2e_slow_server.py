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
    while not held:
        page.wait_for_timeout(20)


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


@pytest.fixture
def studies(page: object, server: str, tmp_path: Path) -> tuple[str, str]:
    """Studies A and B, located (too few slices: lines by hand), the page on the study list."""
    ids = _two_studies(server, tmp_path)
    for sid in ids:
        httpx.post(f"{server}/api/studies/{sid}/localize", json={}, timeout=60).raise_for_status()
    page.goto(server)
    page.wait_for_selector("#study-rows tr:has-text('PAT-B')")
    return ids


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
