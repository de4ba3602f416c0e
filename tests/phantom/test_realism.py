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
    assert len(out) >= 5  # the development set (nine slices since 2026-12-03)
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


def _l3_section(seed: int, **anatomy: object) -> np.ndarray:
    """The painted tissue-class map of a phantom's L3 slice, with anatomy parameters overridden."""
    from sarcoscope.phantom.anatomy import add_bowel, build_anatomy
    from sarcoscope.phantom.habitus import Exam
    from sarcoscope.phantom.render import render_section
    from sarcoscope.phantom.slice import place_grid

    rng = np.random.default_rng([seed, 2])
    anat = build_anatomy(seed, None, Exam.sample(np.random.default_rng([seed, 3])), "normal")
    for key, value in anatomy.items():
        setattr(anat, key, value)
    z = anat.l3.z_mid
    add_bowel(anat, z - 40, z + 40, np.random.default_rng([seed, 4]))
    return render_section(anat, z, place_grid(anat, z, 512, None, rng), rng).cls


def test_the_liver_can_lie_against_the_wall() -> None:
    """As in real EMC100 and EMC041: no fat plane between the liver tip and the right wall muscles."""
    from sarcoscope.phantom.render import LIVER, MUS

    def touches(cls: np.ndarray) -> int:
        return int((ndi.binary_dilation(cls == LIVER) & (cls == MUS)).sum())

    seed = 4  # a patient whose liver tip reaches below mid-L3
    against, apart = touches(_l3_section(seed, liver_wall=True)), touches(_l3_section(seed, liver_wall=False))
    assert against > 50 and against > 3 * apart  # without it, the tip meets the wall at a point at most


def test_psoas_shape_varies_from_round_to_a_forward_teardrop() -> None:
    """Real L3 psoas ranges from round beside the vertebral body to long, reaching the body's front edge."""
    from sarcoscope.phantom.render import MUS_PS

    def front_row(cls: np.ndarray) -> int:
        return int(np.flatnonzero((cls == MUS_PS).any(axis=1))[0])

    round_ = front_row(_l3_section(5, psoas_shape=(0.0, 1.0)))
    forward = front_row(_l3_section(5, psoas_shape=(0.6, 1.35)))
    assert round_ - forward > 10  # pixels: the forward teardrop starts well ahead of the round psoas
