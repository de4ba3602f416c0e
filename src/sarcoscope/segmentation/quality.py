"""Per-slice segmentation quality score: which slices need a human look before their numbers are used.

No reference labels exist at analysis time, so the score reads signals that a bad segmentation leaves behind,
all on skeletal muscle (the tissue SMI and sarcopenia depend on):

- ``expected_muscle_dice``: the muscle Dice the network itself expects, 2·Σ p·m / (Σ p + Σ m) with p its
  (mirror-averaged) muscle probability and m its arg-max muscle mask: exactly the expected Dice if the
  probabilities were calibrated. Low when much of the muscle is a guess.
- ``mirror_muscle_dice``: muscle Dice between the arg-max maps of the plain and the left-right mirrored pass
  (the network learnt both orientations, so they should agree). Pixels where they differ are coin flips.
- ``engine_muscle_dice`` and ``engine_muscle_area_diff``: agreement of the U-Net and the threshold engine
  (two methods that fail differently) on the muscle mask, and their muscle areas' difference relative to
  the two areas' mean.

Each signal maps linearly to 0..1 (`Ramp`), 0.5 at an anchor derived from the published accuracy bar, NOT
fitted to the real slices (there are nine; other hospitals' slices will test it):
- a good slice has muscle IoU >= 0.9 with the truth (Dice >= 0.947, the seed paper's bar): expected Dice
  0.947;
- two maps that both meet it overlap with IoU >= 0.8 (the Jaccard distance is a metric), Dice >= 0.89, and
  the coin-flip reading of mirror disagreement gives the same bound (error >= half of it): agreement 0.89;
- areas each within the published 5 % of the truth differ by at most 10 %: area difference 0.10.
The score is the minimum over the signals available — the worst one decides and is named — and a slice
scoring below REVIEW_THRESHOLD (0.5, some signal past its anchor) is flagged "review".

The engine signals assume that the second engine, too, meets the bar: the threshold engine does not on
pixels coarser than COARSEST_OPINION nor on unenhanced CT, so a U-Net is scored on its network signals alone
there (threshold_engine_unfit).

Cost: the network signals come from the inference the U-Net engine runs anyway (both passes; a U-Net
built with `mirror=False` runs the mirrored one for them); the
engine signals need the other engine (the threshold engine for the U-Net, the site's U-Net for the others).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from sarcoscope.conventions import DEFAULT_HU_RANGES, HURanges, Label
from sarcoscope.errors import SegmentationError
from sarcoscope.imaging.noise import robust_sd
from sarcoscope.segmentation.base import SegmentationEngine, segment_slices

if TYPE_CHECKING:
    from sarcoscope.segmentation.body import SliceBodies

logger = logging.getLogger(__name__)

#: Bump when a signal or an anchor changes (scores of different versions are not comparable).
QUALITY_VERSION = 2
#: Slices scoring below this are flagged for review.
REVIEW_THRESHOLD = 0.5
#: The threshold engine is the U-Net's second opinion only up to this pixel size (mm). Coarser, its own
#: muscle error grows (mean absolute 6.1 % at the real slices' own 0.6-0.8 mm, 7.2 % at 2 mm, 9.3 % at
#: 2.5 mm, 10.2 % at 3 mm, worst -24 %; docs/validation/coarse-pixels.md), so a disagreement there says more
#: about it than about the U-Net.
COARSEST_OPINION = 2.0
#: Analyses of slices with pixels coarser than this (mm) carry a warning (`coarse_pixel_warning`).
COARSE_PIXEL_MM = 1.5
#: Analyses of slices noisier than this (HU, `image_noise_hu`: the fat's spread at the slice's own pixels,
#: not the localizer's index) carry a warning (`noise_warning`): where the
#: HU window itself starts to cost the muscle area several percent (the reference's own compartments on the
#: noisy HU: 25 HU -1.8 %, 34 HU -3.8 %, 43 HU -7.3 %; the U-Net (refinement v4, mirror averaging): -0.8 % at
#: the slices' own 13-16 HU, -1.5 %, -2.7 %, -5.3 %; docs/validation/noise.md); 6 % is allowed on a slice.
NOISY_SLICE_HU = 35.0


@dataclass(frozen=True)
class Ramp:
    """Linear map of a signal to 0..1: 0.5 at `anchor`, 0 and 1 at `anchor` ∓ `half_width` (in the bad and
    the good direction; `higher_is_better` says which is which)."""

    anchor: float
    half_width: float
    higher_is_better: bool
    why: str

    def score(self, value: float) -> float:
        step = (value - self.anchor) / self.half_width
        return float(np.clip(0.5 + 0.5 * (step if self.higher_is_better else -step), 0.0, 1.0))


#: The signals and their anchors (see the module docstring for where each anchor comes from).
SIGNALS: dict[str, Ramp] = {
    "expected_muscle_dice": Ramp(0.947, 0.05, True, "the network's own expected Dice vs the bar IoU 0.9"),
    "mirror_muscle_dice": Ramp(0.89, 0.05, True, "plain vs mirrored pass; both good implies Dice >= 0.89"),
    "engine_muscle_dice": Ramp(0.89, 0.05, True, "U-Net vs threshold engine; both good implies Dice >= 0.89"),
    "engine_muscle_area_diff": Ramp(0.10, 0.10, False, "areas each within 5 % differ by at most 10 %"),
}
NETWORK_SIGNALS = ("expected_muscle_dice", "mirror_muscle_dice")
ENGINE_SIGNALS = ("engine_muscle_dice", "engine_muscle_area_diff")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks; two empty masks agree perfectly."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _muscle_wins(probs: np.ndarray) -> np.ndarray:
    """`probs.argmax(axis=0) == Label.MUSCLE` for class probabilities (5, y, x): muscle above every class
    before it and not below any after it (argmax takes the first of equals). Four comparisons of planes,
    where argmax walks the class axis pixel by pixel: 1.4 ms instead of 8 for a 512² canvas, three times
    per slice."""
    k = int(Label.MUSCLE)
    wins = np.ones(probs.shape[1:], dtype=bool)
    for other in range(len(probs)):
        if other != k:
            wins &= probs[k] > probs[other] if other < k else probs[k] >= probs[other]
    return wins


def network_signals(plain: np.ndarray, mirrored: np.ndarray) -> dict[str, float]:
    """The network signals of one slice from the class probabilities (5, y, x) of its two passes."""
    mean = 0.5 * (plain + mirrored)
    muscle = _muscle_wins(mean)
    p = mean[Label.MUSCLE]
    denominator = float(p.sum()) + int(muscle.sum())
    expected = 1.0 if denominator == 0 else 2.0 * float(p[muscle].sum()) / denominator
    mirror = _dice(_muscle_wins(plain), _muscle_wins(mirrored))
    return {"expected_muscle_dice": expected, "mirror_muscle_dice": mirror}


def engine_signals(labels: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """The engine-agreement signals of one slice: its label map (y, x) against a second engine's."""
    a, b = labels == Label.MUSCLE, other == Label.MUSCLE
    na, nb = int(a.sum()), int(b.sum())
    return {
        "engine_muscle_dice": _dice(a, b),
        "engine_muscle_area_diff": 0.0 if na + nb == 0 else abs(na - nb) / ((na + nb) / 2),
    }


