"""Areas, HU statistics, ratios and range averaging against exact answers on drawn label maps."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from sarcoscope.composition import average_compositions, measure_slice
from sarcoscope.conventions import DEFAULT_HU_RANGES, Label
from sarcoscope.errors import CompositionError


def _slice(shape: tuple[int, int] = (300, 300)) -> tuple[np.ndarray, np.ndarray]:
    return np.full(shape, -1000.0, dtype=np.float32), np.zeros(shape, dtype=np.uint8)


def test_square_area_and_hu_statistics_are_exact() -> None:
    hu, lab = _slice()
    lab[0:100, 0:100] = Label.MUSCLE  # 10 000 px
    hu[0:100, 0:50] = 30.0
    hu[0:100, 50:100] = 50.0  # mean 40, population SD 10
    lab[150:200, 0:100] = Label.SAT  # 5 000 px
    hu[150:200, 0:100] = -100.0
    lab[250:275, 0:100] = Label.VAT  # 2 500 px
    hu[250:275, 0:100] = -80.0
    c = measure_slice(hu, lab, (0.8, 0.8))
    m = c.tissues["muscle"]
    assert m.pixels == 10_000
    assert m.area_cm2 == pytest.approx(64.00, abs=1e-9)
    assert m.mean_hu == pytest.approx(40.0)
    assert m.sd_hu == pytest.approx(10.0)  # ddof=0
    assert c.tissues["sat"].area_cm2 == pytest.approx(32.0)
    assert c.tissues["vat"].area_cm2 == pytest.approx(16.0)
    assert c.tissues["sat"].sd_hu == 0.0
    assert c.total_adipose_cm2 == pytest.approx(48.0)
    assert c.ratios["vat_sat"].value == pytest.approx(0.5)
    assert c.ratios["muscle_vat"].value == pytest.approx(4.0)
    assert c.ratios["muscle_sat"].value == pytest.approx(2.0)
    assert c.ratios["muscle_total_fat"].value == pytest.approx(64.0 / 48.0)


def test_anisotropic_spacing_and_single_pixel() -> None:
    hu, lab = _slice((20, 20))
    lab[0:10, 0:4] = Label.MUSCLE
    lab[15, 15] = Label.IMAT
    hu[15, 15] = -60.0
    c = measure_slice(hu, lab, (0.5, 2.0))  # 1 mm² per pixel
    assert c.tissues["muscle"].area_cm2 == pytest.approx(0.40)
    imat = c.tissues["imat"]
    assert (imat.pixels, imat.area_cm2, imat.mean_hu, imat.sd_hu) == (1, pytest.approx(0.01), -60.0, 0.0)


def test_absent_tissues_have_no_statistics_and_ratios_say_why() -> None:
    hu, lab = _slice((50, 50))
    lab[0:10, 0:10] = Label.MUSCLE
    c = measure_slice(hu, lab, (1.0, 1.0))
    vat = c.tissues["vat"]
    assert (vat.pixels, vat.area_cm2, vat.mean_hu, vat.sd_hu) == (0, 0.0, None, None)
    for name in ("vat_sat", "muscle_vat", "muscle_sat", "muscle_total_fat"):
        q = c.ratios[name]
        assert q.value is None and "is 0 cm²" in str(q.reason)
    assert c.as_dict()["ratios"]["vat_sat"] == {
        "title": "VAT / SAT",
        "status": "not computed",
        "reason": "VAT / SAT: denominator area (SAT) is 0 cm²",
    }


def test_bad_inputs_raise_composition_error() -> None:
    hu, lab = _slice((10, 10))
    with pytest.raises(CompositionError, match="does not match"):
        measure_slice(hu, lab[:5], (1.0, 1.0))
    lab[0, 0] = 7
    with pytest.raises(CompositionError, match=r"unknown label ids \[7\]"):
        measure_slice(hu, lab, (1.0, 1.0))
    with pytest.raises(CompositionError, match="spacing"):
        measure_slice(hu, np.zeros_like(lab), (0.0, 1.0))
    with pytest.raises(CompositionError, match="empty"):
        average_compositions([])


def test_range_average_pools_pixels_exactly() -> None:
    rng = np.random.default_rng(0)
    slices = []
    all_muscle = []
    areas = []
    for n_rows in (10, 30, 0):
        hu, lab = _slice((40, 40))
        lab[:n_rows, :20] = Label.MUSCLE
        hu[:n_rows, :20] = rng.normal(40, 15, size=(n_rows, 20))
        lab[35:, :] = Label.SAT
        all_muscle.append(hu[lab == Label.MUSCLE].astype(np.float64))
        areas.append(n_rows * 20 * 0.7 * 0.7 / 100)
        slices.append(measure_slice(hu, lab, (0.7, 0.7)))
    avg = average_compositions(slices)
    pooled = np.concatenate(all_muscle)
    m = avg.tissues["muscle"]
    assert avg.n_slices == 3
    assert m.pixels == pooled.size
    assert m.area_cm2 == pytest.approx(np.mean(areas))  # the empty slice counts as 0 cm²
    assert m.mean_hu == pytest.approx(pooled.mean(), rel=1e-12)
    assert m.sd_hu == pytest.approx(pooled.std(ddof=0), rel=1e-12)
    # ratios come from the averaged areas
    assert avg.ratios["muscle_sat"].value == pytest.approx(m.area_cm2 / avg.tissues["sat"].area_cm2)
    assert average_compositions(slices[:1]) is slices[0]


def test_real_reference_labels_respect_the_hu_protocol(shared_data) -> None:
    """The reference labels of a real slice were drawn inside the HU windows: the statistics must agree."""
    ds = pydicom.dcmread(shared_data / "real/l3_slices/images/L3_EMC101.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    labels = np.load(shared_data / "real/l3_slices/labels/EMC101.npy")
    c = measure_slice(hu, labels, tuple(float(v) for v in ds.PixelSpacing))
    lo, hi = DEFAULT_HU_RANGES.muscle
    assert lo <= c.tissues["muscle"].mean_hu <= hi
    assert c.tissues["muscle"].area_cm2 == pytest.approx(
        np.count_nonzero(labels == Label.MUSCLE) * 0.765625**2 / 100
    )
    for fat in ("sat", "vat"):
        assert -190 <= c.tissues[fat].mean_hu <= -30
    assert 50 < c.tissues["muscle"].area_cm2 < 300  # an adult L3 muscle area
