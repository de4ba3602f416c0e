"""Bowel content of fat density: stool is a mix of gas bubbles, fat-density matter and soft tissue, and the
HU windows alone would call its fat-density pixels visceral fat. The reference protocol labels the bowel's
content "other" (it is not adipose tissue), so both engines set it aside here."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segmentation.morphology import bounding_box, close_mm, fill_holes

#: Below this HU a pixel of the visceral cavity is gas (bowel gas; partial volume with the wall above it).
GAS_HU = -250.0
#: A stool region the U-Net's VAT gives up (`solid_stool`) is at least this large (cm²): a colon segment 2 cm
#: across holds about 3 cm²; smaller regions round a gas bubble are the wall's partial volume.
SOLID_STOOL_MIN_CM2 = 3.0
#: ... and at most this fraction of it is gas: stool is solid matter with bubbles in it; a region mostly of
#: gas is a gas-filled loop, whose fat-HU rim is its wall's partial volume and the visceral fat against it.
SOLID_STOOL_MAX_GAS = 0.4


def stool_mask(
    hu: np.ndarray, cavity: np.ndarray, fat: np.ndarray, sat: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    """Bowel content, whose fat-density stool is not VAT (one slice, (y, x)).

    Gas bubbles of the visceral `cavity` closed over by 7 mm, grown up to 8 mm through `fat` far more
    heterogeneous (local SD over 3x) than this scan's subcutaneous fat (`sat`): stool is mottled, mesenteric
    fat is as smooth as SAT.
    """
    gas = (hu < GAS_HU) & cavity
    core = fill_holes(close_mm(gas, 7.0, spacing))
    if not core.any():
        return core
    size = (max(3, round(4.0 / spacing[0])), max(3, round(4.0 / spacing[1])))
    h = hu.astype(np.float32, copy=False)  # an int16 CT's square would overflow
    mean = ndi.uniform_filter(h, size)
    std = np.sqrt(np.maximum(ndi.uniform_filter(h * h, size) - mean * mean, 0.0))
    noise = float(np.median(std[sat])) if sat.any() else 20.0
    mottled = fat & cavity & (std > max(3.0 * noise, 40.0))
    steps = max(1, round(8.0 / min(spacing)))
    grow = mottled | core
    box = bounding_box(grow, margin=1)  # the growth stays in the mask
    out = np.zeros_like(core)
    out[box] = ndi.binary_dilation(core[box], iterations=steps, mask=grow[box])
    return out


def solid_stool(
    hu: np.ndarray, cavity: np.ndarray, fat: np.ndarray, sat: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    """The regions of `stool_mask` that are solid stool: large, and mostly not gas.

    The U-Net already leaves most bowel out of its VAT; what it takes for fat is a stool-filled colon, whose
    mottled content has no wall between its fat-density pixels and the mesenteric fat. A region round a gas
    bubble or a gas-filled loop is left to the network (`SOLID_STOOL_MIN_CM2`, `SOLID_STOOL_MAX_GAS`).
    """
    stool = stool_mask(hu, cavity, fat, sat, spacing)
    regions, n = ndi.label(stool)
    if n == 0:
        return stool
    pixel_cm2 = spacing[0] * spacing[1] / 100.0
    area = np.bincount(regions.ravel(), minlength=n + 1) * pixel_cm2
    gas = np.bincount(regions.ravel(), weights=(hu < GAS_HU).ravel(), minlength=n + 1) * pixel_cm2
    solid = (area >= SOLID_STOOL_MIN_CM2) & (gas <= SOLID_STOOL_MAX_GAS * area)
    solid[0] = False
    return solid[regions]
