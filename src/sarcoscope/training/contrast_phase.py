"""Augmentation: a contrast-enhanced training slice shown as the same patient scanned without contrast.

The real training slices are nearly all contrast-enhanced: there the liver, spleen, kidneys, vessels and
bowel wall are brighter than muscle, and a network can learn that "other" is brighter than muscle. Many
cohorts (unenhanced abdominal and PET-CT scans) show those organs at muscle density, lying against the wall
and the psoas; on the real slices with their organs brought down so, the leave-one-out networks lost up to
6 cm² of psoas (EMC051, docs/validation/accuracy-notes.md). This transform takes the enhancement out of the
"other" tissue (label 0) and leaves muscle and fat as they are, so the network must tell organ from muscle
by shape and place, as it must on unenhanced CT. Physics, not windowing (the paper found windowing changes
harmful): every HU outside the enhanced tissue is kept.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage as ndi

#: Adipose tissue's HU: a pixel partly fat and partly organ (partial volume) lost the organ's share of the
#: enhancement, its share read from where its HU lies between fat and the organ's.
FAT_HU = -100.0
#: Bone (cortex) is above this; bone and its marrow keep their HU.
BONE_HU = 250.0
#: Above this the tissue is oral contrast or metal, which an unenhanced scan can show too: kept.
CONTRAST_AGENT_HU = 250.0
#: Unenhanced soft-tissue organs lie between these (HU; kidney and bowel wall low, liver high).
UNENHANCED_HU = (40.0, 60.0)


def unenhanced(hu: np.ndarray, labels: np.ndarray, organ_hu: float, kept: float) -> np.ndarray:
    """`hu` (2-D) with the enhanced tissue of label 0 brought down to `organ_hu`, keeping `kept` of it.

    The tissue's level is its local mean (Gaussian, 2 pixels, over soft-tissue pixels of label 0), so that
    the noise and texture stay; only tissue whose level is over `organ_hu` + 10 HU and under
    CONTRAST_AGENT_HU is changed. Labelled tissue (muscle, fat), bone and air are returned as they were.
    """
    bone = ndi.binary_fill_holes(ndi.binary_closing(hu > BONE_HU, iterations=3))
    bone = ndi.binary_dilation(bone, iterations=2)
    other = (labels == 0) & ~bone
    soft = other & (hu > -29)
    weight = ndi.gaussian_filter(soft.astype(np.float32), 2.0)
    level = ndi.gaussian_filter(np.where(soft, hu, 0).astype(np.float32), 2.0) / np.maximum(weight, 1e-6)
    change = other & (hu > FAT_HU) & (weight > 0.05) & (level > organ_hu + 10) & (level < CONTRAST_AGENT_HU)
    share = np.clip((hu - FAT_HU) / (level - FAT_HU), 0.0, 1.0)
    out = np.asarray(hu, dtype=np.float32).copy()
    out[change] -= ((1.0 - kept) * (level - organ_hu) * share)[change]
    return out


class RandUnenhancedd(Randomizable, MapTransform):
    """With probability `prob`, show the slice unenhanced (`unenhanced`), the organs' level drawn from
    UNENHANCED_HU and up to `max_kept` of the enhancement left (a late or weak bolus).

    Works on the model's [0, 1] input scaled from `hu_window`, before the geometric augmentation; the image
    and labels are (1, H, W) tensors or arrays.
    """

    def __init__(
        self, keys: tuple[str, str], prob: float, hu_window: tuple[float, float], max_kept: float = 0.3
    ):
        MapTransform.__init__(self, keys)
        self.image_key, self.label_key = keys
        self.prob = prob
        self.lo, self.hi = hu_window
        self.max_kept = max_kept

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random() < self.prob
        self._organ_hu = self.R.uniform(*UNENHANCED_HU)
        self._kept = self.R.uniform(0.0, self.max_kept)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        image = d[self.image_key]
        scaled = np.asarray(image, dtype=np.float32)[0]
        hu = self.lo + scaled * (self.hi - self.lo)
        # the window clips bone and contrast at its top: clipped pixels stay clipped, and so untouched
        out = (unenhanced(hu, np.asarray(d[self.label_key])[0], self._organ_hu, self._kept) - self.lo) / (
            self.hi - self.lo
        )
        out = out[None].astype(np.float32)
        d[self.image_key] = torch.from_numpy(out) if isinstance(image, torch.Tensor) else out
        return d
