"""`sarcoscope` command line: thin wrappers around the pipeline stages.

User errors (SarcoscopeError) print one clear message and exit 1; `--debug` shows the traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_INFERIOR_ENDPLATE, L3_MID, TISSUE_TITLES, HURanges
from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import check_output_folder
from sarcoscope.segmentation.base import DEFAULT_ENGINE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sarcoscope: L3 body composition (muscle, SAT, VAT, IMAT) and sarcopenia assessment from CT.",
)
console = Console()
ENGINE_HELP = (
    "Segmentation engine: threshold, unet (the site's default model), unet-raw (its output without HU"
    " refinement); unet:ID for an installed model (`sarcoscope models list`), unet:MODEL_DIR for a model"
    " folder made by `sarcoscope train`."
)
err_console = Console(stderr=True)
_state = {"debug": False}
T = TypeVar("T")


class Sex(StrEnum):
    M = "M"
    F = "F"


class LabelOrder(StrEnum):
    sarcoscope = "sarcoscope"
    totalsegmentator = "totalsegmentator"


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
        from sarcoscope import __version__

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
    from sarcoscope.composition.assessment import reason_parts

    sel = result.selection
    how = f"{sel.mode} ({sel.method})"
    if sel.confidence is not None:
        how += f", confidence {sel.confidence:.2f}"
    n = len(sel.indices)
    mode = f"single slice {sel.indices[0]}"
    if n > 1:
        mode = f"average of {n} slices ({_fmt_indices(sel.indices)})"
    console.print(f"[bold]Mode: {mode}[/]")
    console.print(f"[bold]L3[/]: slice(s) {_fmt_indices(sel.indices)} — {how}; engine {result.model_id}")
    if uncertain := (sel.details or {}).get("uncertainty"):
        console.print(f"[bold yellow]{uncertain}[/]", highlight=False, soft_wrap=True)
    table = Table(title=f"L3 body composition ({mode})")
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
    said: list[str] = []  # each missing fact once, however many values it stops

    def not_computed(reason: str | None) -> str:
        new = [p for p in reason_parts(reason or "") if p not in said]
        said.extend(new)
        return "not computed" + (f" ({'; '.join(new)})" if new else " (see above)")

    if not a.smi.computed:
        console.print(f"SMI: {not_computed(a.smi.reason)}")
    for kind, results in (("sarcopenia", a.sarcopenia), ("myosteatosis", a.myosteatosis)):
        for c in results.values():
            if not c.computed:
                verdict = not_computed(c.reason)
            else:
                below = "[red]below[/]" if c.flagged else "not below"
                verdict = f"{below} cutoff {c.cutoff:g} {c.set.unit} ({c.rule})"
            mark = " [bold](selected)[/]" if c.selected else ""
            console.print(f"  {kind} · {c.set.title}{mark}: {verdict}")
    q = result.quality
    if q is not None and q.score is not None:
        verdict = "[bold red]review the segmentation[/]" if q.flagged else "ok"
        console.print(f"Segmentation quality: [bold]{q.score:.2f}[/] ({verdict}; {', '.join(q.used)})")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if result.outputs:
        console.print(
            f"Outputs in [bold]{result.outputs['report'].parent}[/]: "
            + ", ".join(p.name for p in result.outputs.values())
        )


PixelSpacingOption = Annotated[
    tuple[float, float] | None,
    typer.Option(
        "--pixel-spacing",
        metavar="ROW COL",
        help="Pixel spacing in mm, for NIfTI files without a spatial transform (qform and sform codes 0), "
        "which are refused without it; the report says that it was given by you.",
    ),
]
SecretFileOption = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        help="De-identification key (created 0600 on first use). Default: $SARCOSCOPE_DEID_SECRET_FILE, "
        "else ~/.config/sarcoscope/deidentification.key. The same key gives the same pseudonyms.",
    ),
]
KeepDatesOption = Annotated[
    bool,
    typer.Option("--keep-dates-shifted", help="Keep dates, moved by a per-patient offset (intervals kept)."),
]
KeepCharacteristicsOption = Annotated[
    bool,
    typer.Option("--keep-patient-characteristics", help="Keep sex, age, height and weight."),
]
AcceptBurnedInOption = Annotated[
    bool,
    typer.Option(
        "--accept-burned-in",
        help="Export images with burned-in annotation anyway (pixels unchanged; marked not de-identified).",
    ),
]


def _deid_policy(
    deidentify: bool,
    secret_file: Path | None,
    keep_dates_shifted: bool,
    keep_patient_characteristics: bool,
    accept_burned_in: bool,
) -> Any:
    """The de-identification policy the options ask for (None without --deidentify)."""
    from sarcoscope.imaging.deidentify import load_policy

    if not deidentify:
        if secret_file or keep_dates_shifted or keep_patient_characteristics or accept_burned_in:
            raise SarcoscopeError("The de-identification options need --deidentify.")
        return None
    return load_policy(
        secret_file,
        keep_dates_shifted=keep_dates_shifted,
        keep_patient_characteristics=keep_patient_characteristics,
        accept_burned_in=accept_burned_in,
    )


def _fmt_indices(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]} ({len(indices)} slices)"


@app.command()
def analyze(
    ct_path: Annotated[
        str,
        typer.Argument(
            help="DICOM folder, .zip of DICOM, single DICOM file, NIfTI, or a DICOMweb study/series: "
            "dicomweb+http://host:port/prefix/studies/<UID>\\[/series/<UID>].",
            show_default=False,
        ),
    ],
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
    pixel_spacing: PixelSpacingOption = None,
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
    label_order: Annotated[
        LabelOrder,
        typer.Option(
            "--label-order",
            help="Label ids in labels.nii.gz: sarcoscope (1 muscle, 2 SAT, 3 VAT, 4 IMAT) or "
            "totalsegmentator "
            "(tissue_4_types: 1 subcutaneous, 2 torso fat, 3 muscle, 4 intermuscular).",
        ),
    ] = LabelOrder.sarcoscope,
    push: Annotated[
        bool,
        typer.Option(
            "--push", help="DICOMweb input: store the SEG, SR and QC capture back into the study (STOW-RS)."
        ),
    ] = False,
    deidentify: Annotated[
        bool,
        typer.Option("--deidentify", help="De-identify every written file (DICOM PS3.15 basic profile)."),
    ] = False,
    secret_file: SecretFileOption = None,
    keep_dates_shifted: KeepDatesOption = False,
    keep_patient_characteristics: KeepCharacteristicsOption = False,
    accept_burned_in: AcceptBurnedInOption = False,
    quality: Annotated[
        bool,
        typer.Option(help="Score each slice's segmentation (runs a second engine; flags slices to review)."),
    ] = True,
) -> None:
    """Analyse one CT at L3: segment muscle, SAT, VAT, IMAT and report areas, HU, SMI and cutoffs."""
    from sarcoscope.imaging import CTVolume, read_ct
    from sarcoscope.level import parse_range
    from sarcoscope.pacs.dicomweb import fetch_series, is_dicomweb, store_results
    from sarcoscope.pipeline import analyze as run_analysis

    def body() -> None:
        if slice_index is not None and slice_range is not None:
            raise SarcoscopeError("Give either --slice or --range, not both.")
        if push and not is_dicomweb(ct_path):
            raise SarcoscopeError(
                "--push stores results back to a DICOMweb server: give a dicomweb+http:// input."
            )
        if push and deidentify:
            raise SarcoscopeError(
                "--push stores results in the source study; it cannot be combined with --deidentify."
            )
        rng = parse_range(slice_range) if slice_range is not None else None
        hu_ranges = HURanges.slice_o_matic_vat() if vat_narrow else DEFAULT_HU_RANGES
        policy = _deid_policy(
            deidentify, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
        check_output_folder(out)
        with contextlib.ExitStack() as stack, console.status("reading CT…") as status:
            source: Path | CTVolume = Path(ct_path)
            if is_dicomweb(ct_path):  # retrieved into a temporary folder; the report names the address
                status.update("retrieving the series from the DICOMweb server…")
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sarcoscope-dicomweb-")))
                source = read_ct(fetch_series(ct_path, folder, series), series_uid=series)
                source.source_path = ct_path
            result = run_analysis(
                source,
                out_dir=out,
                slice_index=slice_index,
                slice_range=rng,
                series_uid=series,
                pixel_spacing=pixel_spacing,
                engine=engine,
                height_cm=height_cm,
                weight_kg=weight_kg,
                sex=sex.value if sex else None,
                cutoff_set=cutoffs,
                convention=L3_MID if convention is Convention.mid else L3_INFERIOR_ENDPLATE,
                hu_ranges=hu_ranges,
                progress=lambda s: status.update(f"{s}…"),
                deidentification=policy,
                quality=quality,
                label_order=label_order.value,
            )
        if push:
            kinds = [k for k in ("dicom_seg", "dicom_sr", "qc_capture") if k in result.outputs]
            stored = store_results(ct_path, [result.outputs[k] for k in kinds])
            console.print(
                f"Stored {stored} result object(s) in the study on the DICOMweb server.", style="dim"
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
        str,
        typer.Argument(
            help="Folder of studies (one sub-folder/zip/NIfTI per case), a CSV manifest, or a DICOMweb "
            "server dicomweb+http://host:port/prefix searched with --query (one case per CT series).",
            show_default=False,
        ),
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
    pixel_spacing: PixelSpacingOption = None,
    deidentify: Annotated[
        bool,
        typer.Option(
            "--deidentify", help="De-identify every written file; case folders and ids become keyed codes."
        ),
    ] = False,
    secret_file: SecretFileOption = None,
    keep_dates_shifted: KeepDatesOption = False,
    keep_patient_characteristics: KeepCharacteristicsOption = False,
    accept_burned_in: AcceptBurnedInOption = False,
    query: Annotated[
        list[str] | None,
        typer.Option(
            "--query",
            help="DICOMweb cohort: a study search KEY=VALUE (PatientName, PatientID, AccessionNumber, "
            "StudyDate=YYYYMMDD-YYYYMMDD, StudyDescription, StudyInstanceUID); repeat for more.",
        ),
    ] = None,
    modality: Annotated[
        str, typer.Option(help="DICOMweb cohort: the modality of the series analysed.")
    ] = "CT",
    push: Annotated[
        bool,
        typer.Option(
            "--push", help="DICOMweb cohort: store each case's SEG, SR and QC capture in its study."
        ),
    ] = False,
) -> None:
    """Analyse a cohort; resumable (finished cases are skipped), failures listed in failures.csv."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sarcoscope.batch import dicomweb_cases, discover_cases, read_manifest, run_batch
    from sarcoscope.pacs.dicomweb import is_dicomweb, parse_query

    def body() -> None:
        check_output_folder(out)
        if is_dicomweb(cohort):
            cases = dicomweb_cases(cohort, parse_query(query or []), modality)
        elif query or push:
            raise SarcoscopeError(
                "--query and --push need a DICOMweb cohort: dicomweb+http://host:port/prefix."
            )
        elif cohort.lower().endswith(".csv"):
            cases = read_manifest(Path(cohort))
        else:
            cases = discover_cases(Path(cohort))
        policy = _deid_policy(
            deidentify, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
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
                pixel_spacing=pixel_spacing,
                on_outcome=done,
                deidentification=policy,
                push=push,
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
def deidentify(
    src: Annotated[Path, typer.Argument(help="A DICOM file, a folder of DICOM (any nesting) or a .zip.")],
    out: Annotated[Path, typer.Argument(help="New (or empty) folder for the de-identified files.")],
    secret_file: SecretFileOption = None,
    keep_dates_shifted: KeepDatesOption = False,
    keep_patient_characteristics: KeepCharacteristicsOption = False,
    accept_burned_in: AcceptBurnedInOption = False,
) -> None:
    """De-identify DICOM by the PS3.15 basic profile: keyed pseudonyms, remapped UIDs, no private tags."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from sarcoscope.imaging.deidentify import deidentify_tree

    def body() -> None:
        policy = _deid_policy(
            True, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("de-identifying", total=None)
            summary = deidentify_tree(
                src, out, policy, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
        console.print(
            f"{summary.written} file(s) de-identified for {len(summary.patients)} patient(s) into "
            f"[bold]{summary.out_dir}[/]; {summary.non_dicom} non-DICOM file(s) skipped"
            + (f", {summary.duplicates} duplicate instance(s) skipped" if summary.duplicates else "")
            + "."
        )
        if summary.burned_in_refused:
            err_console.print(
                f"[bold red]{len(summary.burned_in_refused)} image(s) with burned-in annotation left out[/] "
                f"(their pixels may show the patient's name; --accept-burned-in exports them): "
                + ", ".join(summary.burned_in_refused[:10])
                + (" …" if len(summary.burned_in_refused) > 10 else "")
            )
        if summary.burned_in_accepted:
            err_console.print(
                f"[bold yellow]warning:[/] {summary.burned_in_accepted} image(s) with burned-in annotation "
                "exported with their pixels unchanged (marked PatientIdentityRemoved NO)."
            )

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
        chans = [int(c) for c in _csv_list(channels) or []] or None
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
            "cases": _csv_list(cases),
            "val_cases": _csv_list(val_cases),
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
        console.print(f"Model: [bold]{result.onnx_path}[/]; model card: [bold]{result.card_path}[/]")

    _run(body)


def _print_training(result: Any) -> None:
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
        console.print(f"Continue with: sarcoscope train --from-store {source} -o {out} --resume")
        return
    verdict = "better" if result.comparison["better"] else "[yellow]not better[/]"
    console.print(
        f"Model [bold]{result.model.model_id}[/] registered. Against the previous default "
        f"{result.comparison['baseline']} on the held-out patients it is {verdict}: "
        + "; ".join(result.comparison["reasons"])
        + "."
    )
    console.print(f"Model card: [bold]{out / 'MODEL_CARD.md'}[/]")
    if result.comparison["better"]:
        console.print(f"Make it the default with: sarcoscope models use {result.model.model_id}")


models_app = typer.Typer(
    no_args_is_help=True,
    help="The model registry: installed U-Net models and the site default (`--engine unet` uses it).",
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the installed models: id, created, training data, measured validation, and the default."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        registry = ModelRegistry()
        default = registry.default_id()
        table = Table(title=f"Installed models ({registry.root}; * = the site default)")
        table.add_column("")
        table.add_column("id", no_wrap=True)  # ids are typed into `models use`: never cut
        for col in ("created", "training data", "measured validation"):
            table.add_column(col)
        for m in registry.models():
            name = m.model_id + (" (shipped)" if m.shipped else "")
            table.add_row(
                "*" if m.model_id == default else "", name, m.created, m.training_summary(), m.measured()
            )
        console.print(table)

    _run(body)


@models_app.command("add")
def models_add(
    path: Annotated[Path, typer.Argument(help="A model folder written by `sarcoscope train`.")],
) -> None:
    """Install a trained model into the registry (it does not become the default)."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        model = ModelRegistry().add(path)
        console.print(f"Installed [bold]{model.model_id}[/] in {model.path}.")

    _run(body)


@models_app.command("use")
def models_use(
    model_id: Annotated[str, typer.Argument(help="Installed model id (`sarcoscope models list`).")],
    force: Annotated[bool, typer.Option(help="Switch even if it is not measured better.")] = False,
) -> None:
    """Make a model the site default, only if its card shows it better than the current default."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        verdict = ModelRegistry().use(model_id, force=force)
        how = "" if verdict.better else " [yellow](forced: not measured better)[/]"
        console.print(f"The site default is now [bold]{model_id}[/]{how}: {'; '.join(verdict.reasons)}.")

    _run(body)


@models_app.command("remove")
def models_remove(
    model_id: Annotated[str, typer.Argument(help="Installed model id.")],
) -> None:
    """Delete an installed model (not the shipped model, not the current default)."""
    from sarcoscope.segmentation.registry import ModelRegistry

    def body() -> None:
        ModelRegistry().remove(model_id)
        console.print(f"Removed {model_id}.")

    _run(body)


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
        console.print(f"{model.path}\n")
        sys.stdout.write(
            card_md.read_text(encoding="utf-8") if card_md.is_file() else card_markdown(model.card)
        )

    _run(body)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a login.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Folder for the database and stored CT files.")] = Path(
        "sarcoscope-data"
    ),
    database_url: Annotated[
        str | None, typer.Option(envvar="SARCOSCOPE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the access token of a single-user server (or set SARCOSCOPE_TOKEN)."),
    ] = None,
    token_user: Annotated[
        str | None,
        typer.Option(envvar="SARCOSCOPE_TOKEN_USER", help="Name the audit log gives the token's holder."),
    ] = None,
    token: Annotated[str | None, typer.Option(hidden=True)] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload.")] = 4096,
    engine: Annotated[str, typer.Option(help="Segmentation engine for 'Segment selected'.")] = DEFAULT_ENGINE,
    session_hours: Annotated[float, typer.Option(help="A login lasts this many hours.")] = 12.0,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark the session cookie Secure even for requests seen as plain HTTP.")
    ] = False,
    trusted_proxy: Annotated[
        str,
        typer.Option(help="Comma-separated addresses of reverse proxies whose X-Forwarded-* headers count."),
    ] = "127.0.0.1",
    dicomweb_url: Annotated[
        str | None,
        typer.Option(
            envvar="SARCOSCOPE_DICOMWEB_URL",
            help="DICOMweb root of a PACS (e.g. http://pacs:8042/dicom-web): search, import, push results.",
        ),
    ] = None,
    public_host: Annotated[
        str | None,
        typer.Option(help="Address users open behind a reverse proxy (host name or URL); printed at start."),
    ] = None,
) -> None:
    """Run the web labeling application (browser UI and API) at http://HOST:PORT/."""
    from sarcoscope.web import serve as run_server
    from sarcoscope.web.settings import load_token

    def body() -> None:
        if token is not None:
            raise SarcoscopeError(
                "--token is not accepted: a token on the command line is visible to every user of this "
                "machine. Put it in a file readable only by you (--token-file) or in SARCOSCOPE_TOKEN."
            )
        run_server(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            token=load_token(token_file),
            token_user=token_user,
            max_upload_mb=max_upload_mb,
            engine=engine,
            session_hours=session_hours,
            secure_cookies=secure_cookies,
            trusted_proxies=trusted_proxy,
            dicomweb_url=dicomweb_url,
            public_host=public_host,
        )

    _run(body)


@app.command()
def listen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for received images and results.")],
    port: Annotated[int, typer.Option(help="TCP port of the C-STORE receiver.")] = 11112,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface, for a scanner or PACS).")
    ] = "127.0.0.1",
    aet: Annotated[str, typer.Option(help="This node's AE title.")] = "SARCOSCOPE",
    settle: Annotated[
        float, typer.Option(help="Seconds without a new image after which a series is complete.")
    ] = 30.0,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = DEFAULT_ENGINE,
    push_to: Annotated[
        str | None, typer.Option(help="Send the SEG, SR and QC capture by C-STORE to AE_TITLE@host:port.")
    ] = None,
    push_dicomweb: Annotated[
        str | None,
        typer.Option(help="Store the SEG, SR and QC capture with STOW-RS on this DICOMweb root URL."),
    ] = None,
    allow_aet: Annotated[
        list[str] | None, typer.Option("--allow-aet", help="Accept images only from this calling AE title.")
    ] = None,
    keep_images: Annotated[
        bool, typer.Option(help="Keep the received images after a successful analysis.")
    ] = False,
) -> None:
    """Receive CT series by DICOM C-STORE, analyse each complete series, send the results back."""
    import logging

    from sarcoscope.pacs.node import ListenSettings, Node, parse_peer

    def body() -> None:
        if port < 1 or port > 65535:
            raise SarcoscopeError("--port must be 1 to 65535.")
        check_output_folder(out)
        node = Node(
            ListenSettings(
                out=out,
                host=host,
                port=port,
                aet=aet,
                settle=settle,
                engine=engine,
                push_to=parse_peer(push_to) if push_to else None,
                push_dicomweb=push_dicomweb,
                allowed_aets=list(allow_aet or []),
                keep_images=keep_images,
            )
        )
        if not logging.getLogger("sarcoscope").handlers:
            logging.basicConfig(level=logging.INFO, format="sarcoscope: %(message)s")
        node.start()
        node.run()

    _run(body)


