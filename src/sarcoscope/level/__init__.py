"""L3 selection: manual slice/range and automatic localization."""

from sarcoscope.level.localization import (
    L3Localization,
    VertebraPosition,
    locate_l3,
    selection_from_localization,
)
from sarcoscope.level.selection import (
    L3Selection,
    manual_range,
    manual_slice,
    parse_range,
    single_slice_input,
)

__all__ = [
    "L3Localization",
    "L3Selection",
    "VertebraPosition",
    "locate_l3",
    "manual_range",
    "manual_slice",
    "parse_range",
    "selection_from_localization",
    "single_slice_input",
]
