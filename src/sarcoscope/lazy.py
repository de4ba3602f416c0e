"""Package attributes that import their module on first use (PEP 562).

A package's `__init__` that imported every module would make `import sarcoscope.imaging.volume` (numpy only)
pay for pydicom and nibabel, and `sarcoscope.export.nifti` for highdicom: the web server's start and the
CLI's help would wait for libraries they do not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` of `package`: attribute `name` comes from its submodule `homes[name]`."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
