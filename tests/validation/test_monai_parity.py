"""Our Dice/IoU equal MONAI's DiceMetric/MeanIoU (run where the [train] extra is installed, as in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.validation.metrics import dice, iou

torch = pytest.importorskip("torch")
monai_metrics = pytest.importorskip("monai.metrics")


def _one_hot(labels: np.ndarray, n: int = 5):
    t = torch.as_tensor(labels.astype(np.int64))
    return torch.nn.functional.one_hot(t, n).permute(0, 3, 1, 2).float()


def test_dice_and_iou_match_monai_including_empty_classes():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, size=(6, 24, 24)).astype(np.uint8)  # no IMAT (4) in the reference
    pred = ref.copy()
    flip = rng.random(ref.shape) < 0.2
    pred[flip] = rng.integers(0, 5, size=int(flip.sum()))  # the prediction adds some IMAT
    pred[2][pred[2] == 4] = 0  # case 2: IMAT absent on both sides
    ref[3][ref[3] == 3] = 0  # case 3: VAT absent from the reference only
    pred[4][pred[4] == 2] = 0  # case 4: SAT absent from the prediction only
    # MONAI's ignore_empty=False is our documented convention: both empty -> 1, one side empty -> 0.
    dm = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    im = monai_metrics.MeanIoU(include_background=False, reduction="none", ignore_empty=False)
    md = dm(_one_hot(pred), _one_hot(ref)).numpy()
    mi = im(_one_hot(pred), _one_hot(ref)).numpy()
    ours_d = np.array([[dice(pred[k], ref[k], lab) for lab in range(1, 5)] for k in range(len(ref))])
    ours_i = np.array([[iou(pred[k], ref[k], lab) for lab in range(1, 5)] for k in range(len(ref))])
    np.testing.assert_allclose(ours_d, md, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours_i, mi, rtol=1e-6, atol=1e-7)
    assert ours_d[2, 3] == 1.0 and ours_d[3, 2] == 0.0 and ours_d[4, 1] == 0.0
