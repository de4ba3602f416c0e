"""The "unet" engine with the shipped model: card, grids and spacings, accuracy on phantoms and real CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarcoscope.conventions import HURanges
from sarcoscope.errors import SegmentationError
from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, load_model_card
from sarcoscope.segmentation.refine import REFINEMENT_VERSION
from sarcoscope.segmentation.unet import InputSpec, UNetEngine
from sarcoscope.validation.metrics import dice

#: The real reference slices: the shipped model was fine-tuned on all of them (its test is the leave-one-out
#: table in models/MODEL_CARD.md), so scores on them here guard against regressions, they measure no accuracy.
REAL_CASES = ("EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172")
#: The real slices the shipped ensemble's first member was fine-tuned on.
FIRST_MEMBER_CASES = ("EMC041", "EMC052", "EMC100", "EMC101", "EMC172")


@pytest.fixture(scope="module")
def engine() -> UNetEngine:
    return UNetEngine()


@pytest.fixture(scope="module")
def raw_engine() -> UNetEngine:
    return UNetEngine(refine=False)


def real_slice(shared_data: Path, case: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    import pydicom
    from pydicom.pixels import apply_rescale

    folder = shared_data / "real" / "l3_slices"
    ds = pydicom.dcmread(folder / "images" / f"L3_{case}.dcm")
    hu = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return hu, spacing, np.load(folder / "labels" / f"{case}.npy")


def test_shipped_model_card_is_complete() -> None:
    """The shipped model is an ensemble of two networks; its card states what each learnt from, how, and
    the measurement that made it the default."""
    card = load_model_card(DEFAULT_MODEL_DIR)
    # two networks of 1.6 M parameters (float32) and nothing else: the package stays small
    assert (DEFAULT_MODEL_DIR / card["files"]["onnx"]).stat().st_size < 14_000_000
    assert card["labels"] == {"0": "background", "1": "muscle", "2": "sat", "3": "vat", "4": "imat"}
    assert card["architecture"]["fine_tune_member"] == 1
    first, second = card["members"]
    assert first["model_id"] == "sarcoscope-unet-20261203-bc2eca84"
    assert set(first["training_data"]["train"]["data_cases"]) == set(FIRST_MEMBER_CASES)
    assert set(second["training_data"]["train"]["data_cases"]) == set(REAL_CASES)
    assert set(card["training_data"]["train"]["data_cases"]) == set(REAL_CASES)
    for member in (first, second):
        for key in ("architecture", "input", "training_data", "recipe", "validation", "software"):
            assert member[key], key
        assert member["recipe"]["lambda_dice"] == member["recipe"]["lambda_ce"] == 0.5
        assert member["recipe"]["learning_rate"] == 2e-4 and member["recipe"]["batch_size"] == 4
        assert member["training_data"]["initialised_from"], "fine-tuned from a phantom-pretrained model"
    evaluation = card["evaluation"]
    unseen = set(REAL_CASES) - set(FIRST_MEMBER_CASES)
    assert all(f"| {c} | ensemble (held-out folds) |" in evaluation for c in unseen)
    assert card["ensemble_comparison"]["better"] and "**better**" in evaluation
    assert card["model_id"] in (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()


def test_registered_engine_reports_model_id(engine: UNetEngine) -> None:
    registered = get_engine("unet")
    assert registered.name == "unet" and registered.model_id == engine.model_id
    card_id = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())["model_id"]
    assert engine.model_id == f"{card_id}+refine-v{REFINEMENT_VERSION}+mirror"
    raw = get_engine(f"unet-raw:{DEFAULT_MODEL_DIR}")
    assert not raw.refine and raw.model_id == card_id + "+raw+mirror"
    options = get_engine("unet", hu_ranges=HURanges.slice_o_matic_vat(), refine=False)
    assert options.hu_ranges.vat == (-150.0, -50.0) and not options.refine


@pytest.mark.parametrize(("size", "spacing"), [(512, 0.75), (384, 0.95)])
def test_phantom_segmentation_reaches_stated_dice(engine: UNetEngine, size: int, spacing: float) -> None:
    """Unseen phantoms (training used seeds 5000-5399 and 9000-9099), at 512 and a non-512 coarser grid."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    ph = phantom.make_slice(777, size=size, pixel_spacing=spacing)
    pred = engine.segment(np.asarray(ph.hu)[None], ph.pixel_spacing)[0]
    assert pred.shape == (size, size)
    # shipped model on seed 777: muscle 0.96, SAT 0.97, VAT 0.97 (both grids); margin for generator changes
    for label, minimum in ((1, 0.92), (2, 0.93), (3, 0.93)):
        assert dice(pred, np.asarray(ph.labels), label) >= minimum, label


