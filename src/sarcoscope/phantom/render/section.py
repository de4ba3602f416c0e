"""One axial cross-section of an `Anatomy`: the painters of the trunk, organs and skeleton in their order
(later ones paint over earlier ones only where their look-up tables allow), then the table beneath."""

from __future__ import annotations

import numpy as np

from sarcoscope.phantom.anatomy import Anatomy
from sarcoscope.phantom.render.canvas import N_THETA, Grid, Level, Painter, Section
from sarcoscope.phantom.render.organs import paint_lower_organs, paint_upper_organs
from sarcoscope.phantom.render.skeleton import paint_pelvis, paint_ribs, paint_spine
from sarcoscope.phantom.render.trunk import (
    body_box,
    body_mask,
    paint_back_muscles,
    paint_layers,
    paint_table,
    paint_wall_muscles,
    wall_outline,
)


def render_outline(anat: Anatomy, z: float, grid: Grid) -> np.ndarray:
    """Boolean body mask at `z` on `grid` (no organs): used to frame the image."""
    crop = (grid, slice(None), slice(None))
    return render_section(anat, z, grid, np.random.default_rng(0), crop=crop, outline_only=True).cls > 0


def render_section(
    anat: Anatomy,
    z: float,
    full: Grid,
    rng: np.random.Generator,
    with_vid: bool = False,
    crop=None,
    outline_only: bool = False,
) -> Section:
    """Paint the axial cross-section of `anat` at height `z` (mm) on the grid `full`.

    `crop` = (sub-grid, row slice, column slice) from `Grid.crop(*body_box(...))`; re-using one crop for
    every slice of a volume lets its polar coordinates be computed once.
    """
    if crop is None:
        crop = full.crop(*body_box(anat, np.array([z])))
    grid, csy, csx = crop
    p = Painter(grid, with_vid)
    sw, sd, ss = anat.body_scale(z)
    v_near = min(anat.vertebrae, key=lambda v: abs(v.z_mid - z))
    lv = Level(
        anat=anat,
        z=z,
        p=p,
        rng=rng,
        sw=sw,
        sd=sd,
        ss=ss,
        yc=float(anat.spine_y(z)),
        slope=anat.spine_slope(z),
        vw=v_near.width,
        vd=v_near.depth,
        zl3=anat.l3.z_mid,
        thorax=z > anat.vertebra("T11").z_mid,
        lumbar_w=float(np.clip((anat.vertebra("T10").z_mid - z) / 60.0, 0, 1)),
    )
    wall = wall_outline(lv)
    body, dist, sat_px = body_mask(lv, wall)
    if outline_only:
        return Section(cls=body.astype(np.uint8), vid=None)
    paint_layers(lv, wall, body, dist, sat_px)
    paint_wall_muscles(lv, wall)
    paint_upper_organs(lv, wall)
    landmarks = paint_back_muscles(lv, wall)
    paint_lower_organs(lv, wall)
    paint_spine(p, anat, z, lv.yc, lv.slope, float(wall.ro[(3 * N_THETA) // 4]))
    paint_ribs(p, anat, z, wall.ro, wall.tw, lv.yc)
    paint_pelvis(p, anat, z, lv.yc, wall.fw, wall.fda)

    out = Painter(full, with_vid)
    out.cls[csy, csx] = p.cls
    if out.vid is not None and p.vid is not None:
        out.vid[csy, csx] = p.vid
    paint_table(out, anat, full)
    return Section(cls=out.cls, vid=out.vid, landmarks=landmarks)
