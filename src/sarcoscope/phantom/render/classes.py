"""Tissue classes of the painted (pre-blur) map and the look-up tables that say which class may paint over
which (organs only over fat, bone over everything but air and the table)."""

from __future__ import annotations

import numpy as np

from sarcoscope.conventions import Label

(AIR, SAT, SKIN, MUS, MUS_PS, MUS_ES, IMAT, VAT, FASC, BWALL, GAS, FLUID, OCON, STOOL, SFAT, COLLAPSED,
 KCOR, KMED, URINE, LIVER, SPLEEN, AORTA, IVC, VESSEL, CALC, CORT, CANC, CANAL, DISC, TABLE, LUNG,
 BLOOD) = range(32)  # fmt: skip
EPIDURAL = 32  # fat inside the spinal canal: fat HU, but in no labelled compartment
N_CLASSES = 33
MUSCLES = (MUS, MUS_PS, MUS_ES)


def lut(classes: tuple[int, ...]) -> np.ndarray:
    t = np.zeros(N_CLASSES, bool)
    t[list(classes)] = True
    return t


OVER_CAVITY = lut((VAT,))
OVER_MUSCLE = lut(MUSCLES)
OVER_NOT_BONE = lut(tuple(c for c in range(N_CLASSES) if c not in (CORT, CANC, DISC, AIR, TABLE, SKIN)))
#: Fat compartment of each class (label id), 0 for none.
FAT_LABEL = np.zeros(N_CLASSES, np.uint8)
FAT_LABEL[SAT], FAT_LABEL[VAT], FAT_LABEL[IMAT] = Label.SAT, Label.VAT, Label.IMAT
MUSCLE_COMPARTMENT = lut((*MUSCLES, IMAT))
#: Soft-tissue classes whose partial-volume edge pixels may take a neighbouring fat label.
EDGE_TO_FAT = lut((*MUSCLES, SKIN, FASC, BWALL, COLLAPSED, KCOR, LIVER, SPLEEN, AORTA, IVC, VESSEL))
