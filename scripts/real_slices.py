"""What the scripts that degrade the real L3 slices share (scripts/coarse_pixels.py,
scripts/noise_robustness.py, scripts/field_of_view.py, scripts/unenhanced_robustness.py): their command line,
the slices with their reference labels, the engines they compare and the muscle-area error summary of their
tables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.base import SegmentationEngine
from sarcoscope.segmentation.unet import UNetEngine
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


def add_folds_option(parser: argparse.ArgumentParser) -> None:
    """`--folds DIR [DIR ...]`: each case segmented by its leave-one-out fold model, not the shipped one."""
    parser.add_argument("--folds", type=Path, nargs="+", help="leave-one-out fold models: DIR/cv-<CASE>")


class CaseEngines:
    """The engines a script compares on each case: the shipped U-Net (which saw all nine slices) or, with
    `folds`, each folder's fold model of that case (a model that never saw it; "unet (<folder>)" when there
    are several, by the path given where names repeat), then the threshold engine."""

    def __init__(self, folds: list[Path] | None):
        self.folds = folds
        self.threshold = get_engine("threshold")
        self.shipped = None if folds else get_engine("unet")

    def __call__(self, case: str) -> dict[str, SegmentationEngine]:
        if self.shipped is not None:
            return {"unet": self.shipped, "threshold": self.threshold}
        return {name: UNetEngine(d / f"cv-{case}") for name, d in self._named_folds().items()} | {
            "threshold": self.threshold
        }

    def _named_folds(self) -> dict[str, Path]:
        """The fold folders by engine name: "unet" for one, "unet (<folder>)" for several."""
        if len(self.folds) == 1:
            return {"unet": self.folds[0]}
        unique = len({d.name for d in self.folds}) == len(self.folds)
        return {f"unet ({d.name if unique else d})": d for d in self.folds}

    def described(self) -> str:
        """Which models, for a report's first line."""
        unet = (
            "the leave-one-out fold models in " + ", ".join(f"`{d}`" for d in self.folds)
            if self.shipped is None
            else self.shipped.model_id
        )
        return f"{unet} and {self.threshold.model_id}"
