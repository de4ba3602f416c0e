"""Project-wide conventions (DESIGN.md): label ids, tissue names, HU ranges, L3 conventions.

Every stage imports these instead of repeating literals, so a report can state exactly what was used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum


class Label(IntEnum):
    """Label ids of every uint8 label map the project reads or writes."""

    BACKGROUND = 0
    MUSCLE = 1
    SAT = 2
    VAT = 3
    IMAT = 4


#: Tissues in report order, with their label id.
TISSUES: dict[str, Label] = {
    "muscle": Label.MUSCLE,
    "sat": Label.SAT,
    "vat": Label.VAT,
    "imat": Label.IMAT,
}

TISSUE_TITLES: dict[str, str] = {
    "muscle": "Skeletal muscle",
    "sat": "Subcutaneous fat (SAT)",
    "vat": "Visceral fat (VAT)",
    "imat": "Intermuscular fat (IMAT)",
}

#: RGB colours (0-255) used by every picture: overlay, web viewer, validation gallery.
LABEL_COLORS: dict[Label, tuple[int, int, int]] = {
    Label.MUSCLE: (220, 50, 50),
    Label.SAT: (250, 210, 60),
    Label.VAT: (60, 200, 90),
    Label.IMAT: (80, 160, 255),
}


@dataclass(frozen=True)
class HURanges:
    """Inclusive HU windows that define each tissue (Alberta protocol defaults)."""

    muscle: tuple[float, float] = (-29.0, 150.0)
    sat: tuple[float, float] = (-190.0, -30.0)
    vat: tuple[float, float] = (-190.0, -30.0)
    imat: tuple[float, float] = (-190.0, -30.0)

    def for_tissue(self, tissue: str) -> tuple[float, float]:
        return tuple(getattr(self, tissue))  # type: ignore[return-value]

    def as_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def slice_o_matic_vat(cls) -> HURanges:
        """The narrower VAT window (−150..−50) used by many Slice-O-Matic users."""
        return cls(vat=(-150.0, -50.0))


DEFAULT_HU_RANGES = HURanges()

#: L3 conventions: which axial slice(s) represent "L3".
L3_MID = "mid-L3"  # centre of the L3 vertebral body (default)
L3_INFERIOR_ENDPLATE = "L3-inferior-endplate"  # used by some Korean (Asan) cohorts
L3_RANGE = "L3-range"  # every slice between two lines (upper to lower endplate by default)
