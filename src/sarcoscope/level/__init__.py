"""L3 selection: manual slice/range and automatic localization.

The localizer (and scipy.signal behind it) is imported on first use, so that manual selection and the CLI
start quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sarcoscope.level.selection import (
    L3Selection,
    manual_range,
    manual_slice,
    parse_range,
    single_slice_input,
)

if TYPE_CHECKING:
    from sarcoscope.level.localization import locate_l3
    from sarcoscope.level.result import L3Localization, VertebraPosition, selection_from_localization

#: name -> the module that defines it
_LAZY = {
    "L3Localization": "result",
    "VertebraPosition": "result",
    "locate_l3": "localization",
    "selection_from_localization": "result",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"sarcoscope.level.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sarcoscope.level' has no attribute {name!r}")