def score_text(score: float) -> str:
    """A score as printed: two decimals, or three or four where fewer would round it (half up, as a reader
    does) across REVIEW_THRESHOLD: a flagged 0.495 is not "0.50" beside "below 0.5". Scores have 4 decimals,
    which always show it."""
    exact, threshold = Decimal(f"{score:.4f}"), Decimal(str(REVIEW_THRESHOLD))
    for digits in (2, 3):
        shown = exact.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
        if (shown < threshold) == (exact < threshold):
            return str(shown)
    return str(exact)


@dataclass(frozen=True)
class SliceQuality:
    """The quality of one analysed slice: its signals, their 0..1 scores and the overall score."""

    signals: dict[str, float]

    @property
    def signal_scores(self) -> dict[str, float]:
        return {name: SIGNALS[name].score(value) for name, value in self.signals.items()}

    @property
    def score(self) -> float | None:
        """The worst signal's score, to the report's 4 decimals (the flag is the reported value's); None when
        no signal could be computed."""
        scores = self.signal_scores
        return round(min(scores.values()), 4) if scores else None

    @property
    def limiting(self) -> str | None:
        """The signal that set the score."""
        scores = self.signal_scores
        return min(scores, key=lambda k: scores[k]) if scores else None

    @property
    def flagged(self) -> bool:
        score = self.score
        return score is not None and score < REVIEW_THRESHOLD

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "flagged": self.flagged,
            "limiting_signal": self.limiting,
            "signals": {k: round(v, 5) for k, v in self.signals.items()},
            "signal_scores": {k: round(v, 4) for k, v in self.signal_scores.items()},
        }


