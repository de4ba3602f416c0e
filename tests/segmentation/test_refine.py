"""Shared post-processing (segmentation.refine) on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np

from sarcoscope.conventions import HURanges, Label
from sarcoscope.segmentation.refine import (
    body_mask,
    close_mm,
    constrain_to_hu,
    dilate_mm,
    erode_mm,
    fat_in_muscle_to_imat,
    in_convex_hull,
    muscle_compartments,
    open_mm,
    refine_labels,
    remove_small_islands,
)

M, S, V, IM = Label.MUSCLE, Label.SAT, Label.VAT, Label.IMAT


def test_morphology_radius_is_in_millimetres():
    point = np.zeros((41, 41), bool)
    point[20, 20] = True
    grown = dilate_mm(point, 5.0, (1.0, 0.5))  # 5 mm = 5 rows but 10 columns
    rows, cols = np.flatnonzero(grown.any(axis=1)), np.flatnonzero(grown.any(axis=0))
    assert (rows[0], rows[-1]) == (15, 25)
    assert (cols[0], cols[-1]) == (10, 30)
    assert not dilate_mm(np.zeros((5, 5), bool), 3.0, (1.0, 1.0)).any()


def test_erode_open_close():
    square = np.zeros((40, 40), bool)
    square[10:30, 10:30] = True
    assert erode_mm(square, 2.0, (1.0, 1.0)).sum() == 16 * 16
    line = square.copy()
    line[20, 30:38] = True  # a 1-pixel spur is opened away
    np.testing.assert_array_equal(open_mm(line, 1.5, (1.0, 1.0)), square)
    gapped = square.copy()
    gapped[:, 19:21] = False  # a 2 px slit is closed (away from its open ends)
    assert close_mm(gapped, 2.0, (1.0, 1.0))[13:27, 10:30].all()


def test_in_convex_hull():
    mask = np.zeros((20, 20), bool)
    mask[2, 2] = mask[2, 17] = mask[17, 2] = True
    inside = in_convex_hull(mask, np.array([[5, 5], [2, 10], [15, 15], [17, 2]]))
    np.testing.assert_array_equal(inside, [True, True, False, True])
    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    assert not in_convex_hull(single, np.array([[2, 2]])).any()


def test_constrain_to_hu():
    hu = np.array([[50.0, -100.0, 50.0, -100.0, 500.0, -100.0, -100.0]])
    labels = np.array([[M, M, S, S, M, V, IM]], dtype=np.uint8)
    out = constrain_to_hu(labels, hu)
    np.testing.assert_array_equal(out, [[M, 0, 0, S, 0, V, IM]])
    narrow = constrain_to_hu(
        np.array([[V, V]], np.uint8), np.array([[-170.0, -100.0]]), HURanges.slice_o_matic_vat()
    )
    np.testing.assert_array_equal(narrow, [[0, V]])


def test_fat_inside_muscle_becomes_imat_but_not_the_cavity():
    spacing = (1.0, 1.0)
    hu = np.full((100, 100), -100.0)
    labels = np.zeros((100, 100), np.uint8)
    labels[5:25, 5:25] = M  # a muscle block with a 4x4 mm fat pocket that a model labelled VAT
    hu[5:25, 5:25] = 50.0
    hu[12:16, 12:16] = -90.0
    labels[12:16, 12:16] = V
    labels[30:98, 30:98] = M  # a muscle ring enclosing a 60x60 mm "abdominal cavity" of VAT
    hu[30:98, 30:98] = 50.0
    labels[34:94, 34:94] = V
    hu[34:94, 34:94] = -100.0
    out = fat_in_muscle_to_imat(labels, hu, spacing)
    assert (out[12:16, 12:16] == IM).all()
    assert (out[36:92, 36:92] == V).all()  # 36 cm² is a cavity, not an intermuscular pocket
    assert (out[labels == M] == M).all()
    comp = muscle_compartments(labels == M, spacing, closing_mm=1.0, max_hole_cm2=0.1)
    assert not comp[14, 14]  # 0.16 cm² pocket above the given limit


def test_remove_small_islands():
    labels = np.zeros((30, 30), np.uint8)
    labels[2:4, 2:4] = M  # 4 mm² at 1 mm pixels: speckle
    labels[10:20, 10:20] = M
    labels[25, 25] = IM  # IMAT pockets are kept whatever their size
    out = remove_small_islands(labels, (1.0, 1.0))
    assert not out[2:4, 2:4].any() and (out[10:20, 10:20] == M).all() and out[25, 25] == IM
    # the same island is kept at a coarser pixel spacing, where it is 36 mm²
    assert (remove_small_islands(labels, (3.0, 3.0))[2:4, 2:4] == M).all()


def test_body_mask_removes_table_and_fills_gas():
    yy, xx = np.indices((200, 200))
    hu = np.full((200, 200), -1024.0)
    body = ((yy - 90) / 60.0) ** 2 + ((xx - 100) / 80.0) ** 2 <= 1
    hu[body] = 40.0
    gas = ((yy - 90) ** 2 + (xx - 100) ** 2) <= 100
    hu[gas] = -1000.0
    table = (yy >= 152) & (yy <= 153)  # a thin table touching the body's lowest point
    hu[table] = 300.0
    mask = body_mask(hu, (1.0, 1.0))
    assert mask[gas].all()
    assert not mask[table & ~body].any()
    assert abs(int(mask.sum()) - int(body.sum())) < 0.01 * body.sum()
    assert not body_mask(np.full((50, 50), -1024.0), (1.0, 1.0)).any()


def test_refine_labels_on_a_stack():
    hu = np.full((2, 60, 60), -1024.0)
    labels = np.zeros((2, 60, 60), np.uint8)
    hu[:, 10:50, 10:50] = 50.0
    labels[:, 10:50, 10:50] = M
    hu[:, 25:28, 25:28] = -80.0  # fat inside muscle labelled muscle -> IMAT
    labels[0, 0:3, 0:3] = S  # a label outside the body -> cleared
    out = refine_labels(labels, hu, (1.0, 1.0))
    assert out.shape == labels.shape and out.dtype == np.uint8
    assert (out[:, 25:28, 25:28] == IM).all()
    assert not out[0, 0:3, 0:3].any()
    assert (out[:, 12, 12] == M).all()
