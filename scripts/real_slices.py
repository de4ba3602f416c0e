"""What the scripts that degrade the real L3 slices share (scripts/coarse_pixels.py,
scripts/noise_robustness.py): their command line, the slices with their reference labels, and the
muscle-area error summary of their tables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarcoscope.training.data import read_image

REPO = Path(__file__).resolve().parents[1]


def parse_args(
    doc: str | None, more: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, Path, list[str]]:
    """`--shared`, `--out`, `--cases` and the script's own options (`more` adds them); the real L3 slice
    folder and its cases (all, or the ones `--cases` names)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="only these slices (default: all)")
    if more is not None:
        more(parser)
    args = parser.parse_args()
    folder = args.shared / "real" / "l3_slices"
    cases = sorted(p.stem for p in (folder / "labels").glob("*.npy"))
    unknown = sorted(set(args.cases or ()) - set(cases))
    if unknown:
        parser.error(f"no reference slice {', '.join(unknown)} in {folder} (it has {', '.join(cases)})")
    return args, folder, [c for c in cases if args.cases is None or c in args.cases]


def run_from_the_repository(shared: Path, work: Path) -> tuple[Path, Path]:
    """The real L3 slice folder under `shared` and the folder `work`, relative to the repository, which
    becomes the working folder: the model cards a training script writes record no folder of this machine."""
    real = Path(os.path.relpath(shared.resolve() / "real" / "l3_slices", REPO))
    work = Path(os.path.relpath(work.resolve(), REPO))
    os.chdir(REPO)
    return real, work


def read_case(folder: Path, case: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """One real slice (y, x) in HU, its pixel spacing and its reference labels."""
    hu, spacing, _ = read_image(folder / "images" / f"L3_{case}.dcm")
    return hu[0], spacing, np.load(folder / "labels" / f"{case}.npy")


def error_summary(values: list[float]) -> str:
    """Area errors (%) as "mean (mean absolute, worst)"."""
    a = np.array(values)
    return f"{a.mean():+.1f} % ({np.abs(a).mean():.1f} %, {a[np.argmax(np.abs(a))]:+.1f} %)"