@dataclass(frozen=True)
class QualityAssessment:
    """The per-slice quality of one analysis, with which signals were used and why others were not."""

    slices: list[SliceQuality]
    #: Signal name -> why it was not computed (e.g. no U-Net model installed).
    unavailable: dict[str, str] = field(default_factory=dict)
    #: Model id of the engine the analysed one was compared with, if any.
    second_opinion: str | None = None

    @property
    def used(self) -> list[str]:
        return [name for name in SIGNALS if self.slices and name in self.slices[0].signals]

    @property
    def score(self) -> float | None:
        """The worst slice's score (what a cohort table shows for the case)."""
        scores = [s.score for s in self.slices if s.score is not None]
        return min(scores) if scores else None

    @property
    def flagged(self) -> bool:
        return any(s.flagged for s in self.slices)

    def warning(self, indices: Sequence[int]) -> str | None:
        """The report warning naming the flagged slices (CT slice `indices`), None when none is flagged."""
        flagged = [(i, s) for i, s in zip(indices, self.slices, strict=True) if s.flagged]
        if not flagged:
            return None
        parts = [
            f"slice {i}: {score_text(s.score)} ({s.limiting} {s.signals[s.limiting or '']:.3f})"
            for i, s in flagged
            if s.score is not None
        ]
        return (
            f"Segmentation quality below {REVIEW_THRESHOLD} (review the segmentation before using the "
            f"numbers): {'; '.join(parts)}."
        )

    def as_dict(self, indices: Sequence[int]) -> dict[str, Any]:
        return {
            "status": "computed",
            "version": QUALITY_VERSION,
            "threshold": REVIEW_THRESHOLD,
            "score": self.score,
            "flagged": self.flagged,
            "signals_used": self.used,
            "unavailable": dict(self.unavailable),
            "second_opinion": self.second_opinion,
            "anchors": {
                name: {"anchor": r.anchor, "half_width": r.half_width, "higher_is_better": r.higher_is_better}
                for name, r in SIGNALS.items()
            },
            "slices": [
                {"slice_index": int(i), **s.as_dict()} for i, s in zip(indices, self.slices, strict=True)
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """The assessment as JSON values, to be stored (the web app keeps it with the label version it
        rates): the signals unrounded, so that `from_dict` gives back the same scores and flags, and the
        QUALITY_VERSION they were computed by."""
        return {
            "version": QUALITY_VERSION,
            "slices": [dict(s.signals) for s in self.slices],
            "unavailable": dict(self.unavailable),
            "second_opinion": self.second_opinion,
        }

    @classmethod
    def from_dict(cls, data: Any) -> QualityAssessment:
        """The assessment `to_dict` gave. ValueError when `data` is not one, or is of another QUALITY_VERSION
        (its signals or anchors were others: its scores are not this version's)."""
        if not isinstance(data, dict) or set(data) != {"version", "slices", "unavailable", "second_opinion"}:
            raise ValueError("not a stored quality assessment")
        if data["version"] != QUALITY_VERSION:
            version = data["version"]
            raise ValueError(
                f"scored by version {version} of the quality score, not by this one ({QUALITY_VERSION})"
            )
        slices, unavailable, second = data["slices"], data["unavailable"], data["second_opinion"]
        if not isinstance(slices, list) or not all(_stored_signals(s) for s in slices):
            raise ValueError("a stored quality assessment's signals are not the score's")
        if not isinstance(unavailable, dict) or not all(
            k in SIGNALS and isinstance(v, str) for k, v in unavailable.items()
        ):
            raise ValueError("a stored quality assessment's unavailable signals are not the score's")
        if second is not None and not isinstance(second, str):
            raise ValueError("a stored quality assessment's second opinion is not a model id")
        return cls(
            slices=[SliceQuality({k: float(v) for k, v in s.items()}) for s in slices],
            unavailable=dict(unavailable),
            second_opinion=second,
        )


def _stored_signals(signals: Any) -> bool:
    """Whether a stored slice's signals are the score's: known names, finite numbers."""
    return isinstance(signals, dict) and all(
        k in SIGNALS and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for k, v in signals.items()
    )


#: Tissue along this much (mm) of an image edge means the body was cut off by the field of view.
CUT_OFF_MM = 10.0


def coarse_pixel_warning(pixel_spacing: tuple[float, float]) -> str | None:
    """The warning for slices whose pixels are coarser than diagnostic CT's; None for usual pixels."""
    if max(pixel_spacing) <= COARSE_PIXEL_MM:
        return None
    return (
        f"Pixels of {pixel_spacing[0]:.2g} x {pixel_spacing[1]:.2g} mm are coarser than diagnostic CT's "
        "(0.6-1.0 mm): thin muscle (psoas, the wall) blurs into its neighbours and into fat, so the "
        "muscle area and the muscle's mean HU are measured lower (the real L3 slices made coarser: U-Net "
        "area -2.4 % at 2 mm and -3.4 % at 3 mm against -0.8 % at their own pixels, the threshold engine "
        "-5.7 % and -10.0 %; mean muscle HU 3 HU lower at 2 mm and 5 HU at 3 mm, up to 8, when each pixel "
        "averages its area as a reconstruction's does), and a muscle HU a few HU below a myosteatosis "
        "cutoff is not a finding. Use the original images if you have them."
    )


def image_noise_hu(hu: np.ndarray, labels: np.ndarray, pixel_spacing: tuple[float, float]) -> float | None:
    """The image noise of one slice (HU): the robust spread (imaging.noise.robust_sd) of the HU
    inside the subcutaneous fat, 2 mm clear of its edges. Fat is nearly uniform, so its spread is the noise:
    on the real L3 slices it tracked added noise within 1.5 HU (docs/validation/noise.md). None with fewer
    than 200 such pixels (a very thin patient)."""
    from scipy import ndimage as ndi  # not on the command line's import path

    depth = max(1, round(2.0 / min(pixel_spacing)))
    fat = ndi.binary_erosion(labels == Label.SAT, iterations=depth)
    values = hu[fat]
    if values.size < 200:
        return None
    return robust_sd(values)


def noise_warning(noise_hu: float | None) -> str | None:
    """The warning for slices noisier than NOISY_SLICE_HU; None for usual noise or when it cannot be
    measured."""
    if noise_hu is None or noise_hu <= NOISY_SLICE_HU:
        return None
    return (
        f"The image noise is high ({noise_hu:.0f} HU in the subcutaneous fat; diagnostic CT at L3 has "
        "10-25): the -29..150 HU muscle window cuts off the noise's tails, so the muscle area is measured "
        "lower and its mean HU shifts (the real L3 slices with noise added measured U-Net muscle areas -3 % "
        "at 34 HU and -5 % at 43 HU, against -1 % at their own 13-16 HU; the threshold engine -8 % and "
        "-12 %). A softer kernel or thicker reconstruction of the same scan gives the more comparable number."
    )


def cut_off_warning(labels: Sequence[np.ndarray], pixel_spacing: tuple[float, float]) -> str | None:
    """The warning for slices whose tissues run into the image's edge (the body wider than the field of
    view, common in obese patients): what lies beyond was not imaged, so its area is missing. None when every
    tissue ends inside the image (less than CUT_OFF_MM of any edge).

    Muscle counts within OUTLINE_MM (and a pixel) of the edge: where the edge cuts the body it is the body's
    outline, beside which the engines label the skin's partial volume SAT, so a wall cut through shows a
    rim of SAT on the edge and the muscle right behind it."""
    from sarcoscope.segmentation.refine import OUTLINE_MM  # (refine loads SciPy: not at the server's start)

    dy, dx = pixel_spacing
    rim_y, rim_x = (int(np.ceil(OUTLINE_MM / d)) + 1 for d in (dy, dx))
    cut: dict[str, set[str]] = {"muscle": set(), "body": set()}
    for lab in labels:
        # array layout: columns run from the patient's right to the left, rows from the front to the back
        # (side, the edge line, the band of the rim beside it with the edge's pixels along axis 1, step)
        edges = (
            ("right", lab[:, 0], lab[:, :rim_x].T, dy),
            ("left", lab[:, -1], lab[:, -rim_x:].T, dy),
            ("front", lab[0], lab[:rim_y], dx),
            ("back", lab[-1], lab[-rim_y:], dx),
        )
        for side, line, band, step in edges:
            if np.count_nonzero((band == Label.MUSCLE).any(axis=0)) * step >= CUT_OFF_MM:
                cut["muscle"].add(side)
            if np.count_nonzero(line > 0) * step >= CUT_OFF_MM:
                cut["body"].add(side)
    order = ("right", "left", "front", "back")
    if cut["muscle"]:
        sides = " and ".join(s for s in order if s in cut["muscle"])
        return (
            f"Muscle runs into the image's edge on the patient's {sides} side: part of the body lies "
            "outside the field of view, so the muscle area and SMI are not the patient's: the muscle beyond "
            "the edge is missing, and beside the cut the segmentation can take organs for the abdominal "
            "wall, so the error can go either way (docs/validation/field-of-view.md). Reconstruct the scan "
            "with a larger field of view to measure it."
        )
    if cut["body"]:
        sides = " and ".join(s for s in order if s in cut["body"])
        return (
            f"The body runs into the image's edge on the patient's {sides} side: subcutaneous fat outside "
            "the field of view is not measured, so SAT is too low and the VAT/SAT ratio too high; the muscle "
            "lies inside the image."
        )
    return None


def image_warnings(
    hu_slices: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    pixel_spacing: tuple[float, float],
    bodies: SliceBodies | None = None,
) -> list[str]:
    """What about the analysed slices' images makes their measures lower than on diagnostic CT: coarse
    pixels, high noise (the mean over the slices where it can be measured), a body cut off by the edge; and,
    from their `bodies` when the U-Net read them, an image turned (its file's orientation is wrong)."""
    from sarcoscope.segmentation.orientation import TURNED_WARNING

    found = [
        TURNED_WARNING if bodies is not None and bodies.read_turned else None,
        coarse_pixel_warning(pixel_spacing),
        cut_off_warning(labels, pixel_spacing),
    ]
    noise = [
        n for h, lab in zip(hu_slices, labels, strict=True) if (n := image_noise_hu(h, lab, pixel_spacing))
    ]
    found.append(noise_warning(float(np.mean(noise)) if noise else None))
    return [w for w in found if w]


def threshold_engine_unfit(
    slices: np.ndarray, pixel_spacing: tuple[float, float], bodies: SliceBodies
) -> str | None:
    """Why the threshold engine is no second opinion for the U-Net on these slices (HU, n y x), None when it
    is. It is not on pixels coarser than COARSEST_OPINION, nor on unenhanced CT: it tells organs from the
    muscle wall partly by their enhancement, and without it its muscle-area error is 22 % mean absolute
    against the U-Net's 3 % (phantoms; scripts/contrast_phases.py), so its disagreement would flag good
    U-Net segmentations. Unenhanced is read from the blood in front of the spine
    (segmentation.contrast.read_contrast), and only when every slice reads so (one series, one phase)."""
    from sarcoscope.segmentation.contrast import read_contrast

    if max(pixel_spacing) > COARSEST_OPINION:
        return (
            f"the threshold engine is no second opinion at pixels coarser than {COARSEST_OPINION:g} mm "
            "(its own muscle error grows there)"
        )
    readings = [read_contrast(hu, bodies[k][0], pixel_spacing) for k, hu in enumerate(slices)]
    if not all(r.phase == "unenhanced" for r in readings):
        return None
    brightest = max(readings, key=lambda r: r.blood_hu or 0.0)
    return (
        "the threshold engine is no second opinion on unenhanced CT (it tells organs from the muscle wall "
        f"partly by their enhancement): {brightest.why}"
    )


def _default_second_opinion(engine: SegmentationEngine, hu_ranges: HURanges) -> SegmentationEngine:
    """The threshold engine for a U-Net, the site's default U-Net for any other engine."""
    from sarcoscope.segmentation.threshold import ThresholdEngine
    from sarcoscope.segmentation.unet import UNetEngine

    if isinstance(engine, UNetEngine):
        return ThresholdEngine(hu_ranges=hu_ranges)
    return UNetEngine(hu_ranges=hu_ranges)


class _NoSecondOpinion(Exception):
    """The default second engine is unfit for these slices (threshold_engine_unfit): the engine signals are
    left out for this reason, without a warning."""


def _second_opinion(
    engine: SegmentationEngine,
    given: SegmentationEngine | None,
    hu_ranges: HURanges,
    stack: np.ndarray,
    pixel_spacing: tuple[float, float],
    bodies: SliceBodies,
) -> tuple[str | None, np.ndarray]:
    """The second engine's model id and label maps of the slices (SegmentationError when it cannot run,
    _NoSecondOpinion when the threshold engine would be a U-Net's and is unfit). Whether it is unfit is read
    here, where the second opinion runs (beside the network in segment_with_quality, after the web app's
    answer in segment_then_score), not before the engine: reading the blood costs 35-50 ms a slice."""
    from sarcoscope.segmentation.unet import UNetEngine

    if given is None and isinstance(engine, UNetEngine):
        unfit = threshold_engine_unfit(stack, pixel_spacing, bodies)
        if unfit is not None:
            raise _NoSecondOpinion(unfit)
    other = given or _default_second_opinion(engine, hu_ranges)
    return other.model_id, segment_slices(other, stack, pixel_spacing, bodies=bodies)


def _turned_opinion(
    turns: int,
    engine: SegmentationEngine,
    given: SegmentationEngine | None,
    hu_ranges: HURanges,
    stack: np.ndarray,
    pixel_spacing: tuple[float, float],
) -> tuple[str | None, np.ndarray]:
    """_second_opinion on the slices turned by `turns` quarter turns, its labels turned back: the threshold
    engine finds its frame from the vertebra in the middle of the body's width, which a quarter turn moves
    (a real slice turned so, read right by the U-Net, scored 0.00 against the threshold engine's labels)."""
    from sarcoscope.segmentation.body import SliceBodies

    turned = np.ascontiguousarray(np.rot90(stack, turns, axes=(1, 2)))
    spacing = (pixel_spacing[1], pixel_spacing[0]) if turns % 2 else pixel_spacing
    model_id, labels = _second_opinion(
        engine, given, hu_ranges, turned, spacing, SliceBodies(turned, spacing)
    )
    return model_id, np.ascontiguousarray(np.rot90(labels, -turns, axes=(1, 2)))


def segment_with_quality(
    engine: SegmentationEngine,
    slices: np.ndarray,
    pixel_spacing: tuple[float, float],
    *,
    hu_ranges: HURanges = DEFAULT_HU_RANGES,
    second_opinion: SegmentationEngine | None = None,
    bodies: SliceBodies | None = None,
) -> tuple[np.ndarray, QualityAssessment]:
    """Segment HU slices (n, y, x) with `engine` and score every slice's segmentation.

    An engine showing its network's probabilities to `observe` (the U-Net) gives the network signals from
    its own inference (plus the mirrored pass); the engine signals compare with `second_opinion` (default:
    see _default_second_opinion). A second opinion that cannot be had (no U-Net model installed, a slice it
    refuses) leaves those signals out, with the reason.
    Both engines share the slices' body masks (`bodies`, when the caller has found some already).
    """
    with ThreadPoolExecutor(1) as pool:
        # the second opinion runs beside the engine (both spend much of their time in NumPy and SciPy, which
        # let another thread run), so the score costs less time than the two engines one after the other
        labels, score = _segment_and_score(
            engine,
            slices,
            pixel_spacing,
            hu_ranges,
            second_opinion,
            bodies,
            lambda *a: pool.submit(*a).result,
        )
        return labels, score()


def segment_then_score(
    engine: SegmentationEngine,
    slices: np.ndarray,
    pixel_spacing: tuple[float, float],
    *,
    hu_ranges: HURanges = DEFAULT_HU_RANGES,
    second_opinion: SegmentationEngine | None = None,
) -> tuple[np.ndarray, Callable[[], QualityAssessment]]:
    """`segment_with_quality` in two steps: the labels (and the network signals, which the engine's own
    inference gives) now, and a function that runs the second opinion and returns the assessment, the
    same as segment_with_quality's. The web app answers a segment request with the labels and scores
    after: the second opinion is another whole engine (the threshold engine for the U-Net, the U-Net for
    the threshold engine), which the request's answer does not need."""
    return _segment_and_score(
        engine, slices, pixel_spacing, hu_ranges, second_opinion, None, functools.partial
    )


def _segment_and_score(
    engine: SegmentationEngine,
    slices: np.ndarray,
    pixel_spacing: tuple[float, float],
    hu_ranges: HURanges,
    second_opinion: SegmentationEngine | None,
    bodies: SliceBodies | None,
    start: Callable[..., Callable[[], tuple[str | None, np.ndarray]]],
) -> tuple[np.ndarray, Callable[[], QualityAssessment]]:
    """The labels and the scoring of segment_with_quality; `start(fn, *args)` starts the second opinion
    `fn(*args)` (or not yet) and returns the function that gives its result."""
    from sarcoscope.segmentation.body import SliceBodies

    stack = np.asarray(slices)
    if stack.ndim == 2:
        stack = stack[None]
    if bodies is None or not bodies.of(stack, pixel_spacing):
        bodies = SliceBodies(stack, pixel_spacing)
    signals: list[dict[str, float]] = [{} for _ in range(len(stack))]
    unavailable: dict[str, str] = {}
    other_run = start(_second_opinion, engine, second_opinion, hu_ranges, stack, pixel_spacing, bodies)
    observed = False

    def observe(first: int, plain: np.ndarray, mirrored: np.ndarray) -> None:
        nonlocal observed
        observed = True
        for k in range(len(plain)):
            signals[first + k].update(network_signals(plain[k], mirrored[k]))

    labels = segment_slices(engine, stack, pixel_spacing, bodies=bodies, observe=observe)
    if not observed:  # an engine without a network (the threshold engine), or one not showing it
        for name in NETWORK_SIGNALS:
            unavailable[name] = f"the '{engine.name}' engine has no network probabilities"

    def score() -> QualityAssessment:
        model_id: str | None = None
        try:
            if bodies.read_turned:  # the U-Net read the slices turned (orientation): the other engine too,
                # not the upright reading started before that was known (which a later start never runs)
                model_id, other_labels = _turned_opinion(
                    bodies.read_turned, engine, second_opinion, hu_ranges, stack, pixel_spacing
                )
            else:
                model_id, other_labels = other_run()
        except _NoSecondOpinion as exc:
            unavailable.update(dict.fromkeys(ENGINE_SIGNALS, str(exc)))
        except SegmentationError as exc:
            logger.warning("Quality score without engine agreement: %s", exc)
            for name in ENGINE_SIGNALS:
                unavailable[name] = f"no second engine to compare with: {exc}"
        else:
            for k in range(len(stack)):
                signals[k].update(engine_signals(labels[k], other_labels[k]))
        return QualityAssessment(
            slices=[SliceQuality(s) for s in signals], unavailable=unavailable, second_opinion=model_id
        )

    return labels, score
