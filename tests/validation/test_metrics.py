"""Metrics against hand-computed answers, including the empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarcoscope.errors import ValidationInputError
from sarcoscope.validation.metrics import (
    case_metrics,
    confusion_matrix,
    dice,
    iou,
    iou_to_dice,
    msv_metrics,
    overlap_counts,
)

# 3x4 maps. Muscle (1): pred 4 px, ref 3 px, overlap 2 -> Dice 4/7, IoU 2/5.
PRED = np.array([[1, 1, 2, 0], [1, 1, 3, 3], [0, 2, 2, 0]], dtype=np.uint8)
REF = np.array([[1, 1, 2, 2], [0, 2, 3, 0], [1, 2, 2, 0]], dtype=np.uint8)


def test_hand_computed_per_label():
    assert overlap_counts(PRED, REF, 1) == (2, 2, 1)
    assert dice(PRED, REF, 1) == pytest.approx(4 / 7)
    assert iou(PRED, REF, 1) == pytest.approx(2 / 5)
    # SAT (2): pred {(0,2),(2,1),(2,2)}, ref {(0,2),(0,3),(1,1),(2,1),(2,2)}: tp 3, fp 0, fn 2.
    assert dice(PRED, REF, 2) == pytest.approx(6 / 8)
    assert iou(PRED, REF, 2) == pytest.approx(3 / 5)
    # VAT (3): pred {(1,2),(1,3)}, ref {(1,2)}: Dice 2/3, IoU 1/2.
    assert dice(PRED, REF, 3) == pytest.approx(2 / 3)
    assert iou(PRED, REF, 3) == pytest.approx(1 / 2)


def test_msv_union_and_mean():
    # Union of 1,2,3: pred 9 px, ref 9 px, both foreground at 7 positions -> Dice 14/18, IoU 7/11.
    m = msv_metrics(PRED, REF)
    assert m["msv_dice"] == pytest.approx(14 / 18)
    assert m["msv_iou"] == pytest.approx(7 / 11)
    assert m["msv_mean_dice"] == pytest.approx((4 / 7 + 6 / 8 + 2 / 3) / 3)
    assert m["msv_mean_iou"] == pytest.approx((2 / 5 + 3 / 5 + 1 / 2) / 3)
    # A collection label is the same union.
    assert dice(PRED, REF, (1, 2, 3)) == m["msv_dice"]


def test_empty_masks_are_defined():
    empty = np.zeros((4, 4), np.uint8)
    assert dice(empty, empty, 4) == 1.0
    assert iou(empty, empty, 4) == 1.0
    some = empty.copy()
    some[1, 1] = 4
    # Empty reference, non-empty prediction: a model error scored 0, not a crash or NaN.
    assert dice(some, empty, 4) == 0.0
    assert iou(some, empty, 4) == 0.0
    assert dice(empty, some, 4) == 0.0
    m = case_metrics(some, empty, pixel_spacing=(1.0, 1.0))
    assert m["imat_dice"] == 0.0
    assert math.isnan(m["imat_area_err_pct"])  # % of a zero reference area is undefined
    assert m["imat_area_err_cm2"] == pytest.approx(0.01)


def test_iou_dice_relation():
    assert iou_to_dice(0.9) == pytest.approx(0.947368, abs=1e-6)
    for lab in (1, 2, 3):
        assert dice(PRED, REF, lab) == pytest.approx(iou_to_dice(iou(PRED, REF, lab)))


def test_case_metrics_areas_and_hu():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = case_metrics(PRED, REF, pixel_spacing=(0.5, 2.0), image=image)
    # one pixel = 1 mm² = 0.01 cm²
    assert m["muscle_area_pred_cm2"] == pytest.approx(0.04)
    assert m["muscle_area_ref_cm2"] == pytest.approx(0.03)
    assert m["muscle_area_err_cm2"] == pytest.approx(0.01)
    assert m["muscle_area_err_pct"] == pytest.approx(100 / 3)
    # muscle HU: pred pixels 0,1,4,5 -> 2.5; ref pixels 0,1,8 -> 3.0
    assert m["muscle_hu_pred"] == pytest.approx(2.5)
    assert m["muscle_hu_ref"] == pytest.approx(3.0)
    assert m["muscle_hu_diff"] == pytest.approx(-0.5)
    assert math.isnan(m["imat_hu_pred"]) and m["imat_dice"] == 1.0


def test_stack_area_is_mean_per_slice():
    stack_p = np.stack([PRED, PRED])
    stack_r = np.stack([REF, np.zeros_like(REF)])
    m = case_metrics(stack_p, stack_r, pixel_spacing=(10.0, 10.0))  # 1 cm² per pixel
    assert m["muscle_area_pred_cm2"] == pytest.approx(4.0)
    assert m["muscle_area_ref_cm2"] == pytest.approx(1.5)
    assert m["muscle_dice"] == pytest.approx(4 / 11)  # tp 2, pred 8, ref 3


def test_confusion_matrix():
    cm = confusion_matrix(PRED, REF)
    assert cm.shape == (5, 5)
    assert cm.sum() == PRED.size
    assert cm[1, 1] == 2 and cm[1, 0] == 1  # ref muscle predicted as muscle twice, as background once
    assert cm[2, 1] == 1 and cm[0, 3] == 1
    assert np.array_equal(np.diag(cm)[1:4], [2, 3, 1])


def test_shape_mismatch_is_a_validation_error():
    with pytest.raises(ValidationInputError, match="different shapes"):
        dice(PRED, REF[:, :3], 1)
    with pytest.raises(ValidationInputError, match="Image shape"):
        case_metrics(PRED, REF, image=np.zeros((2, 2)))
    with pytest.raises(ValidationInputError, match=r"outside 0\.\.4"):
        confusion_matrix(PRED + 5, REF)
