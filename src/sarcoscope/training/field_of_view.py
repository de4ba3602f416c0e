"""Augmentation: the body cut by the edge of a smaller reconstruction field of view.

Obese patients are often wider than the field of view, and the image then ends inside the body, through the
fat or through the abdominal wall. The real training slices never show such a cut, and the networks trained
without it read organs next to the edge as wall muscle (docs/validation/field-of-view.md). This transform
cuts a training slice as a scanner would: everything beyond a straight edge becomes outside-the-image (the
model's input 0, as the engine pads) and unlabelled, so the network learns that tissue stops at an edge
without the anatomy changing there.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

#: Which sides a cut takes, and how often: one side (left or right), both, or the front (a belly beyond the
#: top of the image).
_SIDES = (("left",), ("right",), ("left", "right"), ("front",))
_SIDE_WEIGHTS = (0.35, 0.35, 0.2, 0.1)


class RandFieldOfViewCutd(Randomizable, MapTransform):
    """With probability `prob`, cut the body by up to `max_fraction` of its width on a random side.

    The body's extent is read from the labels (every tissue label lies inside the skin), so the cut lands
    in the body whatever the CT table or padding look like. The image (already scaled to the model's
    [0, 1] input) and the labels are (1, H, W) tensors or arrays.
    """

    def __init__(self, keys: tuple[str, str], prob: float, max_fraction: float):
        MapTransform.__init__(self, keys)
        self.image_key, self.label_key = keys
        self.prob = prob
        self.max_fraction = max_fraction

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random() < self.prob
        self._sides = _SIDES[self.R.choice(len(_SIDES), p=_SIDE_WEIGHTS)]
        self._fractions = self.R.uniform(0.0, self.max_fraction, size=len(self._sides))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        body = np.asarray(d[self.label_key])[0] > 0
        rows, cols = np.nonzero(body.any(axis=1))[0], np.nonzero(body.any(axis=0))[0]
        if not rows.size:
            return d
        keep = np.ones(body.shape, dtype=bool)
        for side, fraction in zip(self._sides, self._fractions, strict=True):
            if side == "front":
                keep[: rows[0] + int(fraction * (rows[-1] - rows[0] + 1))] = False
            else:
                width = int(fraction * (cols[-1] - cols[0] + 1))
                if side == "left":  # image left (the patient's right)
                    keep[:, : cols[0] + width] = False
                else:
                    keep[:, cols[-1] + 1 - width :] = False
        for key in (self.image_key, self.label_key):
            value = d[key]
            mask = torch.from_numpy(keep) if isinstance(value, torch.Tensor) else keep
            d[key] = value * mask[None]
        return d
