"""Validate the project's own engines on the real reference slices and on phantoms (docs/validation/).

`validate_engines` regenerates the whole folder in one call; every engine that cannot run here (e.g. no
trained U-Net model) is listed with the reason instead of being silently left out.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from sarcoscope import __version__
from sarcoscope.conventions import Label
from sarcoscope.errors import SarcoscopeError
from sarcoscope.validation.runner import ValidationReport, run_validation

REAL_SUBDIR = Path("real") / "l3_slices"
#: Name ending of the leave-one-patient-out report folders that scripts/train_default_model.py writes.
CV_SUFFIX = "-cv"
PEER_SUBDIR = Path("real") / "peer_outputs" / "totalsegmentator_tissue_types"
#: TotalSegmentator tissue_types mask -> (tissue, project id) it is compared with; torso_fat ~ VAT + IMAT.
PEER_MASKS = {
    "skeletal_muscle": ("muscle", Label.MUSCLE),
    "subcutaneous_fat": ("sat", Label.SAT),
    "torso_fat": ("vat", Label.VAT),
}
REAL_VOLUME = Path("real") / "volumes" / "ts_example"
L3_VERTEBRA_ID = 29  # TotalSegmentator's vertebrae_L3
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _save_phantom_nifti(hu: np.ndarray, spacing: tuple[float, float], path: Path) -> None:
    """(y, x) HU in the project's layout -> a one-slice RAS NIfTI that read_ct maps back to (1, y, x)."""
    ras = np.ascontiguousarray(hu[np.newaxis].transpose(2, 1, 0)[::-1, ::-1, :]).astype(np.int16)
    nib.save(nib.Nifti1Image(ras, np.diag([spacing[1], spacing[0], 5.0, 1.0])), str(path))


