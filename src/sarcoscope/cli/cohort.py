"""Many CTs and their checks: `batch`, `deidentify`, `validate`."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from sarcoscope.cli.common import (
    ENGINE_HELP,
    AcceptBurnedInOption,
    DicomwebTokenFileOption,
    KeepCharacteristicsOption,
    KeepDatesOption,
    PacsConnectTimeoutOption,
    PacsTimeoutOption,
    PixelSpacingOption,
    SecretFileOption,
    app,
    console,
    deid_policy,
    err_console,
    run,
    scrubbed_errors,
)
from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import check_output_folder, check_outside_input
from sarcoscope.segmentation.base import DEFAULT_ENGINE


@app.command()
def batch(
    cohort: Annotated[
        str,
        typer.Argument(
            help="Folder of studies (one sub-folder/zip/NIfTI per case), a CSV manifest, or a DICOMweb "
            "server dicomweb+http://host:port/prefix searched with --query (one case per study: its CT "
            "series with the most images).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (cases/<id>/, cohort.csv).")],
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = DEFAULT_ENGINE,
    cutoffs: Annotated[str | None, typer.Option("--cutoffs", help="Default cutoff set.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes (or Dask workers).")] = 1,
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
    pacs_connect_timeout: PacsConnectTimeoutOption = 10.0,
    pacs_timeout: PacsTimeoutOption = 60.0,
    dicomweb_token_file: DicomwebTokenFileOption = None,
    every_series: Annotated[
        bool,
        typer.Option(
            "--every-series",
            help="DICOMweb cohort: analyse every series of the modality in a study (scouts, every "
            "reconstruction and phase), not only the one with the most images.",
        ),
    ] = False,
) -> None:
    """Analyse a cohort; resumable (finished cases are skipped), failures listed in failures.csv."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sarcoscope.batch import dicomweb_cases, discover_cases, read_manifest, run_batch
    from sarcoscope.composition import available_cutoff_sets
    from sarcoscope.pacs.dicomweb_auth import use_token_file
    from sarcoscope.pacs.dicomweb_query import check_waits, is_dicomweb, parse_query
    from sarcoscope.segmentation import get_engine

    def body() -> None:
        check_output_folder(out)
        # an unknown engine, a model that does not load or an unknown cutoff set fails here, once, not in
        # every case
        get_engine(engine)
        if cutoffs is not None and cutoffs not in available_cutoff_sets():
            raise SarcoscopeError(
                f"Unknown cutoff set '{cutoffs}'. Available: {', '.join(available_cutoff_sets())}."
            )
        check_waits(pacs_connect_timeout, pacs_timeout)  # before the cohort is searched for
        use_token_file(dicomweb_token_file)
        policy = deid_policy(
            deidentify, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
        # de-identified, a refusal names no case folder (often the patient's name) nor the cohort's path (a
        # DICOMweb cohort's address names no patient: its UIDs and quoted values are scrubbed all the same)
        with scrubbed_errors(policy, None if is_dicomweb(cohort) else cohort):
            analyse(policy)

    def analyse(policy: Any) -> None:
        if is_dicomweb(cohort):
            filters = parse_query(query or [])
            waits = (pacs_connect_timeout, pacs_timeout)
            cases = dicomweb_cases(cohort, filters, modality, every_series=every_series, waits=waits)
        elif query or push or every_series:
            raise SarcoscopeError(
                "--query, --push and --every-series need a DICOMweb cohort: dicomweb+http://host:port/prefix."
            )
        elif cohort.lower().endswith(".csv"):
            manifest = Path(cohort).resolve()
            if manifest in {(out / name).resolve() for name in ("cohort.csv", "failures.csv")}:
                raise SarcoscopeError(
                    f"The manifest {cohort} is where the results table goes; move it or choose another -o."
                )
            cases = read_manifest(Path(cohort))
        else:
            check_outside_input(out, Path(cohort), "cohort folder")
            cases = discover_cases(Path(cohort))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("analysing", total=len(cases))

            def done(outcome: Any) -> None:
                bar.advance(task)
                if outcome.status == "failed":
                    bar.console.print(f"[red]failed[/] {esc(outcome.case_id)}: {esc(str(outcome.error))}")

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
                waits=(pacs_connect_timeout, pacs_timeout),
            )
        console.print(
            f"{summary.count('done')} analysed, {summary.count('skipped')} already done, "
            f"{summary.count('failed')} failed. Cohort table: [bold]{summary.cohort_csv}[/]"
        )
        if summary.count("failed"):
            console.print(f"Failures and reasons: [bold]{esc(str(summary.failures_csv))}[/]")
            raise typer.Exit(3)

    run(body, deidentified=deidentify)


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

    from sarcoscope.imaging.deidentify.files import deidentify_tree

    def body() -> None:
        policy = deid_policy(
            True, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with scrubbed_errors(policy, src), Progress(*columns, console=console, transient=True) as bar:
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
                f"(their pixels may show the patient's name; --accept-burned-in exports them; named by "
                "their de-identified UIDs): "
                + ", ".join(esc(r) for r in summary.burned_in_refused[:10])
                + (" …" if len(summary.burned_in_refused) > 10 else "")
            )
        if summary.documents_refused:
            err_console.print(
                f"[bold red]{len(summary.documents_refused)} encapsulated document(s) left out[/] (a PDF's "
                "or CDA's text, and its title, may name the patient; named by their de-identified UIDs): "
                + ", ".join(esc(r) for r in summary.documents_refused[:10])
                + (" …" if len(summary.documents_refused) > 10 else "")
            )
        if summary.burned_in_accepted:
            err_console.print(
                f"[bold yellow]warning:[/] {summary.burned_in_accepted} image(s) with burned-in annotation "
                "exported with their pixels unchanged (marked PatientIdentityRemoved NO)."
            )

    run(body, deidentified=True)


