"""The training loop (PyTorch + MONAI): loss, early stopping, checkpoints, resume, history, export.

Output folder after a run::

    model.onnx, model_card.json, MODEL_CARD.md   the exported model (what the "unet" engine loads)
    config.yaml                                  the full recipe of the run
    history.json, history.csv, history.png       per-epoch metrics and the loss/accuracy curves
    train.log                                    one line per epoch
    checkpoints/last.pt, checkpoints/best.pt     resume state / best weights (lowest validation loss)
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
)
from torch.utils.data import DataLoader, Dataset

from sarcoscope.conventions import TISSUES, Label
from sarcoscope.errors import InputError
from sarcoscope.fileio import atomic_write, atomic_write_text
from sarcoscope.segmentation.unet import InputSpec
from sarcoscope.training.config import BEST, LAST, TrainConfig, save_config
from sarcoscope.training.contrast_phase import RandUnenhancedd
from sarcoscope.training.data import Sample, data_fingerprint, load_folder, make_phantoms, split_by_patient
from sarcoscope.training.field_of_view import RandFieldOfViewCutd

N_CLASSES = len(Label)
#: Settings that only affect how this invocation runs; a resumed run takes them from the new command.
RUNTIME_FIELDS = ("output_dir", "resume", "epochs_this_run", "progress", "num_threads")
#: Settings a resumed run may take from the new command when they raise the stored value (more epochs).
RAISABLE_ON_RESUME = ("max_epochs",)
#: Command-line spelling of settings whose flag is not `--<name with dashes>` (for messages).
_FLAGS = {
    "data_dirs": "DATA",
    "max_epochs": "--epochs",
    "learning_rate": "--lr",
    "pixel_spacing_mm": "--pixel-spacing",
    "num_threads": "--threads",
    "strides": "--channels",
}
#: Where a resumed run that cannot continue should go instead.
_NEW_RUN = "start a new run with -o NEW"


@dataclass
class TrainingResult:
    """What a run produced: where the model is, and how it did on validation."""

    output_dir: Path
    onnx_path: Path
    card_path: Path
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    best_val_accuracy: float
    stopped_early: bool
    finished: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: What a resumed run changed at the command's request (e.g. max_epochs raised), for the user.
    notes: list[str] = field(default_factory=list)


def input_spec(config: TrainConfig) -> InputSpec:
    return InputSpec(
        config.pixel_spacing_mm,
        tuple(config.hu_window),  # type: ignore[arg-type]
        config.size_multiple,
        canvas=config.input_size,
    )


def build_network(config: TrainConfig) -> UNet:
    """MONAI's residual U-Net: 1 input channel (normalised HU), one output channel per label id."""
    return UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=N_CLASSES,
        channels=tuple(config.channels),
        strides=tuple(config.strides),
        num_res_units=config.num_res_units,
        dropout=config.dropout,
    )


def build_loss(config: TrainConfig) -> DiceCELoss:
    """lambda_dice·(1 − soft Dice, mean over images and 5 classes) + lambda_ce·(pixel-mean cross-entropy)."""
    return DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=config.lambda_dice, lambda_ce=config.lambda_ce
    )


