"""Paint axial cross-sections of an `Anatomy` as tissue-class maps, then turn them into HU and labels.

One module per concern, so each anatomical variant has one home: `trunk` (wall, fat layers, muscles, the
table), `skeleton` (vertebrae, ribs, pelvis), `organs`, `noise` (HU per class, texture, blur, noise, the
reference labels); `canvas` is the painting surface, `classes` the tissue classes, `section` puts them in
order. The label definition (module docstring of `sarcoscope.phantom`) follows the reference protocol of the
real data: HU thresholds inside the compartments, with partial-volume pixels given to the tissue they blur
from.
"""

from sarcoscope.phantom.render.canvas import Grid, Section
from sarcoscope.phantom.render.classes import IMAT, LIVER, MUS, MUS_ES, MUS_PS, SAT, VAT
from sarcoscope.phantom.render.noise import hu_table, make_labels, synthesize, synthesize_fields
from sarcoscope.phantom.render.section import render_outline, render_section
from sarcoscope.phantom.render.trunk import body_box

__all__ = [
    "IMAT",
    "LIVER",
    "MUS",
    "MUS_ES",
    "MUS_PS",
    "SAT",
    "VAT",
    "Grid",
    "Section",
    "body_box",
    "hu_table",
    "make_labels",
    "render_outline",
    "render_section",
    "synthesize",
    "synthesize_fields",
]
