"""The training recipe as one dataclass: defaults follow the paper except network width and resolution.

Paper (Lee et al. 2022): U-Net, 512×512 input, loss 0.5·Dice + 0.5·cross-entropy, RMSProp lr 2e-4, batch 4,
up to 50 epochs, early stopping on validation loss (patience 10), split by patient, no windowing augmentation.
The paper's network ran on a GPU; the default here keeps its 512×512 input (0.75 mm pixels, a 384 mm field of
view) but is narrow and one level deeper (8-16-32-64-128-256 channels, 1.6 M parameters): the thin first level
keeps a training step at about 0.5 s per batch of 4 on 2 CPU cores, and the sixth level gives the receptive
field a whole abdomen needs to tell wall muscle from the organs behind it. Every value can be set in a YAML
file (same keys as the fields) and overridden by flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from sarcoscope.errors import InputError

#: Checkpoints in a run's output folder: the last epoch (what `resume` continues) and the best one.
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"


@dataclass
class TrainConfig:
    """Every value of a training run; the model card records all of them."""

    output_dir: str = "model"
    #: Folders of image/label pairs (layout: docs in sarcoscope.training.data).
    data_dirs: list[str] = field(default_factory=list)
    #: Only these case ids from the data folders (None = all); lets a run hold real cases out for testing.
    cases: list[str] | None = None
    #: Label mapping of the data's label maps (built-in name or YAML path; None = the project's ids).
    label_mapping: str | None = None
    #: Phantom slices generated on the fly (sarcoscope.phantom), each its own "patient".
    phantoms: int = 0
    phantom_seed: int = 1000
    #: Matrix size of the generated phantom slices (scanners: 512).
    phantom_size: int = 512
    #: Phantom pixel spacing drawn uniformly from this range (mm); None = the generator's own choice (a field
    #: of view that fits the body with a random margin, like a scanner's).
    phantom_spacing_mm: tuple[float, float] | None = None
    #: Each folder case appears this many times per epoch (differently augmented): balances few real cases
    #: against many phantoms.
    data_repeat: int = 1
    #: Free text for the model card: where the data came from, what it is (be honest about phantoms).
    data_description: str = ""
    #: Start from a trained model's weights instead of random ones (fine-tuning, e.g. the shipped model on a
    #: hospital's own labelled slices): a folder with model.onnx + model_card.json from `sarcoscope train`,
    #: an installed model id (`sarcoscope models list`), or "default" for the site default (the shipped
    #: model unless `sarcoscope models use` chose another). Its card fixes the network and input settings
    #: (they override the ones given here).
    init_from: str | None = None

    # network (MONAI UNet)
    channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.0

    # input: the paper's 512×512 (0.75 mm pixels = a 384 mm field of view)
    pixel_spacing_mm: float = 0.75
    input_size: int = 512
    hu_window: tuple[float, float] = (-250.0, 350.0)

    # recipe
    lambda_dice: float = 0.5
    lambda_ce: float = 0.5
    learning_rate: float = 2e-4
    batch_size: int = 4
    max_epochs: int = 50
    patience: int = 10
    val_fraction: float = 0.2
    #: Case ids (patients) forced into validation; empty = random split by patient.
    val_cases: list[str] = field(default_factory=list)
    #: Where the random validation patients come from: "all", "phantoms" (every data case trains: for a
    #: handful of real slices) or "data" (phantoms only train).
    val_from: str = "all"
    seed: int = 0

    # augmentation (geometric and noise on by default; windowing off: the paper found it harmful)
    augment: bool = True
    rotate_deg: float = 10.0
    scale_range: float = 0.1
    translate_mm: float = 15.0
    flip_lr: bool = True
    noise_hu: float = 8.0
    #: Gaussian blur of half the slices, its standard deviation drawn per axis up to this many mm (0 = off):
    #: the softer reconstruction kernels and coarser pixels of other scanners, which the real slices lack.
    blur_mm: float = 0.0
    #: Smooth elastic deformation on top of the affine one (anatomy varies more than rotation and scale):
    #: random offsets on a control grid `elastic_spacing_mm` apart, up to `elastic_magnitude_mm`.
    elastic: bool = False
    elastic_spacing_mm: float = 40.0
    elastic_magnitude_mm: float = 3.0
    #: Probability of cutting the body by the edge of a smaller field of view (training/field_of_view.py),
    #: up to `fov_cut_max` of its width on a random side: the real slices never show the cut that obese
    #: patients' scans often have.
    fov_cut: float = 0.0
    fov_cut_max: float = 0.12
    #: Probability of showing a slice as if scanned without contrast (training/contrast_phase.py): the real
    #: slices are nearly all enhanced, where organs are brighter than muscle; unenhanced, they are not.
    unenhanced: float = 0.0
    window_augmentation: bool = False
    window_shift_hu: float = 30.0
    window_scale: float = 0.1

    # running
    num_threads: int = 2
    resume: bool = False
    #: Stop after this many epochs in this invocation (None = run to the end); resume continues later.
    epochs_this_run: int | None = None
    progress: bool = True
    #: Not a setting (never saved): the names of the settings this config was given (recipe file or flags,
    #: see load_config) rather than left at their defaults. A resumed run checks them against its recipe.
    given: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in SETTINGS}

    def validate(self) -> None:
        """Raise InputError for values no run could use (wrong types first: a recipe file can hold any)."""
        problems = _type_problems(self)
        if problems:
            raise InputError("Invalid training configuration: " + "; ".join(problems) + ".")
        if len(self.channels) < 2 or min(self.channels) < 1:
            problems.append("channels needs at least 2 levels (e.g. 8,16), each >= 1")
        if len(self.strides) != len(self.channels) - 1:
            problems.append("strides needs one entry fewer than channels")
        elif self.strides and min(self.strides) < 1:
            problems.append("strides must be >= 1")
        multiple = _size_multiple(self.strides) if self.strides and min(self.strides) >= 1 else 1
        if self.input_size < 1 or self.input_size % multiple:
            problems.append(f"input_size must be a positive multiple of {multiple} (product of the strides)")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            problems.append("batch_size, max_epochs and patience must be >= 1")
        if self.epochs_this_run is not None and self.epochs_this_run < 1:
            problems.append("epochs_this_run must be >= 1 (leave it out to run to the end)")
        if self.data_repeat < 1:  # 0 would leave every real slice out while the card lists them
            problems.append("data_repeat must be >= 1")
        if self.seed < 0 or self.phantom_seed < 0:
            problems.append("seed and phantom_seed must be >= 0")
        if self.phantoms < 0:
            problems.append("phantoms must be >= 0")
        if self.phantom_size < MIN_PHANTOM_SIZE:
            problems.append(f"phantom_size must be >= {MIN_PHANTOM_SIZE}")
        if self.phantom_spacing_mm is not None and not (
            len(self.phantom_spacing_mm) == 2 and 0 < self.phantom_spacing_mm[0] <= self.phantom_spacing_mm[1]
        ):
            problems.append("phantom_spacing_mm must be (low, high) with 0 < low <= high")
        if self.num_res_units < 0 or not 0 <= self.dropout < 1:
            problems.append("num_res_units must be >= 0 and dropout in [0, 1)")
        if not (self.lambda_dice >= 0 and self.lambda_ce >= 0 and self.lambda_dice + self.lambda_ce > 0):
            problems.append("lambda_dice and lambda_ce must be >= 0, not both 0")
        if not 0 < self.val_fraction < 1:
            problems.append("val_fraction must be between 0 and 1")
        if self.val_from not in ("all", "phantoms", "data"):
            problems.append("val_from must be 'all', 'phantoms' or 'data'")
        if not self.hu_window[0] < self.hu_window[1]:  # written so that NaN fails too
            problems.append("hu_window must be (low, high) with low < high")
        if not (self.pixel_spacing_mm > 0 and self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append("pixel_spacing_mm and learning_rate must be positive")
        if self.blur_mm < 0:
            problems.append("blur_mm must be >= 0 (0 = no blur)")
        if self.elastic and not (self.elastic_spacing_mm > 0 and self.elastic_magnitude_mm >= 0):
            problems.append("elastic_spacing_mm must be positive and elastic_magnitude_mm >= 0")
        if not (0 <= self.fov_cut <= 1 and 0 <= self.fov_cut_max < 0.5):
            problems.append("fov_cut must be in [0, 1] and fov_cut_max in [0, 0.5)")
        if not 0 <= self.unenhanced <= 1:
            problems.append("unenhanced must be in [0, 1]")
        if not self.data_dirs and self.phantoms <= 0 and not self.resume:  # a resumed run has its own
            problems.append("no training data: give a data folder and/or phantoms > 0")
        if problems:
            raise InputError("Invalid training configuration: " + "; ".join(problems) + ".")

    @property
    def size_multiple(self) -> int:
        return _size_multiple(self.strides)


#: The phantom generator's smallest matrix (sarcoscope.phantom.make_slice).
MIN_PHANTOM_SIZE = 64


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_type(value: Any, kind: str) -> str | None:
    """What `value` should be for a field annotated `kind`, or None when it is that."""
    if kind.endswith(" | None"):
        return None if value is None else _check_type(value, kind[: -len(" | None")])
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if kind == "float":
        return None if _is_number(value) else "a number"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "str":
        return None if isinstance(value, str) else "a text"
    if kind == "list[str]":
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of texts"
    if kind == "tuple[int, ...]":
        ok = isinstance(value, list | tuple) and all(_check_type(v, "int") is None for v in value)
        return None if ok else "a list of whole numbers"
    if kind == "tuple[float, float]":
        ok = isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)
        return None if ok else "two numbers"
    return None


def _type_problems(config: TrainConfig) -> list[str]:
    """Settings of the wrong type (a recipe file's `batch_size: four`): named, instead of a crash later."""
    problems = []
    for f in fields(config):
        if f.name in SETTINGS:
            wanted = _check_type(getattr(config, f.name), str(f.type))
            if wanted:
                problems.append(f"{f.name} must be {wanted}, got {getattr(config, f.name)!r}")
    return problems


def _size_multiple(strides: tuple[int, ...]) -> int:
    m = 1
    for s in strides:
        m *= int(s)
    return m


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


#: The settings of a run (every field but `given`): what a recipe file, the flags and the card hold.
SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.name != "given")
_TUPLE_FIELDS = {f.name for f in fields(TrainConfig) if str(f.type).startswith("tuple")}
_FLOAT_FIELDS = {f.name for f in fields(TrainConfig) if str(f.type) == "float"}


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the YAML file (if any), then `overrides` (flags; None values are ignored).

    The names of the settings given either way are kept in `given`, so that a resumed run can refuse the ones
    that differ from its stored recipe instead of silently ignoring them."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"Cannot read training config {p}: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"Training config {p} must be a mapping of setting: value.")
        values.update(data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = set(SETTINGS)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"Unknown training setting(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
        )
    for name in _TUPLE_FIELDS & set(values):
        if isinstance(values[name], list | tuple):
            values[name] = tuple(values[name])
    for name in _FLOAT_FIELDS & set(values):
        if isinstance(values[name], str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            with contextlib.suppress(ValueError):  # when not a number either, validate() names it
                values[name] = float(values[name])
    config = dataclasses.replace(TrainConfig(), **values, given=frozenset(values))
    config.validate()
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the config as YAML (atomically), so a run can be repeated or resumed with the same recipe."""
    from sarcoscope.fileio import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.as_dict(), sort_keys=False))
