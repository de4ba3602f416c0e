"""The per-slice segmentation quality score: exact signal values, the score's anchors, and its ranking of
injected failures (phantoms) and of the real slices the shipped model gets wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_unet import real_slice

from sarcoscope.conventions import Label
from sarcoscope.errors import SegmentationError
from sarcoscope.phantom import make_slice
from sarcoscope.phantom.artefacts import injected_failures
from sarcoscope.segmentation.quality import (
    COARSE_PIXEL_MM,
    COARSEST_OPINION,
    NETWORK_SIGNALS,
    NOISY_SLICE_HU,
    QUALITY_VERSION,
    REVIEW_THRESHOLD,
    SIGNALS,
    QualityAssessment,
    SliceQuality,
    coarse_pixel_warning,
    cut_off_warning,
    engine_signals,
    image_noise_hu,
    image_warnings,
    network_signals,
    noise_warning,
    score_text,
    segment_with_quality,
)
from sarcoscope.segmentation.threshold import ThresholdEngine
from sarcoscope.segmentation.unet import UNetEngine
from sarcoscope.validation.metrics import dice


class Fixed:
    """An engine returning given labels (or refusing), to test the score without running a model."""

    name = "fixed"

    def __init__(self, labels: np.ndarray | None, model_id: str = "fixed-1") -> None:
        self.labels, self.model_id = labels, model_id

    def segment(self, slices: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
        if self.labels is None:
            raise SegmentationError("no model here")
        return self.labels


def test_ramps_put_the_threshold_at_each_anchor() -> None:
    for ramp in SIGNALS.values():
        assert ramp.score(ramp.anchor) == pytest.approx(REVIEW_THRESHOLD)
    dice_ramp, area_ramp = SIGNALS["engine_muscle_dice"], SIGNALS["engine_muscle_area_diff"]
    assert (dice_ramp.score(0.84), dice_ramp.score(0.94), dice_ramp.score(0.99)) == pytest.approx((0, 1, 1))
    assert dice_ramp.score(0.915) == pytest.approx(0.75)
    assert (area_ramp.score(0.0), area_ramp.score(0.15), area_ramp.score(0.3)) == pytest.approx((1, 0.25, 0))
    assert SIGNALS["expected_muscle_dice"].score(0.947) == pytest.approx(0.5)


def test_signals_have_exact_values_on_known_masks() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[:, :4] = Label.MUSCLE  # 40 pixels
    b = np.zeros_like(a)
    b[:, :2] = Label.MUSCLE  # 20 pixels, all inside a
    assert engine_signals(a, b) == pytest.approx(
        {"engine_muscle_dice": 2 * 20 / 60, "engine_muscle_area_diff": 20 / 30}
    )
    assert engine_signals(np.zeros_like(a), np.zeros_like(a)) == {
        "engine_muscle_dice": 1.0,
        "engine_muscle_area_diff": 0.0,
    }
    # muscle 0.8 on 10 pixels in both passes; the mirrored pass calls 10 more muscle at 0.6
    plain = np.zeros((5, 4, 10), np.float32)
    plain[0] = 1.0
    plain[:, 0] = 0.0
    plain[1, 0], plain[2, 0] = 0.8, 0.2
    mirrored = plain.copy()
    mirrored[:, 1] = 0.0
    mirrored[1, 1], mirrored[0, 1] = 0.6, 0.4
    signals = network_signals(plain, mirrored)
    assert signals["mirror_muscle_dice"] == pytest.approx(2 * 10 / 30)
    # mean: row 0 muscle 0.8 (arg-max muscle), row 1 muscle 0.3 (not); expected Dice 2*8 / (8 + 3 + 10)
    assert signals["expected_muscle_dice"] == pytest.approx(16 / 21)


def test_muscle_wins_where_argmax_says_muscle_ties_included() -> None:
    """The network signals read `argmax == muscle` from four plane comparisons (issue 18: argmax along the
    class axis cost 8 ms per 512² canvas, three times per slice): the same pixels, ties going to the first
    class as argmax's do, on the mirrored pass's reversed view too."""
    from sarcoscope.segmentation.quality import _muscle_wins

    probs = np.random.default_rng(4).integers(0, 4, size=(5, 64, 48)).astype(np.float32) / 4  # many ties
    for p in (probs, probs[..., ::-1]):
        want = p.argmax(axis=0) == Label.MUSCLE
        assert 0 < want.sum() < want.size
        assert np.array_equal(_muscle_wins(p), want)


def test_the_worst_signal_sets_the_score_and_names_itself() -> None:
    q = SliceQuality(
        {"expected_muscle_dice": 0.99, "engine_muscle_dice": 0.87, "engine_muscle_area_diff": 0.02}
    )
    assert q.score == pytest.approx(0.3) and q.limiting == "engine_muscle_dice" and q.flagged
    assessment = QualityAssessment([q, SliceQuality({"engine_muscle_dice": 0.95})], second_opinion="u")
    assert assessment.score == pytest.approx(0.3) and assessment.flagged
    assert assessment.warning([40, 41]) == (
        "Segmentation quality below 0.5 (review the segmentation before using the numbers): "
        "slice 40: 0.30 (engine_muscle_dice 0.870)."
    )
    block = assessment.as_dict([40, 41])
    assert [s["flagged"] for s in block["slices"]] == [True, False]
    assert block["signals_used"] == ["expected_muscle_dice", "engine_muscle_dice", "engine_muscle_area_diff"]
    assert QualityAssessment([SliceQuality({})]).score is None
    assert QualityAssessment([SliceQuality({"engine_muscle_dice": 0.95})]).warning([3]) is None


def test_a_stored_assessment_reads_back_as_the_same_scores_and_refuses_another_versions() -> None:
    """The web app stores a version's assessment (to_dict, as JSON): read back (from_dict) it is the same
    assessment, unrounded signals and all; one of another QUALITY_VERSION or a malformed one is refused."""
    assessment = QualityAssessment(
        [
            SliceQuality({"engine_muscle_dice": 0.8912345678901234, "engine_muscle_area_diff": 0.10008}),
            SliceQuality({"engine_muscle_dice": 1.0, "engine_muscle_area_diff": 0.0}),
        ],
        unavailable={"expected_muscle_dice": "the 'threshold' engine has no network probabilities"},
        second_opinion="sarcoscope-unet-v7",
    )
    stored = json.loads(json.dumps(assessment.to_dict()))
    assert QualityAssessment.from_dict(stored) == assessment
    assert QualityAssessment.from_dict(stored).as_dict([4, 5]) == assessment.as_dict([4, 5])
    assert QualityAssessment.from_dict(QualityAssessment([]).to_dict()) == QualityAssessment([])
    older = {**stored, "version": QUALITY_VERSION - 1}
    with pytest.raises(ValueError, match=f"version {QUALITY_VERSION - 1} of the quality score"):
        QualityAssessment.from_dict(older)
    for bad in (
        None,
        {**stored, "extra": 1},
        {**stored, "slices": [{"no_such_signal": 0.5}]},
        {**stored, "slices": [{"engine_muscle_dice": "0.9"}]},
        {**stored, "slices": [{"engine_muscle_dice": float("nan")}]},
        {**stored, "unavailable": {"engine_muscle_dice": 3}},
        {**stored, "second_opinion": 7},
    ):
        with pytest.raises(ValueError):
            QualityAssessment.from_dict(bad)


def test_a_score_near_the_threshold_is_printed_on_its_side_of_it() -> None:
    """A flagged 0.4996 was printed "0.50" beside "below 0.5"; the flag is the reported value's."""
    assessment = QualityAssessment(
        [SliceQuality({"engine_muscle_area_diff": diff}) for diff in (0.10008, 0.1006, 0.102, 0.1000009)]
    )
    assert [s.score for s in assessment.slices] == [0.4996, 0.497, 0.49, 0.5]
    assert [s.flagged for s in assessment.slices] == [True, True, True, False]
    assert assessment.warning([7, 8, 9, 10]) == (
        "Segmentation quality below 0.5 (review the segmentation before using the numbers): "
        "slice 7: 0.4996 (engine_muscle_area_diff 0.100); slice 8: 0.497 (engine_muscle_area_diff 0.101); "
        "slice 9: 0.49 (engine_muscle_area_diff 0.102)."
    )
    assert [score_text(v) for v in (0.4996, 0.497, 0.495, 0.4949, 0.5, 0.504, 0.505, 0.2, 0.0)] == [
        "0.4996",
        "0.497",
        "0.495",
        "0.49",
        "0.50",
        "0.50",
        "0.51",
        "0.20",
        "0.00",
    ]


