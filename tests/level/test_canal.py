"""The spinal canal as a landmark for the column: a hole ringed by bone, behind the vertebral body, that
oral contrast in bowel cannot imitate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sarcoscope.level.spine import WorkGrid, canal_track, column_band, trace_spine

MM = 2.0  # working-grid pixel (mm)


def _column_with_bowel(n: int = 40) -> WorkGrid:
    """`n` slices of a vertebra (a body of 250 HU with its arch ringing a canal of 30 HU) in soft tissue,
    and a large loop of positive oral contrast (400 HU) 80-110 mm in front of the canal."""
    ny = nx = 100
    hu = np.full((n, ny, nx), 40.0, dtype=np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    body = ((xx - 50) / 12.0) ** 2 + ((yy - 50) / 8.0) ** 2 <= 1.0
    r = np.hypot(yy - 64.0, xx - 50.0)
    hu[:, body] = 250.0
    hu[:, (r >= 4.0) & (r <= 7.0)] = 400.0  # pedicles and laminae around the canal
    hu[:, 5:25, 15:85] = 400.0  # the bowel
    z = 3.0 * np.arange(n)
    return WorkGrid(hu=hu, spacing=(3.0, MM, MM), z_mm=z, slice_mm=z, max_gap_mm=3.0)


def test_the_canal_is_followed_where_it_is_ringed_by_bone() -> None:
    grid = _column_with_bowel()
    band = column_band(grid)
    path = canal_track(grid, band.x0, band.x1)
    assert path is not None
    assert np.abs(path[:, 0] - 64).max() <= 1 and np.abs(path[:, 1] + band.x0 - 50).max() <= 1
    # no ring, no canal: nothing to follow
    plain = _column_with_bowel()
    plain.hu[:, 56:72, 42:59] = 40.0
    band = column_band(plain)
    assert canal_track(plain, band.x0, band.x1) is None and band.gate is None


def test_the_wide_trace_stays_on_the_body_in_front_of_the_canal_not_on_bowel() -> None:
    # Chest to pelvis at 5 mm, seed 85: oral contrast in bowel 40-95 mm in front of S1 and L5, as dense as
    # bone and larger, drew the wide trace off the column, and the sacrum was found a disc high.
    grid = _column_with_bowel()
    band = column_band(grid)
    assert band.gate is not None
    wide = trace_spine(grid, band, 16.0, posterior_weight=True)
    assert np.abs(wide.cy - 50).max() <= 10  # on the body (rows 42-58), not the bowel (5-25)
    ungated = trace_spine(grid, replace(band, gate=None), 16.0, posterior_weight=True)
    assert ungated.cy.max() < 30  # without the canal it is on the bowel
