"""Pairing the files of two folders by case id (label maps are read by `sarcoscope.imaging.labelmaps`).

Case-id rule (explicit, so a mismatch is never silent): the id of a file is its name without the extension
(.nii.gz, .nii, .npy, .png, .dcm, .tag), then ONE leading prefix from `strip_prefixes` (default "L3_") and
ONE trailing suffix from `strip_suffixes` (default "_seg", "_labels", "_label", "_mask", "_pred") are
removed, comparing case-sensitively. A sub-folder (a DICOM series among images; a folder of tissue PNGs
among label maps) takes the folder name. Two files with the same id in one folder, an id present on one
side only, or a name that is not UTF-8 (case ids are written into the report's UTF-8 CSV files), are errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sarcoscope.errors import ValidationInputError
from sarcoscope.imaging.labelmaps import LABEL_EXTENSIONS, is_tissue_png_folder

IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".dcm", ".zip")
DEFAULT_STRIP_PREFIXES: tuple[str, ...] = ("L3_",)
DEFAULT_STRIP_SUFFIXES: tuple[str, ...] = ("_seg", "_labels", "_label", "_mask", "_pred")


def _split_ext(name: str, extensions: Sequence[str]) -> tuple[str, str] | None:
    low = name.lower()
    for ext in extensions:
        if low.endswith(ext):
            return name[: -len(ext)], ext
    return None


def case_id_from_name(
    stem: str,
    strip_prefixes: Sequence[str] = DEFAULT_STRIP_PREFIXES,
    strip_suffixes: Sequence[str] = DEFAULT_STRIP_SUFFIXES,
) -> str:
    """Apply the case-id rule (module docstring) to a file stem."""
    for prefix in strip_prefixes:
        if prefix and stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix) :]
            break
    for suffix in strip_suffixes:
        if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem


def index_folder(
    folder: Path,
    *,
    extensions: Sequence[str] = LABEL_EXTENSIONS,
    include_dirs: bool = False,
    strip_prefixes: Sequence[str] = DEFAULT_STRIP_PREFIXES,
    strip_suffixes: Sequence[str] = DEFAULT_STRIP_SUFFIXES,
) -> dict[str, Path]:
    """Case id -> file for every recognised file in `folder` (not recursive; hidden files ignored).

    Sub-folders count with `include_dirs` (DICOM series among images) or when they hold PNG files (one
    binary mask per tissue among label maps).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValidationInputError(f"Folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if not (include_dirs or is_tissue_png_folder(path)):
                continue
            stem = path.name
        else:
            split = _split_ext(path.name, extensions)
            if split is None:
                continue
            stem = split[0]
        _check_utf8_name(folder, path)
        case = case_id_from_name(stem, strip_prefixes, strip_suffixes)
        if case in found:
            raise ValidationInputError(
                f"Two files in {folder} have the case id '{case}': {found[case].name} and {path.name}."
            )
        found[case] = path
    if not found:
        raise ValidationInputError(f"No files with extensions {', '.join(extensions)} in {folder}.")
    return found


def shown(path: str | Path) -> str:
    """A path as text that can always be printed or written (bytes that are not UTF-8 as \\xNN escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_utf8_name(folder: Path, path: Path) -> None:
    """Refuse a file name that is not UTF-8 (Python keeps its bytes as surrogates): its case id could not
    be written into the report, which would fail only after every case was scored."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationInputError(
            f"{shown(folder)} holds a file whose name is not UTF-8 text: {shown(path.name)}. Case ids come "
            "from file names and go into the report; rename the files to UTF-8 names (convmv can do it)."
        ) from None


def match_cases(pred: dict[str, Path], ref: dict[str, Path], *, allow_unmatched: bool = False) -> list[str]:
    """Case ids present on both sides; ids on one side only are an error unless `allow_unmatched`."""
    only_pred = sorted(set(pred) - set(ref))
    only_ref = sorted(set(ref) - set(pred))
    common = sorted(set(pred) & set(ref))
    if ((only_pred or only_ref) and not allow_unmatched) or not common:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} reference case(s) without prediction: {some_ids(only_ref)}")
        if only_pred:
            parts.append(f"{len(only_pred)} prediction(s) without reference: {some_ids(only_pred)}")
        if not common:
            parts.append("no case id is on both sides")
        raise ValidationInputError(
            "Unmatched case ids (" + "; ".join(parts) + "). Ids are file names without extension, "
            "prefix (--strip-prefix) and suffix (--strip-suffix); use --allow-unmatched to score the "
            "common cases only."
        )
    return common


def some_ids(ids: Sequence[str], n: int = 8) -> str:
    """The first `n` ids and how many more, for messages about many cases."""
    return ", ".join(ids[:n]) + (f" ... (+{len(ids) - n})" if len(ids) > n else "")


def resolve_spacing(
    case_id: str,
    candidates: Sequence[tuple[str, tuple[float, float] | None]],
    fallback: tuple[float, float] | None,
    rtol: float = 1e-3,
) -> tuple[float, float] | None:
    """The one in-plane spacing of a case: all stated spacings must agree; else `fallback` (may be None)."""
    stated = [(src, sp) for src, sp in candidates if sp is not None]
    for src, sp in stated[1:]:
        if not np.allclose(sp, stated[0][1], rtol=rtol, atol=1e-6):
            raise ValidationInputError(
                f"Case {case_id}: pixel spacing mismatch, {stated[0][0]} has {stated[0][1]} mm but {src} has "
                f"{sp} mm (the maps are on different grids; resample one of them first)."
            )
    return stated[0][1] if stated else fallback


def parse_pixel_spacing(text: str) -> tuple[float, float]:
    """'0.7' or '0.7,0.75' (y, x mm) as typed on the command line."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValidationInputError(
            f"--pixel-spacing must be one or two positive numbers in mm (Y,X); got '{text}'."
        )
    return (values[0], values[-1])