def test_no_second_engine_leaves_its_signals_out_with_the_reason() -> None:
    labels = np.zeros((1, 8, 8), np.uint8)
    out, qa = segment_with_quality(Fixed(labels), np.zeros((1, 8, 8)), (1.0, 1.0), second_opinion=Fixed(None))
    assert out is labels
    assert qa.score is None and not qa.flagged and qa.used == []
    assert qa.unavailable["engine_muscle_dice"] == "no second engine to compare with: no model here"
    assert "has no network probabilities" in qa.unavailable["expected_muscle_dice"]


def test_on_coarse_pixels_the_unet_is_scored_without_the_threshold_engine() -> None:
    # The threshold engine misses much of the muscle on coarse pixels (docs/validation/coarse-pixels.md):
    # there its disagreement would flag good U-Net segmentations, so it is not asked.
    net = UNetEngine()
    ph = make_slice(2, size=160, pixel_spacing=2.4)
    _, coarse = segment_with_quality(net, ph.hu[None], ph.pixel_spacing)
    assert coarse.used == list(NETWORK_SIGNALS) and coarse.second_opinion is None
    assert "no second opinion at pixels coarser than 2 mm" in coarse.unavailable["engine_muscle_dice"]
    fine = make_slice(2, size=192, pixel_spacing=COARSEST_OPINION)
    _, usual = segment_with_quality(net, fine.hu[None], fine.pixel_spacing)
    assert usual.used == list(SIGNALS) and usual.second_opinion is not None and not usual.unavailable
    # an explicit second opinion is always used
    _, asked = segment_with_quality(net, ph.hu[None], ph.pixel_spacing, second_opinion=ThresholdEngine())
    assert asked.used == list(SIGNALS)