def write_phantom_cohort(folder: Path, n: int, *, seed: int = 0, size: int = 512) -> None:
    """images/, labels/, sites.csv (contrast phase as the "site") and patients.csv (height) for n phantoms."""
    from sarcoscope.phantom import make_slice

    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    sites, heights = [], []
    for i in range(n):
        case = f"phantom{i:03d}"
        ph = make_slice(seed + i, size=size)
        _save_phantom_nifti(ph.hu, ph.pixel_spacing, folder / "images" / f"{case}.nii.gz")
        np.save(folder / "labels" / f"{case}.npy", ph.labels)
        contrast = str(ph.truth["exam"]["contrast"])
        sites.append((case, {"none": "non-contrast", "portal": "portal-venous"}.get(contrast, contrast)))
        heights.append((case, ph.habitus.height_m if ph.habitus else ""))
    with (folder / "sites.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("case_id", "site"), *sites])
    with (folder / "patients.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("case_id", "height_m"), *heights])


def real_l3_centroid(folder: Path) -> float:
    """Mid-L3 of the TotalSegmentator example (slice index): the z-centroid of its L3 vertebra label."""
    img = nib.as_closest_canonical(nib.load(str(folder / "vertebrae_totalsegmentator.nii.gz")))
    z = np.nonzero(np.asarray(img.dataobj) == L3_VERTEBRA_ID)[2]
    return float(z.mean())


def validate_localizer(
    out_dir: Path, *, shared_data: Path | None, n_volumes: int, seed: int = 0, size: int = 512
) -> ValidationReport:
    """The automatic L3 localizer against the real example volume's L3 label and phantom volumes' truth.

    A case where the localizer raises LevelError counts as "not found" (a miss), not as a crash.
    """
    from sarcoscope.errors import LevelError
    from sarcoscope.imaging import read_ct
    from sarcoscope.level import locate_l3
    from sarcoscope.phantom.volume import make_volume

    cases = []  # (case id, volume, reference mid-L3 slice)
    real = Path(shared_data) / REAL_VOLUME if shared_data is not None else None
    if real is not None and (real / "example_ct.nii.gz").is_file():
        cases.append(("ts_example", read_ct(real / "example_ct.nii.gz"), round(real_l3_centroid(real))))
    for i in range(n_volumes):
        ph = make_volume(seed + i, shape_xy=size)
        cases.append((f"phantomvol{i:03d}", ph.to_ctvolume(), int(ph.truth["l3_mid_index"])))
    ref_rows, pred_rows = [("case_id", "l3_slice", "slice_spacing_mm")], [("case_id", "l3_slice")]
    for case, volume, ref in cases:
        try:
            found = locate_l3(volume).l3_mid
        except LevelError:
            found = None
        ref_rows.append((case, str(ref), f"{volume.spacing[0]:.4f}"))
        pred_rows.append((case, "" if found is None else str(found)))
    with tempfile.TemporaryDirectory() as tmp:
        ref_csv, pred_csv = Path(tmp) / "ref_l3.csv", Path(tmp) / "pred_l3.csv"
        with ref_csv.open("w", newline="") as fh:
            csv.writer(fh).writerows(ref_rows)
        with pred_csv.open("w", newline="") as fh:
            csv.writer(fh).writerows(pred_rows)
        return run_validation(
            None,
            None,
            out_dir,
            ref_l3_csv=ref_csv,
            pred_l3_csv=pred_csv,
            title=f"Automatic L3 localization on {len(cases)} volumes",
        )


def peer_agreement(shared_data: str | Path, engines: Sequence[str]) -> dict[str, dict[str, float] | str]:
    """Dice of each engine against TotalSegmentator's tissue_types masks on its example CT (a peer model).

    The 30 slices (3 mm pixels, T11-L2) are scored as one volume: muscle vs skeletal_muscle, SAT vs
    subcutaneous_fat, and VAT+IMAT vs torso_fat (all fat inside the torso wall, close to VAT plus IMAT).
    Returns {engine: {"muscle": d, "sat": d, "vat": d}, or the reason it could not run}.
    """
    from sarcoscope.imaging.labelmaps import load_mapping
    from sarcoscope.imaging.nifti import read_nifti, read_nifti_array
    from sarcoscope.segmentation import get_engine
    from sarcoscope.validation.metrics import dice

    folder = Path(shared_data) / PEER_SUBDIR
    ct = read_nifti(folder / "example_ct_sm.nii.gz")
    ref = np.zeros(ct.hu.shape, np.uint8)
    for name, (_, label) in PEER_MASKS.items():
        ref[read_nifti_array(folder / f"{name}.nii.gz")[0] > 0] = label  # masks: values are not HU
    merge = load_mapping("sarcoscope-imat-as-vat")
    out: dict[str, dict[str, float] | str] = {}
    for engine in engines:
        try:
            pred = merge.apply(get_engine(engine).segment(ct.hu, ct.spacing[1:]), engine)
        except SarcoscopeError as exc:
            out[engine] = str(exc)
            continue
        out[engine] = {tissue: dice(pred, ref, label) for tissue, label in PEER_MASKS.values()}
    return out


SUMMARY_COLUMNS = ("muscle", "sat", "vat", "imat", "msv")


def _dice_cell(mean: float, worst: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ({worst:.3f})"


def _summary_line(name: str, rep: ValidationReport) -> list[str]:
    cells = [name, str(rep.n_cases)]
    for col in SUMMARY_COLUMNS:
        s = rep.dice_summary.get(col)
        cells.append(_dice_cell(s.mean, s.worst) if s else "–")
    cells.append(", ".join(rep.flagged_sites) or "none")
    return cells


def _saved_summary_line(folder: Path) -> list[str] | None:
    """The index row of a report written earlier (its dice_summary.csv), e.g. a leave-one-out report."""
    path = folder / "dice_summary.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = {r["column"]: r for r in csv.DictReader(fh) if r["group"] == "all"}
    n = next(iter(rows.values()))["n"] if rows else "0"
    cells = [f"[{folder.name}]({folder.name}/report.md)", n]
    for col in SUMMARY_COLUMNS:
        r = rows.get(col)
        cells.append(_dice_cell(float(r["mean"]), float(r["worst"])) if r else "–")
    return [*cells, "–"]


def validate_engines(
    out_dir: str | Path,
    *,
    shared_data: str | Path | None = None,
    engines: Sequence[str] = ("threshold", "unet"),
    n_phantoms: int = 24,
    phantom_size: int = 512,
    n_l3_volumes: int = 8,
    seed: int = 0,
) -> dict[str, ValidationReport | str]:
    """Run every engine on the real L3 slices (when `shared_data` has them) and on `n_phantoms` phantoms.

    Writes one report folder per engine and data set, `l3-localizer/` (the automatic L3 localizer on the real
    example volume and `n_l3_volumes` phantom volumes) and `README.md` (an index with the headline numbers).
    Real CT must not enter the repository, so real-data reports have no image gallery (numbers and plots
    only). Returns {report name: ValidationReport, or the reason it could not run}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, ValidationReport | str] = {}
    real = Path(shared_data) / REAL_SUBDIR if shared_data is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        phantoms = Path(tmp) / "phantoms"
        if n_phantoms > 0:
            write_phantom_cohort(phantoms, n_phantoms, seed=seed, size=phantom_size)
        for engine in engines:
            if real is not None and (real / "labels").is_dir():
                name = f"real-{engine}"
                try:
                    results[name] = run_validation(
                        None,
                        real / "labels",
                        out_dir / name,
                        engine=engine,
                        images_dir=real / "images",
                        gallery_size=0,
                        keep_predictions=False,
                        title=f"Engine '{engine}' on the real L3 reference slices"
                        + (" (seen in training: a fit, not a test)" if engine == "unet" else ""),
                    )
                except SarcoscopeError as exc:
                    results[name] = str(exc)
            if n_phantoms > 0:
                name = f"phantom-{engine}"
                try:
                    results[name] = run_validation(
                        None,
                        phantoms / "labels",
                        out_dir / name,
                        engine=engine,
                        images_dir=phantoms / "images",
                        sites_csv=phantoms / "sites.csv",
                        patients_csv=phantoms / "patients.csv",
                        gallery_size=4,
                        keep_predictions=False,
                        title=f"Engine '{engine}' on {n_phantoms} phantom L3 slices (sites = contrast phase)",
                    )
                except SarcoscopeError as exc:
                    results[name] = str(exc)
    if n_l3_volumes > 0 or shared_data is not None:
        try:
            results["l3-localizer"] = validate_localizer(
                out_dir / "l3-localizer",
                shared_data=Path(shared_data) if shared_data else None,
                n_volumes=n_l3_volumes,
                seed=seed,
            )
        except SarcoscopeError as exc:
            results["l3-localizer"] = str(exc)
    peer = None
    if shared_data is not None and (Path(shared_data) / PEER_SUBDIR).is_dir():
        peer = peer_agreement(shared_data, engines)
    _write_index(out_dir, results, n_phantoms, seed, peer)
    return results


def _write_index(
    out_dir: Path,
    results: dict[str, ValidationReport | str],
    n_phantoms: int,
    seed: int,
    peer: dict[str, dict[str, float] | str] | None = None,
) -> None:
    lines = [
        "# Validation of the sarcoscope engines",
        "",
        f"Generated by `sarcoscope.validation.benchmark.validate_engines` (sarcoscope {__version__}); "
        "regenerate with the command in the project README. Real data: the real L3 slices with "
        "reference labels of `../shared/data` (not part of the repository; their reports show numbers and "
        f"plots only). Phantoms: {n_phantoms} synthetic L3 slices (seed {seed}) with exact labels, grouped "
        'by contrast phase as "sites".',
        "",
        "Dice mean (worst case) per tissue:",
        "",
        "| report | n | muscle | SAT | VAT | IMAT | M+S+V | flagged sites |",
        "|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    l3 = results.get("l3-localizer")
    for name, rep in results.items():
        if name == "l3-localizer" and not isinstance(rep, str):
            continue
        if isinstance(rep, str):
            # Keep the committed index machine-independent: no absolute paths of this checkout.
            reason = rep.replace(str(PACKAGE_DIR), "sarcoscope")
            skipped.append(f"- `{name}`: not run — {reason}")
            continue
        cells = _summary_line(f"[{name}]({name}/report.md)", rep)
        lines.append("| " + " | ".join(cells) + " |")
    for folder in sorted(out_dir.glob(f"real-*{CV_SUFFIX}")):
        cells = _saved_summary_line(folder)
        if cells:
            lines.append("| " + " | ".join(cells) + " |")
    from sarcoscope.segmentation.model_files import load_model_card
    from sarcoscope.segmentation.unet import resolve_model_dir

    seen = sorted(load_model_card(resolve_model_dir(None))["training_data"]["train"].get("data_cases", []))
    lines += [
        "",
        f"`*{CV_SUFFIX}` reports: leave-one-patient-out predictions of `scripts/train_default_model.py` "
        "(each real slice segmented by a U-Net fine-tuned without it); they are the U-Net's test on real "
        f"CT. The shipped U-Net has seen {len(seen)} of the real slices ({', '.join(seen)}) in training: its "
        "`real-unet` row is a fit there, not a test. Its test, on slices held out from its training in "
        "folds, is in its [model card](../../src/sarcoscope/segmentation/models/MODEL_CARD.md) (and "
        "[continuation.md](continuation.md) for the models it was measured against).",
    ]
    if l3 is not None and not isinstance(l3, str) and l3.l3_summary:
        s = l3.l3_summary
        lines += [
            "",
            f"[Automatic L3 localization](l3-localizer/report.md): {int(s['n'])} volumes (the real example "
            f"volume, reference = its L3 label's centroid, and phantom volumes), not found "
            f"{int(s['not_found'])}, median |error| {s.get('median_abs_error_mm', math.nan):.1f} mm, within "
            f"10 mm {100 * s.get('within_10mm', math.nan):.0f} % of all volumes.",
        ]
    if peer:
        lines += [
            "",
            "Agreement with a peer, TotalSegmentator tissue_types on its 30-slice example CT (3 mm pixels, "
            "T11-L2, not L3; a model's output, not ground truth), Dice over the volume:",
            "",
            "| engine | muscle vs skeletal_muscle | SAT vs subcutaneous_fat | VAT+IMAT vs torso_fat |",
            "|---|---|---|---|",
        ]
        for engine, scores in peer.items():
            if isinstance(scores, str):
                skipped.append(f"- peer agreement of `{engine}`: not run — {scores}")
                continue
            cells = " | ".join(f"{scores[tissue]:.3f}" for tissue, _ in PEER_MASKS.values())
            lines.append(f"| {engine} | {cells} |")
    if skipped:
        lines += ["", "Not available on this machine:", "", *skipped]
    text = "\n".join(lines) + "\n"
    tmp = out_dir / f".README.md.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / "README.md")
