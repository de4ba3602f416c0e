"""Reading label maps (NIfTI, .npy, PNG, DICOM SEG) and pairing files of two folders by case id.

Case-id rule (explicit, so a mismatch is never silent): the id of a file is its name without the extension
(.nii.gz, .nii, .npy, .png, .dcm), then ONE leading prefix from `strip_prefixes` (default "L3_") and ONE
trailing suffix from `strip_suffixes` (default "_seg", "_labels", "_label", "_mask", "_pred") are removed,
comparing case-sensitively. A sub-folder (a DICOM series, images only) takes the folder name. Two files
with the same id in one folder, or an id present on one side only, are errors.

All label maps become (n, y, x) uint8 arrays with project ids. NIfTI is reoriented to the layout CTVolume
uses for DICOM (x to the patient's left, y to posterior, z to superior), so it lines up with DICOM pixel
arrays and .npy maps saved from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarcoscope.errors import ValidationInputError
from sarcoscope.validation.mappings import LabelMapping

LABEL_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".npy", ".png", ".dcm")
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".dcm", ".zip")
DEFAULT_STRIP_PREFIXES: tuple[str, ...] = ("L3_",)
DEFAULT_STRIP_SUFFIXES: tuple[str, ...] = ("_seg", "_labels", "_label", "_mask", "_pred")


@dataclass
class LabelMap:
    """One case's label map in project ids, with the in-plane spacing its file states (None if it cannot)."""

    case_id: str
    path: Path
    labels: np.ndarray  # (n, y, x) uint8
    pixel_spacing: tuple[float, float] | None  # (y, x) mm


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
    """Case id -> file for every recognised file in `folder` (not recursive; hidden files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValidationInputError(f"Folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if not include_dirs:
                continue
            stem = path.name
        else:
            split = _split_ext(path.name, extensions)
            if split is None:
                continue
            stem = split[0]
        case = case_id_from_name(stem, strip_prefixes, strip_suffixes)
        if case in found:
            raise ValidationInputError(
                f"Two files in {folder} have the case id '{case}': {found[case].name} and {path.name}."
            )
        found[case] = path
    if not found:
        raise ValidationInputError(f"No files with extensions {', '.join(extensions)} in {folder}.")
    return found


def match_cases(pred: dict[str, Path], ref: dict[str, Path], *, allow_unmatched: bool = False) -> list[str]:
    """Case ids present on both sides; ids on one side only are an error unless `allow_unmatched`."""
    only_pred = sorted(set(pred) - set(ref))
    only_ref = sorted(set(ref) - set(pred))
    common = sorted(set(pred) & set(ref))
    if ((only_pred or only_ref) and not allow_unmatched) or not common:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} reference case(s) without prediction: {_show(only_ref)}")
        if only_pred:
            parts.append(f"{len(only_pred)} prediction(s) without reference: {_show(only_pred)}")
        if not common:
            parts.append("no case id is on both sides")
        raise ValidationInputError(
            "Unmatched case ids (" + "; ".join(parts) + "). Ids are file names without extension, "
            "prefix (--strip-prefix) and suffix (--strip-suffix); use --allow-unmatched to score the "
            "common cases only."
        )
    return common


def _show(ids: Sequence[str], n: int = 8) -> str:
    return ", ".join(ids[:n]) + (f" ... (+{len(ids) - n})" if len(ids) > n else "")


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))  # RAS
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several unrelated types for corrupt files
        raise ValidationInputError(f"Cannot read NIfTI label map {path}: {exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise ValidationInputError(f"{path}: expected a 2-D or 3-D label map, got shape {data.shape}.")
    zooms = img.header.get_zooms()
    # RAS (x, y, z) -> LPS-like (z, y, x): flip x (R->L) and y (A->P), then transpose.
    data = np.transpose(data[::-1, ::-1, :], (2, 1, 0))
    return np.ascontiguousarray(data), (float(zooms[1]), float(zooms[0]))


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from sarcoscope.conventions import LABEL_COLORS

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16", "1"):
                return np.asarray(im).astype(np.int64)[np.newaxis]
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    except (OSError, UnidentifiedImageError) as exc:
        raise ValidationInputError(f"Cannot read PNG label map {path}: {exc}") from None
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0][np.newaxis]
    # A colour mask: decode the project's label colours exactly; anything else is not a label map.
    out = np.zeros(rgb.shape[:2], dtype=np.int64)
    known = np.all(rgb == 0, axis=-1)
    for label, colour in LABEL_COLORS.items():
        hit = np.all(rgb == np.array(colour), axis=-1)
        out[hit] = int(label)
        known |= hit
    if not known.all():
        bad = tuple(int(c) for c in rgb[~known][0])
        raise ValidationInputError(
            f"{path}: colour {bad} is not a label colour; save label maps as grey-level PNG (pixel = id)."
        )
    return out[np.newaxis]


def _read_dicom_seg(path: Path, mapping: LabelMapping) -> tuple[np.ndarray, tuple[float, float] | None]:
    import highdicom as hd
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, ValueError...
        raise ValidationInputError(f"Cannot read DICOM file {path}: {exc}") from None
    if getattr(header, "Modality", None) != "SEG":
        raise ValidationInputError(
            f"{path} is a DICOM {getattr(header, 'Modality', 'file without Modality')}, not a DICOM SEG; "
            "label folders hold label maps (images go to --images)."
        )
    try:
        seg = hd.seg.segread(path)
        volume = seg.get_volume(combine_segments=True, relabel=False, dtype=np.int64)
    except Exception as exc:  # highdicom raises ValueError/RuntimeError for irregular geometry
        raise ValidationInputError(f"Cannot read DICOM SEG {path} as a label map: {exc}") from None
    numbers = seg.get_segment_numbers()
    lut = np.zeros(max(numbers, default=0) + 1, dtype=np.uint8)
    unknown = []
    for number in numbers:
        desc = seg.get_segment_description(number)
        prop = getattr(desc.segmented_property_type, "meaning", "")
        target = mapping.segment_id(number, desc.segment_label, prop)
        if target is None:
            unknown.append(f"{number} '{desc.segment_label}' ({prop})")
        else:
            lut[number] = target
    if unknown:
        raise ValidationInputError(
            f"{path}: unknown DICOM SEG segment(s) {'; '.join(unknown)}. Add them to a mapping YAML under "
            "segment_labels or segment_numbers."
        )
    labels = lut[volume.array]
    spacing = volume.spacing  # (slice, row, column) mm
    return labels, (float(spacing[1]), float(spacing[2]))


def read_label_map(path: Path, mapping: LabelMapping, case_id: str | None = None) -> LabelMap:
    """Read one label map and convert it to project ids through `mapping` (unknown ids raise)."""
    path = Path(path)
    split = _split_ext(path.name, LABEL_EXTENSIONS)
    if split is None:
        raise ValidationInputError(f"{path}: not a label map (expected {', '.join(LABEL_EXTENSIONS)}).")
    ext = split[1]
    spacing: tuple[float, float] | None = None
    if ext in (".nii", ".nii.gz"):
        raw, spacing = _read_nifti(path)
    elif ext == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValidationInputError(f"Cannot read {path}: {exc}") from None
    elif ext == ".png":
        raw = _read_png(path)
    else:
        labels, spacing = _read_dicom_seg(path, mapping)
        return LabelMap(case_id or split[0], path, labels.astype(np.uint8), spacing)
    if raw.ndim == 2:
        raw = raw[np.newaxis]
    if raw.ndim != 3:
        raise ValidationInputError(f"{path}: expected a 2-D or 3-D label map, got shape {raw.shape}.")
    return LabelMap(case_id or split[0], path, mapping.apply(raw, str(path)), spacing)


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
    if len(values) not in (1, 2) or min(values, default=0) <= 0:
        raise ValidationInputError(
            f"--pixel-spacing must be one or two positive numbers in mm (Y,X); got '{text}'."
        )
    return (values[0], values[-1])