class SliceDataset(Dataset):
    """Prepared slices -> {"image": (1, H, W) float32, "label": (1, H, W) int64}, augmented when training."""

    def __init__(self, samples: list[Sample], spec: InputSpec, config: TrainConfig, augment: bool, seed: int):
        self.samples = samples
        self.spec = spec
        self.config = config
        self.augment = augment and config.augment
        self.rng = np.random.default_rng(seed)
        lo, hi = spec.hu_window
        transforms = []
        if self.augment:
            if config.unenhanced > 0:  # first: the patient scanned so, then positioned and reconstructed
                transforms.append(RandUnenhancedd(("image", "label"), config.unenhanced, spec.hu_window))
            affine = {
                "keys": ("image", "label"),
                "prob": 0.8,
                "rotate_range": (math.radians(config.rotate_deg),),
                "scale_range": (config.scale_range, config.scale_range),
                "translate_range": (config.translate_mm / spec.pixel_spacing_mm,) * 2,
                "mode": ("bilinear", "nearest"),
                "padding_mode": "zeros",
            }
            if config.elastic:
                grid = config.elastic_spacing_mm / spec.pixel_spacing_mm
                magnitude = config.elastic_magnitude_mm / spec.pixel_spacing_mm
                transforms.append(
                    Rand2DElasticd(spacing=(grid, grid), magnitude_range=(0.0, magnitude), **affine)
                )
            else:
                transforms.append(RandAffined(**affine))
            if config.flip_lr:
                transforms.append(RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1))
            if config.blur_mm > 0:  # before the noise: a soft kernel smooths the anatomy, not the noise added
                sigma = (0.0, config.blur_mm / spec.pixel_spacing_mm)
                transforms.append(
                    RandGaussianSmoothd(keys=("image",), prob=0.5, sigma_x=sigma, sigma_y=sigma)
                )
            if config.noise_hu > 0:
                transforms.append(
                    RandGaussianNoised(keys=("image",), prob=0.5, std=config.noise_hu / (hi - lo))
                )
            if config.fov_cut > 0:  # last: beyond the edge is outside the image, noise-free like padding
                transforms.append(RandFieldOfViewCutd(("image", "label"), config.fov_cut, config.fov_cut_max))
        self.transform = Compose(transforms)
        self.transform.set_random_state(seed=seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _window(self) -> InputSpec:
        """The model's HU window, or a jittered one when windowing augmentation is on."""
        if not (self.augment and self.config.window_augmentation):
            return self.spec
        lo, hi = self.spec.hu_window
        centre = (lo + hi) / 2 + self.rng.uniform(-1, 1) * self.config.window_shift_hu
        half = (hi - lo) / 2 * (1 + self.rng.uniform(-1, 1) * self.config.window_scale)
        return replace(self.spec, hu_window=(centre - half, centre + half))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.samples[index]
        item = {
            "image": torch.from_numpy(self._window().normalise(s.hu)[None]),
            "label": torch.from_numpy(s.labels[None].astype(np.float32)),
        }
        item = self.transform(item)
        image = torch.as_tensor(item["image"]).float().clamp_(0.0, 1.0)
        label = torch.as_tensor(item["label"]).round().long()
        return {"image": image, "label": label}


def _run_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    loss_fn: DiceCELoss,
    optimizer: torch.optim.Optimizer | None,
    progress: Any,
    task: Any,
) -> dict[str, float]:
    """One pass; trains when `optimizer` is given. Loss is the mean over images; accuracy and Dice pooled."""
    training = optimizer is not None
    model.train(training)
    total_loss, n_images, correct, n_pixels = 0.0, 0, 0, 0
    tp = np.zeros(N_CLASSES)
    pred_sum = np.zeros(N_CLASSES)
    ref_sum = np.zeros(N_CLASSES)
    with torch.set_grad_enabled(training):
        for batch in loader:
            x, y = batch["image"], batch["label"]
            logits = model(x)
            loss = loss_fn(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                pred = logits.argmax(dim=1)
                ref = y[:, 0]
                correct += int((pred == ref).sum())
                n_pixels += ref.numel()
                for c in range(1, N_CLASSES):
                    p, r = pred == c, ref == c
                    tp[c] += int((p & r).sum())
                    pred_sum[c] += int(p.sum())
                    ref_sum[c] += int(r.sum())
            total_loss += float(loss.detach()) * len(x)
            n_images += len(x)
            if progress is not None:
                progress.advance(task)
    out = {"loss": total_loss / max(n_images, 1), "accuracy": correct / max(n_pixels, 1)}
    for name, label in TISSUES.items():
        denom = pred_sum[label] + ref_sum[label]
        out[f"dice_{name}"] = float(2 * tp[label] / denom) if denom else 1.0
    return out


def _save_torch(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _write_history(history: list[dict[str, float]], out: Path) -> None:
    from sarcoscope.training.plots import plot_history

    atomic_write_text(out / "history.json", json.dumps(history, indent=1))
    if history:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(out / "history.csv", buf.getvalue())
        plot_history(history, out / "history.png")


def _log(out: Path, line: str, console: Any) -> None:
    with open(out / "train.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")
    if console is not None:
        console.log(line)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise InputError(f"Cannot read training checkpoint {path}: {exc}") from None


def _refuse_to_overwrite_a_model(out: Path) -> None:
    """A new run never writes over a trained model: one in the folder (received from elsewhere, or a run
    whose checkpoints were removed) or any folder of the model registry, where models arrive only by
    `sarcoscope models add` (a site's default among them)."""
    from sarcoscope.segmentation.model_files import CARD_FILE, MODEL_FILE
    from sarcoscope.segmentation.registry import models_dir

    held = [name for name in (MODEL_FILE, CARD_FILE) if (out / name).exists()]
    if held:
        raise InputError(
            f"{out} already holds a trained model ({', '.join(held)}); training would overwrite it. Choose "
            "another -o folder."
        )
    registry = models_dir().resolve()
    if out.resolve().is_relative_to(registry):
        raise InputError(
            f"{out} is inside the model registry ({registry}); train into another folder, then "
            "`sarcoscope models add` the result."
        )


def _setting(name: str) -> str:
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    return f"{name} ({flag})"


def _comparable(name: str, value: Any) -> Any:
    """A setting's value as compared on resume: sequences as lists, folders resolved, id lists as sets."""
    if name == "data_dirs":
        return [str(Path(d).resolve()) for d in value]
    if name in ("cases", "val_cases") and value is not None:
        return sorted(value)
    return list(value) if isinstance(value, tuple | list) else value


def resumed_config(config: TrainConfig, stored_values: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The stored recipe of a run with this command's runtime settings, and notes on what it changed.

    A setting the command was given (`config.given`) that differs from the recipe is refused, not ignored:
    the run would silently train on another recipe than asked. Only RAISABLE_ON_RESUME may grow."""
    stored = TrainConfig(**stored_values)
    for name in ("channels", "strides", "hu_window", "phantom_spacing_mm"):
        if getattr(stored, name) is not None:
            setattr(stored, name, tuple(getattr(stored, name)))
    changes: dict[str, Any] = {k: getattr(config, k) for k in RUNTIME_FIELDS}
    conflicts, notes = [], []
    for name in sorted(config.given - set(RUNTIME_FIELDS)):
        old, new = getattr(stored, name), getattr(config, name)
        if _comparable(name, new) == _comparable(name, old):
            continue
        if name in RAISABLE_ON_RESUME and new > old:
            changes[name] = new
            notes.append(f"{name} raised from {old} to {new}")
            continue
        conflicts.append(f"{_setting(name)}: the run has {_plain_text(old)}, given {_plain_text(new)}")
    if conflicts:
        raise InputError(
            "--resume continues a run with the recipe it started with, but these settings differ from it: "
            + "; ".join(conflicts)
            + f". Leave them out (only {', '.join(RAISABLE_ON_RESUME)} may be raised), or {_NEW_RUN}."
        )
    return replace(stored, **changes), notes


def _plain_text(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _check_same_data(stored: dict[str, str] | None, now: dict[str, str]) -> None:
    """Refuse to resume on other data than the run started with (a folder edited between the sessions)."""
    if stored is None or stored == now:  # None: a checkpoint written before runs recorded their data
        return
    parts = []
    for what, names in (
        ("added", sorted(set(now) - set(stored))),
        ("removed", sorted(set(stored) - set(now))),
        ("changed", sorted(k for k in set(now) & set(stored) if now[k] != stored[k])),
    ):
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            parts.append(f"{what} {shown}")
    raise InputError(f"DATA changed since this run started: {'; '.join(parts)}; {_NEW_RUN}.")


def _check_same_split(stored: dict[str, list[str]] | None, now: dict[str, list[str]]) -> None:
    """Refuse to resume with another train/validation split (validation cases would leak into training)."""
    if stored is None or stored == now:
        return
    moved = [
        f"now in {side}: {', '.join(sorted(set(now[side]) - set(stored.get(side, []))))}"
        for side in ("train", "validation")
        if set(now[side]) - set(stored.get(side, []))
    ]
    gone = sorted(
        set(stored.get("train", []) + stored.get("validation", [])) - set(now["train"] + now["validation"])
    )
    if gone:
        moved.append(f"gone: {', '.join(gone)}")
    raise InputError(
        "DATA changed since this run started: the train/validation split differs ("
        + "; ".join(moved)
        + f"); {_NEW_RUN}."
    )


def train(config: TrainConfig) -> TrainingResult:
    """Train a U-Net with `config`, keep the best checkpoint, export ONNX + model card; resumable."""
    config.validate()
    out = Path(config.output_dir)
    last_path = out / LAST
    state: dict[str, Any] | None = None
    notes: list[str] = []
    if config.resume:
        if not last_path.is_file():
            raise InputError(f"Nothing to resume: {last_path} does not exist.")
        state = _load_checkpoint(last_path)
        config, notes = resumed_config(config, state["config"])
        config.validate()
    elif last_path.exists():
        raise InputError(
            f"{out} already holds a training run; use --resume to continue it or another -o folder."
        )
    else:
        _refuse_to_overwrite_a_model(out)
    init = None
    if config.init_from and state is None:
        init = starting_model(config.init_from)
        config = replace(config, **init.settings)
        config.validate()
    initialised_from = state.get("initialised_from") if state else init.model_id if init else None
    # the data are checked before anything is written: a refused resume leaves the run as it was
    try:
        fingerprint = data_fingerprint(config)
    except InputError as exc:
        if state is None:
            raise
        raise InputError(
            f"DATA changed since this run started: {str(exc).rstrip('.')}; {_NEW_RUN}."
        ) from None
    if state is not None:
        _check_same_data(state.get("data"), fingerprint)

    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")

    torch.set_num_threads(max(1, config.num_threads))
    torch.manual_seed(config.seed)
    spec = input_spec(config)
    samples: list[Sample] = []
    for d in config.data_dirs:
        samples += load_folder(d, config, spec)
    if config.cases is not None:
        found = {s.case.split("#")[0] for s in samples}
        missing = sorted(set(config.cases) - found)
        if missing:
            raise InputError(f"Cases not found in {', '.join(config.data_dirs)}: {', '.join(missing)}.")
    samples += make_phantoms(config, spec) if config.phantoms > 0 else []
    train_samples, val_samples = split_by_patient(samples, config)
    split = {
        "train": sorted({s.case for s in train_samples}),
        "validation": sorted({s.case for s in val_samples}),
    }
    if state is not None:
        _check_same_split(state.get("split"), split)
    repeated = [s for s in train_samples for _ in range(config.data_repeat if s.source == "data" else 1)]

    train_loader = DataLoader(
        SliceDataset(repeated, spec, config, augment=True, seed=config.seed),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val_loader = DataLoader(
        SliceDataset(val_samples, spec, config, augment=False, seed=config.seed), batch_size=config.batch_size
    )
    model = build_network(config)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    loss_fn = build_loss(config)

    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad_epochs, start_epoch, seconds = math.inf, 0, 0, 1, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        best_loss, best_epoch, bad_epochs = state["best_loss"], state["best_epoch"], state["bad_epochs"]
        start_epoch, seconds = state["epoch"] + 1, state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        train_loader.generator.set_state(state["loader_rng"])
    elif init is not None:
        from sarcoscope.training.export import load_onnx_weights

        load_onnx_weights(model, init.onnx_path, init.member)

    stopped_early = bad_epochs >= config.patience
    end_epoch = config.max_epochs
    if config.epochs_this_run is not None:
        end_epoch = min(end_epoch, start_epoch + config.epochs_this_run - 1)
    counts = _data_counts(train_samples, val_samples)
    progress, console = _progress(config.progress)
    t_start = time.monotonic() - seconds
    if start_epoch == 1:
        _log(out, f"data: {json.dumps(counts)}", console)
    for note in notes:
        _log(out, f"resume: {note}", console)
    with progress if progress is not None else _Null():
        epochs_task = (
            progress.add_task("epochs", total=config.max_epochs, completed=start_epoch - 1)
            if progress
            else None
        )
        for epoch in range(start_epoch, end_epoch + 1):
            if stopped_early:
                break
            batch_task = None
            if progress is not None:
                batch_task = progress.add_task(f"epoch {epoch}", total=len(train_loader) + len(val_loader))
            t0 = time.monotonic()
            tr = _run_epoch(model, train_loader, loss_fn, optimizer, progress, batch_task)
            va = _run_epoch(model, val_loader, loss_fn, None, progress, batch_task)
            row = {"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"]}
            row |= {"val_loss": va["loss"], "val_accuracy": va["accuracy"]}
            row |= {f"val_{k}": v for k, v in va.items() if k.startswith("dice_")}
            row["seconds"] = round(time.monotonic() - t0, 1)
            history.append(row)
            if va["loss"] < best_loss:
                best_loss, best_epoch, bad_epochs = va["loss"], epoch, 0
                _save_torch(model.state_dict(), out / BEST)
            else:
                bad_epochs += 1
            stopped_early = bad_epochs >= config.patience
            _save_torch(
                {
                    "config": config.as_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "seconds": time.monotonic() - t_start,
                    "torch_rng": torch.get_rng_state(),
                    "initialised_from": initialised_from,
                    "loader_rng": train_loader.generator.get_state(),
                    "data": fingerprint,
                    "split": split,
                },
                last_path,
            )
            _write_history(history, out)
            dice = " ".join(f"{k[9:]}={v:.3f}" for k, v in row.items() if k.startswith("val_dice_"))
            _log(
                out,
                f"epoch {epoch:3d} train_loss={tr['loss']:.4f} train_acc={tr['accuracy']:.4f} "
                f"val_loss={va['loss']:.4f} val_acc={va['accuracy']:.4f} dice[{dice}] "
                f"{row['seconds']:.0f}s{' *best' if best_epoch == epoch else ''}",
                console,
            )
            if progress is not None:
                progress.remove_task(batch_task)
                progress.advance(epochs_task)

    seconds = time.monotonic() - t_start
    epochs_run = len(history)
    finished = stopped_early or epochs_run >= config.max_epochs
    if stopped_early:
        _log(
            out,
            f"early stop: no val_loss improvement for {config.patience} epochs; best epoch {best_epoch}",
            console,
        )
    model.load_state_dict(torch.load(out / BEST, map_location="cpu", weights_only=True))
    from sarcoscope.training.export import export_model

    best = next(r for r in history if r["epoch"] == best_epoch)
    onnx_path, card_path = export_model(
        model,
        config,
        spec,
        out,
        example=val_loader.dataset[0]["image"][None],
        training={
            "counts": counts,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "stopped_early": stopped_early,
            "finished": finished,
            "seconds": round(seconds, 1),
            "best": best,
            "initialised_from": initialised_from,
        },
    )
    return TrainingResult(
        output_dir=out,
        onnx_path=onnx_path,
        card_path=card_path,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        best_val_loss=float(best["val_loss"]),
        best_val_accuracy=float(best["val_accuracy"]),
        stopped_early=stopped_early,
        finished=finished,
        seconds=seconds,
        history=history,
        notes=notes,
    )


@dataclass
class StartingModel:
    """A trained model to fine-tune: its ONNX weights, its id, and the settings its network was built with;
    `member`: of an ensemble, the member whose weights are the start (training.ensemble)."""

    onnx_path: Path
    model_id: str
    settings: dict[str, Any]
    member: int | None = None


def starting_model(spec: str) -> StartingModel:
    """The model named by `init_from` with the settings its card fixes: "default" = the site default (the
    shipped model unless `sarcoscope models use` chose another), an installed model id, or a model folder."""
    from sarcoscope.errors import SegmentationError
    from sarcoscope.segmentation.model_files import load_model_card, model_onnx_path
    from sarcoscope.segmentation.unet import resolve_model_dir

    try:
        folder = resolve_model_dir(None if spec == "default" else spec)
        card = load_model_card(folder)
        onnx_path = model_onnx_path(folder, card)
    except SegmentationError as exc:
        raise InputError(f"Cannot fine-tune from {spec}: {exc}") from None
    a, i = card["architecture"], card["input"]
    settings = {
        "channels": tuple(a["channels"]),
        "strides": tuple(a["strides"]),
        "num_res_units": int(a["num_res_units"]),
        "dropout": float(a["dropout"]),
        "pixel_spacing_mm": float(i["pixel_spacing_mm"]),
        "hu_window": tuple(float(v) for v in i["hu_window"]),
    }
    if i.get("canvas"):
        settings["input_size"] = int(i["canvas"])
    member = a.get("fine_tune_member") if "members" in card else None
    model_id = str(card["model_id"]) + (f" (member {member})" if member is not None else "")
    return StartingModel(onnx_path, model_id, settings, member)


def _data_counts(train: list[Sample], val: list[Sample]) -> dict[str, Any]:
    def summary(samples: list[Sample]) -> dict[str, Any]:
        data = sorted({s.case for s in samples if s.source == "data"})
        return {
            "slices": len(samples),
            "phantom_slices": sum(s.source == "phantom" for s in samples),
            "data_slices": sum(s.source == "data" for s in samples),
            "patients": len({s.patient for s in samples}),
            "data_cases": data,
        }

    return {"train": summary(train), "validation": summary(val)}


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool) -> tuple[Any, Any]:
    """A rich progress bar with ETA (per epoch and overall), or nothing when disabled."""
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    return progress, progress.console
