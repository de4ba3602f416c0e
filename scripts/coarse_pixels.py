"""How muscle measurement degrades with coarser pixels, per engine, and whether the threshold engine is still
a fair second opinion for the quality score there.

Diagnostic CT at L3 has 0.6-1.0 mm pixels; research copies are often resampled (TotalSegmentator's example
CT has 3 mm). Each real L3 slice with reference labels is resampled (linear interpolation of the HU, as
resampling tools do; and, for three sizes, each coarse pixel the mean of the fine pixels it covers, as a
reconstruction at coarser pixels sees the body) to square pixels of each size and segmented by both engines;
the muscle area and the U-Net's muscle mean HU are compared with the reference's at the slice's own pixels,
and the two engines with each other (the quality score's engine signals).

    python scripts/coarse_pixels.py [--shared ../shared/data] [--out docs/validation/coarse-pixels.md]

The numbers back two constants of segmentation.quality: the pixel size above which the threshold engine is
no longer used as the U-Net's second opinion, and the one above which analyses warn about coarse pixels.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from real_slices import error_summary, parse_args, read_case
from scipy import ndimage as ndi

from sarcoscope.conventions import Label
from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.quality import engine_signals

#: None: the slice's own pixels; a number: square pixels of that size; (row, column): non-square pixels
SIZES_MM: tuple[float | tuple[float, float] | None, ...] = (
    None,
    1.5,
    2.0,
    2.5,
    3.0,
    (0.7, 1.0),
    (1.0, 0.7),
    (0.7, 1.4),
)
#: Square pixel sizes (mm) also made by averaging (`averaged`)
AVERAGED_MM: tuple[float, ...] = (1.5, 2.0, 3.0)


def resampled(hu: np.ndarray, spacing: tuple[float, float], size_mm: float | tuple[float, float] | None):
    """The slice at pixels of `size_mm` (square for a number, (row, column) for a pair; its own for None)."""
    if size_mm is None:
        return hu, spacing
    rows, cols = size_mm if isinstance(size_mm, tuple) else (size_mm, size_mm)
    factors = (spacing[0] / rows, spacing[1] / cols)
    out = ndi.zoom(hu, factors, order=1)
    return out, (spacing[0] * hu.shape[0] / out.shape[0], spacing[1] * hu.shape[1] / out.shape[1])


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: the share of each output pixel that each input pixel covers (rows sum to 1)."""
    edges_in, edges_out = np.arange(n_in + 1) / n_in, np.arange(n_out + 1) / n_out
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) * n_out


def averaged(hu: np.ndarray, spacing: tuple[float, float], size_mm: float) -> tuple[np.ndarray, tuple]:
    """The slice at square pixels of `size_mm`, each the area-weighted mean of the pixels it covers."""
    shape = (round(hu.shape[0] * spacing[0] / size_mm), round(hu.shape[1] * spacing[1] / size_mm))
    out = (
        _area_weights(hu.shape[0], shape[0]) @ hu.astype(np.float64) @ _area_weights(hu.shape[1], shape[1]).T
    )
    return out.astype(np.float32), (spacing[0] * hu.shape[0] / shape[0], spacing[1] * hu.shape[1] / shape[1])


def main() -> None:
    args, folder, cases = parse_args(__doc__)
    unet, threshold = get_engine("unet"), get_engine("threshold")
    lines = [
        "| pixels | U-Net muscle-area error, mean (mean abs, worst) | threshold engine "
        "| U-Net muscle mean HU minus the reference's, mean (lowest) "
        "| engine Dice, mean (lowest) | engine area difference, mean (largest) |",
        "|---|---|---|---|---|---|",
    ]
    for size, average in [(s, False) for s in SIZES_MM] + [(s, True) for s in AVERAGED_MM]:
        errors: dict[str, list[float]] = {"unet": [], "threshold": []}
        agreement: list[dict[str, float]] = []
        hu_bias: list[float] = []  # the U-Net's muscle mean HU here minus the reference's at own pixels
        for case in cases:
            hu, spacing, ref = read_case(folder, case)
            ref_mm2 = float((ref == Label.MUSCLE).sum()) * spacing[0] * spacing[1]
            ref_mean_hu = float(hu[ref == Label.MUSCLE].mean())
            img, sp = averaged(hu, spacing, size) if average else resampled(hu, spacing, size)
            labels = {}
            for name, engine in (("unet", unet), ("threshold", threshold)):
                labels[name] = engine.segment(img[None], sp)[0]
                mm2 = float((labels[name] == Label.MUSCLE).sum()) * sp[0] * sp[1]
                errors[name].append(100.0 * (mm2 - ref_mm2) / ref_mm2)
            agreement.append(engine_signals(labels["unet"], labels["threshold"]))
            hu_bias.append(float(img[labels["unet"] == Label.MUSCLE].mean()) - ref_mean_hu)

        dices = np.array([a["engine_muscle_dice"] for a in agreement])
        diffs = np.array([a["engine_muscle_area_diff"] for a in agreement])
        if size is None:
            label = "own (0.63–0.82 mm)"
        elif isinstance(size, tuple):
            label = f"{size[0]:.1f} × {size[1]:.1f} mm (rows × columns)"
        else:
            label = f"{size:.1f} mm" + (", averaged" if average else "")
        lines.append(
            f"| {label} | {error_summary(errors['unet'])} | {error_summary(errors['threshold'])} "
            f"| {np.mean(hu_bias):+.1f} HU ({min(hu_bias):+.1f}) "
            f"| {dices.mean():.3f} ({dices.min():.3f}) | {diffs.mean():.3f} ({diffs.max():.3f}) |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    if args.out:
        head = (
            "# Muscle measurement at coarser pixels\n\n"
            f"Written by `python scripts/coarse_pixels.py --out {args.out}` on {dt.date.today()} with "
            f"{unet.model_id} and {threshold.model_id}: the nine real L3 slices of "
            "../shared/data/real/l3_slices (the shipped model saw five of them), each resampled to square "
            "pixels of each size (and to three non-square ones) by linear interpolation, and for three sizes "
            'by averaging the pixels each coarse pixel covers ("averaged": as a reconstruction at coarser '
            "pixels sees the body); the errors are against the reference muscle area and mean HU at the "
            "slice's own pixels.\n\n"
        )
        atomic_write_text(args.out, head + table + "\n")


if __name__ == "__main__":
    main()
