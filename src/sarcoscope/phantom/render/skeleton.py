"""The skeleton: vertebral bodies, discs and posterior arches, the ribs from their heads at the vertebral
bodies around the wall, and the pelvis with the hips."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from sarcoscope.phantom.anatomy import Anatomy, Vertebra
from sarcoscope.phantom.render.canvas import N_THETA, Painter
from sarcoscope.phantom.render.classes import (
    AIR,
    CANAL,
    CANC,
    CORT,
    DISC,
    EPIDURAL,
    FASC,
    IMAT,
    LUNG,
    MUS,
    MUS_ES,
    MUS_PS,
    N_CLASSES,
    OVER_CAVITY,
    SAT,
    SKIN,
    TABLE,
    VAT,
    lut,
)


def _body_shape(
    p: Painter, v: Vertebra, yc: float, cls: int, over: np.ndarray, vid: int, rows: np.ndarray
) -> None:
    """Vertebral body (bean-shaped ellipse) restricted to the rows in `rows` (bool over the window rows)."""
    a, b = v.width / 2, v.depth / 2
    w = p.window(-a, a, yc - b, yc + b)
    if w is None:
        return
    sy, sx, X, Y = w
    m = (X / a) ** 2 + ((Y - yc) / b) ** 2 < 1
    rc = a * 0.42
    m &= X**2 + (Y - (yc + b + rc * 0.55)) ** 2 > rc**2
    m &= rows[sy][:, None]
    p.put(sy, sx, m, cls, over, vid)


def paint_spine(p: Painter, anat: Anatomy, z: float, yc: float, slope: float, notch_y: float) -> None:
    """Bodies, discs and posterior arch; `notch_y` (mm) is the floor of the midline notch of the back,
    where the spinous processes end under the subcutaneous fat."""
    g = p.g
    verts = anat.vertebrae
    u_rows = z + slope * (g.y - yc)  # position along the column of each row (endplates tilt with the curve)
    v_near = min(verts, key=lambda v: abs(v.z_mid - z))
    all_bone = lut(tuple(c for c in range(N_CLASSES) if c not in (AIR, TABLE, SKIN)))
    # discs first (slightly larger than the bodies), then bodies with cortical rim and endplates
    for lower, upper in pairwise(verts):
        if not (lower.z_hi - 30 < z < upper.z_lo + 30):
            continue
        rows = (u_rows > lower.z_hi) & (u_rows < upper.z_lo)
        if rows.any():
            mid = Vertebra(
                "disc",
                0,
                "L",
                0,
                0,
                (lower.width + upper.width) / 2 + 2,
                (lower.depth + upper.depth) / 2 + 1.5,
            )
            _body_shape(p, mid, yc, CORT if upper.fused_below else DISC, all_bone, 0, rows)
    for v in verts:
        if not (v.z_lo - 30 < z < v.z_hi + 30):
            continue
        rows = (u_rows >= v.z_lo) & (u_rows <= v.z_hi)
        if rows.any():
            _body_shape(p, v, yc, CORT, all_bone, v.vid, rows)
            inner = (u_rows >= v.z_lo + 1.2) & (u_rows <= v.z_hi - 1.2)
            shrunk = Vertebra(v.name, v.vid, v.kind, 0, 0, v.width - 3.2, v.depth - 3.2)
            _body_shape(p, shrunk, yc, CANC, lut((CORT,)), v.vid, inner)
    # basivertebral vein notch (darker centre of the posterior body)
    if any((v.z_lo + 5 < z < v.z_hi - 5) for v in verts):
        p.ellipse(0, yc + v_near.depth * 0.3, 3.5, 2.2, DISC, lut((CANC,)))
    # posterior elements of the vertebra whose arch is at this level
    vd, vw = v_near.depth, v_near.width
    u_post = z + slope * (vd / 2 + 15)
    cy0 = yc + vd / 2
    canal_a, canal_b = vw * 0.22 + 2, vd * 0.25 + 1
    p.ellipse(0, cy0 + canal_b + 1, canal_a, canal_b, CANAL, lut((VAT, MUS_ES, MUS_PS, IMAT, SAT, LUNG)))
    notch = 0.45 * 0.42 * vw / 2 + 1.0  # anterior epidural fat in the concave posterior wall of the body
    p.ellipse(0, cy0 + canal_b + 1 - notch / 2, canal_a, canal_b + notch / 2, EPIDURAL, lut((VAT, IMAT)))
    sp_top = cy0 + 2 * canal_b + 3
    sp_len = max(min(anat.es_size[1] * 1.5 + 2, notch_y - 3.0 - sp_top), 6.0)
    if v_near.kind != "S":  # ligamenta flava and the interspinous ligament close the arch between laminae
        soft = lut((VAT, IMAT))
        for sgn in (-1, 1):
            p.segment((sgn * (canal_a + 3), cy0 + 6), (0, cy0 + 2 * canal_b + 2), 3.5, FASC, soft)
        p.segment((0, sp_top - 2), (0, sp_top + sp_len + 3), 2.5, FASC, soft)
        # supraspinous ligament / thoracolumbar raphe: the notch fat behind it is subcutaneous
        p.segment((-7.0, notch_y), (7.0, notch_y), 1.5, FASC, lut((VAT, IMAT, SAT)))
    for v in verts:
        f = (u_post - v.z_lo) / v.height
        if f < -1.0 or f > 1.4:
            continue
        vid = v.vid
        thor = v.kind == "T"
        if v.kind == "S":
            # the alae spread from the sides of the body, at the body's own level (not the arch's)
            f_ala = (z + slope * 4 - v.z_lo) / v.height
            if 0.0 <= f_ala <= 1.0:
                k = 1.0 if v.name == "S1" else 0.7
                for sgn in (-1, 1):
                    p.bone_ellipse(
                        sgn * (v.width / 2 + 18 * k), yc + 4, 24 * k, 15 * k, vid=vid, ang=sgn * 0.3
                    )
            if 0.0 <= f <= 1.0:
                p.bone_bar((0, cy0 + 2 * canal_b + 2), (0, cy0 + 2 * canal_b + 14), 6, vid)
                for sgn in (-1, 1):
                    p.bone_bar((sgn * canal_a, cy0 + 2), (sgn * (canal_a + 4), cy0 + 2 * canal_b + 4), 7, vid)
            continue
        if 0.3 <= f <= 0.97:  # pedicles
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 3.5), cy0 + 4, 4.5, 8, vid=vid)
        if (0.5 <= f <= 0.72) if not thor else (0.5 <= f <= 0.95):  # transverse processes
            for sgn in (-1, 1):
                tip = (sgn * (vw / 2 + (v.tp_length if not thor else 14)), cy0 + (6 if not thor else 20))
                width = 7.0 if not (v.fused_below and not thor) else 16
                p.bone_bar((sgn * (canal_a + 3), cy0 + 7), tip, width, vid)
        lam = (-0.15, 0.6) if not thor else (-0.3, 0.6)
        if lam[0] <= f <= lam[1]:
            for sgn in (-1, 1):
                p.bone_bar((sgn * (canal_a + 3), cy0 + 8), (0, cy0 + 2 * canal_b + 4), 6, vid)
        sp = (-0.25, 0.55) if not thor else (-1.0, 0.3)
        if sp[0] <= f <= sp[1]:
            length = sp_len if not thor else 26
            p.bone_bar((0, sp_top), (0, sp_top + length), 7 if not thor else 6, vid)
            p.bone_ellipse(0, sp_top + length, 4.5, 5, vid=vid)
        if 0.8 <= f <= 1.3:  # superior articular processes (reaching up beside the disc above)
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 6), cy0 + 14, 5.5, 8, vid=vid, ang=sgn * 0.5)
        if -0.35 <= f <= 0.15:  # inferior articular processes
            for sgn in (-1, 1):
                p.bone_ellipse(sgn * (canal_a + 1), cy0 + 20, 5, 7.5, vid=vid, ang=sgn * 0.5)


def paint_ribs(p: Painter, anat: Anatomy, z: float, ro: np.ndarray, tw: np.ndarray, yc: float) -> None:
    """Each rib runs from its head at the vertebral body past the transverse process (neck, tubercle and
    angle: one continuous bone) and around the wall, descending ~0.4 mm per mm of arc."""
    # the ribs bound the cavity: bowel, kidney or spleen painted into the wall region give way to them
    over = lut(tuple(c for c in range(N_CLASSES) if c not in (CORT, CANC, DISC, AIR, TABLE, SKIN)))
    for v in anat.vertebrae:
        if not v.rib:
            continue
        t_idx = int(v.name[1:]) if v.kind == "T" else 13
        z_head = v.z_lo + 0.7 * v.height
        if z > z_head + 10 or z < z_head - 260:
            continue
        frac_len, rib_slope = v.rib_length, v.rib_slope
        for sgn in v.rib_sides:
            # neck: from the body to the transverse process tip, at the head level
            # (ribs stay inside the body where a thin patient's back is flattened on the table)
            back = anat.y_table - 12.0
            tip = (sgn * (v.width / 2 + 14), min(yc + v.depth / 2 + 20, back))
            th0 = np.arctan2(tip[1], tip[0])
            if abs(z - z_head) < 5:
                p.bone_bar((sgn * v.width / 2, yc), tip, 8, 0)
                # the rib's angle: from the tubercle at the transverse process out to the shaft at the wall
                k0 = int((th0 + np.pi) / (2 * np.pi) * N_THETA) % N_THETA
                r0 = ro[k0] - max(tw[k0] * 0.5, 4.0) - 2.0
                p.bone_bar(tip, (r0 * np.cos(th0), min(r0 * np.sin(th0), back)), 7, 0)
            arc = (z_head - z) / rib_slope
            if arc < 0:
                continue
            r_mean = float(np.mean(ro))
            total = np.pi * 1.05 * frac_len * r_mean
            if arc > total:
                continue
            theta = th0 - sgn * arc / r_mean  # runs laterally, then anteriorly
            theta = float(np.angle(np.exp(1j * theta)))
            k = int((theta + np.pi) / (2 * np.pi) * N_THETA) % N_THETA
            rr = ro[k] - max(tw[k] * 0.5, 4.0) - 2.0
            cx, cy = rr * np.cos(theta), min(rr * np.sin(theta), back)
            along = min(4.5 / rib_slope, 14.0) * (0.7 if t_idx >= 11 else 1.0)
            p.bone_ellipse(cx, cy, along, 4.2, ang=theta + np.pi / 2, rim=1.4, over=over)


def paint_pelvis(p: Painter, anat: Anatomy, z: float, yc: float, fw: float, fda: float) -> None:
    crest = anat.iliac_crest
    if z > crest:
        return
    s1 = anat.vertebra("S1")
    # iliac wings: curved plates from the sacroiliac joint to the anterior superior iliac spine
    if -85 < z <= crest:
        f = (crest - z) / (crest + 85)
        lat = fw * (0.78 - 0.25 * f)
        thick = 5 + 9 * f
        for sgn in (-1, 1):
            si = (sgn * (s1.width / 2 + 30 - 8 * f), yc + 8)
            mid = (sgn * lat, yc - 25 - 10 * f)
            ant = (sgn * (lat - 10 - 20 * f), yc - 70 + 10 * f)
            start = si if z < crest - 15 else ((si[0] + mid[0]) / 2, (si[1] + mid[1]) / 2)
            p.bone_bar(start, mid, thick, 0)
            p.bone_bar(mid, ant, thick * 0.8, 0)
            # iliacus inside, gluteus outside the wing
            p.ellipse(sgn * (lat - 28), yc - 30, 18, 28, MUS_PS, OVER_CAVITY, ang=sgn * 0.4)
            p.ellipse(sgn * (lat + 6), yc + 5, 14 + 10 * f, 35, MUS, lut((VAT, SAT)), ang=sgn * -0.3)
    if -125 < z <= -75:  # acetabulum and femoral head
        for sgn in (-1, 1):
            hx, hy = sgn * fw * 0.6, -5.0
            p.bone_ellipse(hx - sgn * 8, hy, 32, 30, over=lut((VAT, MUS, MUS_PS, SAT)))
            p.ellipse(hx, hy, 25, 25, FASC, lut((CORT, CANC)))  # joint space
            p.bone_ellipse(hx, hy, 23, 23, over=lut((FASC,)))
            p.ellipse(hx + sgn * 26, hy + 35, 28, 40, MUS, lut((VAT, SAT)))
    if -150 < z <= -115:  # pubic rami and ischium
        for sgn in (-1, 1):
            p.bone_bar((sgn * fw * 0.45, -12), (sgn * 8, -fda * 0.75), 13, 0)
            p.bone_ellipse(sgn * fw * 0.42, 28, 16, 22)
    if z <= -115:  # femora
        for sgn in (-1, 1):
            fx = sgn * (fw * 0.6 - (0 if z > -175 else min((-175 - z) * 0.1, 20)))
            p.bone_ellipse(fx, -5.0 if z > -175 else 10.0, 14, 14, rim=4.5)
