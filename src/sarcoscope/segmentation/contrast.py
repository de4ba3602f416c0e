"""Whether an L3 slice was scanned without intravenous contrast, read from its blood, not its headers.

The quality score's second opinion, the threshold engine, tells organs from the muscle wall partly by their
enhancement, so on unenhanced CT its disagreement says more about it than about the U-Net
(segmentation.quality). Headers do not say reliably whether contrast was given; the blood does. In front of
the vertebral body at L3 lie the aorta and the inferior vena cava. Published attenuation (120 kVp):

- unenhanced blood 35-50 HU, rising with the haematocrit (New & Aronow, Radiology 1976;121:635; below about
  35-38 HU in anaemia, Dahmardeh et al., Front Biomed Technol 2025), unenhanced muscle (psoas, crura)
  40-60 HU, kidney 30 HU (29.6 +- 3.0 in controls, Eur J Radiol 2011, renal parenchymal attenuation in acute
  obstruction): without contrast nothing in front of the spine but bone, calcium or oral contrast reads
  above about 60 HU;
- portal-venous aorta and IVC 120-200 HU (aortic enhancement 117-125 HU over unenhanced at 45-55 s, AJR,
  optimizing scan delays for the hepatic arterial and portal venous phases), arterial aorta 200 HU and more
  (late arterial peak 290-360 HU, Radiopaedia "late arterial phase"), renal cortex 195-217 HU of enhancement
  in the corticomedullary phase, medulla 145 HU in the nephrographic (PubMed 17367973).

So the slice is read as "unenhanced" only when the brightest blood-sized spot (the median over a disc of
SPOT_MM radius, smaller than the aorta's and the IVC's lumen, so that noise and a calcified plaque do not
decide; clear of the vertebral body's cortex) within REACH_MM in front of the vertebral body and SIDE_MM to
either side reads at most UNENHANCED_MAX_HU, and "enhanced" from ENHANCED_MIN_HU. In between, without a
vertebral body, or on pixels coarser than COARSEST_MM, it is "unknown". The limits are the published ranges
with a margin for noise, not fitted to any slice. Positive oral contrast in the bowel in front of the spine
(the duodenum crosses the aorta at L3) reads as enhanced: the reading errs towards "enhanced", which keeps
the score as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.segmentation.morphology import close_mm, fill_holes, near_mm, open_mm

#: Without contrast the brightest soft tissue in front of the spine is blood (35-50 HU) or muscle (40-60 HU);
#: 15 HU above that for the noise left in a spot's median.
UNENHANCED_MAX_HU = 75.0
#: Portal-venous blood reads 120 HU and more; 15 HU below that.
ENHANCED_MIN_HU = 105.0
#: Radius (mm) of the spot whose median is read: smaller than the aorta's lumen (radius 8-12 mm at L3) and
#: the IVC's half-depth.
SPOT_MM = 4.0
#: How far in front of the vertebral body (mm) and to either side of its centre (mm) the great vessels lie.
REACH_MM = 70.0
SIDE_MM = 50.0
#: How far behind the vertebral body's front (mm) a vessel beside its front corner may lie; the transverse
#: processes lie further back (behind the body, 30-40 mm deep at L3).
BESIDE_MM = 10.0
#: Bone: over this HU after a 1 mm smoothing (cancellous bone and cortex; not blood before the arterial
#: phase, whose aorta is parted from the vertebra by the opening below).
BONE_HU = 200.0
#: Opening radius (mm) that keeps the vertebral body (30-50 mm across at L3) and removes what bone-dense
#: touches it but is narrower: an arterial-phase aorta (under 25 mm across), the arch's thin parts.
BODY_OPENING_MM = 12.0
#: Pixels coarser than this (mm) are not read: the cortex blurs into gaps and the cancellous bone below
#: BONE_HU, so the vertebral body is not found, or bone beside it is read (the real 3 mm ts_example volume,
#: whose unenhanced aorta reads 45-55 HU by hand: no vertebral body on 5 of 6 slices, 304 HU of bone on one).
COARSEST_MM = 2.0
#: How far (mm) the cortex and its blur reach beyond the opened body: spots within it plus SPOT_MM of the
#: body are not read (their median would read bone).
CORTEX_MM = 4.0


@dataclass(frozen=True)
class ContrastReading:
    """What the blood in front of the spine says about intravenous contrast on one slice."""

    phase: str  # "unenhanced" | "enhanced" | "unknown"
    #: The brightest spot's median HU in front of the vertebral body; None without a vertebral body.
    blood_hu: float | None
    why: str

    def __post_init__(self) -> None:
        if self.phase not in ("unenhanced", "enhanced", "unknown"):
            raise ValueError(f"phase must be unenhanced, enhanced or unknown, got {self.phase!r}")
        if self.phase != "unknown" and self.blood_hu is None:
            raise ValueError(f"a {self.phase} reading needs the blood's HU")


def _disc(radius_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    ry, rx = radius_mm / spacing[0], radius_mm / spacing[1]
    yy, xx = np.ogrid[-int(ry) : int(ry) + 1, -int(rx) : int(rx) + 1]
    return (yy / max(ry, 0.5)) ** 2 + (xx / max(rx, 0.5)) ** 2 <= 1.0


def _vertebral_body(hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float]) -> np.ndarray | None:
    """The vertebral body's mask: bone (its cortex closed and filled, so an osteoporotic body or one whose
    cortex blurs into gaps on coarse pixels is whole) in the middle third of the body's width, opened to
    the body's round core. None when there is none of at least 2 cm²."""
    dy, dx = spacing
    cols = np.nonzero(body.any(axis=0))[0]
    if cols.size == 0:
        return None
    third = (cols[-1] - cols[0]) / 3.0
    # the middle third and the 40 mm beside it hold all of a vertebra centred there
    first = max(int(cols[0] + third - 40.0 / dx), 0)
    band = slice(first, int(cols[-1] - third + 40.0 / dx) + 1)
    smooth = ndi.gaussian_filter(hu[:, band].astype(np.float32), (1.0 / dy, 1.0 / dx))
    solid = fill_holes(close_mm(smooth > BONE_HU, 4.0, spacing))
    core = open_mm(solid, BODY_OPENING_MM, spacing)
    labels, n = ndi.label(core)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    centres = ndi.center_of_mass(core, labels, range(1, n + 1)) if n else []
    best = [
        (sizes[i], i)
        for i, (_, cx) in enumerate(centres, start=1)
        if cols[0] + third <= first + cx <= cols[-1] - third and sizes[i] * dy * dx >= 200.0
    ]
    if not best:
        return None
    out = np.zeros(hu.shape, dtype=bool)
    out[:, band] = labels == max(best)[1]
    return out


