"""The model's life: `train` (and the learning loop from the web app's corrections) and `models`."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape as esc

from sarcoscope.cli.common import (
    app,
    console,
    csv_list,
    print_blocks,
    run,
)
from sarcoscope.errors import SarcoscopeError

if TYPE_CHECKING:
    from sarcoscope.segmentation.registry import InstalledModel


@app.command()
def train(
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders with images/ and labels/ (see the README); or one training-data export of the "
            "web app (zip or folder), which runs the learning loop like --from-store."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (model.onnx, card...).")
    ] = None,
    from_store: Annotated[
        Path | None,
        typer.Option(
            help="Learning loop: fine-tune the site's default model on the slices corrected in the web app "
            "(its data folder, or its training-data export), compare on held-out patients, register."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar="SARCOSCOPE_DATABASE_URL", help="The web app's database URL (with --from-store)."
        ),
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="Learning loop: fraction of patients held out for the comparison.")
    ] = 0.2,
    config: Annotated[Path | None, typer.Option(help="YAML file of training settings.")] = None,
    phantoms: Annotated[
        int | None, typer.Option(help="Synthetic phantom slices generated on the fly.")
    ] = None,
    cases: Annotated[
        str | None, typer.Option(help="Only these case ids from DATA (comma-separated).")
    ] = None,
    val_cases: Annotated[
        str | None, typer.Option(help="Case ids kept for validation (comma-separated).")
    ] = None,
    val_from: Annotated[
        str | None, typer.Option(help="Validation patients from: all, phantoms or data.")
    ] = None,
    label_mapping: Annotated[
        str | None,
        typer.Option(help="Label mapping of DATA: built-in name (slice-o-matic-alberta...) or YAML file."),
    ] = None,
    data_repeat: Annotated[int | None, typer.Option(help="Times each DATA slice is shown per epoch.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (paper: 50).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (paper: 4).")] = None,
    lr: Annotated[float | None, typer.Option(help="RMSProp learning rate (paper: 2e-4).")] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience (paper: 10).")] = None,
    input_size: Annotated[int | None, typer.Option(help="Network input size in pixels (paper: 512).")] = None,
    pixel_spacing: Annotated[float | None, typer.Option(help="Model pixel size in mm.")] = None,
    channels: Annotated[
        str | None, typer.Option(help="U-Net channels per level, e.g. 8,16,32,64,128,256.")
    ] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Fraction of patients for validation.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune a trained model: its folder, an installed id, or 'default' (the site's)."
        ),
    ] = None,
    augment: Annotated[bool | None, typer.Option(help="Geometric and noise augmentation.")] = None,
    elastic: Annotated[
        bool | None, typer.Option(help="Elastic deformation on top of the affine one.")
    ] = None,
    window_augmentation: Annotated[
        bool | None, typer.Option(help="Windowing augmentation (off: the paper found it harmful).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[
        bool, typer.Option(help="Progress bar with ETA (train.log is written either way).")
    ] = True,
    epochs_this_run: Annotated[
        int | None, typer.Option(help="Stop after this many epochs (resume later).")
    ] = None,
) -> None:
    """Train the U-Net with the paper's recipe; export ONNX and a model card (needs the train extra)."""

    def body() -> None:
        try:
            from sarcoscope.training import load_config
            from sarcoscope.training import train as run_training
            from sarcoscope.training.data import EXPORT_MANIFEST
        except ImportError as exc:
            raise SarcoscopeError(
                f"Training needs the [train] extra ({exc.name} is missing): "
                "pip install torch==2.13.0 'sarcoscope[train]'"
            ) from None
        chans = _channels(channels)
        settings: dict[str, Any] = {
            "phantoms": phantoms,
            "label_mapping": label_mapping,
            "data_repeat": data_repeat,
            "max_epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": lr,
            "patience": patience,
            "input_size": input_size,
            "pixel_spacing_mm": pixel_spacing,
            "channels": chans,
            "strides": [2] * (len(chans) - 1) if chans else None,
            "val_fraction": val_fraction,
            "seed": seed,
            "num_threads": threads,
            "augment": augment,
            "elastic": elastic,
            "window_augmentation": window_augmentation,
            "epochs_this_run": epochs_this_run,
            "progress": progress,
        }
        loop = {
            "cases": csv_list(cases),
            "val_cases": csv_list(val_cases),
            "val_from": val_from,
            "init_from": init_from,
        }
        source = from_store
        one = data[0] if data and len(data) == 1 else None
        if source is None and one and (one.suffix.lower() == ".zip" or (one / EXPORT_MANIFEST).is_file()):
            source = one
        if source is not None:
            if data and data != [source]:
                raise SarcoscopeError("The learning loop trains on the web app's slices only; drop DATA.")
            _learning_loop(source, out, database_url, holdout, config, resume, settings | loop)
            return
        cfg = load_config(
            config,
            data_dirs=[str(d) for d in data] if data else None,
            output_dir=str(out) if out else None,
            resume=resume or None,
            **settings,
            **loop,
        )
        result = run_training(cfg)
        _print_training(result)
        console.print(
            f"Model: [bold]{esc(str(result.onnx_path))}[/]; model card: [bold]{esc(str(result.card_path))}[/]"
        )

    run(body)


def _channels(text: str | None) -> list[int] | None:
    """--channels as whole numbers; anything else is the user's typo, said as such (not a crash)."""
    items = csv_list(text)
    if not items:
        return None
    try:
        return [int(c) for c in items]
    except ValueError:
        raise SarcoscopeError(
            f"--channels must be whole numbers separated by commas, e.g. 8,16,32; got {text!r}."
        ) from None


