"""Model registry: installed models by id, the site default, and `use` only for a model measured better.

Models here are copies of the shipped model with edited cards (ids, comparisons), so the rule is tested on
exactly known numbers; tests/training/test_adapt.py makes the comparison by training.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.errors import SegmentationError
from sarcoscope.segmentation import get_engine
from sarcoscope.segmentation.model_files import DEFAULT_MODEL_DIR, load_model_card
from sarcoscope.segmentation.refine import REFINEMENT_VERSION
from sarcoscope.segmentation.registry import (
    COMPARISON_RULE,
    DEFAULT_POINTER,
    MODELS_DIR_ENV,
    ModelRegistry,
    RegistryError,
    build_comparison,
    chance_of_gain,
    judge,
    patient_dice_gains,
)

SHIPPED = load_model_card(DEFAULT_MODEL_DIR)["model_id"]
REFINED = f"+refine-v{REFINEMENT_VERSION}+mirror"
CASES = ("a", "b", "c", "d", "e", "f")
SPLIT = {"by": "patient", "seed": 0, "fraction": 0.2, "validation_cases": list(CASES)}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "registry"))
    return ModelRegistry()


def rows(model: str, muscle_dice: tuple[float, ...], area_err: tuple[float, ...]) -> list[dict]:
    """Validation cases a, b, ... (one patient each) scored for `model`: muscle Dice and signed muscle-area
    error (%) per case."""
    return [
        {
            "case": case,
            "patient": f"p-{case}",
            "model": model,
            "muscle_dice": d,
            "sat_dice": 0.9,
            "vat_dice": 0.9,
            "imat_dice": 0.5,
            "msv_dice": 0.9,
            "muscle_area_err_pct": e,
        }
        for case, d, e in zip(CASES, muscle_dice, area_err, strict=False)
    ]


def comparison(model: str, baseline: str, mine: list[dict], theirs: list[dict]) -> dict:
    return build_comparison(model, baseline, mine + theirs, SPLIT)


def model_copy(root: Path, model_id: str, comparison: dict | None = None) -> Path:
    """The shipped model's files under another id (and optionally a comparison in its card)."""
    folder = root / f"src-{model_id}"
    shutil.copytree(DEFAULT_MODEL_DIR, folder, ignore=shutil.ignore_patterns("*.yaml"))
    card = json.loads((folder / "model_card.json").read_text())
    card["model_id"] = model_id
    card["created_utc"] = "2027-01-01T00:00:00+00:00"
    card.pop("comparison", None)
    if comparison is not None:
        card["comparison"] = comparison
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


# six patients, each better: mean muscle Dice 0.94 against 0.925, mean |area error| 2.5 % both (p = 1/64)
BETTER = ((0.95, 0.93) * 3, (-2.0, 3.0) * 3)
BASE = ((0.93, 0.92) * 3, (4.0, -1.0) * 3)


def test_empty_registry_lists_the_shipped_model_as_the_default(registry: ModelRegistry) -> None:
    assert [m.model_id for m in registry.models()] == [SHIPPED]
    assert registry.models()[0].shipped and registry.default_id() == SHIPPED
    # the shipped ensemble's measurement against the network it was built on, as its card holds it
    assert registry.models()[0].measured().startswith("4 held-out cases: muscle Dice 0.963 vs 0.960")
    assert not registry.root.exists()  # reading never creates the folder
    assert get_engine("unet").model_id == SHIPPED + REFINED


def test_add_then_select_by_id_or_path(registry: ModelRegistry, tmp_path: Path) -> None:
    source = model_copy(tmp_path, "site-model-1")
    model = registry.add(source)
    assert model.path == registry.root / "site-model-1" and not model.shipped
    assert sorted(p.name for p in model.path.iterdir()) == [
        "MODEL_CARD.md",
        "history.png",
        "model.onnx",
        "model_card.json",
    ]
    assert [m.model_id for m in registry.models()] == [SHIPPED, "site-model-1"]
    assert registry.default_id() == SHIPPED  # adding never changes the default
    assert get_engine("unet:site-model-1").model_id == f"site-model-1{REFINED}"
    assert get_engine(f"unet-raw:{source}").model_id == "site-model-1+raw+mirror"
    with pytest.raises(RegistryError, match="already installed"):
        registry.add(source)
    with pytest.raises(RegistryError, match="nor an installed model id"):
        get_engine("unet:no-such-model")


