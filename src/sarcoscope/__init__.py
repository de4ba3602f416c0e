"""sarcoscope: from an abdominal CT to an L3 body-composition (sarcopenia) assessment."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# ONNX Runtime's official builds send usage telemetry to Microsoft from Linux and macOS too (since 1.2x: a
# device id kept in the user's cache folder, process, model-load and error events) unless this is set when it
# is first imported; a hospital's server must not send it unasked. Set here, before anything of this package
# (or a dependency of it) imports onnxruntime; a value already set is left as it is.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

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
