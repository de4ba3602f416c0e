"""The "unet" engine: ONNX Runtime inference of the trained U-Net (numpy/onnxruntime only, no torch).

The network sees HU slices resampled to the model's pixel size (`InputSpec.pixel_spacing_mm`), clipped to the
model's HU window and scaled to 0..1, zero-padded to a multiple of `size_multiple`. Its class scores are
resampled back to the CT's own grid before the arg-max, so the label map always matches the input pixels.
The same `InputSpec` functions prepare the training data (sarcoscope.training), so both sides agree exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.transform import resize

from sarcoscope.conventions import DEFAULT_HU_RANGES, HURanges
from sarcoscope.errors import SegmentationError
from sarcoscope.segmentation.refine import refine_labels

#: The model shipped with the package (trained by `sarcoscope train`, see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).with_name("models")
MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
CARD_MD_FILE = "MODEL_CARD.md"

#: Relative spacing difference below which a slice is used on its own grid (resampling would only blur it).
_SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class InputSpec:
    """How HU slices become network input; written into the model card and read back by the engine."""

    pixel_spacing_mm: float = 1.5
    hu_window: tuple[float, float] = (-250.0, 350.0)
    size_multiple: int = 16

    def normalise(self, hu: np.ndarray) -> np.ndarray:
        """Clip to the HU window and scale to 0..1 (air and padding are both 0)."""
        lo, hi = self.hu_window
        return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)

    def model_shape(self, shape: tuple[int, int], pixel_spacing: tuple[float, float]) -> tuple[int, int]:
        """Grid size of a (y, x) slice once resampled to the model's pixel size."""
        if self.needs_resampling(pixel_spacing):
            return (
                max(1, round(shape[0] * pixel_spacing[0] / self.pixel_spacing_mm)),
                max(1, round(shape[1] * pixel_spacing[1] / self.pixel_spacing_mm)),
            )
        return (int(shape[0]), int(shape[1]))

    def needs_resampling(self, pixel_spacing: tuple[float, float]) -> bool:
        target = self.pixel_spacing_mm
        return any(abs(s - target) > _SPACING_TOLERANCE * target for s in pixel_spacing)

    def to_model_grid(self, hu: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        """Resample HU slices (n, y, x) to the model's pixel size (linear, anti-aliased when shrinking)."""
        out_shape = self.model_shape(hu.shape[-2:], pixel_spacing)
        if out_shape == tuple(hu.shape[-2:]):
            return hu.astype(np.float32, copy=False)
        return resize(
            hu.astype(np.float32, copy=False),
            (hu.shape[0], *out_shape),
            order=1,
            mode="edge",
            anti_aliasing=out_shape[0] < hu.shape[-2],
            preserve_range=True,
        ).astype(np.float32)

    def labels_to_model_grid(self, labels: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        """Resample a label map (y, x) to the model's pixel size (nearest neighbour)."""
        out_shape = self.model_shape(labels.shape, pixel_spacing)
        if out_shape == labels.shape:
            return labels.astype(np.uint8, copy=False)
        return resize(
            labels, out_shape, order=0, mode="edge", anti_aliasing=False, preserve_range=True
        ).astype(np.uint8)

    def pad_amounts(self, shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Centred zero padding making (y, x) a multiple of `size_multiple` (the U-Net's down-sampling)."""
        pads = []
        for n in shape:
            extra = (-n) % self.size_multiple
            pads.append((extra // 2, extra - extra // 2))
        return pads[0], pads[1]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            pixel_spacing_mm=float(data["pixel_spacing_mm"]),
            hu_window=(float(data["hu_window"][0]), float(data["hu_window"][1])),
            size_multiple=int(data["size_multiple"]),
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hu_window"] = list(self.hu_window)
        d["normalisation"] = "x = (clip(HU, lo, hi) - lo) / (hi - lo); outside the image (padding) x = 0"
        return d


def resolve_model_dir(model_path: str | Path | None) -> Path:
    """The folder holding model.onnx and model_card.json (a model folder or its .onnx file may be given)."""
    if model_path is None:
        return DEFAULT_MODEL_DIR
    path = Path(model_path)
    return path.parent if path.suffix == ".onnx" else path


def load_model_card(model_dir: str | Path) -> dict[str, Any]:
    """Read model_card.json, raising SegmentationError with the path when it is missing or unreadable."""
    path = Path(model_dir) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SegmentationError(
            f"No U-Net model card at {path}: a model folder needs {MODEL_FILE} and {CARD_FILE} "
            "(written by `sarcoscope train`)."
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise SegmentationError(f"Cannot read the U-Net model card {path}: {exc}") from None
    for key in ("model_id", "input", "labels"):
        if key not in card:
            raise SegmentationError(f"U-Net model card {path} lacks '{key}'.")
    return card


def _providers() -> list[str]:
    """CUDA when this onnxruntime build has it, CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _resize_linear(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Linear resampling along one axis, pixel centres aligned like skimage's resize (edge mode).

    Two gathers per axis: much faster than a general n-D interpolation of (n, 5, y, x) class scores.
    """
    n_in = a.shape[axis]
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    shape = [1] * a.ndim
    shape[axis] = n_out
    frac = (src - lo).astype(a.dtype).reshape(shape)
    return np.take(a, lo, axis=axis) * (1 - frac) + np.take(a, hi, axis=axis) * frac


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


class UNetEngine:
    """Segments L3 slices with the trained U-Net; optional HU refinement of the network's labels.

    `refine=True` (default) constrains each tissue to its HU range, turns fat inside the muscle compartments
    into IMAT and removes small islands (segmentation.refine); `refine=False` returns the raw network labels.
    """

    name = "unet"

    def __init__(
        self,
        model_path: str | Path | None = None,
        refine: bool = True,
        hu_ranges: HURanges = DEFAULT_HU_RANGES,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.model_dir = resolve_model_dir(model_path)
        self.card = load_model_card(self.model_dir)
        onnx_path = self.model_dir / self.card.get("files", {}).get("onnx", MODEL_FILE)
        if not onnx_path.is_file():
            raise SegmentationError(f"U-Net model file {onnx_path} is missing.")
        self.model_id: str = str(self.card["model_id"]) + ("" if refine else "+raw")
        self.spec = InputSpec.from_dict(self.card["input"])
        self.refine = refine
        self.hu_ranges = hu_ranges
        self.batch_size = max(1, int(batch_size))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise SegmentationError(f"Cannot load U-Net model {onnx_path}: {exc}") from None
        self._input_name = self._session.get_inputs()[0].name

    def predict_proba(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        """Class probabilities (n, 5, y, x) on the input grid, before any HU refinement."""
        slices = _check_slices(slices)
        spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
        if min(spacing) <= 0:
            raise SegmentationError(f"Pixel spacing must be positive, got {pixel_spacing}.")
        n, h, w = slices.shape
        out: np.ndarray | None = None
        for start in range(0, n, self.batch_size):
            batch = self.spec.to_model_grid(slices[start : start + self.batch_size], spacing)
            (py, px) = self.spec.pad_amounts(batch.shape[-2:])
            x = np.pad(self.spec.normalise(batch), ((0, 0), py, px))[:, None]
            logits = self._session.run(None, {self._input_name: x})[0]
            logits = logits[:, :, py[0] : logits.shape[2] - py[1], px[0] : logits.shape[3] - px[1]]
            probs = _softmax(logits.astype(np.float32), axis=1)
            if probs.shape[-2:] != (h, w):
                probs = _resize_linear(_resize_linear(probs, 2, h), 3, w)
            if out is None:
                out = np.empty((n, probs.shape[1], h, w), dtype=np.float32)
            out[start : start + len(probs)] = probs
        assert out is not None
        return out

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        """Label maps (n, y, x) uint8 with the project's ids, on the input grid."""
        slices = _check_slices(slices)
        labels = self.predict_proba(slices, pixel_spacing).argmax(axis=1).astype(np.uint8)
        if not self.refine:
            return labels
        return refine_labels(labels, slices, pixel_spacing, self.hu_ranges).astype(np.uint8)


def _check_slices(slices: np.ndarray) -> np.ndarray:
    arr = np.asarray(slices)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise SegmentationError(f"Expected HU slices of shape (n, y, x), got an array of shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise SegmentationError(f"Expected numeric HU slices, got dtype {arr.dtype}.")
    return arr
