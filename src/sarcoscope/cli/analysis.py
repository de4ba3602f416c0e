"""Analysing one CT: `analyze`, `demo`, `cutoffs`, `series`, `locate`, `phantom`."""

import contextlib
import hashlib
import json
import math
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from sarcoscope.cli.common import (
    ENGINE_HELP,
    AcceptBurnedInOption,
    Convention,
    DicomwebTokenFileOption,
    KeepCharacteristicsOption,
    KeepDatesOption,
    LabelOrder,
    PacsConnectTimeoutOption,
    PacsTimeoutOption,
    PixelSpacingOption,
    SecretFileOption,
    app,
    console,
    deid_policy,
    fmt_indices,
    print_blocks,
    run,
    scrubbed_errors,
)
from sarcoscope.conventions import DEFAULT_HU_RANGES, L3_INFERIOR_ENDPLATE, L3_MID, TISSUE_TITLES, HURanges
from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import atomic_write_text, check_output_folder, images_temp_dir
from sarcoscope.segmentation.base import DEFAULT_ENGINE


def _print_summary(result: Any, deidentified_report: dict[str, Any] | None = None) -> None:
    """The analysis on the console; de-identified, with the report's warnings (no input path, series
    description...) and without what the report leaves out (the BMI, the classifications that apply the sex
    or BMI), since a console is often kept in a log."""
    from sarcoscope.composition import TissueStats
    from sarcoscope.composition.assessment import reason_parts
    from sarcoscope.segmentation.quality import score_text

    sel = result.selection
    how = sel.method if sel.mode == "auto" else f"{sel.mode} ({sel.method})"  # "automatic (…)" says it
    if sel.confidence is not None:
        how += f", confidence {sel.confidence:.2f}"
    n = len(sel.indices)
    mode = f"single slice {sel.indices[0]}"
    if n > 1:
        mode = f"average of {n} slices ({fmt_indices(sel.indices)})"
    console.print(f"[bold]Mode: {mode}[/]")
    console.print(
        f"[bold]L3[/]: slice(s) {fmt_indices(sel.indices)} — {esc(how)}; engine {esc(result.model_id)}"
    )
    if uncertain := (sel.details or {}).get("uncertainty"):
        console.print(f"[bold yellow]{esc(uncertain)}[/]", highlight=False, soft_wrap=True)
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
    bmi = a.bmi.value if a.bmi.computed else None
    warnings = result.warnings
    if deidentified_report is not None:
        bmi = deidentified_report["assessment"]["bmi"].get("value")
        warnings = deidentified_report["warnings"]
    if a.smi.computed:
        console.print(
            f"SMI: [bold]{a.smi.value:.1f}[/] cm²/m²" + (f", BMI {bmi:.1f}" if bmi is not None else "")
        )
    said: list[str] = []  # each missing fact once, however many values it stops

    def not_computed(reason: str | None) -> str:
        new = [p for p in reason_parts(reason or "") if p not in said]
        said.extend(new)
        return "not computed" + (f" ({esc('; '.join(new))})" if new else " (see above)")

    if not a.smi.computed:
        console.print(f"SMI: {not_computed(a.smi.reason)}")
    for kind, results in (("sarcopenia", a.sarcopenia), ("myosteatosis", a.myosteatosis)):
        reported = {c["set"]: c for c in (deidentified_report or {}).get("assessment", {}).get(kind, [])}
        for c in results.values():
            if c.set.id in reported and reported[c.set.id]["status"] != "computed":
                verdict = not_computed(reported[c.set.id]["reason"])  # one the de-identification removed
            elif not c.computed:
                verdict = not_computed(c.reason)
            else:
                below = "[red]below[/]" if c.flagged else "not below"
                verdict = f"{below} cutoff {c.cutoff:g} {esc(c.set.unit)} ({esc(str(c.rule))})"
            mark = " [bold](selected)[/]" if c.selected else ""
            console.print(f"  {kind} · {esc(c.set.title)}{mark}: {verdict}")
    q = result.quality
    if q is not None and q.score is not None:
        verdict = "[bold red]review the segmentation[/]" if q.flagged else "ok"
        console.print(
            f"Segmentation quality: [bold]{score_text(q.score)}[/] ({verdict}; {', '.join(q.used)})"
        )
    for w in warnings:
        console.print(f"[yellow]warning:[/] {esc(w)}")
    if result.outputs:
        console.print(
            f"Outputs in [bold]{esc(str(result.outputs['report'].parent))}[/]: "
            + esc(", ".join(p.name for p in result.outputs.values()))
        )