def test_arms_against_the_trunk_change_nothing_of_the_trunk(engine: UNetEngine) -> None:
    """Arms pressed broadly on the trunk are neither measured nor shown to the network, whose reading of
    the wall beside them they changed (phantom seed 2 before: muscle area +27 %, SAT Dice 0.91): the trunk's
    tissues come out as without the arms, in a range that holds both kinds of slice."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    from sarcoscope.phantom.artefacts import add_arms

    ph = phantom.make_slice(2, size=512)
    clean = np.asarray(ph.hu)
    both = np.stack([clean, add_arms(clean, ph.pixel_spacing)])
    without, with_arms = engine.segment(both, ph.pixel_spacing)
    muscle = np.count_nonzero(with_arms == 1) / np.count_nonzero(without == 1)
    assert muscle == pytest.approx(1.0, abs=0.01)
    for label in (1, 2, 3):
        assert dice(with_arms, without, label) >= 0.98, label


def test_a_range_is_segmented_like_each_slice_alone() -> None:
    """Batches of the network and slices refined in parallel threads give each slice's own result."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    seeds = (780, 781, 782)  # two batches of the network
    hu = np.stack([np.asarray(phantom.make_slice(seed, size=256, pixel_spacing=1.4).hu) for seed in seeds])
    together = UNetEngine(batch_size=2, threads=2).segment(hu, (1.4, 1.4))
    alone = UNetEngine(threads=1)
    for i in range(len(seeds)):
        assert np.mean(together[i] == alone.segment(hu[i][None], (1.4, 1.4))[0]) > 0.9995


