"""Write a phantom to disk as a user would receive a CT: DICOM series and/or NIfTI, plus labels and truth."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from sarcoscope.imaging.dicom_writer import write_dicom_series
from sarcoscope.imaging.volume import CTMetadata
from sarcoscope.phantom.slice import make_slice
from sarcoscope.phantom.volume import make_volume

KINDS = ("volume", "slice")
FORMATS = ("dicom", "nifti", "both")
OUT_OF_FIELD_HU = -3024


def ras_affine(spacing_zyx: tuple[float, float, float], origin_lps: tuple[float, float, float]) -> np.ndarray:
    """NIfTI affine (RAS) of data stored (x, y, z) with x -> patient left, y -> posterior, z -> superior."""
    dz, dy, dx = spacing_zyx
    a = np.diag([-dx, -dy, dz, 1.0])
    a[:3, 3] = (-origin_lps[0], -origin_lps[1], origin_lps[2])
    return a


def _atomic_nifti(data_zyx: np.ndarray, affine: np.ndarray, path: Path, *, hu: bool = False) -> None:
    img = nib.Nifti1Image(np.ascontiguousarray(data_zyx.transpose(2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    if hu:
        img.header["descrip"] = b"CT HU (sarcoscope phantom)"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nii.gz", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_phantom(
    out: str | Path,
    *,
    kind: str = "volume",
    fmt: str = "dicom",
    seed: int = 0,
    transfer_syntax: str = "explicit little endian",
    out_of_field: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Generate a phantom and write it under `out`; return {"paths": ..., "truth": ..., ...}.

    Layout: `dicom/` (one CT file per slice, patient sex/height/weight/age from the habitus), `ct.nii.gz`
    (RAS affine), `labels.nii.gz` (tissue labels), `vertebra_labels.nii.gz` (volumes only) and
    `truth.json`. `options` go to `make_volume` / `make_slice` (e.g. coverage, variant, shape_xy, size).
    `out_of_field=True` sets the corners outside the reconstruction circle to -3024 HU and marks them with
    PixelPaddingValue, as many GE and Siemens scanners do.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if kind == "volume":
        vol = make_volume(seed, **options)
        hu, labels, spacing, origin = vol.hu, vol.labels, vol.spacing, vol.origin
        meta = vol.metadata()
        truth = vol.truth
        extra = {"vertebra_labels": vol.vertebra_labels}
    else:
        sl = make_slice(seed, **options)
        hu = np.rint(sl.hu).astype(np.int16)[None]
        labels = sl.labels[None]
        spacing = (3.0, *sl.pixel_spacing)
        n = sl.hu.shape[0]
        origin = (-(n - 1) / 2 * spacing[2], -(n - 1) / 2 * spacing[1], float(sl.truth["z_mm"]))
        h = sl.habitus
        ex = sl.truth["exam"]
        meta = CTMetadata(
            patient_id=f"PHANTOM-{seed}",
            patient_sex=h.sex if h else None,
            patient_age_years=h.age_years if h else None,
            patient_height_m=h.height_m if h else None,
            patient_weight_kg=h.weight_kg if h else None,
            contrast_agent=None if ex["contrast"] == "none" else "Iodinated contrast (synthetic)",
            kvp=ex["kvp"],
            manufacturer="sarcoscope phantom",
            series_description="Synthetic L3 slice",
            slice_thickness_mm=3.0,
        )
        truth = sl.truth
        extra = {}
    affine = ras_affine(spacing, origin)
    padding = None
    if out_of_field:
        ny, nx = hu.shape[1:]
        yy, xx = np.ogrid[:ny, :nx]
        outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2
        hu = hu.copy()
        hu[:, outside] = OUT_OF_FIELD_HU
        padding = OUT_OF_FIELD_HU + 1024  # stored value with the writer's intercept of -1024
    if fmt in ("dicom", "both"):
        folder = root / "dicom"
        write_dicom_series(
            hu, spacing, folder, origin=origin, metadata=meta, seed=seed, transfer_syntax=transfer_syntax,
            padding_value=padding,
        )  # fmt: skip
        paths["dicom"] = str(folder)
    if fmt in ("nifti", "both"):
        _atomic_nifti(hu.astype(np.int16), affine, root / "ct.nii.gz", hu=True)
        paths["nifti"] = str(root / "ct.nii.gz")
    _atomic_nifti(labels.astype(np.uint8), affine, root / "labels.nii.gz")
    paths["labels"] = str(root / "labels.nii.gz")
    for name, arr in extra.items():
        _atomic_nifti(arr.astype(np.uint8), affine, root / f"{name}.nii.gz")
        paths[name] = str(root / f"{name}.nii.gz")
    record = {"kind": kind, "seed": seed, "spacing_zyx": list(spacing), "shape_zyx": list(hu.shape), **truth}
    _atomic_text(json.dumps(record, indent=2, default=_jsonable), root / "truth.json")
    paths["truth"] = str(root / "truth.json")
    return {"kind": kind, "seed": seed, "paths": paths, "truth": truth, "metadata": meta.as_dict()}