class PhantomKind(StrEnum):
    volume = "volume"
    slice = "slice"


class PhantomFormat(StrEnum):
    dicom = "dicom"
    nifti = "nifti"
    both = "both"


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
    height_cm: Annotated[
        float | None, typer.Option("--height-cm", help="Patient height in centimetres (for SMI).")
    ] = None,
    weight_kg: Annotated[float | None, typer.Option("--weight-kg", help="Patient weight (for BMI).")] = None,
    sex: Annotated[
        str | None, typer.Option("--sex", help="Patient sex for the cutoffs: M or F (male, female).")
    ] = None,
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
    pacs_connect_timeout: PacsConnectTimeoutOption = 10.0,
    pacs_timeout: PacsTimeoutOption = 60.0,
    dicomweb_token_file: DicomwebTokenFileOption = None,
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
    from sarcoscope.composition.assessment import parse_sex
    from sarcoscope.imaging import CTVolume, read_ct
    from sarcoscope.level import parse_range
    from sarcoscope.pacs.dicomweb import fetch_series, store_results
    from sarcoscope.pacs.dicomweb_auth import use_token_file
    from sarcoscope.pacs.dicomweb_query import check_waits, is_dicomweb, shown_url
    from sarcoscope.pipeline import analyze as run_analysis

    def body() -> None:
        if slice_index is not None and slice_range is not None:
            raise SarcoscopeError("Give either --slice or --range, not both.")
        patient_sex = parse_sex(sex)  # refused before any work
        use_token_file(dicomweb_token_file)
        if push and not is_dicomweb(ct_path):
            raise SarcoscopeError(
                "--push stores results back to a DICOMweb server: give a dicomweb+http:// input."
            )
        if push and deidentify:
            raise SarcoscopeError(
                "--push stores results in the source study; it cannot be combined with --deidentify."
            )
        check_waits(pacs_connect_timeout, pacs_timeout)
        rng = parse_range(slice_range) if slice_range is not None else None
        hu_ranges = HURanges.slice_o_matic_vat() if vat_narrow else DEFAULT_HU_RANGES
        policy = deid_policy(
            deidentify, secret_file, keep_dates_shifted, keep_patient_characteristics, accept_burned_in
        )
        check_output_folder(out, replaced=True)
        with (
            scrubbed_errors(policy, ct_path),
            contextlib.ExitStack() as stack,
            console.status("reading CT…") as status,
        ):
            source: Path | CTVolume = Path(ct_path)
            if is_dicomweb(ct_path):  # retrieved into a temporary folder; the report names the address
                status.update("retrieving the series from the DICOMweb server…")
                folder = Path(stack.enter_context(images_temp_dir("dicomweb")))
                fetched = fetch_series(ct_path, folder, series, pacs_timeout, pacs_connect_timeout)
                source = read_ct(fetched, series_uid=series)
                source.source_path = shown_url(ct_path)  # never the password
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
                sex=patient_sex,
                cutoff_set=cutoffs,
                convention=L3_MID if convention is Convention.mid else L3_INFERIOR_ENDPLATE,
                hu_ranges=hu_ranges,
                progress=lambda s: status.update(f"{s}…"),
                deidentification=policy,
                quality=quality,
                label_order=label_order.value,
            )
        if push:
            from sarcoscope.export.writer import DICOM_RESULTS

            kinds = [k for k in DICOM_RESULTS if k in result.outputs]
            paths = [result.outputs[k] for k in kinds]
            stored = store_results(ct_path, paths, pacs_timeout, pacs_connect_timeout)
            if stored.sent:
                console.print(
                    f"Stored {stored.sent} result object(s) in the study on the DICOMweb server.", style="dim"
                )
            if stored.held:  # the same result (the same UIDs), pushed before
                console.print(
                    f"{stored.held} result object(s) were already in the study on the DICOMweb server (this "
                    "result was pushed before): not sent again.",
                    style="dim",
                )
        if as_json:
            sys.stdout.write(result.outputs["report"].read_text())
        else:
            report = json.loads(result.outputs["report"].read_text()) if policy is not None else None
            _print_summary(result, report)

    run(body, deidentified=deidentify)


