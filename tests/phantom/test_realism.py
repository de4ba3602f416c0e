"""Phantom slices stay within what the real reference L3 slices show (HU of each label, framing, noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from sarcoscope.conventions import Label
from sarcoscope.phantom import make_slice


def _stats(hu: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = {name: float(hu[labels == lab].mean()) for name, lab in (("muscle", 1), ("sat", 2), ("vat", 3))}
    out["body_fraction"] = float(np.mean(labels > 0))
    out["sat_sd"] = float(hu[ndi.binary_erosion(labels == Label.SAT, iterations=3)].std())
    return out


@pytest.fixture(scope="module")
def real(shared_data: Path) -> list[dict[str, float]]:
    folder = shared_data / "real" / "l3_slices"
    out = []
    for path in sorted((folder / "images").glob("L3_*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        labels = np.load(folder / "labels" / f"{path.stem[3:]}.npy")
        out.append(_stats(hu, labels))
    assert len(out) == 5
    return out


def test_phantoms_look_like_the_real_slices(real) -> None:
    lo = {k: min(r[k] for r in real) for k in real[0]}
    hi = {k: max(r[k] for r in real) for k in real[0]}
    margin = {"muscle": 20, "sat": 15, "vat": 15, "body_fraction": 0.15, "sat_sd": 6}
    for seed in (101, 102, 103, 104):
        ph = make_slice(seed)
        s = _stats(ph.hu, ph.labels)
        for key, m in margin.items():
            if key == "sat_sd" and not np.isfinite(s[key]):
                continue  # SAT too thin to erode
            assert lo[key] - m <= s[key] <= hi[key] + m, (seed, key, s[key], lo[key], hi[key])