users_app = typer.Typer(
    no_args_is_help=True,
    help="User accounts of the web application (passwords are read from a prompt or stdin, never argv).",
)
app.add_typer(users_app, name="users")
DataDirOption = Annotated[Path, typer.Option(help="The server's data folder.")]
DatabaseOption = Annotated[
    str | None, typer.Option(envvar="SARCOSCOPE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _with_accounts(data_dir: Path, database_url: str | None, action: Callable[[Any], None]) -> None:
    """Run `action(store)` on the server's database (migrated to the newest schema first)."""
    from sarcoscope.store import Store

    def body() -> None:
        store = Store(data_dir, database_url)
        try:
            store.migrate()
            action(store)
        finally:
            store.close()

    _run(body)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (recorded in the audit log).")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create an account; the server requires logins from its next start on."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        first = not store.has_users()
        accounts.add_user(store, name, _read_password(password_stdin))
        console.print(f"User [bold]{name}[/] added.")
        if first:
            console.print("This is the first account: restart `sarcoscope serve` so that it requires logins.")

    _with_accounts(data_dir, database_url, action)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Set a new password; the user's open sessions end."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        if store.get_user(name) is None:  # before asking for a password
            raise SarcoscopeError(f"No user '{name}'.")
        accounts.change_password(store, name, _read_password(password_stdin))
        console.print(f"Password of [bold]{name}[/] changed; their sessions have ended.")

    _with_accounts(data_dir, database_url, action)


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
) -> None:
    """Delete an account and end its sessions (its name stays in the audit log and label history)."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        accounts.remove_user(store, name)
        console.print(f"User [bold]{name}[/] removed.")

    _with_accounts(data_dir, database_url, action)


@users_app.command("list")
def users_list(
    data_dir: DataDirOption = Path("sarcoscope-data"), database_url: DatabaseOption = None
) -> None:
    """List the accounts with their last login and failed logins since."""

    def action(store: Any) -> None:
        if not store.has_users():
            console.print("No accounts: the server runs with an access token, or open on loopback only.")
            return
        table = Table("user", "created", "last login", "failed logins since")
        for user in store.list_users():
            table.add_row(
                user.name,
                f"{user.created_at:%Y-%m-%d %H:%M}",
                f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never",
                str(user.failed_logins),
            )
        console.print(table)

    _with_accounts(data_dir, database_url, action)


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
