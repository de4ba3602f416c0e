"""The painting surface: a pixel grid in body-frame millimetres and a painter of simple shapes that paints
only inside small bounding boxes (a 512x512 section costs a few tens of milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from sarcoscope.phantom.anatomy import Anatomy
from sarcoscope.phantom.render.classes import CANC, CORT, OVER_NOT_BONE, lut

#: Angular resolution of the polar tables (wall outline, thicknesses) about the body-frame origin.
N_THETA = 720


@dataclass
class Grid:
    """Pixel grid of one section: mm coordinates of columns (x) and rows (y) in the body frame."""

    psy: float
    psx: float
    x: np.ndarray  # (nx,) mm
    y: np.ndarray  # (ny,) mm

    @classmethod
    def make(cls, n: int, psy: float, psx: float, cx_mm: float, cy_mm: float) -> Grid:
        """`cx_mm, cy_mm`: body-frame position of the image centre."""
        c = (n - 1) / 2.0
        x = ((np.arange(n) - c) * psx + cx_mm).astype(np.float32)
        y = ((np.arange(n) - c) * psy + cy_mm).astype(np.float32)
        return cls(psy, psx, x, y)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.y), len(self.x))

    def crop(self, x0: float, x1: float, y0: float, y1: float) -> tuple[Grid, slice, slice]:
        """The part of the grid inside a mm box (where the body is), with its slices into the full grid."""
        j0, j1 = (int(v) for v in np.searchsorted(self.x, [x0, x1]))
        i0, i1 = (int(v) for v in np.searchsorted(self.y, [y0, y1]))
        j1, i1 = max(j1, j0 + 2), max(i1, i0 + 2)
        j0, i0 = min(j0, len(self.x) - 2), min(i0, len(self.y) - 2)
        sy, sx = slice(i0, i1), slice(j0, j1)
        return Grid(self.psy, self.psx, self.x[sx], self.y[sy]), sy, sx

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """Radius (mm) and angle-table index of every pixel about the body-frame origin (cached)."""
        cached = getattr(self, "_polar", None)
        if cached is None:
            X, Y = self.x[None, :], self.y[:, None]
            rho = np.sqrt(X * X + Y * Y)
            ti = ((np.arctan2(Y, X) + np.pi) * (N_THETA / (2 * np.pi))).astype(np.int32) % N_THETA
            cached = (rho, ti)
            self._polar = cached
        return cached


class Painter:
    """Bounding-box painting of simple shapes into a class map (and an optional vertebra-id map)."""

    def __init__(self, grid: Grid, with_vid: bool) -> None:
        self.g = grid
        self.cls = np.zeros(grid.shape, np.uint8)
        self.vid = np.zeros(grid.shape, np.uint8) if with_vid else None

    def window(self, x0: float, x1: float, y0: float, y1: float):
        g = self.g
        j0, j1 = np.searchsorted(g.x, [x0, x1])
        i0, i1 = np.searchsorted(g.y, [y0, y1])
        if j1 <= j0 or i1 <= i0:
            return None
        return slice(i0, i1), slice(j0, j1), g.x[None, j0:j1], g.y[i0:i1, None]

    def put(
        self, sy: slice, sx: slice, mask: np.ndarray, c: int, over: np.ndarray | None, vid: int = 0
    ) -> None:
        win = self.cls[sy, sx]
        m = mask if over is None else mask & over[win]
        win[m] = c
        if self.vid is not None and vid:
            self.vid[sy, sx][m] = vid

    def ellipse(
        self, cx: float, cy: float, a: float, b: float, c: int, over: np.ndarray | None = None,
        ang: float = 0.0,
        lobes: np.ndarray | None = None, vid: int = 0, cut: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        """Filled (optionally lobulated, rotated) ellipse; `cut=(y, sign)` keeps only sign*(Y-y) > 0."""
        if a <= 0.3 or b <= 0.3:
            return
        r = max(a, b) * (1.3 if lobes is not None else 1.0)
        w = self.window(cx - r, cx + r, cy - r, cy + r)
        if w is None:
            return
        sy, sx, X, Y = w
        ca, sa = np.cos(ang), np.sin(ang)
        u = ((X - cx) * ca + (Y - cy) * sa) / a
        v = (-(X - cx) * sa + (Y - cy) * ca) / b
        rr = u * u + v * v
        if lobes is not None:
            phi = np.arctan2(v, u)
            lim = np.ones_like(phi)
            for k, (amp, ph) in enumerate(lobes, start=2):
                lim = lim + amp * np.cos(k * phi + ph)
            mask = rr < lim * lim
        else:
            mask = rr < 1.0
        if cut is not None:
            mask &= (Y - cut[0]) * cut[1] > 0
        self.put(sy, sx, mask, c, over, vid)

    def segment(
        self, p0: tuple[float, float], p1: tuple[float, float], width: float, c: int,
        over: np.ndarray | None = None, vid: int = 0,
    ) -> None:  # fmt: skip
        """Thick line segment with round ends."""
        h = width / 2
        w = self.window(
            min(p0[0], p1[0]) - h, max(p0[0], p1[0]) + h, min(p0[1], p1[1]) - h, max(p0[1], p1[1]) + h
        )
        if w is None:
            return
        sy, sx, X, Y = w
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        L2 = dx * dx + dy * dy or 1e-9
        t = np.clip(((X - p0[0]) * dx + (Y - p0[1]) * dy) / L2, 0, 1)
        d2 = (X - p0[0] - t * dx) ** 2 + (Y - p0[1] - t * dy) ** 2
        self.put(sy, sx, d2 < h * h, c, over, vid)

    def bone_bar(self, p0, p1, width: float, vid: int = 0) -> None:
        self.segment(p0, p1, width, CORT, OVER_NOT_BONE, vid)
        if width > 4.5:
            self.segment(p0, p1, width - 3.0, CANC, lut((CORT,)), vid)

    def bone_ellipse(self, cx, cy, a, b, vid: int = 0, ang: float = 0.0, rim: float = 1.6, over=None) -> None:
        self.ellipse(cx, cy, a, b, CORT, OVER_NOT_BONE if over is None else over, ang=ang, vid=vid)
        self.ellipse(cx, cy, a - rim, b - rim, CANC, lut((CORT,)), ang=ang, vid=vid)

    def polyline(self, pts: np.ndarray, width: float, c: int, over: np.ndarray | None) -> None:
        for p0, p1 in pairwise(pts):
            self.segment((p0[0], p0[1]), (p1[0], p1[1]), width, c, over)


def harm(theta: np.ndarray, harm: np.ndarray) -> np.ndarray:
    out = np.zeros_like(theta)
    for k, (amp, ph) in enumerate(harm, start=1):
        out += amp * np.cos(k * theta + ph * 3.0)
    return out


@dataclass
class Section:
    """What one painted section hands to the HU/label stage and to the truth."""

    cls: np.ndarray
    vid: np.ndarray | None
    #: body-frame mm: posterior vertebral-body wall, paraspinal (erector spinae) centre and lateral edge
    landmarks: dict[str, float] | None = None


@dataclass
class Level:
    """What every painter of one axial level needs: the patient, the height z (mm), the painter and its
    grid, the random stream, the body scale and the column's position and size here."""

    anat: Anatomy
    z: float
    p: Painter
    rng: np.random.Generator
    sw: float  # body scale: width, depth, SAT
    sd: float
    ss: float
    yc: float  # column centre y (mm)
    slope: float  # column tilt (endplates follow the curve)
    vw: float  # width and depth of the nearest vertebral body
    vd: float
    zl3: float  # mid-L3 height
    thorax: bool  # above T11's middle
    lumbar_w: float  # 0 thorax .. 1 abdomen

    @property
    def grid(self) -> Grid:
        return self.p.g
