"""sarcoscope: from an abdominal CT to an L3 body-composition (sarcopenia) assessment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

    __version__: str


def __getattr__(name: str) -> Any:
    """`__version__` on first use: importlib.metadata costs ≈0.1 s, which `sarcoscope --help` need not pay."""
    if name != "__version__":
        raise AttributeError(f"module 'sarcoscope' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("sarcoscope")
    except PackageNotFoundError:  # running from a source tree that was not installed
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value


__all__ = ["__version__", "analyze"]


def analyze(*args: Any, **kwargs: Any) -> AnalysisResult:
    """Analyse one CT; see :func:`sarcoscope.pipeline.analyze` (imported lazily to keep `import` cheap)."""
    from sarcoscope.pipeline import analyze as _analyze

    return _analyze(*args, **kwargs)
