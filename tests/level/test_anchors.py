"""The rib finder (level.anchors.find_ribs) on a hand-made working grid with known bones."""

from __future__ import annotations

import numpy as np

from sarcoscope.level.anchors import find_ribs
from sarcoscope.level.spine import SpineTrace, WorkGrid

NZ, NY, NX = 60, 120, 120  # 3 mm slices, 2 mm pixels
CX, BODY_Y, DEPTH_MM = 60, 40, 30.0  # column midline, vertebral-body centre (pixels), body depth (mm)


def _bar(hu: np.ndarray, z0: float, z1: float, y0: float, y1: float, x0: float, x1: float) -> None:
    """A 4 mm thick bone bar from (z0, y0, x0) to (z1, y1, x1), drawn point by point."""
    for t in np.linspace(0.0, 1.0, 200):
        z, y, x = z0 + t * (z1 - z0), y0 + t * (y1 - y0), x0 + t * (x1 - x0)
        hu[round(z), round(y) - 1 : round(y) + 1, round(x) - 1 : round(x) + 1] = 500.0


def _find(*bars: tuple[float, ...]) -> list[float]:
    hu = np.full((NZ, NY, NX), 40.0, dtype=np.float32)
    for bar in bars:
        _bar(hu, *bar)
    grid = WorkGrid(
        hu=hu,
        spacing=(3.0, 2.0, 2.0),
        z_mm=np.arange(NZ) * 3.0,
        slice_mm=np.arange(NZ) * 3.0,
        max_gap_mm=3.0,
    )
    ones = np.ones(NZ)
    trace = SpineTrace(
        cy=ones * (BODY_Y + 10), cx=ones * CX, body_y=ones * BODY_Y, body_depth_mm=DEPTH_MM, strength=ones
    )
    return sorted(round(r.z_medial) for r in find_ribs(grid, trace))


# A rib: its head 30 mm beside the midline and 16 mm behind the body's centre, running 60 mm out to the side
# and 30 mm down.
RIB = (40, 30, BODY_Y + 8, BODY_Y + 14, CX + 15, CX + 45)


def test_a_rib_beside_the_column_is_found() -> None:
    assert _find(RIB) == [40]


def test_the_same_shape_behind_the_back_is_the_table() -> None:
    behind = (40, 30, BODY_Y + 50, BODY_Y + 56, CX + 15, CX + 45)  # 100 mm behind: 3.3 body depths
    assert _find(behind) == []
    assert _find(RIB, behind) == [40]


def test_a_long_rail_near_the_column_is_not_a_rib_head() -> None:
    # a bone whose medial edge runs 120 mm up and down beside the column, with a lateral arm lower down:
    # rib-like in extent and drop, but no rib head is that tall (a table rail, a muscle edge at threshold)
    edge = (50, 10, BODY_Y + 10, BODY_Y + 10, CX + 13, CX + 13)
    arm = (20, 10, BODY_Y + 10, BODY_Y + 12, CX + 13, CX + 45)
    assert _find(edge, arm) == []