def read_contrast(hu: np.ndarray, body: np.ndarray, pixel_spacing: tuple[float, float]) -> ContrastReading:
    """Read one axial slice (HU, y x) at L3, with its body mask, for intravenous contrast (module docstring).

    "In front" is from the vertebral body towards the body's centre, so a slice upside down reads the same.
    """
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    if max(spacing) > COARSEST_MM:
        return ContrastReading("unknown", None, f"pixels coarser than {COARSEST_MM:g} mm are not read")
    vertebra = _vertebral_body(hu, body, spacing)
    if vertebra is None:
        return ContrastReading("unknown", None, "no vertebral body found")
    dy, dx = spacing
    rows, cols = np.indices(hu.shape)
    vy, vx = rows[vertebra].mean() * dy, cols[vertebra].mean() * dx
    by, bx = rows[body].mean() * dy, cols[body].mean() * dx
    length = float(np.hypot(by - vy, bx - vx))
    if length < 1.0:
        return ContrastReading("unknown", None, "the vertebral body lies at the body's centre")
    uy, ux = (by - vy) / length, (bx - vx) / length
    py, px = rows * dy - vy, cols * dx - vx
    ahead = py * uy + px * ux  # mm in front of the vertebral body's centre
    front = float(ahead[vertebra].max())
    # spots clear of the vertebral body's cortex, which a spot's median must not read
    clear = ~near_mm(vertebra, SPOT_MM + CORTEX_MM, spacing)
    # from BESIDE_MM behind the body's front (the aorta and IVC lie in front of it or beside its front
    # corners), clear of the transverse processes further back
    ahead_of_front = ahead - front
    region = (
        (ahead_of_front > -BESIDE_MM) & (ahead_of_front <= REACH_MM) & (np.abs(py * ux - px * uy) <= SIDE_MM)
    )
    region &= body & clear
    if not region.any():
        return ContrastReading("unknown", None, "nothing of the body in front of the vertebral body")
    r, c = np.nonzero(region)
    my, mx = int(SPOT_MM / dy) + 1, int(SPOT_MM / dx) + 1
    box = (slice(max(r.min() - my, 0), r.max() + my + 1), slice(max(c.min() - mx, 0), c.max() + mx + 1))
    spots = ndi.median_filter(hu[box].astype(np.float32), footprint=_disc(SPOT_MM, spacing), mode="nearest")
    blood = float(spots[region[box]].max())
    where = f"the brightest spot in front of the spine reads {blood:.0f} HU"
    if blood <= UNENHANCED_MAX_HU:
        return ContrastReading("unenhanced", blood, f"{where}, as unenhanced blood and muscle do")
    if blood >= ENHANCED_MIN_HU:
        return ContrastReading("enhanced", blood, f"{where}, as contrast-enhanced blood does")
    return ContrastReading("unknown", blood, f"{where}, between unenhanced and enhanced blood")