def test_other_grid_sizes_and_spacings(engine: UNetEngine, shared_data: Path) -> None:
    """A 256×256 version (double spacing) and a cropped non-square, 0.5 mm version stay on their own grids."""
    from skimage.transform import resize

    hu, spacing, ref = real_slice(shared_data, "EMC100")
    full = engine.segment(hu[None], spacing)[0]
    d_full = dice(full, ref, 1)

    small_hu = resize(hu, (256, 256), order=1, anti_aliasing=True, preserve_range=True)
    small_ref = ref[::2, ::2]
    small = engine.segment(small_hu[None], (spacing[0] * 2, spacing[1] * 2))
    assert small.shape == (1, 256, 256) and small.dtype == np.uint8
    assert dice(small[0], small_ref, 1) >= d_full - 0.06

    crop = (slice(40, 480), slice(10, 500))  # 440×490: body and most of the table
    fine_hu = resize(hu[crop], (616, 686), order=1, preserve_range=True)  # 0.45 mm pixels
    fine_spacing = (spacing[0] * 440 / 616, spacing[1] * 490 / 686)
    fine = engine.segment(fine_hu[None], fine_spacing)[0]
    assert fine.shape == (616, 686)
    back = resize(fine, (440, 490), order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
    assert dice(back, ref[crop], 1) >= d_full - 0.03


#: Dice (muscle, SAT, VAT) of the shipped ensemble on the slices its second member was fine-tuned on (all
#: nine, measured 2026-12-05), rounded down, minus about 0.015.
FIT = {
    "EMC040": (0.96, 0.98, 0.96),
    "EMC041": (0.95, 0.97, 0.87),
    "EMC051": (0.96, 0.98, 0.93),
    "EMC052": (0.97, 0.98, 0.95),
    "EMC091": (0.97, 0.98, 0.96),
    "EMC100": (0.96, 0.98, 0.96),
    "EMC101": (0.97, 0.98, 0.96),
    "EMC158": (0.96, 0.98, 0.94),
    "EMC172": (0.97, 0.98, 0.95),
}


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_slices_it_was_fitted_on(
    engine: UNetEngine, raw_engine: UNetEngine, shared_data: Path, case: str
) -> None:
    """A regression guard (a broken export, input scaling or resampling shows here), not an accuracy test."""
    hu, spacing, ref = real_slice(shared_data, case)
    refined = engine.segment(hu[None], spacing)[0]
    raw = raw_engine.segment(hu[None], spacing)[0]
    assert refined.shape == ref.shape
    for label, minimum in zip((1, 2, 3), FIT[case], strict=True):
        assert dice(refined, ref, label) >= minimum, label
        assert dice(refined, ref, label) >= dice(raw, ref, label)  # HU refinement helps every tissue


def test_bad_input_and_missing_model(tmp_path: Path, engine: UNetEngine) -> None:
    with pytest.raises(SegmentationError, match="shape"):
        engine.segment(np.zeros((2, 3, 4, 5)), (1.0, 1.0))
    with pytest.raises(SegmentationError, match="positive"):
        engine.segment(np.zeros((1, 32, 32)), (0.0, 1.0))
    with pytest.raises(SegmentationError, match="NaN"):
        engine.segment(np.full((1, 32, 32), np.nan, np.float32), (1.0, 1.0))
    with pytest.raises(SegmentationError, match="model card"):
        UNetEngine(tmp_path)


def test_output_does_not_depend_on_surrounding_air(raw_engine: UNetEngine) -> None:
    """The body is placed on the training canvas, so a wider field of view (more air) changes nothing."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    ph = phantom.make_slice(778, size=384, pixel_spacing=0.9)
    hu = np.asarray(ph.hu, np.float32)
    wide = np.pad(hu, ((40, 100), (90, 30)), constant_values=-1024.0)
    a = raw_engine.segment(hu[None], ph.pixel_spacing)[0]
    b = raw_engine.segment(wide[None], ph.pixel_spacing)[0][40:-100, 90:-30]
    assert np.mean(a == b) > 0.995


def test_mirror_averaging_makes_the_engine_left_right_symmetric(engine: UNetEngine) -> None:
    """With mirror averaging (the default), a mirrored slice gives the mirrored labels (up to canvas
    rounding); one pass does not, and its model id says which it is."""
    phantom = pytest.importorskip("sarcoscope.phantom")
    ph = phantom.make_slice(779, size=512)
    hu = np.asarray(ph.hu, np.float32)
    flipped = np.ascontiguousarray(hu[:, ::-1])[None]
    a = engine.segment(hu[None], ph.pixel_spacing)[0]
    b = engine.segment(flipped, ph.pixel_spacing)[0][:, ::-1]
    one_pass = UNetEngine(mirror=False)
    c = one_pass.segment(hu[None], ph.pixel_spacing)[0]
    d = one_pass.segment(flipped, ph.pixel_spacing)[0][:, ::-1]
    assert np.mean(a == b) > 0.998
    assert np.mean(a == b) > np.mean(c == d)
    assert engine.model_id == one_pass.model_id + "+mirror"


def test_score_resampling_matches_skimage() -> None:
    from skimage.transform import resize

    from sarcoscope.segmentation.unet import _resize_linear

    scores = np.random.default_rng(0).random((2, 5, 60, 37)).astype(np.float32)
    want = resize(scores, (2, 5, 128, 90), order=1, mode="edge", anti_aliasing=False)
    assert np.abs(_resize_linear(scores, 128, 90) - want).max() < 1e-5


def test_resampling_to_the_model_grid_matches_skimage() -> None:
    from skimage.transform import resize

    spec = InputSpec(pixel_spacing_mm=0.75)
    hu = np.random.default_rng(1).uniform(-1000, 400, (2, 70, 64)).astype(np.float32)
    # coarser CT (more model pixels), finer CT (fewer: anti-aliased), and a mix of both
    for spacing, shape in (((0.8, 0.8), (75, 68)), ((0.5, 0.5), (47, 43)), ((0.9, 0.5), (84, 43))):
        grid = spec.to_model_grid(hu, spacing)
        assert grid.shape == (2, *shape)
        want = resize(hu, grid.shape, order=1, mode="edge", anti_aliasing=shape[0] < 70, preserve_range=True)
        assert np.abs(grid - want).max() < 1e-3


def test_one_session_per_model_file_per_process() -> None:
    """Issue 18: engines (web requests, batch cases, validate) share the session of a model file."""
    from sarcoscope.segmentation.unet import UNetEngine

    a, b = UNetEngine(), UNetEngine(refine=False)
    assert a._session is b._session
    assert UNetEngine(threads=1)._session is not a._session  # other session options, another session


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset VmHWM")
def test_the_networks_working_memory_is_held_once_and_handed_back() -> None:
    """Issue 18: segmenting a 512² slice twice in a fresh process raised its peak resident memory by
    about 120 MB: ONNX Runtime ran the plain and mirrored images as one batch (its working memory for
    both at once), planned a memory pattern that the second call took beside the first call's memory, and
    its arena kept all of it. Now each pass is a run of its own, without a pattern, and the arena's free
    memory is handed back after the call's last run: 45-55 MB."""
    from fresh_process import fresh_process_json

    script = """
import json, re
from sarcoscope.phantom import make_slice
from sarcoscope.segmentation.unet import UNetEngine

def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 2**10

phantom = make_slice(2, size=512)
engine = UNetEngine()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here
before = status("VmRSS")
for _ in range(2):
    engine.segment(phantom.hu[None], phantom.pixel_spacing)
print(json.dumps(status("VmHWM") - before))
"""
    assert fresh_process_json(script) < 85  # MB
