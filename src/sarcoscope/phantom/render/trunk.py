"""The trunk: wall outline, subcutaneous fat and skin, the wall muscles, the back and retroperitoneal muscles
(paraspinals, psoas, quadratus), intermuscular fat, and the CT table under the body."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.phantom.anatomy import Anatomy
from sarcoscope.phantom.render.canvas import N_THETA, Grid, Level, Painter, harm
from sarcoscope.phantom.render.classes import (
    AIR,
    FASC,
    IMAT,
    MUS,
    MUS_ES,
    MUS_PS,
    OVER_CAVITY,
    OVER_MUSCLE,
    SAT,
    SKIN,
    TABLE,
    VAT,
    VESSEL,
    lut,
)


@dataclass
class Wall:
    """The trunk at one level: outline and wall-muscle tables over the angle about the body-frame origin,
    their per-pixel lookups, and the paraspinal bellies."""

    th: np.ndarray  # angle table (N_THETA,)
    ro: np.ndarray  # outer radius of the muscle wall (mm) per angle
    tw: np.ndarray  # wall-muscle thickness (mm) per angle
    rect: np.ndarray  # rectus sheath angles (bool)
    semilunar: np.ndarray  # linea semilunaris angles (bool)
    ld_t: np.ndarray  # latissimus thickness per angle
    sat_t: np.ndarray  # SAT thickness per angle (skin included)
    fw: float  # half width of the wall ellipse here
    fda: float  # anterior half depth
    fdp: float  # posterior half depth
    X: np.ndarray  # (1, nx) mm
    Y: np.ndarray  # (ny, 1) mm
    ti: np.ndarray  # angle-table index of every pixel
    depth: np.ndarray  # mm inside the wall outline (negative outside)
    legs: bool  # below the trunk: two thighs
    es_shapes: list  # (x, y, a, b, angle) of multifidus and erector spinae on each side
    para: np.ndarray  # the paraspinal muscle bellies (bool)
    fascia: np.ndarray  # everything inside the muscle wall (bool)


def body_box(anat: Anatomy, zs: np.ndarray) -> tuple[float, float, float, float]:
    """A mm box that surely holds the body at every z in `zs` (painting is restricted to it)."""
    half, top = 0.0, 0.0
    for z in zs:
        sw, sd, ss = anat.body_scale(float(z))
        sat = max(anat.sat) * ss * 1.5 + anat.skin + 12
        half = max(half, anat.fw * sw * 1.08 + sat)
        top = max(top, anat.fda * sd * 1.08 + sat)
    return (-half, half, -top, anat.y_table + 1.0)


def _posterior_compartment(
    para: np.ndarray, X: np.ndarray, Y: np.ndarray, y_wall: float, x_centre: float, y_centre: float
) -> np.ndarray:
    """Pixels behind the posterior vertebral-body wall and medial to the paraspinals' lateral edge.

    Row by row the limit is the lateral edge of the muscle bellies; in front of the erector spinae centre it
    is at least the centre (the fat around pedicles, transverse processes and psoas); behind it, the widest
    extent (fat the bellies leave toward the posterolateral wall is inside the thoracolumbar fascia too).
    Retroperitoneal fat lateral to psoas and quadratus, anterior to the erector spinae, stays outside.
    """
    ax = np.abs(X)
    edge = np.where(para, ax, 0.0).max(axis=1)
    widest = float(edge.max(initial=x_centre))
    lim = np.where(Y[:, 0] < y_centre, np.maximum(edge, x_centre), widest)
    return (Y > y_wall) & (ax <= lim[:, None])  # noqa: SIM300 (Y is the row-coordinate array)


def _distance_outside(region: np.ndarray, grid: Grid) -> np.ndarray:
    """Distance (mm) from `region`, computed at half resolution (it only sets the smooth SAT outline)."""
    small = region[::2, ::2]
    d = ndi.distance_transform_edt(~small, sampling=(2 * grid.psy, 2 * grid.psx)).astype(np.float32)
    h, w = region.shape
    rows = np.empty((h, d.shape[1]), np.float32)  # linear interpolation back to full size
    rows[::2] = d
    rows[1:-1:2] = 0.5 * (d[:-1] + d[1:])[: len(rows[1:-1:2])]
    if h % 2 == 0:
        rows[-1] = d[-1]
    full = np.empty((h, w), np.float32)
    full[:, ::2] = rows
    full[:, 1:-1:2] = 0.5 * (rows[:, :-1] + rows[:, 1:])[:, : len(range(1, w - 1, 2))]
    if w % 2 == 0:
        full[:, -1] = rows[:, -1]
    full[region] = 0.0
    return full


def _imat(p: Painter, anat: Anatomy, rng: np.random.Generator, es_shapes: list) -> None:
    """Intermuscular fat: marbling streaks in the paraspinals, dots in every muscle."""
    myo = anat.habitus.myosteatosis
    for ex, ey, ea, eb, _ in es_shapes:
        for _ in range(int(1 + 14 * myo * rng.random() + 4 * myo)):
            x0 = ex + rng.uniform(-0.8, 0.8) * ea
            y0 = ey + rng.uniform(-0.8, 0.8) * eb
            a = rng.normal(np.pi / 2, 0.5) + np.cumsum(rng.normal(0, 0.5, 4))
            L = rng.uniform(2, 7)
            pts = np.vstack(
                [
                    [[x0, y0]],
                    np.array([x0, y0]) + np.cumsum(np.column_stack([np.cos(a), np.sin(a)]) * L, axis=0),
                ]
            )
            p.polyline(pts, rng.uniform(0.6, 1.3 + 1.2 * myo), IMAT, OVER_MUSCLE)
    n_dots = int(3 + 25 * myo**1.5)
    g = p.g
    idx = np.flatnonzero(OVER_MUSCLE[p.cls])
    if idx.size == 0:
        return
    for k in rng.choice(idx, size=n_dots):
        x, y = float(g.x[k % len(g.x)]), float(g.y[k // len(g.x)])
        r = rng.uniform(0.5, 1.5 + 1.5 * myo)
        p.ellipse(x, y, r, r * rng.uniform(0.6, 1.6), IMAT, OVER_MUSCLE)
    for ex, ey, ea, eb, _ in es_shapes[:4]:
        for _ in range(int(40 * myo)):
            r = rng.uniform(0.5, 1.2 + 1.5 * myo)
            p.ellipse(ex + rng.uniform(-1, 1) * ea, ey + rng.uniform(-1, 1) * eb, r, r, IMAT, OVER_MUSCLE)


def wall_outline(lv: Level) -> Wall:
    """Wall outline (polar table), wall-muscle and SAT thickness per angle, and the paraspinal bellies that
    bulge beyond the outline posteriorly (the midline notch)."""
    anat, z, grid, p = lv.anat, lv.z, lv.grid, lv.p
    th = np.linspace(-np.pi, np.pi, N_THETA, endpoint=False).astype(np.float32)
    fw, fda = anat.fw * lv.sw, anat.fda * lv.sd
    es_a, es_b = anat.es_size
    es_a, es_b = es_a * (0.7 + 0.3 * lv.lumbar_w), es_b * (0.65 + 0.35 * lv.lumbar_w)
    if z < -30:
        f = float(np.clip((-30 - z) / 60, 0, 1))
        es_a, es_b = es_a * (1 - 0.6 * f), es_b * (1 - 0.75 * f)
    es_top = lv.yc + lv.vd / 2 + 4
    fdp = es_top + es_b * 1.35
    c, s = np.cos(th), np.sin(th)
    b = np.where(s < 0, np.float32(fda), np.float32(fdp))
    pw = anat.wall_p
    ro = 1.0 / (np.abs(c / fw) ** pw + np.abs(s / b) ** pw) ** (1 / pw)
    ro = ro * (1 + harm(th, anat.wall_harm))
    psi = np.abs(np.angle(np.exp(1j * (th + np.pi / 2))))  # 0 anterior midline .. pi posterior midline
    xo = ro * c
    rect = np.abs(xo) < anat.rectus_w
    rect &= psi < np.pi / 2
    tr = anat.rectus_t * (
        0.75 + 0.25 * np.clip(np.cos(np.clip(np.abs(xo) / anat.rectus_w, 0, 1) * np.pi / 2), 0, 1) ** 0.5
    )
    psi_end = np.deg2rad(128)
    taper = np.clip((psi_end - psi) / np.deg2rad(22), 0, 1)
    lateral = 0.5 + 0.5 * np.clip(
        np.sin(np.clip((psi - np.deg2rad(35)) / np.deg2rad(85), 0, 1) * np.pi / 2), 0, 1
    )
    tw = np.where(rect, tr, anat.oblique_t * taper * lateral * (1 + 2.5 * harm(th, anat.wall_harm)))
    if lv.thorax:
        tw = np.minimum(tw, 7.0)
    semilunar = np.abs(np.abs(xo) - anat.rectus_w) < 1.6
    ld = (psi > np.deg2rad(105)) & (psi < np.deg2rad(160)) & (z < anat.vertebra("T8").z_mid) & (z > -40)
    ld_t = np.where(ld, (2.0 + 4 * anat.ms) * np.sin((psi - np.deg2rad(105)) / np.deg2rad(55) * np.pi), 0)
    sat_a, sat_l, sat_p = (v * lv.ss for v in anat.sat)
    w_ant, w_post = np.clip(-s, 0, 1) ** 2, np.clip(s, 0, 1) ** 2
    sat_t = w_ant * sat_a + w_post * sat_p + (1 - w_ant - w_post) * sat_l
    sat_t = np.maximum(sat_t * (1 + harm(th, anat.sat_harm)), 2.5) + anat.skin

    X = grid.x[None, :]
    Y = grid.y[:, None]
    rho, ti = grid.polar()
    ro_px = ro[ti]
    depth = ro_px - rho
    inside = depth > 0
    legs = z < -175
    if legs:
        leg_r = fw * 0.42
        inside = ((X - fw * 0.45) ** 2 + (Y - 10) ** 2 < leg_r**2) | (
            (X + fw * 0.45) ** 2 + (Y - 10) ** 2 < leg_r**2
        )
    fascia = inside.copy()
    mf_a, mf_b = (7 * anat.ms + 3) * (0.6 + 0.4 * lv.lumbar_w), es_b * 0.9
    es_shapes = []
    para = np.zeros(grid.shape, bool)  # the paraspinal muscle bellies (multifidus, erector spinae)
    if not legs:
        for sgn in (-1, 1):
            mfx = sgn * (5 + mf_a)
            esx = sgn * (5 + 2 * mf_a + es_a * 0.75)
            es_shapes.append((mfx, es_top + mf_b, mf_a, mf_b, sgn * -0.15))
            es_shapes.append((esx, es_top + es_b, es_a, es_b, sgn * -0.25))
        for ex, ey, ea, eb, ang in es_shapes:
            w = p.window(ex - ea - 1, ex + ea + 1, ey - ea - eb, ey + ea + eb)
            if w is None:
                continue
            sy, sx, Xw, Yw = w
            ca, sa = np.cos(ang), np.sin(ang)
            u = ((Xw - ex) * ca + (Yw - ey) * sa) / ea
            v = (-(Xw - ex) * sa + (Yw - ey) * ca) / eb
            para[sy, sx] |= u * u + v * v < 1
    fascia |= para
    ld_px = ld_t[ti]
    fascia |= (depth > -ld_px) & (ld_px > 0)
    return Wall(th, ro, tw, rect, semilunar, ld_t, sat_t, fw, fda, fdp, X, Y, ti, depth, legs, es_shapes,
                para, fascia)  # fmt: skip


def body_mask(lv: Level, w: Wall) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The body (the wall region grown by the SAT thickness, flattened on the table), with the distance
    outside the wall and the SAT thickness per pixel that the layers are painted from."""
    anat, Y = lv.anat, w.Y
    dist = _distance_outside(w.fascia, lv.grid)
    sat_px = w.sat_t[w.ti]
    # lying on the table: the soft tissue flattens (SAT thins toward the contact line), no sharp corner
    ramp = np.clip((Y - (anat.y_table - 25.0)) / 25.0, 0, 1)
    body = dist < sat_px * (1 - 0.6 * ramp * ramp) + 6.0 * ramp * ramp
    body &= Y < anat.y_table  # noqa: SIM300 (Y is the row-coordinate array)
    return body, dist, sat_px


