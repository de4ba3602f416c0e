"""Post-processing shared by the engines: HU windows, compartments to tissues.

The reference protocol (Alberta / Slice-O-Matic) defines each tissue as "pixels inside a compartment whose HU
lies in the tissue window". Engines that predict compartments (the U-Net, the threshold baseline) therefore
finish with the same HU rules, so that their areas are comparable with manual Slice-O-Matic measurements.
All sizes are in millimetres and converted with the slice's pixel spacing, so results do not depend on the
scanner's field of view. The body they measure in is segmentation.body's; the morphology in mm is
segmentation.morphology's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sarcoscope.conventions import DEFAULT_HU_RANGES, HURanges, Label
from sarcoscope.segmentation.body import body_mask
from sarcoscope.segmentation.bowel import solid_stool
from sarcoscope.segmentation.morphology import (
    bounding_box,
    close_mm,
    dilate_mm,
    erode_mm,
    holes,
    on_box,
    reach_px,
)

#: Band along the body outline (mm) whose pixels always take a tissue compartment (tissues_from_scores).
OUTLINE_MM = 2.0

#: Fat enclosed by muscle after a closing of this radius (mm) is intermuscular (IMAT); both engines use it.
IMAT_CLOSING_MM = 4.0

#: Bump when tissues_from_scores changes its output (2: IMAT only where muscle and bone enclose the fat;
#: 3: arms beside the trunk are not body; 4: the muscle's partial-volume rim in a fat compartment is muscle;
#: 5: the visceral fat's rim against organs and bowel is VAT; 6: arms pressed broadly on the trunk are not
#: body; 7: solid stool is not VAT).
REFINEMENT_VERSION = 7

#: A pixel of muscle HU in a fat compartment within this distance (mm; at least one pixel) of muscle is
#: muscle: the protocol's muscle edge is its HU threshold, and the network's compartment boundary, resampled
#: from its coarser grid, falls a pixel or two inside it (measured on the real slices: 0.8 mm gains little,
#: beyond 1.6 mm nothing; docs/validation/muscle-rim.md).
MUSCLE_RIM_MM = 1.2

#: A pixel of fat HU in the "other" compartment (organs, bowel, vessels) within this distance (mm; at least
#: one pixel) of visceral fat is visceral fat, for the muscle rim's reason: the protocol's VAT reaches the
#: organs' HU edge, and the network's "other" compartment ends a pixel or two outside it
#: (docs/validation/vat-rim.md).
VAT_RIM_MM = 1.2


def tissue_masks(hu: np.ndarray, hu_ranges: HURanges = DEFAULT_HU_RANGES) -> dict[str, np.ndarray]:
    """Boolean HU-window masks for each tissue name of conventions.TISSUES."""
    out = {}
    for tissue in ("muscle", "sat", "vat", "imat"):
        lo, hi = hu_ranges.for_tissue(tissue)
        out[tissue] = (hu >= lo) & (hu <= hi)
    return out


def muscle_compartments(
    muscle: np.ndarray,
    pixel_spacing: tuple[float, float],
    closing_mm: float = 2.0,
    max_hole_cm2: float = 5.0,
) -> np.ndarray:
    """Muscle compartments of one slice: the muscle mask closed by `closing_mm`, enclosed holes filled.

    Fat enclosed here (between muscle bundles, in the paraspinal pockets) is intermuscular fat by definition.
    Only holes up to `max_hole_cm2` are filled: when the wall, psoas and back muscles form a closed ring, the
    abdominal cavity it encloses is not a muscle compartment.
    """

    def compartments(m: np.ndarray) -> np.ndarray:
        closed = close_mm(m, closing_mm, pixel_spacing) | m
        lab, hole = holes(closed)
        sizes = np.bincount(lab.ravel(), minlength=hole.size) * pixel_spacing[0] * pixel_spacing[1]
        return closed | (hole & (sizes <= max_hole_cm2 * 100.0))[lab]

    # the closing's reach around the mask's box, and a ring of background beyond it that holds no hole
    return on_box(muscle, reach_px(closing_mm, pixel_spacing) + 1, compartments)


def remove_small_islands(
    labels: np.ndarray,
    pixel_spacing: tuple[float, float],
    min_area_mm2: dict[int, float] | None = None,
) -> np.ndarray:
    """Drop connected islands smaller than a per-label area (mm²) to background (one slice, (y, x)).

    Defaults remove speckle: muscle and SAT/VAT islands under 10 mm²; IMAT is left alone (it is made of
    small pockets by nature).
    """
    limits = (
        min_area_mm2 if min_area_mm2 is not None else {Label.MUSCLE: 10.0, Label.SAT: 10.0, Label.VAT: 10.0}
    )
    pixel_area = pixel_spacing[0] * pixel_spacing[1]
    out = np.asarray(labels, dtype=np.uint8).copy()
    eight = np.ones((3, 3), bool)
    for label, area in limits.items():
        mask = out == label
        if not mask.any():
            continue
        box = bounding_box(mask)  # every island of the label lies in its box
        lab, _ = ndi.label(mask[box], structure=eight)
        sizes = np.bincount(lab.ravel()) * pixel_area
        small = sizes < area
        small[0] = False
        out[box][small[lab]] = Label.BACKGROUND
    return out


def compartment_scores(probs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A network's class probabilities (..., 5, y, x) as compartment scores (..., 3, y, x) against "other"
    (written into `out` when given: the U-Net writes them straight onto its model grid).

    The five classes pool into four compartments (other; muscle = muscle + IMAT, since IMAT is the fat of a
    muscle compartment; SAT; VAT); the scores are muscle, SAT and VAT minus other. They are linear in the
    probabilities, so resampling them to the CT's grid and then deciding gives the same compartments as
    resampling all five probabilities, at three fifths of the cost.
    """
    p = np.asarray(probs, dtype=np.float32)
    if out is None:
        out = np.empty((*p.shape[:-3], 3, *p.shape[-2:]), dtype=np.float32)
    other = p[..., Label.BACKGROUND, :, :]
    muscle = np.add(p[..., Label.MUSCLE, :, :], p[..., Label.IMAT, :, :], out=out[..., 0, :, :])
    np.subtract(muscle, other, out=muscle)
    np.subtract(p[..., Label.SAT, :, :], other, out=out[..., 1, :, :])
    np.subtract(p[..., Label.VAT, :, :], other, out=out[..., 2, :, :])
    return out