def test_coarse_pixels_are_warned_about() -> None:
    assert coarse_pixel_warning((0.98, 0.98)) is None and coarse_pixel_warning((COARSE_PIXEL_MM,) * 2) is None
    warning = coarse_pixel_warning((3.0, 3.0))
    assert warning is not None and warning.startswith("Pixels of 3 x 3 mm are coarser")
    assert "mean HU" in warning and "myosteatosis" in warning  # the muscle's HU is measured lower too
    assert coarse_pixel_warning((0.8, 1.6)) is not None  # the coarser direction decides


def test_a_body_cut_off_by_the_image_edge_is_warned_about() -> None:
    """The phantom's exact labels: whole, cut through the fat on one side, cut through the muscle. Its fat
    is 15 mm wide beside the muscle: a cut 7 mm from the muscle is in the fat (within OUTLINE_MM and a pixel
    a SAT rim is what the engines draw beside any cut)."""
    ph = make_slice(7, size=256)
    lab, sp = ph.labels, ph.pixel_spacing
    assert cut_off_warning([lab], sp) is None
    body_cols = np.flatnonzero(lab.any(axis=0))
    muscle_cols = np.flatnonzero((lab == Label.MUSCLE).any(axis=0))
    in_fat = (body_cols[0] + muscle_cols[0]) // 2  # between the skin and the wall on the patient's right
    warning = cut_off_warning([lab[:, in_fat:]], sp)
    assert warning is not None
    assert warning.startswith("The body runs into the image's edge on the patient's right side")
    through_muscle = muscle_cols[-1] - round(15 / sp[1])  # 15 mm into the wall on the left
    warning = cut_off_warning([lab, lab[:, in_fat:through_muscle]], sp)  # any slice of a range
    assert warning is not None
    assert warning.startswith("Muscle runs into the image's edge on the patient's left side")
    assert warning in image_warnings([ph.hu[:, in_fat:through_muscle]], [lab[:, in_fat:through_muscle]], sp)


