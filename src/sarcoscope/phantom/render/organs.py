"""Organs: lungs and heart above the diaphragm, liver, spleen, kidneys, the great vessels, bowel and
mesentery, the bladder."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.phantom.anatomy import Blob
from sarcoscope.phantom.render.canvas import Level, Painter
from sarcoscope.phantom.render.classes import (
    AORTA,
    BLOOD,
    BWALL,
    CALC,
    COLLAPSED,
    FASC,
    FLUID,
    GAS,
    IVC,
    KCOR,
    KMED,
    LIVER,
    LUNG,
    MUS_PS,
    OCON,
    OVER_CAVITY,
    SPLEEN,
    STOOL,
    URINE,
    VAT,
    VESSEL,
    lut,
)
from sarcoscope.phantom.render.trunk import Wall


def paint_upper_organs(lv: Level, w: Wall) -> None:
    """Lungs and heart above the diaphragm; liver (right) and spleen (left), shrinking to their tips."""
    anat, z, p, X, Y = lv.anat, lv.z, lv.p, w.X, w.Y
    cls = p.cls
    fw, fda, fdp, yc = w.fw, w.fda, w.fdp, lv.yc
    t9 = anat.vertebra("T9")
    dome_r = t9.z_mid + 5
    if z > anat.vertebra("T12").z_lo - 40 and not w.legs:
        zd = (
            dome_r
            - 45 * ((np.abs(X) - 0.35 * fw) / (0.6 * fw)) ** 2
            - 85 * np.clip((Y + 10) / (fdp + 10), 0, 1) ** 2
        )
        zd = zd - np.where(X > 0, 12.0, 0.0)
        lung = (zd < z) & (cls == VAT) & (np.abs(X) > 22 + 10 * (Y < yc))  # noqa: SIM300
        lung &= w.depth > np.where(w.rect[w.ti], 10, 6)
        cls[lung] = LUNG
        heart_s = float(np.sqrt(max(1 - ((z - (t9.z_mid + 55)) / 65) ** 2, 0.0)))
        if heart_s > 0:
            p.ellipse(15, -fda * 0.25, 58 * heart_s, 48 * heart_s, BLOOD, lut((VAT, LUNG)), ang=-0.4)
    liver_s = float(np.clip((z - anat.liver_bottom) / 110, 0, 1)) * float(
        np.clip((dome_r - z) / 30 + 0.3, 0, 1)
    )
    if liver_s > 0 and not w.legs:
        lx = -fw * (0.32 + 0.38 * (1 - liver_s) ** 1.5)
        la, lb = fw * 0.6 * liver_s**0.7 + 8, (fda + fdp) * 0.42 * liver_s**0.6 + 8
        if anat.liver_wall:  # the tip reaches the wall; painted over the cavity only, so it stops there
            lx, la = lx - 10 * (1 - liver_s), la + 25 * (1 - liver_s)
        p.ellipse(lx, -fda * 0.1 + 15 * (1 - liver_s), la, lb,
                  LIVER, OVER_CAVITY, ang=-0.3 * (1 - liver_s))  # fmt: skip
        if liver_s > 0.55:  # left lobe, anterior, crossing the midline
            k = (liver_s - 0.55) / 0.45
            p.ellipse(
                fw * 0.05, -fda * 0.55, fw * 0.45 * k + 5, fda * 0.3 * k + 5, LIVER, OVER_CAVITY, ang=0.25
            )
    t11 = anat.vertebra("T11")
    spl = float(np.clip(1 - abs(z - t11.z_lo) / 55, 0, 1))
    if spl > 0:
        p.ellipse(fw * 0.62, yc - 5, 32 * spl + 5, 45 * spl + 5, SPLEEN, OVER_CAVITY, ang=0.6)


def paint_lower_organs(lv: Level, w: Wall) -> None:
    """Kidneys, aorta and IVC (with the iliac vessels below the bifurcation), bowel, the bladder, and the
    mesenteric vessels and strands in the visceral fat."""
    anat, z, p, rng, grid = lv.anat, lv.z, lv.p, lv.rng, lv.grid
    cls = p.cls
    yc, vw, vd, zl3, fw, fda = lv.yc, lv.vw, lv.vd, lv.zl3, w.fw, w.fda
    hab = anat.habitus
    legs, thorax = w.legs, lv.thorax
    # ---- kidneys ------------------------------------------------------------------------------------
    for side, (kx, ky, kz, hl, size) in anat.kidney.items():
        f = 1 - ((z - kz) / hl) ** 2
        if f <= 0 or size == 0:
            continue
        ks = np.sqrt(f) * size
        ka, kb = 24 * ks + 3, 32 * ks + 3
        ang = (-1 if side == "R" else 1) * 0.7
        kyy = ky + (yc - float(anat.spine_y(kz)))
        p.ellipse(kx, kyy, ka, kb, KCOR, lut((VAT, LIVER, SPLEEN, BWALL, GAS, FLUID, STOOL)), ang=ang)
        p.ellipse(kx, kyy, ka * 0.72, kb * 0.75, KMED, lut((KCOR,)), ang=ang)
        if ks > 0.55:
            hx = kx - np.sign(kx) * ka * 0.45
            p.ellipse(hx, kyy - kb * 0.15, ka * 0.35, kb * 0.3, VAT, lut((KMED, KCOR)), ang=ang)
            p.ellipse(hx + np.sign(kx) * 2, kyy - kb * 0.1, ka * 0.15, kb * 0.18, URINE, lut((VAT,)), ang=ang)

    # ---- great vessels -------------------------------------------------------------------------------
    z_bif = anat.vertebra("L4").z_mid
    ar = anat.aorta_r * (1 + 0.15 * np.clip((z - zl3) / 200, 0, 1))
    ay = yc - vd / 2 - ar - 2
    if not legs:
        if z > z_bif:
            p.ellipse(anat.aorta_x, ay, ar, ar, AORTA, lut((VAT, LUNG, BWALL, MUS_PS)))
            if hab.age_years > 55 and rng.random() < 0.6:
                a = rng.uniform(0, 2 * np.pi)
                p.ellipse(
                    anat.aorta_x + ar * np.cos(a) * 0.9,
                    ay + ar * np.sin(a) * 0.9,
                    1.5,
                    1.2,
                    CALC,
                    lut((AORTA,)),
                )
            p.ellipse(-20 - vw * 0.1, yc - vd / 2 - 9, 13, 8, IVC, lut((VAT, LUNG, BWALL, MUS_PS)))
            if z < anat.vertebra("L1").z_hi:  # mesenteric root: SMA / SMV
                p.ellipse(anat.aorta_x - 5, ay - ar - 14, 3.5, 3.5, AORTA, OVER_CAVITY)
                p.ellipse(anat.aorta_x - 17, ay - ar - 12, 5.5, 5, IVC, OVER_CAVITY)
        elif z > -140:
            off = (z_bif - z) * 0.45
            for sgn in (-1, 1):
                p.ellipse(sgn * (6 + off), ay + off * 0.3, ar * 0.6, ar * 0.6, AORTA, lut((VAT, MUS_PS)))
                p.ellipse(
                    sgn * (6 + off) - 4,
                    ay + off * 0.3 + ar * 0.8,
                    ar * 0.7,
                    ar * 0.55,
                    IVC,
                    lut((VAT, MUS_PS)),
                )

    # ---- bowel -----------------------------------------------------------------------------------------
    for bl in anat.blobs:
        if abs(z - bl.z) < bl.hz:
            paint_blob(p, bl, z)
    if anat.vat_amount < 0.3 and not thorax:  # cachexia: bowel and mesentery fill the fat planes
        grow_px = round(10.0 * (0.3 - anat.vat_amount) / 0.3 / grid.psx)
        if grow_px > 0:
            gut = lut((BWALL, COLLAPSED, FLUID, OCON, GAS, STOOL))[cls]
            grown = ndi.binary_dilation(gut, iterations=grow_px) & (cls == VAT)
            cls[grown] = COLLAPSED
    # Bladder in the pelvis.
    bz = -105.0
    bs = 1 - ((z - bz) / 45) ** 2
    if bs > 0:
        p.ellipse(0, -fda * 0.45, 45 * np.sqrt(bs) + 2, 35 * np.sqrt(bs) + 2, URINE, OVER_CAVITY)
        p.ellipse(0, -fda * 0.45, 45 * np.sqrt(bs) + 4.5, 35 * np.sqrt(bs) + 4.5, BWALL, lut((VAT,)))

    # ---- mesenteric vessels and strands in the visceral fat -----------------------------------------
    if not legs and not thorax:
        root = (anat.aorta_x - 8, ay - ar - 20)
        n_lines = int(rng.integers(10, 35))
        for _ in range(n_lines):
            ang = rng.uniform(0, 2 * np.pi)
            L = rng.uniform(10, 60)
            steps = int(rng.integers(3, 7))
            a_k = ang + np.cumsum(rng.normal(0, 0.5, steps))
            seg = L / steps
            start = (
                np.array(root)
                + rng.normal(0, 25, 2)
                + np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0, 60)
            )
            pts = np.vstack(
                [start, start + np.cumsum(np.column_stack([np.cos(a_k), np.sin(a_k)]) * seg, axis=0)]
            )
            p.polyline(pts, rng.uniform(0.5, 1.3), VESSEL if rng.random() < 0.5 else FASC, OVER_CAVITY)
        for _ in range(int(rng.integers(15, 60))):
            r = rng.uniform(0.8, 3.0)
            p.ellipse(
                rng.uniform(-fw, fw) * 0.8,
                rng.uniform(-fda, yc),
                r,
                r * rng.uniform(0.7, 1.3),
                VESSEL,
                OVER_CAVITY,
            )


def paint_blob(p: Painter, bl: Blob, z: float) -> None:
    f = np.sqrt(max(1 - ((z - bl.z) / bl.hz) ** 2, 0.0))
    a, b = bl.a * (0.35 + 0.65 * f), bl.b * (0.35 + 0.65 * f)
    over = lut((VAT, BWALL, FLUID, OCON, GAS, STOOL, COLLAPSED))
    content = {"fluid": FLUID, "contrast": OCON, "gas": GAS, "stool": STOOL, "collapsed": COLLAPSED}
    if bl.path is not None:  # loop lying in the plane: a curved tube
        pts = bl.path + np.array([bl.x, bl.y])
        r = min(a, b)
        p.polyline(pts, 2 * r, BWALL, over)
        inner = content[bl.content]
        p.polyline(pts, 2 * (r - bl.wall), inner, lut((BWALL,)))
        if inner == COLLAPSED:
            p.polyline(pts, 0.5 * (r - bl.wall), FLUID, lut((COLLAPSED,)))
        return
    p.ellipse(bl.x, bl.y, a, b, BWALL, over, ang=bl.ang, lobes=bl.lobes)
    ia, ib = a - bl.wall, b - bl.wall
    inner = lut((BWALL,))
    content = content[bl.content]
    if content == COLLAPSED:
        p.ellipse(bl.x, bl.y, ia, ib, COLLAPSED, inner, ang=bl.ang, lobes=bl.lobes)
        p.ellipse(bl.x, bl.y, ia * 0.35, ib * 0.2, FLUID, lut((COLLAPSED,)), ang=bl.ang)
        return
    p.ellipse(bl.x, bl.y, ia, ib, content, inner, ang=bl.ang, lobes=bl.lobes)
    if (content in (FLUID, OCON, STOOL) and bl.kind != "sb") or content == GAS:
        # supine: gas rises anteriorly (smaller y)
        lvl = bl.y - max(ia, ib) + 2 * max(ia, ib) * (bl.level if content != GAS else 0.9)
        p.ellipse(
            bl.x, bl.y, ia, ib, GAS, lut((FLUID, OCON, STOOL)), ang=bl.ang, lobes=bl.lobes, cut=(lvl, -1)
        )
        if content == GAS:
            p.ellipse(bl.x, bl.y, ia, ib, FLUID, lut((GAS,)), ang=bl.ang, lobes=bl.lobes, cut=(lvl, 1))