def paint_layers(lv: Level, w: Wall, body: np.ndarray, dist: np.ndarray, sat_px: np.ndarray) -> None:
    """SAT with skin, the cavity as VAT, Scarpa's fascia, fibrous septa and small vessels in the SAT."""
    anat, grid, p, rng, Y = lv.anat, lv.grid, lv.p, lv.rng, w.Y
    cls = p.cls
    cls[body] = SAT
    skin = (dist > sat_px - anat.skin) | (Y > anat.y_table - anat.skin)  # noqa: SIM300
    cls[body & skin] = SKIN
    cls[w.fascia] = VAT
    # superficial (Scarpa's) fascia: a thin, interrupted layer inside thick SAT, with fibrous septa
    sf = anat.superficial_fascia * sat_px
    layer = (np.abs(dist - sf) < 0.45) & (cls == SAT) & (sat_px > 12)
    layer &= harm(w.th, anat.sat_harm * 6)[w.ti] > -0.15
    cls[layer] = FASC
    sat_idx = np.flatnonzero(cls == SAT)
    if sat_idx.size:
        nx = cls.shape[1]
        for k in rng.choice(sat_idx, size=int(rng.integers(8, 30))):
            x0, y0 = float(grid.x[k % nx]), float(grid.y[k // nx])
            ang = np.arctan2(y0, x0) + rng.normal(0, 0.5)
            L = rng.uniform(3, 15)
            p.segment(
                (x0, y0),
                (x0 + L * np.cos(ang), y0 + L * np.sin(ang)),
                rng.uniform(0.4, 0.9),
                FASC,
                lut((SAT,)),
            )
        for k in rng.choice(sat_idx, size=int(rng.integers(3, 15))):
            r = rng.uniform(0.6, 1.6)
            p.ellipse(float(grid.x[k % nx]), float(grid.y[k // nx]), r, r, VESSEL, lut((SAT,)))


def paint_wall_muscles(lv: Level, w: Wall) -> None:
    """Rectus, the three oblique layers with their fat planes, latissimus; in the thighs, their muscles."""
    anat, p, X = lv.anat, lv.p, w.X
    cls = p.cls
    if not w.legs:
        tw_px = w.tw[w.ti]
        depth = w.depth
        frac = np.where(tw_px > 0, depth / np.maximum(tw_px, 1e-3), 2.0)
        wall = (depth > 0) & (frac < 1) & (tw_px > 0.5)
        rect_px = w.rect[w.ti]
        m = wall & rect_px & (np.abs(X) > anat.linea_alba / 2)
        cls[m] = MUS
        cls[wall & rect_px & (np.abs(X) <= anat.linea_alba / 2)] = SAT  # fat between the recti
        cls[wall & rect_px & (np.abs(X) <= 0.6)] = FASC  # linea alba
        obl = wall & ~rect_px
        cls[obl] = MUS
        pl = anat.fat_plane / np.maximum(tw_px, 1.0)
        plane = obl & (((frac > 0.33) & (frac < 0.33 + pl)) | ((frac > 0.72) & (frac < 0.72 + pl)))
        cls[plane] = IMAT
        cls[wall & w.semilunar[w.ti]] = FASC
        ld_px = w.ld_t[w.ti]
        cls[(depth <= 0) & (depth > -ld_px) & (ld_px > 0)] = MUS
    else:
        for sgn in (-1, 1):
            p.ellipse(sgn * w.fw * 0.45, 10, w.fw * 0.42 - 2, w.fw * 0.42 - 2, MUS, OVER_CAVITY)


def paint_back_muscles(lv: Level, w: Wall) -> dict[str, float] | None:
    """Psoas, quadratus lumborum, the paraspinals, the fat behind the lamina and the intermuscular fat of
    the posterior compartment; returns the paraspinal landmarks (None in the thighs)."""
    anat, z, p, rng, X, Y = lv.anat, lv.z, lv.p, lv.rng, w.X, w.Y
    yc, vw, vd, zl3 = lv.yc, lv.vw, lv.vd, lv.zl3
    hab = anat.habitus
    cls = p.cls
    l1 = anat.vertebra("L1")
    psoas_s = float(np.clip((l1.z_hi - z) / 70, 0, 1.0)) * (1 + 0.25 * np.clip((zl3 - z) / 60, 0, 1))
    if z < -10:
        psoas_s *= float(np.clip(1 + (z + 10) / 200, 0.4, 1))
    wl = float(np.clip((l1.z_lo - z) / 30, 0, 1))  # the patient's psoas shape develops below L1
    ps_fwd, ps_long = wl * anat.psoas_shape[0], 1 + wl * (anat.psoas_shape[1] - 1)
    ps_a, ps_b = (11 * anat.ms + 6) * psoas_s / ps_long**0.5, (14 * anat.ms + 7) * psoas_s * ps_long
    ql_s = float(np.clip((l1.z_hi + 10 - z) / 40, 0, 1) * np.clip((z - anat.iliac_crest) / 25, 0, 1))
    tp_len = 18 + 6 * max(1 - abs(z - zl3) / 60, 0)
    for sgn in (-1, 1):
        if psoas_s > 0.05 and not w.legs:
            pxc = sgn * (vw / 2 + ps_a * 0.85 + (0 if z > -20 else (-20 - z) * 0.25))
            pyc = yc + 4 + ps_b * (0.25 - ps_fwd) - (0 if z > -20 else (-20 - z) * 0.3)
            p.ellipse(pxc, pyc, ps_a, ps_b, MUS_PS, OVER_CAVITY, ang=sgn * 0.45)
        if ql_s > 0.05 and not lv.thorax:
            qa, qb = (11 * anat.ms + 5) * ql_s, (4 * anat.ms + 3) * ql_s
            qx = sgn * (vw / 2 + tp_len + qa * 0.35)
            p.ellipse(qx, yc + vd / 2 + 12, qa, qb, MUS_PS, lut((VAT, MUS_ES)), ang=sgn * 0.55)
    # Paraspinals (painted over the cavity class inside the fascia union).
    for ex, ey, ea, eb, ang in w.es_shapes:
        p.ellipse(ex, ey, ea, eb, MUS_ES, lut((VAT, SKIN, SAT)), ang=ang)
    # Thoracolumbar fat pocket behind the lamina (IMAT by the reference convention).
    if not w.legs and not lv.thorax:
        for sgn in (-1, 1):
            r = 2.0 + 5.0 * hab.myosteatosis * rng.random() + 2.5 * hab.adiposity
            p.ellipse(sgn * (vw * 0.22 + 4), yc + vd / 2 + 14, r, r * 1.3, IMAT, lut((MUS_ES, VAT)))
    landmarks = None
    if not w.legs:
        # Behind the vertebral body, inside the thoracolumbar fascia, the fat between the paraspinals, the
        # posterior arch and psoas is intermuscular (IMAT), not visceral: done before kidneys and bowel,
        # which are painted over VAT only, so they stay in front of this compartment.
        y_wall, (esx, ey) = yc + vd / 2, w.es_shapes[1][:2]
        behind = _posterior_compartment(w.para, X, Y, y_wall, abs(esx), ey)
        cls[behind & (cls == VAT)] = IMAT
        landmarks = {
            "vertebral_body_posterior_y": y_wall,
            "paraspinal_centre_x": abs(esx),
            "paraspinal_centre_y": ey,
            "paraspinal_lateral_x": float(np.abs(X)[:, w.para.any(axis=0)].max(initial=abs(esx))),
        }
    _imat(p, anat, rng, w.es_shapes)
    return landmarks


def paint_table(out: Painter, anat: Anatomy, full: Grid) -> None:
    """The CT table: two curved plates beneath the body."""
    gap, R, off2, t = anat.table
    t = max(t, 2.2 * full.psy)  # thinner than ~2 pixels, the curved line would break up
    yt = anat.y_table + gap
    for yy, tt in ((yt, t), (yt + off2, t * 0.8)):
        w = out.window(-250, 250, yy - 250**2 / (2 * R) - tt, yy + tt)
        if w is None:
            continue
        sy, sx, Xw, Yw = w
        tab = np.abs(Yw - (yy - (Xw * Xw) / (2 * R))) < tt / 2
        out.put(sy, sx, tab, TABLE, lut((AIR,)))
