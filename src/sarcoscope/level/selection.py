"""Which axial slices represent L3: the user's slice or range, or the automatic localizer's proposal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sarcoscope.conventions import L3_MID, L3_RANGE
from sarcoscope.errors import LevelError


@dataclass
class L3Selection:
    """The slices to analyse and how they were chosen (written into every report)."""

    indices: list[int]  # axial slice indices into CTVolume.hu, ascending
    mode: str  # "slice" | "range" | "auto" | "single-slice-input"
    convention: str  # conventions.L3_MID | L3_INFERIOR_ENDPLATE | L3_RANGE
    method: str  # human-readable: "manual", "given single slice", or the localizer's name
    confidence: float | None = None  # 0..1 for automatic localization
    flags: list[dict[str, str]] = field(default_factory=list)  # {"flag": ..., "reason": ...}
    #: Extra facts from the localizer (vertebra positions, endplates...), JSON-serialisable.
    details: dict[str, Any] = field(default_factory=dict)


def parse_range(text: str) -> tuple[int, int]:
    """Parse 'Z0:Z1' (inclusive, either order) as typed on the command line."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise LevelError(f"--range must look like Z0:Z1 (two slice indices), got '{text}'.")
    a, b = (int(p) for p in parts)
    return (min(a, b), max(a, b))


def manual_slice(index: int, n_slices: int) -> L3Selection:
    if not 0 <= index < n_slices:
        raise LevelError(f"Slice {index} is outside the volume (valid slices: 0..{n_slices - 1}).")
    return L3Selection(indices=[index], mode="slice", convention=L3_MID, method="manual")


def manual_range(first: int, last: int, n_slices: int) -> L3Selection:
    lo, hi = min(first, last), max(first, last)
    if lo < 0 or hi >= n_slices:
        raise LevelError(f"Range {first}:{last} is outside the volume (valid slices: 0..{n_slices - 1}).")
    return L3Selection(indices=list(range(lo, hi + 1)), mode="range", convention=L3_RANGE, method="manual")


def single_slice_input() -> L3Selection:
    """A one-slice input is analysed as given: the user already chose the level."""
    return L3Selection(indices=[0], mode="single-slice-input", convention=L3_MID, method="given single slice")
