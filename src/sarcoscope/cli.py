"""`sarcoscope` command line: thin wrappers around the pipeline stages.

User errors (SarcoscopeError) print one clear message and exit 1; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sarcoscope import __version__
from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_INFERIOR_ENDPLATE, L3_MID, TISSUE_TITLES, HURanges
from sarcoscope.errors import SarcoscopeError
from sarcoscope.segmentation.base import DEFAULT_ENGINE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sarcoscope: L3 body composition (muscle, SAT, VAT, IMAT) and sarcopenia assessment from CT.",
)
console = Console()
ENGINE_HELP = (
    "Segmentation engine: threshold, unet (the shipped model), unet-raw (its output without HU refinement);"
    " unet:MODEL_DIR or unet-raw:MODEL_DIR for a model made by `sarcoscope train`."
)
err_console = Console(stderr=True)
_state = {"debug": False}
T = TypeVar("T")


class Sex(StrEnum):
    M = "M"
    F = "F"


class Convention(StrEnum):
    mid = "mid"
    inferior_endplate = "inferior-endplate"


def _run(action: Callable[[], T]) -> T:
    """Run a command body: user errors print one message and exit 1; bugs exit 70 (--debug: traceback)."""
    try:
        return action()
    except (typer.Exit, typer.Abort):
        raise
    except SarcoscopeError as exc:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "This is a bug in sarcoscope; run again with --debug for the traceback and report it."
        )
        raise typer.Exit(70) from None


def _version(value: bool) -> None:
    if value:
        console.print(f"sarcoscope {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _print_summary(result: Any) -> None:
    from sarcoscope.composition import TissueStats

    sel = result.selection
    how = f"{sel.mode} ({sel.method})"
    if sel.confidence is not None:
        how += f", confidence {sel.confidence:.2f}"
    console.print(f"[bold]L3[/]: slice(s) {_fmt_indices(sel.indices)} — {how}; engine {result.model_id}")
    table = Table(title="L3 body composition (average over analysed slices)")
    for col in ("tissue", "area cm²", "mean HU", "SD HU"):
        table.add_column(col, justify="right" if col != "tissue" else "left")
    for key, title in TISSUE_TITLES.items():
        ts: TissueStats = result.average.tissues[key]
        table.add_row(
            title,
            f"{ts.area_cm2:.1f}",
            "—" if ts.mean_hu is None else f"{ts.mean_hu:.1f}",
            "—" if ts.sd_hu is None else f"{ts.sd_hu:.1f}",
        )
    console.print(table)
    a = result.assessment
    if a.smi.computed:
        console.print(
            f"SMI: [bold]{a.smi.value:.1f}[/] cm²/m²" + (f", BMI {a.bmi.value:.1f}" if a.bmi.computed else "")
        )
    else:
        console.print(f"SMI: not computed ({a.smi.reason})")
    for kind, results in (("sarcopenia", a.sarcopenia), ("myosteatosis", a.myosteatosis)):
        for c in results.values():
            if not c.computed:
                verdict = f"not computed ({c.reason})"
            else:
                below = "[red]below[/]" if c.flagged else "not below"
                verdict = f"{below} cutoff {c.cutoff:g} {c.set.unit} ({c.rule})"
            mark = " [bold](selected)[/]" if c.selected else ""
            console.print(f"  {kind} · {c.set.title}{mark}: {verdict}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if result.outputs:
        console.print(
            f"Outputs in [bold]{result.outputs['report'].parent}[/]: "
            + ", ".join(p.name for p in result.outputs.values())
        )


def _fmt_indices(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]} ({len(indices)} slices)"


@app.command()
def analyze(
    ct_path: Annotated[Path, typer.Argument(help="DICOM folder, .zip of DICOM, single DICOM file or NIfTI.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.json, metrics.csv, overlay.png...")
    ],
    slice_index: Annotated[
        int | None, typer.Option("--slice", help="Analyse this axial slice index (0 = most inferior).")
    ] = None,
    slice_range: Annotated[
        str | None, typer.Option("--range", help="Analyse slices Z0:Z1 (inclusive) and average them.")
    ] = None,
    series: Annotated[str | None, typer.Option("--series", help="SeriesInstanceUID to analyse.")] = None,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = DEFAULT_ENGINE,
    height_cm: Annotated[float | None, typer.Option("--height-cm", help="Patient height (for SMI).")] = None,
    weight_kg: Annotated[float | None, typer.Option("--weight-kg", help="Patient weight (for BMI).")] = None,
    sex: Annotated[Sex | None, typer.Option("--sex", help="Patient sex (for cutoffs).")] = None,
    cutoffs: Annotated[
        str | None, typer.Option("--cutoffs", help="Headline cutoff set (ids: `sarcoscope cutoffs`).")
    ] = None,
    convention: Annotated[
        Convention, typer.Option(help="Automatic L3 slice: mid-vertebral body or inferior endplate.")
    ] = Convention.mid,
    vat_narrow: Annotated[
        bool, typer.Option("--vat-narrow", help="Use the Slice-O-Matic VAT window −150..−50 HU.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout.")] = False,
) -> None:
    """Analyse one CT at L3: segment muscle, SAT, VAT, IMAT and report areas, HU, SMI and cutoffs."""
    from sarcoscope.level import parse_range
    from sarcoscope.pipeline import analyze as run_analysis

    def body() -> None:
        if slice_index is not None and slice_range is not None:
            raise SarcoscopeError("Give either --slice or --range, not both.")
        rng = parse_range(slice_range) if slice_range is not None else None
        hu_ranges = HURanges.slice_o_matic_vat() if vat_narrow else DEFAULT_HU_RANGES
        with console.status("reading CT…") as status:
            result = run_analysis(
                ct_path,
                out_dir=out,
                slice_index=slice_index,
                slice_range=rng,
                series_uid=series,
                engine=engine,
                height_cm=height_cm,
                weight_kg=weight_kg,
                sex=sex.value if sex else None,
                cutoff_set=cutoffs,
                convention=L3_MID if convention is Convention.mid else L3_INFERIOR_ENDPLATE,
                hu_ranges=hu_ranges,
                progress=lambda s: status.update(f"{s}…"),
            )
        if as_json:
            sys.stdout.write(result.outputs["report"].read_text())
        else:
            _print_summary(result)

    _run(body)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo CT and its analysis.")] = Path(
        "sarcoscope-demo"
    ),
    seed: Annotated[int, typer.Option(help="Phantom seed (same seed, same CT).")] = 7,
) -> None:
    """Generate a synthetic abdominal CT (DICOM) and run the whole analysis on it."""
    from sarcoscope.phantom import write_phantom
    from sarcoscope.pipeline import analyze as run_analysis

    def body() -> None:
        out.mkdir(parents=True, exist_ok=True)
        with console.status("generating a synthetic CT…"):
            info = write_phantom(out / "ct", kind="volume", fmt="dicom", seed=seed)
        console.print(f"Synthetic CT written to [bold]{info['paths']['dicom']}[/] (seed {seed}).")
        with console.status("analysing…") as status:
            result = run_analysis(
                info["paths"]["dicom"], out_dir=out / "analysis", progress=lambda s: status.update(f"{s}…")
            )
        _print_summary(result)
        truth = info.get("truth", {})
        if "l3_mid_index" in truth:
            console.print(
                f"Phantom truth: mid-L3 slice {truth['l3_mid_index']}; "
                f"analysed slice(s) {_fmt_indices(result.selection.indices)}."
            )

    _run(body)


@app.command()
def cutoffs() -> None:
    """List the shipped sarcopenia and myosteatosis cutoff sets with their sources."""
    from sarcoscope.composition import load_cutoffs

    table = Table(title="Shipped cutoff sets (flagged when the value is strictly below the cutoff)")
    for col in ("id", "kind", "rules", "population", "source"):
        table.add_column(col)
    cutoffs_table = load_cutoffs()
    for kind, sets in (
        ("sarcopenia", cutoffs_table.sarcopenia),
        ("myosteatosis", cutoffs_table.myosteatosis),
    ):
        for set_id, cs in sets.items():
            default = " (default)" if set_id == cutoffs_table.default_sarcopenia else ""
            rules = "; ".join(f"{r.describe()}: {cs.metric} < {r.cutoff:g}" for r in cs.rules)
            table.add_row(set_id + default, kind, rules, cs.population, cs.citation)
    console.print(table)


@app.command()
def series(
    ct_path: Annotated[Path, typer.Argument(help="DICOM folder or .zip.")],
) -> None:
    """List the image series found in a folder or zip (choose one with `analyze --series UID`)."""
    from sarcoscope.imaging import list_series

    def body() -> None:
        table = Table(title=f"Series in {ct_path} (the first is analysed by default)")
        for col in ("SeriesInstanceUID", "description", "modality", "orientation", "slices", "note"):
            table.add_column(col)
        for s in list_series(ct_path):
            table.add_row(
                s.series_uid,
                s.description or "",
                s.modality or "",
                s.orientation or "",
                str(s.n_slices),
                s.note or "",
            )
        console.print(table)

    _run(body)


@app.command()
def locate(
    ct_path: Annotated[Path, typer.Argument(help="DICOM folder, .zip, or NIfTI volume.")],
    series: Annotated[str | None, typer.Option("--series", help="SeriesInstanceUID.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the localization as JSON.")] = False,
) -> None:
    """Locate L3 automatically and print the vertebrae found, the confidence and any flags."""
    from sarcoscope.imaging import read_ct
    from sarcoscope.level import locate_l3

    def body() -> None:
        loc = locate_l3(read_ct(ct_path, series_uid=series))
        if as_json:
            sys.stdout.write(json.dumps(loc.as_dict(), indent=2) + "\n")
        else:
            console.print(loc.describe())

    _run(body)


@app.command()
def batch(
    cohort: Annotated[
        Path, typer.Argument(help="Folder of studies (one sub-folder/zip/NIfTI per case) or a CSV manifest.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (cases/<id>/, cohort.csv).")],
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = DEFAULT_ENGINE,
    cutoffs: Annotated[str | None, typer.Option("--cutoffs", help="Default cutoff set.")] = None,
    workers: Annotated[int, typer.Option(help="Parallel worker processes (or Dask workers).")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786), or 'local' for a local Dask cluster."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-analyse cases that already have a report.")] = False,
) -> None:
    """Analyse a cohort; resumable (finished cases are skipped), failures listed in failures.csv."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sarcoscope.batch import discover_cases, read_manifest, run_batch

    def body() -> None:
        cases = read_manifest(cohort) if cohort.suffix.lower() == ".csv" else discover_cases(cohort)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("analysing", total=len(cases))

            def done(outcome: Any) -> None:
                bar.advance(task)
                if outcome.status == "failed":
                    bar.console.print(f"[red]failed[/] {outcome.case_id}: {outcome.error}")

            summary = run_batch(
                cases,
                out,
                engine=engine,
                cutoff_set=cutoffs,
                workers=workers,
                scheduler=scheduler,
                force=force,
                on_outcome=done,
            )
        console.print(
            f"{summary.count('done')} analysed, {summary.count('skipped')} already done, "
            f"{summary.count('failed')} failed. Cohort table: [bold]{summary.cohort_csv}[/]"
        )
        if summary.count("failed"):
            console.print(f"Failures and reasons: [bold]{summary.failures_csv}[/]")
            raise typer.Exit(3)

    _run(body)


