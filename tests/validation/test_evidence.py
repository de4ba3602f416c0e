"""The default-engine rule (validation.evidence) on leave-one-out rows with known answers."""

from __future__ import annotations

import json

import pytest

from sarcoscope.conventions import TISSUES
from sarcoscope.errors import ValidationInputError
from sarcoscope.segmentation.base import DEFAULT_ENGINE, DEFAULT_ENGINE_FILE
from sarcoscope.validation.evidence import choose_default, loo_markdown, summarise


def _row(case: str, engine: str, muscle_dice: float, err_pct: float, msv_iou: float = 0.93) -> dict:
    row = {f"{t}_dice": 0.95 for t in TISSUES}
    row.update(case=case, engine=engine, muscle_dice=muscle_dice, muscle_area_err_pct=err_pct)
    row.update(msv_dice=2 * msv_iou / (1 + msv_iou), msv_iou=msv_iou)
    return row


def test_an_engine_better_on_both_is_chosen():
    rows = [
        _row("A", "threshold", 0.92, -10.0), _row("B", "threshold", 0.94, 4.0),
        _row("A", "unet", 0.95, -3.0), _row("B", "unet", 0.96, 1.0, msv_iou=0.88),
    ]  # fmt: skip
    summaries = summarise(rows)
    assert summaries["threshold"].muscle_area_abs_error_pct == pytest.approx(7.0)
    assert summaries["threshold"].muscle_area_worst_error_pct == -10.0
    assert summaries["unet"].dice["muscle"] == pytest.approx(0.955)
    assert summaries["unet"].msv_iou_good == 1
    choice = choose_default(summaries, ("threshold", "unet"))
    assert choice.engine == "unet" and "better on both" in choice.reason
    table = loo_markdown(rows, summaries)
    assert "| A | threshold |" in table and "-10.0 %" in table and "7.0 % (worst -10.0 %)" in table
    assert "1 of 2 ≥ 0.9" in table


def test_split_evidence_is_decided_by_the_muscle_area_error():
    rows = [_row("A", "threshold", 0.96, -8.0), _row("A", "unet", 0.95, 2.0)]
    choice = choose_default(summarise(rows), ("threshold", "unet"))
    assert choice.engine == "unet" and "split evidence" in choice.reason


def test_engines_must_be_scored_on_the_same_cases():
    rows = [_row("A", "threshold", 0.9, 1.0), _row("B", "threshold", 0.9, 1.0), _row("A", "unet", 0.9, 1.0)]
    with pytest.raises(ValidationInputError, match="different numbers"):
        choose_default(summarise(rows), ("threshold", "unet"))
    with pytest.raises(ValidationInputError, match="mirror"):
        choose_default(summarise(rows), ("threshold", "mirror"))


def test_the_shipped_default_is_the_recorded_decision():
    decision = json.loads(DEFAULT_ENGINE_FILE.read_text(encoding="utf-8"))
    assert decision["engine"] == DEFAULT_ENGINE and decision["rule"] and decision["reason"]
