"""validate_engines: the docs/validation generator, on a tiny phantom cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarcoscope.validation.benchmark import peer_agreement, validate_engines, validate_localizer


@pytest.mark.slow
def test_validate_engines_on_phantoms_lists_unavailable_engines(tmp_path: Path):
    out = tmp_path / "docs"
    results = validate_engines(
        out, engines=("threshold", "no-such-engine"), n_phantoms=3, phantom_size=128, n_l3_volumes=0
    )
    rep = results["phantom-threshold"]
    assert not isinstance(rep, str)
    assert rep.n_cases == 3
    assert rep.dice_summary["sat"].mean > 0.5  # the baseline works on phantoms (plumbing, not quality)
    assert "Unknown segmentation engine 'no-such-engine'" in str(results["phantom-no-such-engine"])
    index = (out / "README.md").read_text()
    assert "[phantom-threshold](phantom-threshold/report.md)" in index
    assert "`phantom-no-such-engine`: not run" in index
    assert (out / "phantom-threshold" / "report.html").is_file()
    assert not (out / "phantom-threshold" / "predictions").exists()


def test_localizer_validation_on_the_real_volume(shared_data: Path, tmp_path: Path):
    rep = validate_localizer(tmp_path / "l3", shared_data=shared_data, n_volumes=0)
    assert rep.l3_summary is not None and rep.l3_summary["n"] == 1
    rows = (tmp_path / "l3" / "l3_per_case.csv").read_text().splitlines()
    assert rows[1].startswith("ts_example,73,")  # README: L3 label centroid z = 73.45 -> slice 73


def test_peer_agreement_with_totalsegmentator(shared_data: Path):
    """Threshold engine vs TotalSegmentator tissue_types on its example CT: measured 0.804 / 0.907 / 0.827."""
    scores = peer_agreement(shared_data, ("threshold", "no-such-engine"))
    threshold = scores["threshold"]
    assert not isinstance(threshold, str)
    assert threshold["muscle"] > 0.78 and threshold["sat"] > 0.88 and threshold["vat"] > 0.80
    assert "Unknown segmentation engine" in str(scores["no-such-engine"])
