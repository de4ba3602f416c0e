"""Validation: overlap metrics, the paper's IoU-bin tables, per-site external validation, agreement stats.

`metrics` is import-light (NumPy only) so engines and training can score themselves; the report machinery
(`run_validation`) is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sarcoscope.validation.metrics import (
    MSV_LABELS,
    case_metrics,
    confusion_matrix,
    dice,
    iou,
    iou_to_dice,
    msv_metrics,
    overlap_counts,
)

if TYPE_CHECKING:
    from sarcoscope.validation.runner import ValidationReport

__all__ = [
    "MSV_LABELS",
    "case_metrics",
    "confusion_matrix",
    "dice",
    "iou",
    "iou_to_dice",
    "msv_metrics",
    "overlap_counts",
    "run_validation",
]


def run_validation(*args: Any, **kwargs: Any) -> ValidationReport:
    """Validate predictions against references and write the report; see :func:`runner.run_validation`."""
    from sarcoscope.validation.runner import run_validation as _run

    return _run(*args, **kwargs)
