"""Whether an axial slice is the right way up, read from the anatomy: the vertebra lies at the back.

Why: the reader turns images to the standard layout (front at the top) by their orientation metadata, but a
file whose metadata is wrong (a NIfTI written with the wrong affine or its axes swapped, a DICOM without
ImageOrientationPatient) arrives turned, and the U-Net, which learnt the front at the top, then measured the
real L3 slices' muscle far off while every number looked plausible: upside down -23 to +16 % (Dice
0.63-0.71 instead of 0.98), turned by a quarter or transposed -32 to +16 % (Dice 0.74-0.77). Left-right
mirroring needs nothing: the U-Net averages both mirror images, and the threshold engine finds its frame
from the vertebra (imaging.anatomy.vertebra, this module's evidence too). The vertebra is not always the
largest bone-bright thing (enhanced kidneys, oral contrast), so this is only a screen: slices that do not
look the right way up are read by the U-Net in all four quarter turns and taken as it is surest of them
(UNetEngine._quarter_turns)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# the anatomy read here has its home in imaging.anatomy (the L3 localizer reads it too)
from sarcoscope.imaging.anatomy import vertebra_depth, width_by_depth

#: The vertebra's centroid lies at 0.62-0.69 of the body's depth from its front on the nine real L3 slices,
#: at 0.53-0.82 from L5 to T10 of the real volume: slices whose median is not beyond this are checked by the
#: U-Net (which costs three more readings of them, not their labels).
UPRIGHT_BEYOND = 0.55


def looks_upright(slices: np.ndarray, bodies: Sequence[np.ndarray], spacing: tuple[float, float]) -> bool:
    """Whether a stack of axial slices (n, y, x) of one series, with their body masks, looks the right way
    up: the body wider than deep (a trunk is: 1.24-1.58 on the nine real L3 slices, 1.26-1.30 at the real
    volume's L3, over 1.3 on the phantoms; turned by a quarter, under 0.81) and, on at least half of them, a
    vertebra found whose median depth is beyond UPRIGHT_BEYOND."""
    widths = [width_by_depth(body, spacing) for body in bodies if body.any()]
    if not widths or float(np.median(widths)) <= 1.0:
        return False
    found = [vertebra_depth(hu, body, spacing) for hu, body in zip(slices, bodies, strict=True)]
    depths = [d for d in found if d is not None]
    return 2 * len(depths) >= len(slices) and float(np.median(depths)) > UPRIGHT_BEYOND


TURNED_WARNING = (
    "The image is turned: the U-Net read it the right way up only once turned, so the file's orientation "
    "(NIfTI affine or DICOM ImageOrientationPatient) is likely wrong. The labels are in the image's own "
    "layout; check the source data's orientation (views and the L3 level read from it may be affected too)."
)
