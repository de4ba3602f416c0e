"""In the browser: a study deleted by mistake is put back from the list's "Deleted studies" (an admin's; the
open mode's user is the admin), and one there can be erased at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import test_e2e
from test_e2e_slow_server import _two_studies, studies

pytestmark = test_e2e.pytestmark
server, page = test_e2e.server, test_e2e.page
_ = studies  # the fixture


def _kept(page: object) -> list[str]:
    return page.eval_on_selector_all("#deleted-rows tr", "rows => rows.map((r) => r.cells[0].textContent)")


def test_a_deleted_study_is_restored_from_the_list(
    page: object, server: str, studies: tuple[str, str]
) -> None:
    a, b = studies
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#study-rows tr:has-text('PAT-A') button").click()
    page.wait_for_selector("#study-rows tr:has-text('PAT-A')", state="detached")
    page.click("#deleted-studies summary")
    page.wait_for_selector("#deleted-rows tr:has-text('PAT-A')")
    assert _kept(page) == ["PAT-A"]

    page.locator("#deleted-rows tr:has-text('PAT-A') button:has-text('Restore')").click()
    page.wait_for_selector("#study-rows tr:has-text('PAT-A')")
    page.wait_for_selector("#no-deleted", state="visible")
    assert _kept(page) == []
    assert httpx.get(f"{server}/api/studies/{a}").status_code == 200

    page.locator("#study-rows tr:has-text('PAT-B') button").click()
    page.wait_for_selector("#deleted-rows tr:has-text('PAT-B')")  # the open box follows the deletion
    page.locator("#deleted-rows tr:has-text('PAT-B') button:has-text('Erase now')").click()
    page.wait_for_selector("#no-deleted", state="visible")
    assert httpx.get(f"{server}/api/deleted-studies").json() == []
    assert httpx.post(f"{server}/api/deleted-studies/{b}/restore").status_code == 404


def test_a_server_that_erases_at_once_shows_no_deleted_studies(page: object, server: str) -> None:
    """The box is for servers that keep deletions: this one's configuration says 0 days."""
    config = {**httpx.get(f"{server}/api/config").json(), "keep_deleted_days": 0}
    page.route("**/api/config", lambda route: route.fulfill(json=config))
    page.goto(server)
    page.wait_for_selector("#no-studies", state="visible")
    assert page.locator("#deleted-studies").is_hidden()


def test_a_kept_deletion_whose_record_cannot_be_read_is_named_in_the_box(
    page: object, server: str, tmp_path: Path
) -> None:
    """The list leaves out a deletion whose record cannot be read (naming its id in a header): the box showed
    only the others, so an admin never learnt it was there. It says so now, by id only (no patient data)."""
    a, b = _two_studies(server, tmp_path)
    for sid in (a, b):
        httpx.delete(f"{server}/api/studies/{sid}", params={"latest_version": 0}).raise_for_status()
    (tmp_path / "data" / "trash" / a / "study.json").write_bytes(b'{"deletion_id": "')
    page.goto(server)
    page.wait_for_selector("#study-rows tr, #no-studies:not([hidden])")
    page.click("#deleted-studies summary")
    page.wait_for_selector("#deleted-rows tr:has-text('PAT-B')")
    assert _kept(page) == ["PAT-B"]
    line = page.locator("#unreadable-deleted")
    line.wait_for(state="visible")
    assert line.inner_text() == (
        f"1 deleted study could not be read (id {a}): it is kept, not listed; see the server's log."
    )
    assert page.locator("#deleted-count").inner_text() == "(2)"
    assert page.locator("#no-deleted").is_hidden()