def tissues_from_scores(
    scores: np.ndarray,
    hu: np.ndarray,
    pixel_spacing: tuple[float, float],
    hu_ranges: HURanges = DEFAULT_HU_RANGES,
    body: np.ndarray | None = None,
    muscle_rim_mm: float = MUSCLE_RIM_MM,
    vat_rim_mm: float = VAT_RIM_MM,
) -> np.ndarray:
    """Label map of one slice from compartment scores (3, y, x) (`compartment_scores`), by the protocol.

    Each pixel takes its best compartment (other when no score is above 0) and then the tissue of that
    compartment whose HU window holds the pixel: muscle or IMAT in a muscle compartment, SAT in the
    subcutaneous and VAT in the visceral one; a pixel outside every window is 0. IMAT is only fat that
    muscle (and bone) enclose, by the same rule as the threshold engine (`IMAT_CLOSING_MM`). So the network
    only has to place the compartments, while the tissue boundaries follow the HU thresholds at the CT's own
    resolution, as in manual Slice-O-Matic labelling. Labels outside the body and muscle speckle are cleared.

    Within `OUTLINE_MM` of the body outline "other" is not a candidate: there it stands for the air outside,
    which the body mask already removes, and the network's scores, resampled from its coarser grid, blur
    into that air. The skin line's partial-volume fat is SAT in the reference protocol, and without this rule
    a thin patient would lose a large share of the SAT. For the same reason a muscle-HU pixel of a fat
    compartment within `muscle_rim_mm` (at least one pixel; 0: none) of the muscle is muscle, and a fat-HU
    pixel of the "other" compartment within `vat_rim_mm` of the visceral fat is visceral fat.
    """
    inside = body if body is not None else body_mask(hu, pixel_spacing)
    out = np.zeros(hu.shape, dtype=np.uint8)
    if inside.any():
        # every label lies in the body's bounding box (plus a margin of air): same result, less work
        box = bounding_box(inside, margin=2)
        sub = scores[:, box[0], box[1]]
        rims = (muscle_rim_mm, vat_rim_mm)
        out[box] = _tissues_in_body(sub, hu[box], inside[box], pixel_spacing, hu_ranges, rims)
    return out


