"""make_volume: spine truth vs vertebra labels, variants, coverages, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.phantom import VERTEBRA_IDS, make_volume
from sarcoscope.phantom.volume import slab_offsets

SMALL = {"shape_xy": 128, "slice_thickness_mm": 5.0}


@pytest.fixture(scope="module")
def volume():
    return make_volume(21, **SMALL)


def _body_rows(vlab_slice: np.ndarray, vid: int) -> np.ndarray:
    return np.nonzero(vlab_slice == vid)[0]


def test_layout_and_dtypes(volume) -> None:
    n = volume.hu.shape[0]
    assert volume.hu.shape == volume.labels.shape == volume.vertebra_labels.shape == (n, 128, 128)
    assert volume.hu.dtype == np.int16 and volume.labels.dtype == np.uint8
    assert volume.spacing[0] == 5.0
    assert set(np.unique(volume.labels)) <= {0, 1, 2, 3, 4}
    assert set(np.unique(volume.vertebra_labels)) <= {0, *VERTEBRA_IDS.values()}


def test_l3_truth_matches_vertebra_labels(volume) -> None:
    t = volume.truth
    assert t["l3_in_volume"]
    lo, mid, hi = t["l3_lower_endplate_index"], t["l3_mid_index"], t["l3_upper_endplate_index"]
    assert lo < mid < hi and t["l3_inferior_endplate_index"] == lo
    l3 = VERTEBRA_IDS["L3"]
    with_l3 = np.flatnonzero(np.any(volume.vertebra_labels == l3, axis=(1, 2)))
    assert with_l3[0] <= lo and hi <= with_l3[-1]
    assert t["vertebrae"]["L3"]["first_index"] == lo and t["vertebrae"]["L3"]["last_index"] == hi
    # the mid-L3 slice shows the L3 body (anterior to its arch) and no other vertebra's body there
    rows = _body_rows(volume.vertebra_labels[mid], l3)
    assert rows.size > 20
    # 25-30 mm lumbar body height, 8-12 mm discs
    v = t["vertebrae"]
    assert 22 <= v["L3"]["z_hi_mm"] - v["L3"]["z_lo_mm"] <= 33
    assert 7 <= v["L3"]["z_lo_mm"] - v["L4"]["z_hi_mm"] <= 14


def test_vertebrae_are_ordered_inferior_to_superior(volume) -> None:
    order = ["S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11"]
    centres = []
    for name in order:
        z = np.flatnonzero(np.any(volume.vertebra_labels == VERTEBRA_IDS[name], axis=(1, 2)))
        assert z.size, name
        centres.append(z.mean())
    assert np.all(np.diff(centres) > 0)


def test_disc_is_darker_than_bone(volume) -> None:
    t = volume.truth["vertebrae"]
    between = (t["L3"]["z_lo_mm"] + t["L4"]["z_hi_mm"]) / 2
    k_disc = round((between - volume.truth["z_mm_of_index_0"]) / volume.spacing[0])
    k_body = volume.truth["l3_mid_index"]
    x = volume.hu.shape[2] // 2
    col = volume.vertebra_labels[k_body, :, x] == VERTEBRA_IDS["L3"]
    assert volume.hu[k_body, col, x].mean() > volume.hu[k_disc, col, x].mean() + 40


def test_thick_slices_average_the_slab(volume) -> None:
    # A 5 mm slice is the mean of sections across its slab, as a scanner reconstructs it: no slice shows a
    # vertebra's endplate cortex at full density (single thin sections did: the brightest slice through the
    # lumbar vertebrae was 2.2 times their median, which mimicked a disc between two bands in mid-body).
    assert list(slab_offsets(3.0)) == [0.0] and np.allclose(slab_offsets(5.0), [-5 / 3, 0.0, 5 / 3])
    assert np.allclose(slab_offsets(8.0), [-3.2, -1.6, 0.0, 1.6, 3.2])
    lumbar = [VERTEBRA_IDS[n] for n in ("L1", "L2", "L3", "L4", "L5")]
    means = []
    for k in range(volume.hu.shape[0]):
        bone = np.isin(volume.vertebra_labels[k], lumbar)
        if bone.sum() > 30:
            means.append(volume.hu[k][bone].mean())
    assert len(means) > 20 and max(means) < 1.6 * float(np.median(means))


def test_same_seed_same_volume() -> None:
    a = make_volume(3, shape_xy=96, slice_thickness_mm=8.0, coverage="l3-only")
    b = make_volume(3, shape_xy=96, slice_thickness_mm=8.0, coverage="l3-only")
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.vertebra_labels, b.vertebra_labels)
    assert a.truth == b.truth


@pytest.mark.parametrize("coverage", ["upper-abdomen", "lower"])
def test_partial_coverage_excludes_l3(coverage: str) -> None:
    vol = make_volume(5, coverage=coverage, shape_xy=96, slice_thickness_mm=6.0)
    assert not vol.truth["l3_in_volume"] and vol.truth["l3_mid_index"] is None
    assert not np.any(vol.vertebra_labels == VERTEBRA_IDS["L3"])


def test_n_slices_keeps_the_top() -> None:
    a = make_volume(6, coverage="l3-only", shape_xy=64, slice_thickness_mm=6.0)
    b = make_volume(6, coverage="l3-only", shape_xy=64, slice_thickness_mm=6.0, n_slices=a.hu.shape[0] + 10)
    assert b.hu.shape[0] == a.hu.shape[0] + 10
    assert b.truth["l3_mid_index"] == a.truth["l3_mid_index"] + 10


@pytest.mark.parametrize(
    ("variant", "n_lumbar", "ribs", "lowest_rib"),
    [
        ("normal", 5, 12, "T12"),
        ("six-lumbar", 6, 12, "T12"),
        ("sacralised-L5", 4, 12, "T12"),
        ("11-ribs", 5, 11, "T11"),
        ("13-ribs", 5, 13, "L1"),
    ],
)
def test_variants(variant: str, n_lumbar: int, ribs: int, lowest_rib: str) -> None:
    vol = make_volume(8, variant=variant, coverage="abdomen", shape_xy=64, slice_thickness_mm=8.0)
    t = vol.truth
    assert (t["variant"], t["n_lumbar"], t["rib_pairs"], t["lowest_rib_vertebra"]) == (
        variant,
        n_lumbar,
        ribs,
        lowest_rib,
    )
    present = set(np.unique(vol.vertebra_labels))
    assert (VERTEBRA_IDS["L6"] in present) == (variant == "six-lumbar")
    assert t["l3_in_volume"]
    assert np.any(vol.vertebra_labels[t["l3_mid_index"]] == VERTEBRA_IDS["L3"])


@pytest.mark.parametrize(("variant", "level"), [("13-ribs", "L1"), ("11-ribs", "T12")])
def test_rib_variants_change_only_that_rib(variant: str, level: str) -> None:
    """Same seed: the only voxels that differ from the normal patient are those of the added/removed rib."""
    kw = {"coverage": "upper-abdomen", "shape_xy": 128, "slice_thickness_mm": 4.0}
    normal, var = make_volume(9, **kw), make_volume(9, variant=variant, **kw)
    diff = np.argwhere(normal.hu != var.hu)
    assert len(diff) > 20
    v = normal.truth["vertebrae"]
    z_head = v[level]["first_index"]
    assert diff[:, 0].max() <= v[level]["last_index"] + 1  # ribs start at their vertebra and descend
    assert diff[:, 0].min() >= z_head - 25  # ... over a few vertebrae at most
    x_mm = normal.origin[0] + diff[:, 2] * normal.spacing[2]
    assert np.abs(x_mm).min() > 8  # from the costovertebral joint outward
    assert np.mean(np.abs(x_mm) > 60) > 0.25  # much of it lateral, in the body wall


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="variant"):
        make_volume(1, variant="seven-lumbar")
    with pytest.raises(ValueError, match="coverage"):
        make_volume(1, coverage="head")
