"""The interface every segmentation engine implements, and the registry that finds engines by name."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sarcoscope.errors import SegmentationError

if TYPE_CHECKING:  # NumPy is not needed to name the default engine (`sarcoscope --help` stays fast)
    import numpy as np

    from sarcoscope.segmentation.body import SliceBodies

#: Sees one batch of both network passes: (index of its first slice, probabilities (m, 5, H, W) of the plain
#: pass, of the mirrored pass flipped back).
PassObserver = Callable[[int, "np.ndarray", "np.ndarray"], None]


@runtime_checkable
class SegmentationEngine(Protocol):
    """Turns axial HU slices into label maps with the project's label ids (conventions.Label)."""

    #: Short engine name ("threshold", "unet").
    name: str
    #: Identifies the exact model/parameters, written into every report.
    model_id: str

    def segment(
        self,
        slices: np.ndarray,
        pixel_spacing: tuple[float, float],
        *,
        bodies: SliceBodies | None = None,
        observe: PassObserver | None = None,
    ) -> np.ndarray:
        """Segment HU slices of shape (n, y, x) with in-plane spacing (y, x) in mm.

        Returns a uint8 array of the same shape. Raises SegmentationError for a slice it cannot handle.

        The keywords are optional inputs, for an engine with a use for them: `segment_slices` gives an
        engine those its `segment` declares, so one declaring neither (a plugin's) works all the same.
        `bodies`: the slices' body masks when the caller has found them already (body.SliceBodies; to be
        used only when they are of these slices, so that the labels are the same with or without them).
        `observe`: a network engine calls it with each batch's class probabilities, which the quality
        score reads its network signals from (segmentation.quality); an engine that never calls it has none.
        """
        ...


def segment_slices(
    engine: SegmentationEngine,
    slices: np.ndarray,
    pixel_spacing: tuple[float, float],
    *,
    bodies: SliceBodies | None = None,
    observe: PassObserver | None = None,
) -> np.ndarray:
    """`engine.segment`, given those of the optional inputs its `segment` declares (all, to one taking
    **kwargs): an engine written without them keeps working, and every engine that has a use for them,
    whichever it is, gets them."""
    given = {"bodies": bodies, "observe": observe}
    declared = inspect.signature(engine.segment).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in declared.values()):
        given = {name: value for name, value in given.items() if name in declared}
    return engine.segment(slices, pixel_spacing, **given)


_ENGINES: dict[str, Callable[..., SegmentationEngine]] = {}
_TAKES_MODEL: set[str] = set()

#: Where scripts/train_default_model.py writes which engine is the default, with the leave-one-patient-out
#: evidence and the rule that chose it (sarcoscope.validation.evidence; README, "Accuracy").
DEFAULT_ENGINE_FILE = Path(__file__).with_name("models") / "default_engine.json"
#: The engine `analyze`, `batch` and the web app use unless told otherwise.
DEFAULT_ENGINE: str = json.loads(DEFAULT_ENGINE_FILE.read_text(encoding="utf-8"))["engine"]


def register_engine(
    name: str, factory: Callable[..., SegmentationEngine], *, takes_model: bool = False
) -> None:
    """Make an engine available by name; `factory(**options)` builds it (options e.g. hu_ranges).

    `takes_model`: the factory accepts `model_path`, chosen with the name "NAME:PATH" (see get_engine).
    """
    _ENGINES[name] = factory
    if takes_model:
        _TAKES_MODEL.add(name)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def takes_model(name: str) -> bool:
    """Whether the engine `name` segments with a trained model that "NAME:ID" or "NAME:PATH" can choose."""
    return name in _TAKES_MODEL


def get_engine(name: str, **options: Any) -> SegmentationEngine:
    """Instantiate the engine registered under `name` with engine options (e.g. hu_ranges=HURanges()).

    `name` may name a trained model too, "unet:ID" (a model of the registry, segmentation.registry) or
    "unet:PATH" (a folder written by `sarcoscope train`), so that every place an engine name goes (the CLI,
    a batch run, the web app) can use one without further options; plain "unet" uses the site default.
    """
    name, has_model, model = name.partition(":")
    if name not in _ENGINES:
        raise SegmentationError(
            f"Unknown segmentation engine '{name}'. Available: {', '.join(available_engines()) or 'none'}."
        )
    if has_model:
        if name not in _TAKES_MODEL:
            raise SegmentationError(f"The '{name}' engine has no trained model to choose ('{name}:{model}').")
        options["model_path"] = model
    return _ENGINES[name](**options)
