"""Label id orders for exported label maps, and the colour tables viewers load beside labels.nii.gz.

Two orders (the one home of this mapping):

| tissue | `sarcoscope` (conventions.Label) | `totalsegmentator` (tissue_4_types) |
|--------|----------------------------------|-------------------------------------|
| muscle | 1 skeletal_muscle                | 3 skeletal_muscle                   |
| SAT    | 2 subcutaneous_fat               | 1 subcutaneous_fat                  |
| VAT    | 3 visceral_fat                   | 2 torso_fat                         |
| IMAT   | 4 intermuscular_fat              | 4 intermuscular_fat                 |

TotalSegmentator's `tissue_4_types` task (class map in its `map_to_binary.py`: 1 subcutaneous_fat,
2 torso_fat, 3 skeletal_muscle, 4 intermuscular_fat) lets its results and ours be compared file to file.
Its "torso_fat" is the fat inside the torso other than intermuscular fat, the nearest class to our VAT;
the tissue definitions (HU windows, what counts as muscle) are close but not identical.

Files: `labels.ctbl`, a 3D Slicer colour table ("id name R G B A" per line, loaded with Add Data and chosen
as the label map's colour node), and `labels.itksnap.txt`, an ITK-SNAP label description file (Segmentation
> Import Label Descriptions). Colours are conventions.LABEL_COLORS in both orders.
"""

from __future__ import annotations

import numpy as np

from sarcoscope.conventions import LABEL_COLORS, TISSUE_TITLES, TISSUES, Label
from sarcoscope.errors import OutputError

SARCOSCOPE = "sarcoscope"
TOTALSEGMENTATOR = "totalsegmentator"

#: Order name -> tissue -> (exported id, exported name).
LABEL_ORDERS: dict[str, dict[str, tuple[int, str]]] = {
    SARCOSCOPE: {
        "muscle": (int(Label.MUSCLE), "skeletal_muscle"),
        "sat": (int(Label.SAT), "subcutaneous_fat"),
        "vat": (int(Label.VAT), "visceral_fat"),
        "imat": (int(Label.IMAT), "intermuscular_fat"),
    },
    TOTALSEGMENTATOR: {
        "muscle": (3, "skeletal_muscle"),
        "sat": (1, "subcutaneous_fat"),
        "vat": (2, "torso_fat"),
        "imat": (4, "intermuscular_fat"),
    },
}


def check_order(order: str) -> dict[str, tuple[int, str]]:
    """The table of `order`; OutputError naming the known orders otherwise."""
    if order not in LABEL_ORDERS:
        raise OutputError(f"Unknown label order '{order}'. Available: {', '.join(LABEL_ORDERS)}.")
    return LABEL_ORDERS[order]


def relabel(labels: np.ndarray, order: str) -> np.ndarray:
    """A copy of a conventions.Label map with the ids of `order` (background stays 0)."""
    table = np.zeros(256, dtype=np.uint8)
    for tissue, (exported, _) in check_order(order).items():
        table[int(TISSUES[tissue])] = exported
    return table[np.asarray(labels, dtype=np.uint8)]


def _rows(order: str) -> list[tuple[int, str, str, tuple[int, int, int]]]:
    """(id, name, title, RGB) per tissue, sorted by exported id."""
    rows = [
        (exported, name, TISSUE_TITLES[tissue], LABEL_COLORS[TISSUES[tissue]])
        for tissue, (exported, name) in check_order(order).items()
    ]
    return sorted(rows)


def slicer_color_table(order: str = SARCOSCOPE) -> str:
    """3D Slicer colour table text (labels.ctbl)."""
    lines = [
        f"# sarcoscope label colours, {order} ids",
        f"# {len(TISSUES) + 1} values",
        "0 background 0 0 0 0",
    ]
    lines += [f"{i} {name} {r} {g} {b} 255" for i, name, _, (r, g, b) in _rows(order)]
    return "\n".join(lines) + "\n"


def itksnap_label_description(order: str = SARCOSCOPE) -> str:
    """ITK-SNAP label description file text (labels.itksnap.txt)."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        f"# sarcoscope label colours, {order} ids",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Zero-based index",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
        f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8g} {0:2d} {0:2d}    "Clear Label"',
    ]
    lines += [
        f'{i:5d} {r:5d} {g:4d} {b:4d} {1:8g} {1:2d} {1:2d}    "{title}"'
        for i, _, title, (r, g, b) in _rows(order)
    ]
    return "\n".join(lines) + "\n"