def test_add_refuses_a_model_whose_onnx_does_not_match_its_card(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    source = model_copy(tmp_path, "tampered")
    with open(source / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(RegistryError, match="checksum"):
        registry.add(source)
    assert [m.model_id for m in registry.models()] == [SHIPPED]
    assert not registry.root.exists()  # refused before anything was copied


def test_add_refuses_a_model_whose_folder_holds_something_else(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    # a folder of the model's id that is no model (its card missing or naming another id) ended `models add`
    # with "internal error: OSError: Directory not empty"
    taken = registry.root / "m-taken"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match=r"m-taken exists and is not that model"):
        registry.add(model_copy(tmp_path, "m-taken"))
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in registry.root.iterdir()) == ["m-taken"]  # no copy left behind


@pytest.mark.parametrize(
    ("mine", "theirs", "baseline", "reason"),
    [
        (None, None, SHIPPED, "records no comparison"),
        (rows("new", *BETTER), rows("other", *BASE), "other", "compared with other"),
        (rows("new", (0.92,) * 6, (1.0,) * 6), rows(SHIPPED, *BASE), SHIPPED, "muscle Dice 0.920 vs 0.925"),
        (rows("new", BETTER[0], (4.0, 3.0) * 3), rows(SHIPPED, *BASE), SHIPPED, "3.50% vs 2.50%"),
        (rows("new", *BETTER)[:1], rows(SHIPPED, *BASE), SHIPPED, "same validation cases"),
        # a higher mean from two patients much better and four a little worse: p = 0.25, luck
        (
            rows("new", (0.99, 0.99, 0.92, 0.91, 0.92, 0.91), BETTER[1]),
            rows(SHIPPED, *BASE),
            SHIPPED,
            "p = 0.250 over 6 patient(s)",
        ),
        # every patient better, but two patients cannot show it beyond chance (p = 1/4 at best)
        (rows("new", *BETTER)[:2], rows(SHIPPED, *BASE)[:2], SHIPPED, "2 validation patient(s) cannot show"),
    ],
    ids=[
        "no-comparison",
        "other-baseline",
        "lower-dice",
        "larger-area-error",
        "other-cases",
        "chance",
        "few",
    ],
)
def test_use_refuses_a_model_not_measured_better_than_the_default(
    registry: ModelRegistry,
    tmp_path: Path,
    mine: list | None,
    theirs: list | None,
    baseline: str,
    reason: str,
) -> None:
    comp = None if mine is None else comparison("new", baseline, mine, theirs or [])
    registry.add(model_copy(tmp_path, "new", comp))
    with pytest.raises(RegistryError, match="Not switching") as err:
        registry.use("new")
    assert reason in str(err.value) and "--force" in str(err.value)
    assert registry.default_id() == SHIPPED and not (registry.root / DEFAULT_POINTER).exists()


def test_use_accepts_a_better_model_and_the_unet_engine_follows(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    # equal mean |area error| (2.5 %) with a higher muscle Dice is better by the rule
    registry.add(
        model_copy(
            tmp_path, "better", comparison("better", SHIPPED, rows("better", *BETTER), rows(SHIPPED, *BASE))
        )
    )
    verdict = registry.use("better")
    assert verdict.better and "mean muscle Dice 0.940 vs 0.925" in verdict.reasons
    pointer = json.loads((registry.root / DEFAULT_POINTER).read_text())
    assert pointer["model_id"] == "better" and pointer["previous"] == SHIPPED and not pointer["forced"]
    assert get_engine("unet").model_id == f"better{REFINED}"  # reports record the exact model
    # a second model compared with the shipped one is no longer compared with the default
    registry.add(
        model_copy(
            tmp_path, "later", comparison("later", SHIPPED, rows("later", *BETTER), rows(SHIPPED, *BASE))
        )
    )
    with pytest.raises(RegistryError, match="current default is better"):
        registry.use("later")


def test_force_switches_with_a_warning(
    registry: ModelRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry.add(model_copy(tmp_path, "unmeasured"))
    with caplog.at_level(logging.WARNING, logger="sarcoscope.segmentation.registry"):
        verdict = registry.use("unmeasured", force=True)
    assert not verdict.better and registry.default_id() == "unmeasured"
    assert "Forced: unmeasured becomes the default" in caplog.text
    assert json.loads((registry.root / DEFAULT_POINTER).read_text())["forced"] is True


def test_remove_refuses_the_shipped_model_and_the_default(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.add(model_copy(tmp_path, "one"))
    registry.add(model_copy(tmp_path, "two"))
    registry.use("one", force=True)
    with pytest.raises(RegistryError, match="shipped model"):
        registry.remove(SHIPPED)
    with pytest.raises(RegistryError, match="is the site default"):
        registry.remove("one")
    registry.remove("two")
    assert [m.model_id for m in registry.models()] == [SHIPPED, "one"]
    assert sorted(p.name for p in registry.root.iterdir()) == [DEFAULT_POINTER, "one"]
    # a default removed behind the registry's back is an error that says what to do
    shutil.rmtree(registry.root / "one")
    with pytest.raises(RegistryError, match="not installed; choose another"):
        get_engine("unet")


def test_judge_recomputes_the_verdict_from_the_cases() -> None:
    comp = comparison("new", SHIPPED, rows("new", *BETTER), rows(SHIPPED, *BASE))
    assert comp["better"] and comp["means"]["new"]["muscle_dice"] == pytest.approx(0.94)
    comp["cases"][0]["muscle_dice"] = 0.5  # a card edited by hand cannot claim what its numbers do not show
    assert comp["better"] and not judge(comp, "new", SHIPPED).better
    assert not judge(comp, "someone-else").better


def test_the_gain_must_be_beyond_chance_over_patients_not_slices() -> None:
    # exact sign-flip p-values: every one of n patients better gives 1/2**n; no gain, or none to test, 1
    assert chance_of_gain([0.01] * 5) == pytest.approx(1 / 32)
    assert chance_of_gain([0.0] * 5) == chance_of_gain([]) == chance_of_gain([-0.01]) == 1.0
    assert chance_of_gain([0.01]) == 0.5
    # with two worse: 7 of the 64 sign patterns (flipping at most 0.03 of the gains) give as much
    assert chance_of_gain([0.05, 0.04, -0.01, 0.02, 0.03, -0.02]) == pytest.approx(7 / 64)
    # beyond EXACT_PATIENTS, seeded draws: the same verdict every time it is recomputed
    many = [0.01, -0.002] * 10
    assert chance_of_gain(many) == chance_of_gain(many) < 0.01
    # six slices of three patients (two each, both better) are three patients' evidence: 1/8, not 1/64
    mine, theirs = rows("new", *BETTER), rows(SHIPPED, *BASE)
    assert judge(comparison("new", SHIPPED, mine, theirs), "new").better
    for row in mine + theirs:
        row["patient"] = {"a": "p1", "b": "p1", "c": "p2", "d": "p2"}.get(row["case"], "p3")
    gains = patient_dice_gains(comparison("new", SHIPPED, mine, theirs), "new", SHIPPED)
    assert gains == pytest.approx([0.015, 0.015, 0.015])
    verdict = judge(comparison("new", SHIPPED, mine, theirs), "new")
    assert not verdict.better and "p = 0.125 over 3 patient(s)" in "; ".join(verdict.reasons)


def test_a_card_of_an_earlier_rule_is_judged_by_the_rule_of_now(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    # a card written when a higher mean on two patients was enough says "better"; the registry (`use`, the
    # web app's model list) judges its numbers again
    comp = comparison("old", SHIPPED, rows("old", *BETTER)[:2], rows(SHIPPED, *BASE)[:2])
    comp["better"] = True
    registry.add(model_copy(tmp_path, "old", comp))
    summary = registry.get("old").comparison_summary()
    assert summary is not None and not summary["better"] and summary["rule"] == COMPARISON_RULE
    assert summary["means"]["old"]["muscle_dice"] == pytest.approx(0.94)
    assert any("cannot show a gain beyond chance" in r for r in summary["reasons"])
    with pytest.raises(RegistryError, match="Not switching"):
        registry.use("old")
    assert registry.get(SHIPPED).comparison_summary() is None  # the shipped ensemble's card has none
    runner = CliRunner()
    for command in (["models", "list"], ["models", "show", "old"]):
        result = runner.invoke(app, command, env={"COLUMNS": "200"})
        assert result.exit_code == 0 and f"against {SHIPPED}, by the rule of now: not better" in result.output


def test_cli_models_commands(registry: ModelRegistry, tmp_path: Path) -> None:
    runner = CliRunner()
    source = model_copy(tmp_path, "cli-model")
    result = runner.invoke(app, ["models", "add", str(source)])
    assert result.exit_code == 0 and "Installed cli-model" in result.output
    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "80"})  # a terminal's usual width
    assert listed.exit_code == 0 and SHIPPED in listed.output and "cli-model" in listed.output
    said = " ".join(listed.output.split())
    for m in registry.models():  # whole, not cut to a column of a few letters
        assert f"training data: {m.training_summary()}" in said and f"measured: {m.measured()}" in said
    refused = runner.invoke(app, ["models", "use", "cli-model"])
    assert refused.exit_code == 1 and "Not switching" in refused.output
    assert "Traceback" not in refused.output
    forced = runner.invoke(app, ["models", "use", "cli-model", "--force"])
    assert forced.exit_code == 0 and "forced: not measured better" in forced.output
    shown = runner.invoke(app, ["models", "show", "cli-model"])
    assert shown.exit_code == 0 and "# Model card: " in shown.output
    for args, message in (
        (["models", "remove", "cli-model"], "is the site default"),
        (["models", "remove", SHIPPED], "shipped model"),
        (["models", "show", "nothing"], "No installed model 'nothing'"),
        (["models", "add", str(tmp_path / "missing")], "No U-Net model card"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)


def without_pixel_spacing(card: dict) -> dict:
    """The card without the field the engine's and fine-tuning's input settings start from."""
    del card["input"]["pixel_spacing_mm"]
    return card


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda card: 5, "it holds int 5, not a JSON object"),
        (lambda card: {k: v for k, v in card.items() if k != "architecture"}, "'architecture' is missing"),
        (without_pixel_spacing, "'input.pixel_spacing_mm' is missing"),
        (lambda card: card | {"input": card["input"] | {"hu_window": [350, -250]}}, "'input.hu_window' must"),
        (
            lambda card: card | {"input": card["input"] | {"size_multiple": "32"}},
            "'input.size_multiple' must",
        ),
        (
            lambda card: card | {"architecture": card["architecture"] | {"channels": ["8", "16"]}},
            "'architecture.channels' must",
        ),
        (lambda card: card | {"files": "model.onnx"}, "'files' must be an object"),
        (lambda card: card | {"model_id": 7}, "'model_id' must be a non-empty text"),
    ],
    ids=[
        "number",
        "no-architecture",
        "no-pixel-spacing",
        "hu-window",
        "size-multiple",
        "channels",
        "files",
        "id",
    ],
)
def test_malformed_model_cards_are_named_not_crashes(
    registry: ModelRegistry, tmp_path: Path, edit, problem: str
) -> None:
    folder = model_copy(tmp_path, "malformed")
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps(edit(card)))
    with pytest.raises(SegmentationError, match="not a usable sarcoscope model card") as err:
        load_model_card(folder)
    assert str(folder / "model_card.json") in str(err.value) and problem in str(err.value)
    with pytest.raises(SegmentationError, match=re.escape(problem)):
        get_engine(f"unet:{folder}")
    with pytest.raises(SegmentationError, match=re.escape(problem)):
        registry.add(folder)
    result = CliRunner().invoke(app, ["models", "add", str(folder)], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and problem in result.output, result.output
    assert not registry.root.exists()


def test_use_replaces_a_damaged_default_pointer(
    registry: ModelRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry.add(model_copy(tmp_path, "one"))
    registry.use("one", force=True)
    pointer = registry.root / DEFAULT_POINTER
    for damaged in ('{"model_id": "sarco', '{"model_id": 5}', "[]"):
        pointer.write_text(damaged)
        with pytest.raises(RegistryError, match="models use ID --force"):
            registry.default_id()
        # the command the error recommends repairs it: measured-better is unknowable, so --force is asked
        with pytest.raises(RegistryError, match="not measured better than a known default"):
            registry.use(SHIPPED)
        with caplog.at_level(logging.WARNING, logger="sarcoscope.segmentation.registry"):
            verdict = registry.use(SHIPPED, force=True)
        assert "was damaged (the previous default is unknown)" in caplog.text
        assert not verdict.better and "the previous default is unknown" in verdict.reasons
        assert registry.default_id() == SHIPPED
        saved = json.loads(pointer.read_text())
        assert saved["previous"] is None and saved["forced"] is True
    pointer.write_text('{"model_id": "sarco')
    result = CliRunner().invoke(app, ["models", "use", "one", "--force"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and registry.default_id() == "one", result.output


def test_cli_use_force_renders_its_note_instead_of_printing_markup(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    registry.add(model_copy(tmp_path, "forced-model"))
    result = CliRunner().invoke(app, ["models", "use", "forced-model", "--force"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "forced-model (forced: not measured better):" in result.output
    assert "[yellow]" not in result.output and "[/]" not in result.output, result.output