def test_muscle_cut_by_the_edge_is_warned_about_behind_the_skin_rim_the_engines_draw() -> None:
    """The engines label the first OUTLINE_MM beside a body's outline SAT, the skin's partial volume, and
    an image edge that cuts the body is its outline there: a wall cut through showed SAT along the edge and
    muscle right behind it, and no warning (the threshold engine on every real slice cut this way,
    scripts/field_of_view.py). Behind that rim the muscle still runs into the edge."""
    ph = make_slice(1, size=256)
    muscle_cols = np.flatnonzero((ph.labels == Label.MUSCLE).any(axis=0))
    through_muscle = muscle_cols[-1] - round(15 / ph.pixel_spacing[1])
    labels = ThresholdEngine().segment(ph.hu[None, :, :through_muscle], ph.pixel_spacing)[0]
    assert not (labels[:, -1] == Label.MUSCLE).any()  # the rim: the edge column itself holds no muscle
    warning = cut_off_warning([labels], ph.pixel_spacing)
    assert warning is not None
    assert warning.startswith("Muscle runs into the image's edge on the patient's left side")
    assert "either way" in warning  # beside the cut organs can be taken for the wall: not only too low


def test_image_noise_is_measured_in_the_fat() -> None:
    # a uniform fat ring with noise of a known spread, around muscle with another (the fat's is measured)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    r = np.hypot(yy - 128, xx - 128)
    labels = np.where(r < 80, Label.MUSCLE, np.where(r < 110, Label.SAT, 0)).astype(np.uint8)
    hu = np.where(labels == Label.SAT, -100.0, 45.0) + rng.normal(0, 20.0, labels.shape)
    hu[labels == Label.SAT] += rng.normal(0, np.sqrt(40.0**2 - 20.0**2), (labels == Label.SAT).sum())
    assert image_noise_hu(hu, labels, (0.8, 0.8)) == pytest.approx(40.0, rel=0.05)
    assert image_noise_hu(hu, np.zeros_like(labels), (0.8, 0.8)) is None  # no fat: not measured
    assert noise_warning(None) is None and noise_warning(NOISY_SLICE_HU) is None
    assert noise_warning(42.4).startswith("The image noise is high (42 HU")
    (warning,) = image_warnings([hu, hu], [labels, labels], (0.8, 0.8))
    assert 38 <= int(warning.split("(")[1].split(" HU")[0]) <= 42
    assert image_warnings([hu], [np.zeros_like(labels)], (0.8, 0.8)) == []


def test_noise_of_a_real_slice_is_measured(shared_data: Path) -> None:
    hu, spacing, ref = real_slice(shared_data, "EMC091")
    own = image_noise_hu(hu, ref, spacing)
    assert own is not None and 10.0 < own < 20.0  # a diagnostic portal-venous scan, 3 mm, I40f kernel
    rng = np.random.default_rng(0)
    noisy = hu + rng.normal(0, 40.0, hu.shape).astype(np.float32)
    assert image_noise_hu(noisy, ref, spacing) == pytest.approx(np.hypot(own, 40.0), abs=2.0)
    assert image_warnings([hu], [ref], spacing) == [] and len(image_warnings([noisy], [ref], spacing)) == 1


def test_degraded_labels_score_below_the_clean_ones() -> None:
    """A segmentation that lost part of the muscle (a degraded engine) is flagged by engine agreement."""
    ph = make_slice(1, size=256)
    labels = ph.labels[None]
    degraded = labels.copy()
    muscle = degraded[0] == Label.MUSCLE
    columns = np.flatnonzero(muscle.any(axis=0))
    lost_wall = muscle & (np.arange(muscle.shape[1]) < columns[0] + 0.15 * (columns[-1] - columns[0]))
    degraded[0][lost_wall] = Label.BACKGROUND  # the lateral wall on one side missed
    other = Fixed(labels, "truth")
    _, clean = segment_with_quality(Fixed(labels), ph.hu, ph.pixel_spacing, second_opinion=other)
    _, bad = segment_with_quality(Fixed(degraded), ph.hu, ph.pixel_spacing, second_opinion=other)
    assert clean.score == 1.0 and not clean.flagged and clean.second_opinion == "truth"
    lost = lost_wall.sum() / muscle.sum()
    assert 0.1 < lost < 0.2
    signals = bad.slices[0].signals
    assert signals["engine_muscle_area_diff"] == pytest.approx(lost / (1 - lost / 2))
    assert signals["engine_muscle_dice"] == pytest.approx((1 - lost) / (1 - lost / 2))
    assert bad.score < REVIEW_THRESHOLD and bad.slices[0].limiting == "engine_muscle_area_diff"