@app.command()
def validate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (report.md, report.html, CSVs).")],
    pred: Annotated[
        Path | None, typer.Option(help="Folder of predicted label maps (.npy .nii.gz .tag .png .dcm SEG).")
    ] = None,
    ref: Annotated[
        Path | None, typer.Option(help="Folder of reference label maps (.npy .nii.gz .tag .png .dcm SEG).")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Folder of CT slices (HU statistics; or input of --engine).")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="Segment --images with this engine instead of reading --pred.")
    ] = None,
    sites: Annotated[Path | None, typer.Option(help="CSV case_id,site for the external tables.")] = None,
    patients: Annotated[Path | None, typer.Option(help="CSV case_id,height_cm|height_m (for SMI).")] = None,
    ref_labels: Annotated[
        str | None,
        typer.Option(help="Reference label mapping: built-in name (slice-o-matic-alberta...) or YAML file."),
    ] = None,
    pred_labels: Annotated[
        str | None, typer.Option(help="Prediction label mapping: built-in name or YAML file.")
    ] = None,
    ref_l3: Annotated[Path | None, typer.Option(help="CSV of reference L3 slices.")] = None,
    pred_l3: Annotated[Path | None, typer.Option(help="CSV of predicted L3 slices.")] = None,
    pixel_spacing: Annotated[
        str | None, typer.Option(help="Pixel spacing 'dy,dx' mm when the files carry none.")
    ] = None,
    strip_prefix: Annotated[
        list[str] | None, typer.Option(help="Prefix removed from file names to get case ids (repeatable).")
    ] = None,
    strip_suffix: Annotated[
        list[str] | None, typer.Option(help="Suffix removed from file names to get case ids (repeatable).")
    ] = None,
    allow_unmatched: Annotated[
        bool, typer.Option(help="Skip cases present on one side only instead of failing.")
    ] = False,
    gallery: Annotated[int, typer.Option(help="Worst cases shown as overlays.")] = 6,
    alpha: Annotated[float, typer.Option(help="Significance level of the per-site comparison.")] = 0.05,
    keep_predictions: Annotated[bool, typer.Option(help="Save --engine predictions in the report.")] = True,
) -> None:
    """Validate segmentations (and L3 choices) like the paper: IoU bins, site tables, Dice, Bland–Altman."""
    from sarcoscope.validation import run_validation
    from sarcoscope.validation.io import DEFAULT_STRIP_PREFIXES, DEFAULT_STRIP_SUFFIXES, parse_pixel_spacing

    def body() -> None:
        with console.status("validating…"):
            report = run_validation(
                pred,
                ref,
                out,
                sites_csv=sites,
                ref_mapping=ref_labels,
                pred_mapping=pred_labels,
                images_dir=images,
                engine=engine,
                ref_l3_csv=ref_l3,
                pred_l3_csv=pred_l3,
                patients_csv=patients,
                pixel_spacing=parse_pixel_spacing(pixel_spacing) if pixel_spacing else None,
                strip_prefixes=tuple(strip_prefix) if strip_prefix else DEFAULT_STRIP_PREFIXES,
                strip_suffixes=tuple(strip_suffix) if strip_suffix else DEFAULT_STRIP_SUFFIXES,
                allow_unmatched=allow_unmatched,
                gallery_size=gallery,
                alpha=alpha,
                keep_predictions=keep_predictions,
            )
        if report.dice_summary:
            table = Table(title=f"Dice over {report.n_cases} case(s)")
            for col in ("tissue", "mean", "SD", "median", "worst (case)"):
                table.add_column(col)
            for tissue, sm in report.dice_summary.items():
                table.add_row(
                    tissue,
                    f"{sm.mean:.3f}",
                    f"{sm.sd:.3f}",
                    f"{sm.median:.3f}",
                    f"{sm.worst:.3f} ({sm.worst_case})",
                )
            console.print(table)
        for site, reasons in report.flagged_sites.items():
            console.print(f"[yellow]site {site} differs from the others:[/] {'; '.join(reasons)}")
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        console.print(f"Report: [bold]{report.out_dir / 'report.html'}[/]")

    _run(body)


