"""Overlap and agreement metrics between a predicted and a reference label map.

Conventions (stable: other stages import these names to measure their engines):

- Label maps use the project's ids (conventions.Label). 2-D maps are (y, x); 3-D maps are (n, y, x) stacks of
  axial slices, scored as one volume (pixel counts summed over slices).
- `label` may be one id or a collection of ids; a collection is scored as ONE foreground (their union).
- **Empty masks**: when neither prediction nor reference contains the label, Dice = IoU = 1.0 (the model
  correctly found no such tissue; this equals MONAI's `ignore_empty=False`). When the reference is empty and
  the prediction is not (or the reverse), Dice = IoU = 0.0: a model error, never a crash and never NaN.
- **M+S+V** ("msv"): the paper's pooled score. `msv_dice`/`msv_iou` treat muscle, SAT and VAT (ids 1, 2, 3)
  as one foreground (their union; a muscle pixel predicted as SAT still counts as overlap);
  `msv_mean_dice`/`msv_mean_iou` are the class-aware mean of the three per-tissue scores.
- Areas are per slice (cm²): for a stack, the tissue area averaged over its slices.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from sarcoscope.conventions import TISSUES, Label
from sarcoscope.errors import ValidationInputError

#: Ids pooled into the paper's "M+S+V" score.
MSV_LABELS: tuple[int, ...] = (int(Label.MUSCLE), int(Label.SAT), int(Label.VAT))
#: Number of label ids in the project's convention (0..4), the size of the confusion matrix.
N_LABELS = len(Label)

LabelSpec = int | Collection[int]


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValidationInputError(
            f"Prediction and reference have different shapes: {pred.shape} vs {ref.shape}."
        )


def _mask(labels: np.ndarray, label: LabelSpec) -> np.ndarray:
    if isinstance(label, int | np.integer):
        return labels == label
    return np.isin(labels, np.fromiter(label, dtype=np.int64))


def overlap_counts(pred: np.ndarray, ref: np.ndarray, label: LabelSpec) -> tuple[int, int, int]:
    """True-positive, false-positive and false-negative pixel counts for `label`."""
    _check_pair(pred, ref)
    p = _mask(pred, label)
    r = _mask(ref, label)
    tp = int(np.count_nonzero(p & r))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp


def _dice_from_counts(tp: int, fp: int, fn: int) -> float:
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def _iou_from_counts(tp: int, fp: int, fn: int) -> float:
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def dice(pred: np.ndarray, ref: np.ndarray, label: LabelSpec) -> float:
    """Dice = 2|P∩R| / (|P|+|R|); 1.0 when both are empty (see module docstring)."""
    return _dice_from_counts(*overlap_counts(pred, ref, label))


def iou(pred: np.ndarray, ref: np.ndarray, label: LabelSpec) -> float:
    """IoU (Jaccard) = |P∩R| / |P∪R|; 1.0 when both are empty (see module docstring)."""
    return _iou_from_counts(*overlap_counts(pred, ref, label))


def iou_to_dice(value: float) -> float:
    """Dice equivalent of an IoU (the paper's IoU 0.9 is Dice 0.947)."""
    return 2.0 * value / (1.0 + value)


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, n_labels: int = N_LABELS) -> np.ndarray:
    """Pixel counts: row = reference label, column = predicted label (which tissue is mistaken for which)."""
    _check_pair(pred, ref)
    top = max(int(pred.max(initial=0)), int(ref.max(initial=0)))
    if top >= n_labels:
        raise ValidationInputError(f"Label id {top} is outside 0..{n_labels - 1}; map the labels first.")
    flat = ref.astype(np.int64).ravel() * n_labels + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def msv_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The pooled M+S+V scores: union foreground and class-aware mean (see module docstring)."""
    per_dice = [dice(pred, ref, lab) for lab in MSV_LABELS]
    per_iou = [iou(pred, ref, lab) for lab in MSV_LABELS]
    return {
        "msv_dice": dice(pred, ref, MSV_LABELS),
        "msv_iou": iou(pred, ref, MSV_LABELS),
        "msv_mean_dice": float(np.mean(per_dice)),
        "msv_mean_iou": float(np.mean(per_iou)),
    }


def _as_stack(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        return a[np.newaxis]
    if a.ndim != 3:
        raise ValidationInputError(f"Label maps must be 2-D (y, x) or 3-D (n, y, x); got shape {a.shape}.")
    return a


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] | None = None,
    image: np.ndarray | None = None,
    tissues: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Every per-case number: Dice/IoU per tissue and M+S+V, areas and area errors, mean-HU differences.

    Keys per tissue t (muscle, sat, vat, imat): `t_dice`, `t_iou`, `t_pixels_pred`, `t_pixels_ref`,
    `t_area_err_pct` (100·(pred−ref)/ref; NaN when the reference area is 0), and with `pixel_spacing`
    (y, x mm) `t_area_pred_cm2`, `t_area_ref_cm2`, `t_area_err_cm2`; with `image` (HU, same shape)
    `t_hu_pred`, `t_hu_ref`, `t_hu_diff` (NaN where a mask is empty). Plus the `msv_*` keys of
    :func:`msv_metrics`. Values absent for lack of spacing/image are simply not in the dict.
    """
    _check_pair(pred, ref)
    p3, r3 = _as_stack(pred), _as_stack(ref)
    img3 = None
    if image is not None:
        img3 = _as_stack(np.asarray(image))
        if img3.shape != p3.shape:
            raise ValidationInputError(
                f"Image shape {img3.shape[1:] if img3.shape[0] == 1 else img3.shape} does not match the "
                f"label map shape {p3.shape[1:] if p3.shape[0] == 1 else p3.shape}."
            )
    n_slices = p3.shape[0]
    pixel_cm2 = None if pixel_spacing is None else float(pixel_spacing[0]) * float(pixel_spacing[1]) / 100.0
    out: dict[str, float] = {}
    for name, lab in (tissues or TISSUES).items():
        lab = int(lab)
        tp, fp, fn = overlap_counts(p3, r3, lab)
        n_pred, n_ref = tp + fp, tp + fn
        out[f"{name}_dice"] = _dice_from_counts(tp, fp, fn)
        out[f"{name}_iou"] = _iou_from_counts(tp, fp, fn)
        out[f"{name}_pixels_pred"] = float(n_pred)
        out[f"{name}_pixels_ref"] = float(n_ref)
        out[f"{name}_area_err_pct"] = 100.0 * (n_pred - n_ref) / n_ref if n_ref else float("nan")
        if pixel_cm2 is not None:
            a_pred = n_pred * pixel_cm2 / n_slices
            a_ref = n_ref * pixel_cm2 / n_slices
            out[f"{name}_area_pred_cm2"] = a_pred
            out[f"{name}_area_ref_cm2"] = a_ref
            out[f"{name}_area_err_cm2"] = a_pred - a_ref
        if img3 is not None:
            hp = float(img3[p3 == lab].mean()) if n_pred else float("nan")
            hr = float(img3[r3 == lab].mean()) if n_ref else float("nan")
            out[f"{name}_hu_pred"] = hp
            out[f"{name}_hu_ref"] = hr
            out[f"{name}_hu_diff"] = hp - hr
    out.update(msv_metrics(p3, r3))
    return out