@app.command()
def validate(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Report folder (report.md, report.html, CSVs: replaced; other files kept)."
        ),
    ],
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
    gallery: Annotated[int, typer.Option(min=0, help="Worst cases shown as overlays.")] = 6,
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="Significance level of the per-site comparison.")
    ] = 0.05,
    keep_predictions: Annotated[bool, typer.Option(help="Save --engine predictions in the report.")] = True,
) -> None:
    """Validate segmentations (and L3 choices) like the paper: IoU bins, site tables, Dice, Bland–Altman."""
    from sarcoscope.validation import run_validation
    from sarcoscope.validation.io import DEFAULT_STRIP_PREFIXES, DEFAULT_STRIP_SUFFIXES, parse_pixel_spacing
    from sarcoscope.validation.stats import AREA_ERROR_BAR_PCT

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
                    f"{sm.worst:.3f} ({esc(str(sm.worst_case))})",
                )
            console.print(table)
        muscle = report.area_error.get("muscle")
        if muscle is not None and muscle.n:
            console.print(
                f"Muscle area error: mean {muscle.mean_pct:+.1f} %, "
                f"mean |error| {muscle.mean_abs_pct:.1f} %, largest {muscle.worst_pct:+.1f} % "
                f"({esc(muscle.worst_case)}); beyond ±{AREA_ERROR_BAR_PCT:g} % on {muscle.beyond_bar} of "
                f"{muscle.n} case(s)"
            )
        if report.l3_summary:
            s = report.l3_summary
            line = f"L3: {int(s['n'])} case(s), {int(s['not_found'])} not found"
            if "median_abs_error_mm" in s:
                line += (
                    f"; median |error| {s['median_abs_error_mm']:.1f} mm, "
                    f"largest {s['max_abs_error_mm']:.1f} mm, within 10 mm {100 * s['within_10mm']:.0f} %"
                )
            console.print(line)
        for site, reasons in report.flagged_sites.items():
            console.print(
                f"[yellow]site {esc(str(site))} differs from the others:[/] {esc('; '.join(reasons))}"
            )
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {esc(w)}")
        console.print(f"Report: [bold]{esc(str(report.out_dir / 'report.html'))}[/]")

    run(body)