def _csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command()
def train(
    data: Annotated[
        list[Path] | None, typer.Argument(help="Folders with images/ and labels/ (see the README).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (model.onnx, card...).")
    ] = None,
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
        typer.Option(help="Fine-tune a trained model: its folder, or 'default' for the shipped one."),
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
        except ImportError as exc:
            raise SarcoscopeError(
                f"Training needs the [train] extra ({exc.name} is missing): "
                "pip install torch==2.13.0 'sarcoscope[train]'"
            ) from None
        chans = [int(c) for c in _csv_list(channels) or []] or None
        cfg = load_config(
            config,
            data_dirs=[str(d) for d in data] if data else None,
            output_dir=str(out) if out else None,
            phantoms=phantoms,
            cases=_csv_list(cases),
            val_cases=_csv_list(val_cases),
            val_from=val_from,
            label_mapping=label_mapping,
            data_repeat=data_repeat,
            max_epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            patience=patience,
            input_size=input_size,
            pixel_spacing_mm=pixel_spacing,
            channels=chans,
            strides=[2] * (len(chans) - 1) if chans else None,
            val_fraction=val_fraction,
            seed=seed,
            num_threads=threads,
            init_from=init_from,
            augment=augment,
            elastic=elastic,
            window_augmentation=window_augmentation,
            resume=resume or None,
            epochs_this_run=epochs_this_run,
            progress=progress,
        )
        result = run_training(cfg)
        console.print(
            f"{'finished' if result.finished else 'paused'} after {result.epochs_run} epoch(s)"
            f"{' (early stop)' if result.stopped_early else ''}; best epoch {result.best_epoch}: "
            f"val_loss {result.best_val_loss:.4f}, val_accuracy {result.best_val_accuracy:.4f}."
        )
        console.print(f"Model: [bold]{result.onnx_path}[/]; model card: [bold]{result.card_path}[/]")

    _run(body)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Folder for the database and stored CT files.")] = Path(
        "sarcoscope-data"
    ),
    database_url: Annotated[
        str | None, typer.Option(envvar="SARCOSCOPE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="SARCOSCOPE_TOKEN", help="Access token required to log in.")
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload.")] = 4096,
    engine: Annotated[str, typer.Option(help="Segmentation engine for 'Segment selected'.")] = DEFAULT_ENGINE,
) -> None:
    """Run the web labeling application (browser UI and API) at http://HOST:PORT/."""
    from sarcoscope.web import serve as run_server

    _run(
        lambda: run_server(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            token=token,
            max_upload_mb=max_upload_mb,
            engine=engine,
        )
    )


class PhantomKind(StrEnum):
    volume = "volume"
    slice = "slice"


class PhantomFormat(StrEnum):
    dicom = "dicom"
    nifti = "nifti"
    both = "both"


@app.command()
def phantom(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    kind: Annotated[PhantomKind, typer.Option(help="A single L3 slice or an abdominal volume.")] = (
        PhantomKind.volume
    ),
    fmt: Annotated[PhantomFormat, typer.Option("--format", help="File format.")] = PhantomFormat.dicom,
    seed: Annotated[int, typer.Option(help="Random seed (deterministic).")] = 0,
    size: Annotated[int, typer.Option(help="Matrix size in pixels (rows = columns).")] = 512,
    thickness: Annotated[float, typer.Option(help="Volume slice thickness in mm.")] = 3.0,
    coverage: Annotated[
        str, typer.Option(help="Volume coverage: abdomen, chest-pelvis, upper-abdomen, lower, l3-only.")
    ] = "abdomen",
    variant: Annotated[
        str, typer.Option(help="Spine: normal, six-lumbar, sacralised-L5, 11-ribs, 13-ribs.")
    ] = "normal",
    out_of_field: Annotated[
        bool, typer.Option(help="Corners outside the scan field at -3024 HU (PixelPaddingValue).")
    ] = False,
) -> None:
    """Write a synthetic CT with exact label maps and truth.json (for tests, demos and training)."""
    from sarcoscope.phantom import COVERAGES, VARIANTS, write_phantom

    def body() -> None:
        if coverage not in COVERAGES:
            raise SarcoscopeError(f"Unknown coverage '{coverage}'; choose one of {', '.join(COVERAGES)}.")
        if variant not in VARIANTS:
            raise SarcoscopeError(f"Unknown variant '{variant}'; choose one of {', '.join(VARIANTS)}.")
        options: dict[str, Any] = (
            {"shape_xy": size, "slice_thickness_mm": thickness, "coverage": coverage, "variant": variant}
            if kind is PhantomKind.volume
            else {"size": size}
        )
        info = write_phantom(
            out, kind=kind.value, fmt=fmt.value, seed=seed, out_of_field=out_of_field, **options
        )
        console.print(f"Phantom {kind.value} (seed {seed}) written to [bold]{out}[/]:")
        for name, path in info["paths"].items():
            console.print(f"  {name}: {path}")

    _run(body)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
