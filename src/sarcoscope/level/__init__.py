"""L3 selection: manual slice/range and automatic localization."""

from sarcoscope.level.selection import L3Selection, manual_range, manual_slice, parse_range, single_slice_input

__all__ = ["L3Selection", "manual_range", "manual_slice", "parse_range", "single_slice_input"]
