"""PNG masks: one PNG of label ids (grey or indexed; or the project's label colours), or a folder holding
one binary PNG per tissue, named by the tissue (`muscle.png`, `sat.png`, `Skeletal muscle.png`, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarcoscope.conventions import LABEL_COLORS
from sarcoscope.errors import LabelMapError
from sarcoscope.imaging.labelmaps.mappings import LabelMapping


def is_tissue_png_folder(path: Path) -> bool:
    """True for a folder holding PNG files: a label map of one binary PNG per tissue."""
    return path.is_dir() and any(p.suffix.lower() == ".png" for p in path.iterdir())


def _open(path: Path) -> tuple[np.ndarray, bool]:
    """The PNG's pixels and whether they are single-channel (grey, indexed) values rather than RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L", "I", "I;16", "1"):
                return np.asarray(im).astype(np.int64), True
            return np.asarray(im.convert("RGB")).astype(np.int64), False
    except (OSError, UnidentifiedImageError) as exc:
        raise LabelMapError(f"Cannot read PNG label map {path}: {exc}") from None


def read_png(path: Path) -> np.ndarray:
    """Label ids (1, y, x) of one PNG: its values, or the project's label colours decoded exactly."""
    pixels, single = _open(path)
    if single:
        return pixels[np.newaxis]
    rgb = pixels
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
        raise LabelMapError(
            f"{path}: colour {bad} is not a label colour; save label maps as grey-level PNG (pixel = id)."
        )
    return out[np.newaxis]


def read_tissue_pngs(folder: Path, mapping: LabelMapping) -> np.ndarray:
    """Project ids (1, y, x) from a folder of binary tissue masks; overlaps and unknown names are refused."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise LabelMapError(f"{folder} holds no PNG masks (one binary PNG per tissue, named by the tissue).")
    out: np.ndarray | None = None
    owner: dict[int, str] = {}
    for path in files:
        label = mapping.tissue_id(path.stem)
        if label is None or label == 0:
            raise LabelMapError(
                f"{path}: '{path.stem}' is not a tissue name (muscle, sat, vat, imat, or a name the mapping "
                "lists under segment_labels)."
            )
        if label in owner:
            raise LabelMapError(f"{folder}: {owner[label]} and {path.name} are both {path.stem}.")
        pixels, single = _open(path)
        mask = pixels if single else pixels.max(axis=-1)
        values = np.unique(mask)
        if values.size > 2 or values[0] != 0:
            raise LabelMapError(
                f"{path}: a tissue mask has two values (0 and one other); found {values[:5].tolist()}."
            )
        inside = mask > 0
        if out is None:
            out = np.zeros(mask.shape, dtype=np.int64)
        elif mask.shape != out.shape:
            raise LabelMapError(f"{path}: size {mask.shape} differs from the other masks' {out.shape}.")
        overlap = inside & (out > 0)
        if overlap.any():
            other = owner[int(out[overlap][0])]
            n = int(overlap.sum())
            raise LabelMapError(f"{path.name} and {other} overlap in {n} pixel(s) of {folder}.")
        out[inside] = label
        owner[label] = path.name
    assert out is not None
    return out[np.newaxis]
