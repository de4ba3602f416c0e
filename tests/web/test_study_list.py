"""The study list shows the segmentation quality score of each study's latest label version and its
"review" flag, so that the studies whose segmentation needs a look are found without opening each: read
from the score stored with the version (no label data), for the whole list in one query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from test_api import CORNER, get_labels, hold_second_opinion, segmented, upload
from web_synth import write_series

from sarcoscope.segmentation import quality as quality_module
from sarcoscope.segmentation.quality import QUALITY_VERSION
from sarcoscope.store import Store
from store_rows import study_row

LABELS = np.ones((1, 4, 5), np.uint8)


def _stored_score(*dice: float) -> dict[str, Any]:
    """A score as QualityAssessment.to_dict stores it: one slice per engine Dice (the area differences 0.02,
    scoring 0.9). Dice 0.89 scores 0.5 (the anchor); 0.871 scores 0.31, 0.929 scores 0.89."""
    return {
        "version": QUALITY_VERSION,
        "slices": [{"engine_muscle_dice": d, "engine_muscle_area_diff": 0.02} for d in dice],
        "unavailable": {"expected_muscle_dice": "no network", "mirror_muscle_dice": "no network"},
        "second_opinion": "sarcoscope-unet-v7",
    }


def _study(store: Store, n: int, *versions: tuple[str, dict[str, Any] | None]) -> str:
    """A study row (no images: the list reads none) with label versions of these sources, each with the
    quality stored as given (None: none stored)."""
    study = store.add_study(study_row(f"1.2.3.4.{n}", f"PAT-{n}"), actor="alice")
    for i, (source, quality) in enumerate(versions):
        row = store.save_version(
            study.id, base_version=i or None, labels=LABELS + i, indices=[2], author="a", source=source
        )
        if quality is not None:
            assert store.keep_quality(study.id, row.version, row.sha256, quality)
    return study.id


def _listed_quality(client: TestClient) -> dict[str, dict[str, Any]]:
    return {s["id"]: s["quality"] for s in client.get("/api/studies").json()}


def test_the_list_shows_the_stored_score_of_each_studys_latest_version_in_one_query(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores stored by a server process (here none of this one's: only the database knows them): the
    latest version's score as printed and its flag, or why there is none, with the reasons the analysis
    panel gives; its label data is not read, and the list reads every study's latest version in one query
    (it read the latest version number with one query per study)."""
    store = client.app.state.ctx.store
    flagged = _study(store, 1, ("segment", _stored_score(0.929, 0.871)))
    ok = _study(store, 2, ("segment", _stored_score(0.929)))
    edited = _study(store, 3, ("segment", _stored_score(0.929)), ("edit", None))
    imported = _study(store, 4, ("import", None))
    unscored = _study(store, 5, ("segment", None))
    older = _study(store, 6, ("segment", {**_stored_score(0.929), "version": QUALITY_VERSION - 1}))
    bare = _study(store, 7)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the list read a version's label data")

    monkeypatch.setattr(store, "load_labels", refused)
    monkeypatch.setattr(store, "get_version", refused)
    shown = _listed_quality(client)
    assert shown[flagged] == {
        "status": "computed",
        "version": 1,
        "threshold": 0.5,
        "score": 0.31,
        "score_text": "0.31",
        "flagged": True,
    }
    assert shown[ok] == {**shown[flagged], "score": 0.89, "score_text": "0.89", "flagged": False}
    reasons = {sid: block.pop("reason") for sid, block in shown.items() if sid not in (flagged, ok)}
    assert all(block == {"status": "not computed"} for sid, block in shown.items() if sid in reasons)
    assert reasons[edited].startswith("label version 2 was edited by hand, not made by an engine")
    assert reasons[imported].startswith("label version 1 was imported from a file, not made by an engine")
    assert reasons[unscored].startswith("no score is stored with this version")
    assert reasons[older].startswith(
        f"the score stored with this version cannot be shown: scored by version {QUALITY_VERSION - 1}"
    )
    assert reasons[bare] == "no label version yet: nothing segmented to score"
    listed = {s["id"]: s["latest_version"] for s in client.get("/api/studies").json()}
    assert listed == {flagged: 1, ok: 1, edited: 2, imported: 1, unscored: 1, older: 1, bare: None}

    def statements_of_a_list() -> list[str]:
        seen: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        event.listen(store.engine, "before_cursor_execute", record)
        try:
            assert client.get("/api/studies").status_code == 200
        finally:
            event.remove(store.engine, "before_cursor_execute", record)
        return seen

    few = statements_of_a_list()
    for n in range(8, 48):
        _study(store, n, ("segment", _stored_score(0.91)))
    many = statements_of_a_list()
    assert len(_listed_quality(client)) == 47
    assert len(many) == len(few), many
    assert len([s for s in many if "label_versions" in s]) == 1, many
    assert not any("label_versions.data" in s for s in many)


def test_the_list_shows_the_score_and_flag_the_analysis_panel_shows(
    client: TestClient, series: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segmented by the server: while the score is computed the list says so (without waiting for it); then
    the same score and flag as the study's analysis panel, flagged when below the review threshold; a study
    corrected by hand since shows none."""
    gate = hold_second_opinion(monkeypatch)
    scored, _ = segmented(client, series, 4, 6)
    computing = _listed_quality(client)[scored]
    assert computing["status"] == "not computed" and computing["reason"].startswith("the server is computing")
    gate.set()
    edited, _ = segmented(client, write_series(tmp_path / "other", seed=5, patient_id="PAT-002"), 4, 6)
    labels, _, _ = get_labels(client, edited)
    saved = client.post(
        f"/api/studies/{edited}/labels", params={"base_version": 1}, content=labels.tobytes(), headers=CORNER
    )
    assert saved.status_code == 201, saved.text
    uploaded = upload(client, write_series(tmp_path / "new", seed=7, patient_id="PAT-003"))["id"]
    client.app.state.ctx.jobs.wait()

    panel = client.get(f"/api/studies/{scored}/analysis").json()["quality"]
    assert panel["status"] == "computed" and panel["score"] is not None
    shown = _listed_quality(client)
    expected = {k: panel[k] for k in ("threshold", "score", "score_text", "flagged")}
    assert shown[scored] == {"status": "computed", "version": 1, **expected}
    assert shown[edited]["status"] == "not computed" and "edited by hand" in shown[edited]["reason"]
    assert shown[uploaded]["status"] == "not computed"
    # the flag is the panel's, on either side of the threshold
    for threshold, flag in ((panel["score"] + 0.01, True), (panel["score"] - 0.01, False)):
        monkeypatch.setattr(quality_module, "REVIEW_THRESHOLD", threshold)
        listed = _listed_quality(client)[scored]
        assert (listed["flagged"], listed["threshold"]) == (flag, threshold)
        assert client.get(f"/api/studies/{scored}/analysis").json()["quality"]["flagged"] is flag