def _check_phantom_folder(out: Path) -> None:
    """A phantom goes into a new or empty folder: its files would mix with others (two series of one UID)."""
    if out.exists() and not out.is_dir():
        raise SarcoscopeError(f"{out} is a file; a phantom needs a new or empty folder.")
    if out.is_dir() and any(out.iterdir()):
        raise SarcoscopeError(
            f"{out} already holds files; a phantom needs a new or empty folder (its files would mix with "
            "them)."
        )
    for parent in out.parents:  # `demo -o FILE`: the phantom's folder would be below a file
        if parent.exists():
            if not parent.is_dir():
                raise SarcoscopeError(f"{parent} is a file, not a folder.")
            break


#: In the demo's CT folder: every entry the demo wrote there (a file with its SHA-256, a folder), so that a
#: later demo replaces the folder only while it is exactly that.
DEMO_MANIFEST = ".sarcoscope-demo.json"


def _demo_entries(folder: Path) -> dict[str, str]:
    """Every entry below `folder` but the manifest: a file's SHA-256, "folder", or "link" (the demo writes
    none)."""
    found: dict[str, str] = {}
    for root, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            path = Path(root, name)
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                kind = "link"
            elif path.is_dir():
                kind = "folder"
            else:
                with path.open("rb") as fh:
                    kind = hashlib.file_digest(fh, "sha256").hexdigest()
            found[path.relative_to(folder).as_posix()] = kind
    found.pop(DEMO_MANIFEST, None)
    return found


