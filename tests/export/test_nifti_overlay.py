"""NIfTI label maps align with the CT in world space; the QC overlay shows what was measured."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from sarcoscope.conventions import LABEL_COLORS, Label
from sarcoscope.export import label_nifti, render_overlay
from sarcoscope.export.overlay import PANEL_HEIGHT, z_stretch


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


def _read(path) -> np.ndarray:
    """The PNG as floats 0..1, RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def _has_colour(png: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    """Any pixel whose colour is a blend of `rgb` over grey (the overlay is semi-transparent)."""
    px = png[..., :3].reshape(-1, 3)
    target = np.array(rgb) / 255.0
    hue = px - px.mean(axis=1, keepdims=True)
    ref = target - target.mean()
    cos = (hue @ ref) / (np.linalg.norm(hue, axis=1) * np.linalg.norm(ref) + 1e-9)
    return bool(np.any((cos > 0.98) & (np.linalg.norm(hue, axis=1) > 0.1)))


def _runs(flags: np.ndarray, min_length: int = 20) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True at least `min_length` long."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    runs = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)
    return [(int(a), int(b)) for a, b in runs if b - a >= min_length]


def _panels(png: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of each panel, left to right: the dark images on the white page, found along
    the row that crosses most of them and down the middle column of each."""
    drawn = (png < 0.98).any(axis=2)
    row = int(np.argmax(drawn.sum(axis=1)))
    boxes = []
    for x0, x1 in _runs(drawn[row]):
        column = drawn[:, (x0 + x1) // 2]
        y0, y1 = next((a, b) for a, b in _runs(column) if a <= row < b)
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


def _crop(png: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return png[y : y + h, x : x + w]


def _legend_swatches_fit(png: np.ndarray, panel_bottom: int) -> bool:
    """Every tissue's legend swatch (its colour at alpha 0.8 over white) is below the panels, and nothing is
    drawn into the page's margins (so no legend text was cut off)."""
    below = (png[panel_bottom:] * 255).round()
    swatches = [np.round(0.8 * np.array(rgb) + 0.2 * 255) for rgb in LABEL_COLORS.values()]
    found = all(bool((below == s).all(axis=2).any()) for s in swatches)
    margins = np.concatenate([png[:, :5].reshape(-1, 3), png[:, -5:].reshape(-1, 3), png[-5:].reshape(-1, 3)])
    return found and bool((margins == 1.0).all())


def test_overlay_volume_has_three_panels_in_proportion_and_tissue_colours(make_result, tmp_path) -> None:
    result = make_result((4, 5, 6), details={"vertebrae": {"L3": 5, "L2": 9}})
    png = _read(render_overlay(result, tmp_path / "overlay.png"))
    axial, sag, cor = _panels(png)
    # equal heights in mm terms: axial 56 x 51.2 mm; sagittal 51.2 mm and coronal 56 mm across 12 x 2.5 mm,
    # both wider than 1.5 axial widths and so drawn at that width, proportionally less tall
    assert axial[3] == PANEL_HEIGHT and axial[2] == round(PANEL_HEIGHT * 56.0 / 51.2)
    for box, across in ((sag, 51.2), (cor, 56.0)):
        assert box[2] == round(1.5 * axial[2])
        assert box[3] == pytest.approx(box[2] * 30.0 / across, abs=1.5)
    assert sag[3] < PANEL_HEIGHT and sag[1] > axial[1]  # centred on the axial panel's height
    for label in (Label.MUSCLE, Label.SAT, Label.VAT, Label.IMAT):
        assert _has_colour(_crop(png, axial), LABEL_COLORS[label]), label
    assert _has_colour(_crop(png, sag), (255, 210, 60))  # the L3 line
    assert _legend_swatches_fit(png, axial[1] + axial[3])

    single = _read(render_overlay(make_result((0,), shape=(1, 64, 80)), tmp_path / "single.png"))
    (only,) = _panels(single)  # no reconstructions: one panel, of the same size, in a narrower picture
    assert only[2:] == axial[2:] and single.shape[1] < png.shape[1]
    assert _legend_swatches_fit(single, only[1] + only[3])  # defect 9 (issue #15): the legend was clipped


def test_overlay_short_series_are_not_strips(make_result, tmp_path) -> None:
    """Defect 9 (issue #15): a short series' views were thin strips; they are stretched, and say so."""
    from sarcoscope.export.overlay import _reconstruction

    short = make_result((2,), shape=(4, 64, 80))  # 4 slices of 2.5 mm
    _, sag, cor = _panels(_read(render_overlay(short, tmp_path / "short.png")))
    for box, across in ((sag, 51.2), (cor, 56.0)):
        stretch = z_stretch(across, 10.0)
        assert stretch > 2.5 and box[3] >= 0.45 * box[2]
        assert box[3] == pytest.approx(box[2] * 10.0 * stretch / across, abs=1.5)
    _, title = _reconstruction(short, "sagittal", 40, 32, max_width=1000)
    assert title.endswith(f"height ×{z_stretch(51.2, 10.0):.1f})")
    _, title = _reconstruction(make_result((5,)), "sagittal", 40, 32, max_width=1000)
    assert "height" not in title
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
    sure = _read(
        render_overlay(
            make_result((4, 5, 6), details={"vertebrae": details["vertebrae"]}), tmp_path / "sure.png"
        )
    )
    unsure = _read(render_overlay(make_result((4, 5, 6), details=details), tmp_path / "unsure.png"))
    assert not _has_colour(sure, orange)
    for box in _panels(unsure)[1:]:
        assert _has_colour(_crop(unsure, box), orange)


@pytest.mark.parametrize("axes", [("R", "A", "S"), ("L", "P", "S"), ("L", "A", "I"), ("A", "R", "S")])
def test_nifti_labels_of_a_nifti_ct_keep_its_voxel_order(tmp_path, axes) -> None:
    """Code that indexes a NIfTI CT's array with the labels' array (TotalSegmentator's files are R, A, S;
    the analysis works in L, P, S) must find the voxels that were measured: every muscle label lies on a
    voxel of muscle HU, every fat label on fat, in the file's own order; the affine agrees."""
    from sarcoscope import analyze
    from sarcoscope.phantom import make_slice

    ph = make_slice(3, size=128, pixel_spacing=3.0)
    hu_lps = np.stack([ph.hu] * 3).astype(np.int16)  # (z, y, x): x toward L, y toward P
    affine = np.diag([-3.0, -3.0, 3.0, 1.0])  # the (x, y, z) voxel grid in RAS+ world
    img = nib.Nifti1Image(hu_lps.transpose(2, 1, 0), affine)
    img = img.as_reoriented(
        nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt(axes))
    )
    assert nib.aff2axcodes(img.affine) == axes
    nib.save(img, tmp_path / "ct.nii.gz")
    analyze(
        tmp_path / "ct.nii.gz", out_dir=tmp_path / "out", slice_index=1, engine="threshold", quality=False
    )
    out = nib.load(tmp_path / "out" / "labels.nii.gz")
    labels = np.asarray(out.dataobj)
    ct = np.asarray(img.dataobj)
    assert nib.aff2axcodes(out.affine) == axes
    assert out.header.get_sform(coded=True)[1] == 1 and out.header.get_qform(coded=True)[1] == 1
    s = axes.index(next(c for c in axes if c in "IS"))  # the file's slice axis
    np.testing.assert_allclose(out.affine[:3, :3], img.affine[:3, :3])  # the same voxel axes
    assert labels.shape[s] == 1
    k = round(float((np.linalg.inv(img.affine) @ out.affine @ np.array([0, 0, 0, 1.0]))[s]))
    measured = np.take(ct, [k], axis=s)
    muscle, fat = labels == Label.MUSCLE, np.isin(labels, [Label.SAT, Label.VAT])
    assert muscle.sum() > 500 and fat.sum() > 500
    assert ((measured[muscle] >= -29) & (measured[muscle] <= 150)).all()
    assert ((measured[fat] >= -190) & (measured[fat] <= -30)).all()
