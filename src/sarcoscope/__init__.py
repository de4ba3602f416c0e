"""sarcoscope: from an abdominal CT to an L3 body-composition (sarcopenia) assessment."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("sarcoscope")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

__all__ = ["__version__", "analyze"]


def analyze(*args: Any, **kwargs: Any) -> AnalysisResult:
    """Analyse one CT; see :func:`sarcoscope.pipeline.analyze` (imported lazily to keep `import` cheap)."""
    from sarcoscope.pipeline import analyze as _analyze

    return _analyze(*args, **kwargs)
