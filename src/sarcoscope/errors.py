"""Errors a user can act on. The CLI prints their message (no traceback unless --debug) and exits non-zero."""

from __future__ import annotations


class SarcoscopeError(Exception):
    """Base class: the message names the file or the problem in words a user understands."""

    exit_code = 1


class InputError(SarcoscopeError):
    """The input cannot be read as CT (missing, empty, corrupt, not CT, unsupported compression...)."""


class LevelError(SarcoscopeError):
    """L3 cannot be selected or located (outside the field of view, range outside the volume...)."""


class SegmentationError(SarcoscopeError):
    """A slice cannot be segmented (no body in the slice, unknown engine, missing model...)."""


class ValidationInputError(SarcoscopeError):
    """Validation inputs do not match (unmatched case ids, shape/spacing mismatch, unknown label ids)."""


class LabelMapError(InputError, ValidationInputError):
    """A label file cannot be read, does not fit its image's pixel grid, or holds ids its mapping lacks.

    Both an input error (training, the web import) and a validation input error, so each caller's handling
    of its own inputs covers label maps too."""


class CompositionError(SarcoscopeError):
    """Body composition cannot be measured or assessed (label map does not fit the image, implausible
    height/weight/age, unknown cutoff set)."""


class OutputError(SarcoscopeError):
    """Output files cannot be written (the output path is not a folder, no permission, disk full)."""