def _clear_earlier_demo(ct: Path) -> None:
    """Empty the CT folder of an earlier demo, which a new one replaces; refuse any other non-empty folder.

    Only what the earlier demo's manifest lists, unchanged, and nothing else there, proves the folder the
    demo's own: a folder that merely looks like it (a phantom's truth.json) may be the user's, and is kept."""
    if not ct.is_dir() or not any(ct.iterdir()):
        return
    try:
        listed = json.loads((ct / DEMO_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listed = None
    if listed != _demo_entries(ct):
        raise SarcoscopeError(
            f"{ct} holds files that no earlier demo wrote there, or that changed since; they are kept. Give "
            "the demo another folder (-o)."
        )
    for name in sorted(listed, key=lambda n: n.count("/"), reverse=True):  # a folder's files before it
        path = ct / name
        if listed[name] == "folder":
            path.rmdir()
        else:
            path.unlink()
    (ct / DEMO_MANIFEST).unlink()


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
        if seed < 0:
            raise SarcoscopeError(f"--seed must be 0 or more, got {seed}.")
        ct = out / "ct"
        _clear_earlier_demo(ct)  # an earlier demo's phantom: replaced, not mixed with the new one
        _check_phantom_folder(ct)
        with console.status("generating a synthetic CT…"):
            info = write_phantom(ct, kind="volume", fmt="dicom", seed=seed)
            atomic_write_text(ct / DEMO_MANIFEST, json.dumps(_demo_entries(ct), indent=1))
        console.print(f"Synthetic CT written to [bold]{esc(str(info['paths']['dicom']))}[/] (seed {seed}).")
        with console.status("analysing…") as status:
            result = run_analysis(
                info["paths"]["dicom"], out_dir=out / "analysis", progress=lambda s: status.update(f"{s}…")
            )
        _print_summary(result)
        truth = info.get("truth", {})
        if "l3_mid_index" in truth:
            console.print(
                f"Phantom truth: mid-L3 slice {truth['l3_mid_index']}; "
                f"analysed slice(s) {fmt_indices(result.selection.indices)}."
            )
        true_areas = truth.get("l3_mid_area_cm2") or {}
        if result.selection.indices == [truth.get("l3_mid_index")] and true_areas:
            # the demo knows the answer: how far each measured area is from it (the quality score cannot
            # know it, and flags engine disagreement whichever engine is wrong)
            parts = []
            for tissue in ("muscle", "sat", "vat"):
                true, measured = true_areas.get(tissue), result.average.tissues[tissue].area_cm2
                if true:
                    error = 100 * (measured / true - 1)
                    parts.append(f"{tissue} {true:.1f} cm², measured {measured:.1f} ({error:+.1f} %)")
            console.print("Phantom truth at that slice: " + "; ".join(parts) + ".")

    run(body)


@app.command()
def cutoffs() -> None:
    """List the shipped sarcopenia and myosteatosis cutoff sets with their sources."""
    from sarcoscope.composition import load_cutoffs

    cutoffs_table = load_cutoffs()
    blocks = []
    for kind, sets in (
        ("sarcopenia", cutoffs_table.sarcopenia),
        ("myosteatosis", cutoffs_table.myosteatosis),
    ):
        for set_id, cs in sets.items():
            default = ", the default" if set_id == cutoffs_table.default_sarcopenia else ""
            rules = "; ".join(f"{r.describe()}: {cs.metric} < {r.cutoff:g}" for r in cs.rules)
            lines = [rules, f"population: {cs.population}", f"source: {cs.citation}"]
            blocks.append((f"{set_id} ({kind}{default})", lines))
    print_blocks("Shipped cutoff sets (flagged when the value is strictly below the cutoff):", blocks)


@app.command()
def series(
    ct_path: Annotated[Path, typer.Argument(help="DICOM folder or .zip.")],
) -> None:
    """List the image series found in a folder or zip (choose one with `analyze --series UID`): one block per
    series, its UID whole on a line of its own to copy into `--series`."""
    from sarcoscope.imaging import list_series

    def body() -> None:
        blocks = []
        for s in list_series(ct_path):
            facts = [
                f"patient {s.patient_id}" if s.patient_id else "no patient ID",
                s.description,
                s.modality,
                s.orientation,
                f"{s.n_slices} slice{'s' if s.n_slices != 1 else ''}",
                f"{s.slice_thickness_mm:g} mm thick" if s.slice_thickness_mm else "",
                s.phase or "",
            ]
            lines = [" · ".join(f for f in facts if f)] + ([f"note: {s.note}"] if s.note else [])
            blocks.append((s.series_uid or "(no SeriesInstanceUID)", lines))
        print_blocks(
            f"Series in {ct_path} (the first is analysed by default when all are one patient's):", blocks
        )

    run(body)


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

    run(body)


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
        if seed < 0:
            raise SarcoscopeError(f"--seed must be 0 or more, got {seed}.")
        if not 64 <= size <= 2048:
            raise SarcoscopeError(f"--size must be 64 to 2048 pixels, got {size}.")
        if not (math.isfinite(thickness) and 0 < thickness <= 20):
            raise SarcoscopeError(f"--thickness must be more than 0 and at most 20 mm, got {thickness:g}.")
        _check_phantom_folder(out)
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
        console.print(f"Phantom {kind.value} (seed {seed}) written to [bold]{esc(str(out))}[/]:")
        for name, path in info["paths"].items():
            console.print(f"  {name}: {esc(str(path))}")

    run(body)