def _tissues_in_body(
    scores: np.ndarray,
    hu: np.ndarray,
    inside: np.ndarray,
    pixel_spacing: tuple[float, float],
    hu_ranges: HURanges,
    rims: tuple[float, float],
) -> np.ndarray:
    """tissues_from_scores on a box around the body; `rims` are its (muscle_rim_mm, vat_rim_mm)."""
    outline = inside & ~erode_mm(inside, OUTLINE_MM, pixel_spacing)
    # the best compartment (1 muscle, 2 SAT, 3 VAT) and its score, first one on ties (as np.argmax)
    best = np.where(scores[1] > scores[0], 2, 1)
    top = np.maximum(scores[0], scores[1])
    best[scores[2] > top] = 3
    top = np.maximum(top, scores[2])
    compartment = np.where(outline | (top > 0), best, 0)
    windows = tissue_masks(hu, hu_ranges)
    muscle = (compartment == 1) & windows["muscle"]
    # IMAT is fat enclosed by muscle, or by muscle and bone (the paraspinal pockets against the vertebral
    # arch). Other fat the muscle compartment holds lies on its edge, which the network's coarser grid
    # blurs: it joins the better of the two fat compartments there.
    if muscle.any():
        # within reach of the closing around the muscle compartment, which is all that it decides
        reach = 2 * int(np.ceil(IMAT_CLOSING_MM / min(pixel_spacing))) + 2
        box = bounding_box(compartment == 1, margin=reach)
        enclosing = muscle[box] | (hu[box] > hu_ranges.muscle[1])
        enclosed = muscle_compartments(enclosing, pixel_spacing, closing_mm=IMAT_CLOSING_MM)
        loose = (compartment[box] == 1) & ~enclosed
        compartment[box][loose] = np.where(scores[1][box][loose] >= scores[2][box][loose], 2, 3)
    muscle_rim_mm, vat_rim_mm = rims
    # Fat-HU pixels of the "other" compartment would be nothing; beside the visceral fat they are its rim.
    if vat_rim_mm > 0:
        vat = (compartment == 3) & windows["vat"]
        near = dilate_mm(vat, max(vat_rim_mm, min(pixel_spacing)), pixel_spacing)
        compartment[(compartment == 0) & windows["vat"] & near] = 3
    # Solid stool the network took for visceral fat is bowel content ("other"), as the threshold engine's.
    cavity = inside & ~outline & ((compartment == 0) | (compartment == 3))
    fat = (compartment == 3) & windows["vat"]
    compartment[fat & solid_stool(hu, cavity, fat, (compartment == 2) & windows["sat"], pixel_spacing)] = 0
    # Muscle-HU pixels of a fat compartment would be nothing; beside the muscle they are its rim.
    if muscle_rim_mm > 0:
        near = dilate_mm(muscle, max(muscle_rim_mm, min(pixel_spacing)), pixel_spacing)
        muscle = muscle | ((compartment >= 2) & windows["muscle"] & near)
    out = np.zeros(hu.shape, dtype=np.uint8)
    out[muscle] = Label.MUSCLE
    out[(compartment == 1) & windows["imat"]] = Label.IMAT
    out[(compartment == 2) & windows["sat"]] = Label.SAT
    out[(compartment == 3) & windows["vat"]] = Label.VAT
    out[~inside] = Label.BACKGROUND
    return remove_small_islands(out, pixel_spacing, {Label.MUSCLE: 10.0})
