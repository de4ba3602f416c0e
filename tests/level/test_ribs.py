"""Rib detection at the costovertebral joint (level.ribs.joint_ribs) on a hand-made working grid with known
bones: six 30 mm vertebrae, 2 mm pixels, 3 mm slices."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.level.ribs import VertebraRibs, joint_ribs
from sarcoscope.level.spine import SpineTrace, WorkGrid

NZ, NY, NX = 60, 120, 140
CX, BODY_Y, DEPTH_MM = 70, 40, 30.0  # column midline, vertebral-body centre (pixels), body depth (mm)
HALF_WIDTH_PX = 11  # the body is 44 mm wide
SEGMENTS = [(10.0 * k, 10.0 * (k + 1)) for k in range(6)]  # disc to disc, working slices


def _bar(
    hu: np.ndarray, start: tuple[float, float, float], end: tuple[float, float, float], value: float = 500.0
) -> None:
    """A 4 mm thick bone bar from (z, y, x) to (z, y, x), drawn point by point."""
    for t in np.linspace(0.0, 1.0, 300):
        z, y, x = (a + t * (b - a) for a, b in zip(start, end, strict=True))
        if 0 <= round(z) < NZ:
            hu[round(z), round(y) - 1 : round(y) + 1, round(x) - 1 : round(x) + 1] = value


def _joint(segment: int, side: int) -> tuple[float, float, float]:
    """Where a rib of `segment` leaves its vertebra on `side` (-1 patient right = image left)."""
    lo, hi = SEGMENTS[segment]
    return (lo + 0.7 * (hi - lo), BODY_Y + 6, CX + side * (HALF_WIDTH_PX + 2))


def _rib(segment: int, side: int, reach_mm: float, drop_mm: float) -> tuple[tuple, tuple]:
    z, y, x = _joint(segment, side)
    return (z, y, x), (z - drop_mm / 3.0, y + 4, x + side * reach_mm / 2.0)


def _evidence(
    *bars: tuple[tuple, tuple], rim_px: int = 0, dimmed: tuple[tuple[tuple, tuple], ...] = ()
) -> dict[int, VertebraRibs]:
    """`rim_px`: enhanced soft tissue (130 HU: above the 100 HU at which the body's width is measured,
    below bone) this many pixels wide against the body's sides. `dimmed`: bars redrawn at 200 HU, which the
    smoothing of the rib mask reads at about 160 HU, under the 180 HU bone threshold (a thin rib's shaft
    dimmed by interpolation or a lower calibration)."""
    hu = np.full((NZ, NY, NX), 40.0, dtype=np.float32)
    yy, xx = np.mgrid[:NY, :NX]
    rim = ((xx - CX) / (HALF_WIDTH_PX + rim_px)) ** 2 + ((yy - BODY_Y) / 7.5) ** 2 <= 1.0
    hu[:, rim] = 130.0
    body = ((xx - CX) / HALF_WIDTH_PX) ** 2 + ((yy - BODY_Y) / 7.5) ** 2 <= 1.0
    hu[:, body] = 250.0
    for start, end in bars:
        _bar(hu, start, end)
    for start, end in dimmed:
        _bar(hu, start, end, 200.0)
    grid = WorkGrid(
        hu=hu, spacing=(3.0, 2.0, 2.0), z_mm=np.arange(NZ) * 3.0, slice_mm=np.arange(NZ) * 3.0, max_gap_mm=3.0
    )
    ones = np.ones(NZ)
    trace = SpineTrace(
        cy=ones * (BODY_Y + 10), cx=ones * CX, body_y=ones * BODY_Y, body_depth_mm=DEPTH_MM, strength=ones
    )
    lo, hi = zip(*SEGMENTS, strict=True)
    return {v.segment: v for v in joint_ribs(grid, trace, list(lo), list(hi))}


def test_a_long_steep_rib_is_found_from_its_joint() -> None:
    ev = _evidence(_rib(3, -1, reach_mm=70, drop_mm=60), _rib(3, 1, reach_mm=70, drop_mm=60))
    v = ev[3]
    assert v.right and v.left
    assert 60 <= v.right_reach_mm <= 80 and v.right_drop_mm >= 40
    assert not any(ev[k].any for k in ev if k != 3)  # the rib is credited to its own vertebra only


def test_a_short_horizontal_rib_is_found() -> None:
    v = _evidence(_rib(3, -1, reach_mm=56, drop_mm=0), _rib(3, 1, reach_mm=56, drop_mm=0))[3]
    assert v.right and v.left and v.right_drop_mm < 5


def test_a_transverse_process_is_no_rib_but_its_length_is_the_evidence() -> None:
    v = _evidence(_rib(2, -1, reach_mm=22, drop_mm=0), _rib(2, 1, reach_mm=22, drop_mm=0))[2]
    assert not v.any
    assert 15 <= v.right_reach_mm <= 30 and 15 <= v.left_reach_mm <= 30


def test_one_side_only() -> None:
    v = _evidence(_rib(3, -1, reach_mm=70, drop_mm=30), _rib(3, 1, reach_mm=22, drop_mm=0))[3]
    assert v.right and not v.left


def test_the_rib_from_the_vertebra_above_passing_laterally_is_not_this_vertebras() -> None:
    # the rib of segment 4 runs steeply down past segment 3, 40 mm and more beside the body: segment 3's
    # joint is empty (a transverse process only)
    ev = _evidence(
        _rib(4, -1, reach_mm=80, drop_mm=70),
        _rib(3, -1, reach_mm=20, drop_mm=0),
        _rib(3, 1, reach_mm=20, drop_mm=0),
    )
    assert ev[4].right and not ev[3].any


def test_a_tall_plate_touching_a_transverse_process_is_no_rib() -> None:
    # an enhanced kidney's wall (or an iliac wing) beside a transverse process: bone-dense over 60 mm in place
    tp = _rib(2, 1, reach_mm=22, drop_mm=0)
    z, y, x = tp[1]
    plate = [((z + dz, y + 2, x + 1), (z + dz, y + 2, x + 25)) for dz in range(-10, 11)]
    v = _evidence(tp, *plate)[2]
    assert not v.left and v.left_reach_mm < 30


def test_a_steep_rib_whose_neck_runs_down_across_the_disc_is_the_vertebra_above_it() -> None:
    # The lowest rib's head sits against segment 4 just above the disc below it (as when that disc was read
    # a few millimetres into the body: non-square or coarse pixels, thick slices), and its neck runs steeply
    # down across the disc, through segment 3's joint window 10-16 mm beside the body, to a long shaft.
    # Segment 3's window holds the rib's neck, not its head: the rib is segment 4's.
    head = (43.0, BODY_Y + 3, CX - HALF_WIDTH_PX - 2)
    neck = (36.0, BODY_Y + 8, CX - HALF_WIDTH_PX - 9)
    shaft_end = (16.0, BODY_Y + 14, CX - HALF_WIDTH_PX - 40)
    ribs = [(head, neck), (neck, shaft_end)]
    mirrored = [tuple((z, y, 2 * CX - x) for z, y, x in bar) for bar in ribs]
    ev = _evidence(*ribs, *mirrored)
    assert ev[4].right and ev[4].left and ev[4].bears_ribs
    assert ev[4].right_reach_mm >= 70 and ev[4].right_drop_mm >= 40
    assert not ev[3].any and not ev[3].bears_ribs


@pytest.mark.parametrize("rim_px", [0, 1, 2])
def test_a_neck_hugging_the_body_is_found_whatever_pixel_its_side_is_measured_at(rim_px: int) -> None:
    # The lowest rib's head sits on the body's side and its neck runs down against it, a pixel beyond the
    # column's cut, before the shaft leaves (as T12's on the real volume). Enhanced tissue against the body
    # moves its measured side (and the cut) out by a pixel or two: the neck was kept or cut away, and the
    # rib found or lost, by the pixel (the left one lost without the rim, the right one with two pixels).
    head = (38.0, BODY_Y + 3, CX - HALF_WIDTH_PX - 2)
    neck = (32.0, BODY_Y + 3, CX - HALF_WIDTH_PX - 2)
    shaft_end = (22.0, BODY_Y + 10, CX - HALF_WIDTH_PX - 37)
    ribs = [(head, neck), (neck, shaft_end)]
    mirrored = [tuple((z, y, 2 * CX - x) for z, y, x in bar) for bar in ribs]
    ev = _evidence(*ribs, *mirrored, rim_px=rim_px)
    assert ev[3].right and ev[3].left
    assert min(ev[3].right_reach_mm, ev[3].left_reach_mm) >= 60
    assert min(ev[3].right_drop_mm, ev[3].left_drop_mm) >= 15
    assert not any(ev[k].any for k in ev if k != 3)


def test_a_rib_whose_shaft_is_dimmed_under_the_bone_threshold_is_still_a_rib() -> None:
    # segment 3's right rib's shaft, 16-30 mm beside the body, reads under BONE_HU: followed at BONE_HU the
    # bone stops there, a transverse process's length; its left rib is found, and so are segment 4's: at
    # FAINT_RIB_HU the right one goes on to its end
    (z0, y0, x0), (z1, y1, x1) = right = _rib(3, -1, reach_mm=70, drop_mm=40)

    def at(t: float) -> tuple[float, float, float]:
        return (z0 + t * (z1 - z0), y0 + t * (y1 - y0), x0 + t * (x1 - x0))

    dimmed = ((at(0.23), at(0.43)),)
    pair = (right, _rib(3, 1, reach_mm=70, drop_mm=40))
    above = (_rib(4, -1, reach_mm=70, drop_mm=20), _rib(4, 1, reach_mm=70, drop_mm=20))
    ev = _evidence(*pair, *above, dimmed=dimmed)
    assert ev[3].right and ev[3].left and ev[3].right_reach_mm >= 60
    assert ev[4].right and ev[4].left
    assert not any(ev[k].any for k in ev if k not in (3, 4))
    # below a rib-free vertebra a lone rib is more often a transverse process met by other bone: the lower
    # threshold is not tried
    alone = _evidence(*pair, dimmed=dimmed)[3]
    assert alone.left and not alone.right and alone.right_reach_mm < 36
