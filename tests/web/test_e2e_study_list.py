"""In the browser: the study list shows the segmentation quality score of each study's latest label version,
with a "review" badge when it is flagged, a "—" saying why when there is none, and lists the studies to
review first on request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import test_e2e
from test_study_list import _stored_score, _study

from sarcoscope.web import WebSettings, create_app

pytestmark = test_e2e.pytestmark
page = test_e2e.page


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A server with three studies, newest last: PAT-1 scored 0.31 (flagged), PAT-2 scored 0.89, PAT-3
    scored and then corrected by hand (its latest version has no score)."""
    app = create_app(WebSettings(data_dir=tmp_path / "data"))
    store = app.state.ctx.store
    _study(store, 1, ("segment", _stored_score(0.929, 0.871)))
    _study(store, 2, ("segment", _stored_score(0.929)))
    _study(store, 3, ("segment", _stored_score(0.929)), ("edit", None))
    with test_e2e._running(WebSettings(data_dir=tmp_path / "data"), app) as url:
        yield url


def _listed(page: object) -> list[list[str]]:
    """Each row's patient, quality cell text, the tooltip of the quality cell and its badges' text."""
    return page.eval_on_selector_all(
        "#study-rows tr",
        """rows => rows.map((r) => {
          const q = r.querySelector("td.quality");
          return [r.cells[0].textContent, q.textContent, q.title,
                  [...q.querySelectorAll(".badge")].map((b) => b.textContent).join()];
        })""",
    )


def test_the_list_shows_which_studies_segmentation_needs_review(page: object) -> None:
    page.wait_for_selector("#study-rows tr:has-text('PAT-1')")
    listed = _listed(page)
    assert [(patient, text, badge) for patient, text, _, badge in listed] == [
        ("PAT-3", "—", ""),
        ("PAT-2", "0.89", ""),
        ("PAT-1", "0.31 review", "review"),
    ]
    titles = {patient: title for patient, _, title, _ in listed}
    assert titles["PAT-1"].startswith(
        "Segmentation quality of label version 1: 0.31 of 1 (review below 0.5): the engines disagree"
    )
    assert titles["PAT-2"] == (
        "Segmentation quality of label version 1: 0.89 of 1 (review below 0.5): not flagged for review."
    )
    assert titles["PAT-3"].startswith("No segmentation quality score: label version 2 was edited by hand")
    assert page.locator("#study-rows tr:has-text('PAT-1') .badge.review").is_visible()

    page.check("#review-first")
    page.wait_for_function("document.querySelector('#study-rows tr').cells[0].textContent === 'PAT-1'")
    assert [row[0] for row in _listed(page)] == ["PAT-1", "PAT-3", "PAT-2"]
    page.uncheck("#review-first")
    page.wait_for_function("document.querySelector('#study-rows tr').cells[0].textContent === 'PAT-3'")
    assert [row[0] for row in _listed(page)] == ["PAT-3", "PAT-2", "PAT-1"]