def _print_training(result: Any) -> None:
    for note in result.notes:
        console.print(esc(f"resumed: {note}"))
    console.print(
        f"{'finished' if result.finished else 'paused'} after {result.epochs_run} epoch(s)"
        f"{' (early stop)' if result.stopped_early else ''}; best epoch {result.best_epoch}: "
        f"val_loss {result.best_val_loss:.4f}, val_accuracy {result.best_val_accuracy:.4f}."
    )


def _learning_loop(
    source: Path,
    out: Path | None,
    database_url: str | None,
    holdout: float,
    config: Path | None,
    resume: bool,
    settings: dict[str, Any],
) -> None:
    """`train --from-store`: the corrected slices into OUT/data (web.training_data), then training.adapt."""
    import getpass

    from sarcoscope.training.adapt import adapt, check_overrides
    from sarcoscope.web.training_data import collect_training_data

    if out is None:
        raise SarcoscopeError("The learning loop needs an output folder: -o OUT.")
    check_overrides(settings)
    data_dir = out / "data"
    if not resume:
        if data_dir.exists():
            raise SarcoscopeError(
                f"{out} already holds a learning-loop run; use --resume or another -o folder."
            )
        manifest = collect_training_data(source, data_dir, f"cli:{getpass.getuser()}", database_url)
        console.print(
            f"{len(manifest['cases'])} corrected case(s) from {source} in [bold]{data_dir}[/]"
            + (
                f"; {len(manifest['skipped'])} study(ies) skipped (see the manifest)"
                if manifest["skipped"]
                else ""
            )
        )
    result = adapt(data_dir, out, holdout=holdout, config_file=config, resume=resume, **settings)
    _print_training(result.training)
    if result.model is None or result.comparison is None:
        console.print(esc(f"Continue with: sarcoscope train --from-store {source} -o {out} --resume"))
        return
    verdict = "better" if result.comparison["better"] else "[yellow]not better[/]"
    console.print(
        f"Model [bold]{result.model.model_id}[/] registered. Against the previous default "
        f"{result.comparison['baseline']} on the held-out patients it is {verdict}: "
        + "; ".join(result.comparison["reasons"])
        + "."
    )
    console.print(f"Model card: [bold]{esc(str(out / 'MODEL_CARD.md'))}[/]")
    if result.comparison["better"]:
        console.print(f"Make it the default with: sarcoscope models use {result.model.model_id}")


models_app = typer.Typer(
    no_args_is_help=True,
    help="The model registry: installed U-Net models and the site default (`--engine unet` uses it).",
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the installed models (one block each: the id whole, then created, training data and measured
    validation) and the site default."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        registry = ModelRegistry()
        default = registry.default_id()
        blocks = [
            (
                ("* " if m.model_id == default else "  ") + m.model_id + (" (shipped)" if m.shipped else ""),
                [
                    f"created: {m.created}",
                    f"training data: {m.training_summary()}",
                    f"measured: {m.measured()}",
                    *_verdict_now(m),
                ],
            )
            for m in registry.models()
        ]
        print_blocks(f"Installed models in {registry.root} (* = the site default):", blocks)

    run(body)


@models_app.command("add")
def models_add(
    path: Annotated[Path, typer.Argument(help="A model folder written by `sarcoscope train`.")],
) -> None:
    """Install a trained model into the registry (it does not become the default)."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        model = ModelRegistry().add(path)
        console.print(f"Installed [bold]{esc(model.model_id)}[/] in {esc(str(model.path))}.")

    run(body)


@models_app.command("use")
def models_use(
    model_id: Annotated[str, typer.Argument(help="Installed model id (`sarcoscope models list`).")],
    force: Annotated[bool, typer.Option(help="Switch even if it is not measured better.")] = False,
) -> None:
    """Make a model the site default, only if its card shows it better than the current default."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        verdict = ModelRegistry().use(model_id, force=force)
        how = "" if verdict.better else " [yellow](forced: not measured better)[/]"  # markup: not escaped
        console.print(
            f"The site default is now [bold]{esc(model_id)}[/]{how}: {esc('; '.join(verdict.reasons))}."
        )

    run(body)


@models_app.command("remove")
def models_remove(
    model_id: Annotated[str, typer.Argument(help="Installed model id.")],
) -> None:
    """Delete an installed model (not the shipped model, not the current default)."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        ModelRegistry().remove(model_id)
        console.print(f"Removed {model_id}.")

    run(body)


@models_app.command("show")
def models_show(
    model_id: Annotated[str, typer.Argument(help="Installed model id.")],
) -> None:
    """Print a model's card: what it learnt from, its validation, its comparison with the previous one."""
    from sarcoscope.segmentation.model_files import CARD_MD_FILE
    from sarcoscope.segmentation.registry import ModelRegistry
    from sarcoscope.training.card import card_markdown

    def body() -> None:
        model = ModelRegistry().get(model_id)
        card_md = model.path / CARD_MD_FILE
        console.print(f"{esc(str(model.path))}\n")
        sys.stdout.write(
            card_md.read_text(encoding="utf-8") if card_md.is_file() else card_markdown(model.card)
        )
        for line in _verdict_now(model):
            sys.stdout.write(f"\n{line}\n")

    run(body)


def _verdict_now(model: "InstalledModel") -> list[str]:
    """The card's comparison judged by the registry's rule of this version, as `use` judges it (a card
    written under an earlier rule may say otherwise); nothing for a card without one."""
    summary = model.comparison_summary()
    if summary is None:
        return []
    verdict = "better" if summary["better"] else "not better"
    return [f"against {summary['baseline']}, by the rule of now: {verdict} ({'; '.join(summary['reasons'])})"]
