"""NIfTI label maps align with the CT in world space; the QC overlay shows what was measured."""

from __future__ import annotations

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from sarcoscope.conventions import LABEL_COLORS, Label
from sarcoscope.export import label_nifti, render_overlay


def _world_ras_of_ct_voxel(result, x: int, y: int, z: int) -> np.ndarray:
    lps = result.volume.affine_lps @ np.array([x, y, z, 1.0])
    return np.array([-lps[0], -lps[1], lps[2]])


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([1.0, -1.0, -1.0])])
def test_nifti_labels_sit_on_the_ct_voxels(make_result, tmp_path, direction) -> None:
    result = make_result((4, 6))  # non-contiguous: slice 5 inside the span is empty
    result.volume.direction = direction
    path = tmp_path / "labels.nii.gz"
    nib.save(label_nifti(result), path)
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == (80, 64, 3)
    np.testing.assert_array_equal(data[:, :, 0].T, result.labels[0])
    np.testing.assert_array_equal(data[:, :, 2].T, result.labels[1])
    assert not data[:, :, 1].any()
    for i, j, k in [(0, 0, 0), (79, 63, 2), (10, 20, 1)]:
        world = img.affine @ np.array([i, j, k, 1.0])
        np.testing.assert_allclose(world[:3], _world_ras_of_ct_voxel(result, i, j, 4 + k), atol=1e-6)
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
    assert nib.aff2axcodes(img.affine) == tuple(nib.aff2axcodes(img.affine))  # well-formed


def _has_colour(png: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    """Any pixel whose colour is a blend of `rgb` over grey (the overlay is semi-transparent)."""
    px = png[..., :3].reshape(-1, 3)
    target = np.array(rgb) / 255.0
    hue = px - px.mean(axis=1, keepdims=True)
    ref = target - target.mean()
    cos = (hue @ ref) / (np.linalg.norm(hue, axis=1) * np.linalg.norm(ref) + 1e-9)
    return bool(np.any((cos > 0.98) & (np.linalg.norm(hue, axis=1) > 0.1)))


def test_overlay_volume_has_two_panels_and_tissue_colours(make_result, tmp_path) -> None:
    result = make_result((4, 5, 6), details={"vertebrae": {"L3": 5, "L2": 9}})
    path = render_overlay(result, tmp_path / "overlay.png")
    png = mpimg.imread(path)
    for label in (Label.MUSCLE, Label.SAT, Label.VAT):
        assert _has_colour(png, LABEL_COLORS[label]), label
    single = render_overlay(make_result((0,), shape=(1, 64, 80)), tmp_path / "single.png")
    png1 = mpimg.imread(single)
    # the single-slice picture has no sagittal panel, so it is narrower at the same height
    assert png1.shape[1] < png.shape[1]
    assert png1.shape[0] == png.shape[0]


def test_overlay_legend_fits_and_short_series_are_not_strips(make_result) -> None:
    """Defect 9 (issue #15): the single-slice legend was clipped; a short series' views were thin strips."""
    from sarcoscope.export.overlay import overlay_figure, z_stretch

    single = overlay_figure(make_result((0,), shape=(1, 64, 80)))
    renderer = single.canvas.get_renderer()
    single.draw(renderer)
    page = single.bbox
    legend = single.legends[0].get_window_extent(renderer)
    assert page.x0 <= legend.x0 and legend.x1 <= page.x1
    short = overlay_figure(make_result((2,), shape=(4, 64, 80)))  # 4 slices of SPACING[0] mm
    short.draw(short.canvas.get_renderer())
    for ax in short.axes[1:]:
        box = ax.get_window_extent()
        assert box.height >= 0.45 * box.width, ax.get_title()
        assert "height ×" in ax.get_title()
    assert z_stretch(300.0, 400.0) == 1.0 and z_stretch(300.0, 30.0) == 5.0


def test_overlay_shows_the_second_l3_candidate(make_result, tmp_path) -> None:
    # counting uncertain: the other candidate is drawn as an orange dashed line labelled with its odds
    details = {
        "vertebrae": {"L3": 5, "L2": 9},
        "candidates": [
            {"l3_mid": 5, "probability": 0.7, "counted_from": "counted from the last rib"},
            {"l3_mid": 2, "probability": 0.3, "counted_from": "if the lowest rib pair was missed"},
        ],
    }
    orange = (255, 140, 26)
    sure = mpimg.imread(
        render_overlay(
            make_result((4, 5, 6), details={"vertebrae": details["vertebrae"]}), tmp_path / "sure.png"
        )
    )
    unsure = mpimg.imread(render_overlay(make_result((4, 5, 6), details=details), tmp_path / "unsure.png"))
    assert _has_colour(unsure, orange) and not _has_colour(sure, orange)