#: (seed, size, pixel spacing) of phantoms whose clean slice the score passes (a wide field of view leaves
#: room for the arms). Many clean phantoms are flagged: the engines disagree more on phantoms (see
#: docs/validation/quality.md), so these two were chosen, and the test asserts the ranking.
PHANTOMS = ((1, 256, 1.7), (5, 384, 1.15))


@pytest.fixture(scope="module")
def phantom_scores() -> dict[tuple[int, str], SliceQuality]:
    """Quality of the U-Net (shipped model) on clean phantoms and on the same with injected failures."""
    net, threshold = UNetEngine(), ThresholdEngine()
    out: dict[tuple[int, str], SliceQuality] = {}
    for seed, size, spacing in PHANTOMS:
        ph = make_slice(seed, size=size, pixel_spacing=spacing)
        variants = injected_failures(ph.hu, ph.pixel_spacing, seed)
        _, qa = segment_with_quality(
            net, np.stack(list(variants.values())), ph.pixel_spacing, second_opinion=threshold
        )
        out.update({(seed, name): q for name, q in zip(variants, qa.slices, strict=True)})
    return out


@pytest.mark.slow
def test_injected_failures_rank_below_clean_phantoms(phantom_scores: dict) -> None:
    for seed, _, _ in PHANTOMS:
        clean = phantom_scores[seed, "clean"]
        assert not clean.flagged
        for failure in ("noise", "flipped"):
            assert phantom_scores[seed, failure].score < clean.score, (seed, failure)
        # arms pressed on the trunk are no failure since the segmentation cuts them off: scored as clean
        assert phantom_scores[seed, "arms"].score == pytest.approx(clean.score, abs=0.05)
        # upside down (the patient prone, or rows stored reversed): both signal families collapse
        flipped = phantom_scores[seed, "flipped"]
        assert flipped.flagged and flipped.signals["engine_muscle_dice"] < 0.8


REAL_CASES = ("EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172")


@pytest.fixture(scope="module")
def real_scores(shared_data: Path) -> dict[str, tuple[SliceQuality, float, float, float]]:
    """case -> (quality of the shipped U-Net's segmentation, its true muscle Dice, the threshold engine's,
    and the threshold engine's muscle-area error in %)."""
    net, threshold = UNetEngine(), ThresholdEngine()
    out = {}
    for case in REAL_CASES:
        hu, spacing, ref = real_slice(shared_data, case)
        thr = threshold.segment(hu[None], spacing)
        labels, qa = segment_with_quality(net, hu, spacing, second_opinion=Fixed(thr))
        ref_area = (ref == Label.MUSCLE).sum()
        thr_error = 100.0 * ((thr[0] == Label.MUSCLE).sum() - ref_area) / ref_area
        out[case] = (
            qa.slices[0],
            dice(labels[0], ref, Label.MUSCLE),
            dice(thr[0], ref, Label.MUSCLE),
            thr_error,
        )
    return out


@pytest.mark.slow
def test_real_slices_where_both_engines_agree_pass(real_scores: dict) -> None:
    """The shipped ensemble has seen all nine slices (its second member was fine-tuned on them): muscle Dice
    >= 0.96 on every one, so any flag here is a false alarm, and the score must not raise one where nothing
    disagrees: where the threshold engine gets the muscle right too (Dice >= 0.95, area within 5 %), it passes
    with a margin. Elsewhere it may not (measured 2026-12-05): EMC040 and EMC100 sit just under the threshold,
    limited by the threshold engine's -10.6 and -8.5 % muscle area, and EMC051 at 0.32 by the model's own
    uncertainty (its first member never saw it, and its mirrored passes still disagree). How well the score
    ranks real failures is measured where the models never saw the slices: docs/validation/quality.md
    (leave-one-out) and the phantoms with injected failures above."""
    assert all(true >= 0.96 for _, true, _, _ in real_scores.values())
    agree = {case for case, (_, _, d, err) in real_scores.items() if d >= 0.95 and abs(err) <= 5.0}
    assert agree == {"EMC052", "EMC091", "EMC158", "EMC172"}
    for case in agree:
        assert real_scores[case][0].score > REVIEW_THRESHOLD + 0.05, case
