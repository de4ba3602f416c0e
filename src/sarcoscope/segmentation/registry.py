"""The model registry: installed U-Net models by id, and which one is this site's default.

A model is the "unet" engine's data (model.onnx + model_card.json), so the registry lives beside the engine.
Registry folder: `SARCOSCOPE_MODELS_DIR`, else the user's data folder (platformdirs; on Linux
`~/.local/share/sarcoscope/models`)::

    <root>/<model_id>/model.onnx, model_card.json, MODEL_CARD.md, history.png   one folder per model
    <root>/default.json     {"model_id": ..., "set_utc": ..., "previous": ..., "forced": ...}

The shipped model (inside the package, read-only) is always listed and cannot be removed; without
default.json it is the default. `get_engine("unet")` segments with the default, `unet:ID` with an installed
model, `unet:PATH` with a model folder anywhere; reports record the exact model id either way.

A site changes its default with `use`, which accepts a model only when its card records a comparison with the
*current* default on one validation split (the same cases for both) in which it is better by COMPARISON_RULE.
`sarcoscope train --from-store` writes such a comparison (sarcoscope.training.adapt).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarcoscope.errors import SegmentationError
from sarcoscope.fileio import atomic_write_text
from sarcoscope.segmentation.model_files import (
    CARD_FILE,
    CARD_MD_FILE,
    DEFAULT_MODEL_DIR,
    load_model_card,
    model_onnx_path,
)

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "SARCOSCOPE_MODELS_DIR"
DEFAULT_POINTER = "default.json"
#: Files copied into the registry besides the ONNX file the card names (history.png only when present).
_COPIED = (CARD_FILE, CARD_MD_FILE, "history.png")
#: Model ids become folder names: letters, digits and . _ + - only.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

#: Metrics recorded per case and model in a comparison (validation.metrics.case_metrics keys).
COMPARISON_METRICS = ("muscle_dice", "sat_dice", "vat_dice", "imat_dice", "msv_dice", "muscle_area_err_pct")
#: A gain may be chance at most this often (one-sided) to count: the paired test of COMPARISON_RULE.
CHANCE_LEVEL = 0.05
#: Up to this many validation patients the paired test is exact (2**n sign patterns); above, seeded draws.
EXACT_PATIENTS = 16
#: The fewest validation patients that can show a gain beyond chance: every one better gives 0.5**n.
MIN_PATIENTS = next(n for n in range(1, 64) if 0.5**n <= CHANCE_LEVEL)
COMPARISON_RULE = (
    "A model is better than the current default when, on the same validation cases (held out by patient), "
    "its mean muscle Dice is higher, its mean absolute muscle-area error (%) is not higher, and the Dice "
    "gain is beyond chance: a paired sign-flip test over the validation patients (each one's mean "
    f"difference) gives a gain at least as large by chance at most {CHANCE_LEVEL:.0%} of the time, which "
    f"takes at least {MIN_PATIENTS} patients."
)


class RegistryError(SegmentationError):
    """A registry request that cannot be carried out (unknown id, refused switch, protected model...)."""


def models_dir() -> Path:
    """The registry folder: $SARCOSCOPE_MODELS_DIR, else `<user data dir>/sarcoscope/models`."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("sarcoscope", appauthor=False) / "models"


@dataclass(frozen=True)
class InstalledModel:
    """One model of the registry: its folder and card; `shipped` marks the package's own model."""

    model_id: str
    path: Path
    card: dict[str, Any]
    shipped: bool

    @property
    def created(self) -> str:
        return str(self.card.get("created_utc", ""))

    def comparison_summary(self) -> dict[str, Any] | None:
        """Its card's comparison with the previous default, judged by COMPARISON_RULE as `use` judges it now
        (a card written under an earlier rule keeps its numbers, not its verdict); None without one."""
        comparison = self.card.get("comparison")
        if not comparison:
            return None
        verdict, baseline = judge(comparison, self.model_id), comparison.get("baseline")
        return {
            "baseline": baseline,
            "means": {m: comparison_means(comparison, m) for m in (self.model_id, baseline)},
            "better": verdict.better,
            "reasons": verdict.reasons,
            "rule": COMPARISON_RULE,
        }

    def training_summary(self) -> str:
        """What it learnt from, in one line (real slices and patients, phantoms, its starting model)."""
        data = self.card.get("training_data", {})
        train = data.get("train", {})
        parts = [f"{train.get('data_slices', 0)} real slices ({len(train.get('data_cases', []))} cases)"]
        if data.get("phantoms"):
            parts.append(f"{data['phantoms']} phantoms")
        text = " + ".join(parts)
        if data.get("initialised_from"):
            text += f", fine-tuned from {data['initialised_from']}"
        return text

    def measured(self) -> str:
        """Its measured validation: the comparison with the previous default when the card has one (an
        ensemble's, training.ensemble, compares its held-out folds with the network it was built on)."""
        comparison = self.card.get("comparison") or self.card.get("ensemble_comparison")
        if comparison:
            mine = comparison_means(comparison, comparison["candidate"])
            base = comparison_means(comparison, comparison["baseline"])
            n = len(comparison["split"]["validation_cases"])
            return (
                f"{n} held-out cases: muscle Dice {_fmt(mine['muscle_dice'])} vs "
                f"{_fmt(base['muscle_dice'])}, |muscle area error| "
                f"{_fmt(mine['muscle_abs_area_err_pct'], 1)}% vs {_fmt(base['muscle_abs_area_err_pct'], 1)}% "
                f"(previous: {comparison['baseline']})"
            )
        v = self.card.get("validation", {})
        dice = v.get("val_dice", {})
        if not dice:
            return "-"
        return (
            "early-stopping set (network output): Dice "
            + " / ".join(f"{_fmt(dice.get(t))}" for t in ("muscle", "sat", "vat", "imat"))
            + " (muscle / SAT / VAT / IMAT)"
        )


@dataclass(frozen=True)
class Verdict:
    """Whether a model may become the default: `better` by COMPARISON_RULE, and why (or why not)."""

    better: bool
    reasons: list[str]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _plain(value: float) -> float | None:
    """A JSON-safe number (NaN, e.g. the area error of a case without muscle, becomes null)."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


def build_comparison(
    candidate: str, baseline: str, rows: list[dict[str, Any]], split: dict[str, Any]
) -> dict[str, Any]:
    """The card's `comparison`: per case and model the COMPARISON_METRICS, the split, the rule and verdict.

    `rows` hold "case", "model" (one of the two ids), optional "patient", and case_metrics keys.
    """
    cases = [
        {"case": r["case"], "patient": r.get("patient"), "model": r["model"]}
        | {k: _plain(r[k]) for k in COMPARISON_METRICS}
        for r in rows
    ]
    comparison = {
        "candidate": candidate,
        "baseline": baseline,
        "split": split,
        "cases": cases,
        "rule": COMPARISON_RULE,
    }
    verdict = judge(comparison, candidate)
    return comparison | {
        "means": {m: comparison_means(comparison, m) for m in (candidate, baseline)},
        "better": verdict.better,
        "reasons": verdict.reasons,
    }


def comparison_means(comparison: dict[str, Any], model_id: str) -> dict[str, float | None]:
    """Mean of each metric over the model's cases, and the mean absolute muscle-area error (%)."""
    rows = [r for r in comparison["cases"] if r["model"] == model_id]

    def mean(values: list[float | None]) -> float | None:
        finite = [v for v in values if v is not None]
        return float(np.mean(finite)) if finite else None

    out = {k: mean([r[k] for r in rows]) for k in COMPARISON_METRICS}
    errors = [r["muscle_area_err_pct"] for r in rows]
    out["muscle_abs_area_err_pct"] = mean([abs(e) if e is not None else None for e in errors])
    return out


def judge(comparison: dict[str, Any] | None, model_id: str, current_default: str | None = None) -> Verdict:
    """Apply COMPARISON_RULE to a card's comparison, recomputed from its per-case numbers.

    With `current_default`, the comparison must also have been made against that model.
    """
    if not comparison:
        return Verdict(False, ["its model card records no comparison with the default model"])
    baseline = comparison.get("baseline")
    if comparison.get("candidate") != model_id:
        return Verdict(False, [f"its comparison is of model {comparison.get('candidate')}, not of itself"])
    if current_default is not None and baseline != current_default:
        return Verdict(
            False, [f"it was compared with {baseline}, but the current default is {current_default}"]
        )
    cases = comparison.get("cases", [])
    mine = sorted(r["case"] for r in cases if r["model"] == model_id)
    theirs = sorted(r["case"] for r in cases if r["model"] == baseline)
    if not mine or mine != theirs:
        return Verdict(False, ["the comparison does not score both models on the same validation cases"])
    new, old = comparison_means(comparison, model_id), comparison_means(comparison, baseline)
    values = [m[k] for k in ("muscle_dice", "muscle_abs_area_err_pct") for m in (new, old)]
    reasons = [
        f"mean muscle Dice {_fmt(values[0])} vs {_fmt(values[1])}",
        f"mean |muscle area error| {_fmt(values[2], 2)}% vs {_fmt(values[3], 2)}%",
        f"on {len(mine)} validation case(s)",
    ]
    if any(v is None for v in values):
        return Verdict(False, [*reasons, "a mean could not be computed"])
    dice_new, dice_old, err_new, err_old = (float(v) for v in values)  # type: ignore[arg-type]
    gains = patient_dice_gains(comparison, model_id, baseline)
    chance = _chance_of_gain_once(tuple(gains))
    reasons.append(
        f"a muscle Dice gain this large by chance: p = {chance:.3f} over {len(gains)} patient(s) (paired "
        f"sign-flip test; beyond chance at p <= {CHANCE_LEVEL})"
    )
    if len(gains) < MIN_PATIENTS:
        reasons.append(
            f"{len(gains)} validation patient(s) cannot show a gain beyond chance, however large: hold out "
            f"at least {MIN_PATIENTS}"
        )
    return Verdict(dice_new > dice_old and err_new <= err_old and chance <= CHANCE_LEVEL, reasons)


def patient_dice_gains(comparison: dict[str, Any], model_id: str, baseline: str) -> list[float]:
    """Per validation patient (a case without one is its own), the mean over its cases of the muscle Dice of
    `model_id` minus the `baseline`'s: a patient's slices are not independent evidence, the patients are."""
    scores = {(r["case"], r["model"]): r["muscle_dice"] for r in comparison["cases"]}
    by_patient: dict[str, list[float]] = {}
    for r in comparison["cases"]:
        new, old = scores.get((r["case"], model_id)), scores.get((r["case"], baseline))
        if r["model"] == model_id and new is not None and old is not None:
            by_patient.setdefault(r.get("patient") or f"case {r['case']}", []).append(new - old)
    return [float(np.mean(v)) for _, v in sorted(by_patient.items())]


@functools.lru_cache(maxsize=256)
def _chance_of_gain_once(gains: tuple[float, ...]) -> float:
    """chance_of_gain, computed once per process for each set of gains: the exact test over 16 patients takes
    about 0.25 s, and GET /api/models (asked when the L3 view opens) and `models list` judge every card."""
    return chance_of_gain(list(gains))


def chance_of_gain(gains: list[float]) -> float:
    """How often a mean gain at least as large as `gains`' arises by chance when the two models segment
    alike (one-sided p of a paired sign-flip permutation test; exact up to EXACT_PATIENTS, else 20,000 draws
    from a fixed seed, so a card's verdict can be recomputed). 1.0 without patients.

    Why: two trainings of one recipe differ by 0.005-0.01 mean muscle Dice on nine slices
    (docs/validation/accuracy-notes.md), so a higher mean alone would let a site switch to a model that is
    better by luck up to half the time."""
    if len(gains) < 2:  # scipy's test needs two; one patient's two sign patterns, directly
        return 0.5 if gains and gains[0] > 0 else 1.0
    from scipy import stats

    exact = len(gains) <= EXACT_PATIENTS
    test = stats.permutation_test(
        (np.asarray(gains, dtype=float),),
        np.mean,
        permutation_type="samples",
        alternative="greater",
        n_resamples=np.inf if exact else 20_000,
        rng=None if exact else 0,
    )
    return float(test.pvalue)


class ModelRegistry:
    """Installed models under `root` (default: models_dir()) plus the shipped one; the site default."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else models_dir()

    # -- reading ----------------------------------------------------------------------------------------
    def shipped(self) -> InstalledModel:
        card = load_model_card(DEFAULT_MODEL_DIR)
        return InstalledModel(str(card["model_id"]), DEFAULT_MODEL_DIR, card, shipped=True)

    def models(self) -> list[InstalledModel]:
        """The shipped model first, then the installed ones, oldest first."""
        installed = []
        if self.root.is_dir():
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and _ID_RE.match(p.name)):
                try:
                    card = load_model_card(folder)
                except SegmentationError as exc:
                    log.warning("Skipping %s in the model registry: %s", folder, exc)
                    continue
                installed.append(InstalledModel(str(card["model_id"]), folder, card, shipped=False))
        installed.sort(key=lambda m: (m.created, m.model_id))
        return [self.shipped(), *installed]

    def get(self, model_id: str) -> InstalledModel:
        models = self.models()
        for model in models:
            if model.model_id == model_id:
                return model
        raise RegistryError(
            f"No installed model '{model_id}'. Installed: {', '.join(m.model_id for m in models)}."
        )

    def default_id(self) -> str:
        """The site default's id: default.json's model, else the shipped model's."""
        pointer = self.root / DEFAULT_POINTER
        if not pointer.is_file():
            return self.shipped().model_id
        try:
            model_id = json.loads(pointer.read_text(encoding="utf-8"))["model_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"The site default pointer {pointer} is unreadable ({exc}); "
                "set it again with `sarcoscope models use ID --force`."
            ) from None
        if not isinstance(model_id, str) or not _ID_RE.match(model_id):
            raise RegistryError(
                f"The site default pointer {pointer} names no model id ({model_id!r}); "
                "set it again with `sarcoscope models use ID --force`."
            )
        return model_id

    def default(self) -> InstalledModel:
        model_id = self.default_id()
        try:
            return self.get(model_id)
        except RegistryError:
            raise RegistryError(
                f"The site default model {model_id} (named in {self.root / DEFAULT_POINTER}) is not "
                "installed; choose another with `sarcoscope models use ID`."
            ) from None

    def resolve(self, spec: str | Path | None) -> Path:
        """The folder of a model: None = the site default, an installed model id, or a model folder path
        (or its .onnx file)."""
        if spec is None:
            return self.default().path
        text = str(spec)
        if _ID_RE.match(text):
            for model in self.models():
                if model.model_id == text:
                    return model.path
        path = Path(spec)
        folder = path.parent if path.suffix == ".onnx" else path
        if not folder.exists():
            raise RegistryError(
                f"'{text}' is neither a model folder (model.onnx and its model card) nor an installed model "
                "id (`sarcoscope models list` shows the installed ones)."
            )
        return folder

    # -- changing ---------------------------------------------------------------------------------------
    def add(self, source: str | Path) -> InstalledModel:
        """Copy a model folder (from `sarcoscope train`) into the registry under its card's id.

        The copy is checked (ONNX checksum against the card, the model loads) before it appears, in one
        rename, so the registry never holds half a model.
        """
        from sarcoscope.segmentation.unet import UNetEngine

        folder = Path(source)
        folder = folder.parent if folder.suffix == ".onnx" else folder
        card = load_model_card(folder)
        model_id = str(card["model_id"])
        if not _ID_RE.match(model_id):
            raise RegistryError(f"Model id '{model_id}' in {folder / CARD_FILE} is not a usable name.")
        if any(m.model_id == model_id for m in self.models()):
            raise RegistryError(f"A model with id {model_id} is already installed.")
        if os.path.lexists(self.root / model_id):  # listed above if it held a model of that id
            raise RegistryError(
                f"{self.root / model_id} exists and is not that model (no model card of id {model_id}); "
                "move or remove it, then add the model again."
            )
        onnx = model_onnx_path(folder, card)
        expected = card.get("files", {}).get("sha256")
        if expected and hashlib.sha256(onnx.read_bytes()).hexdigest() != expected:
            raise RegistryError(f"{onnx} does not match the checksum in its model card; refusing to install.")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".adding-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            shutil.copy2(onnx, tmp / onnx.name)
            for name in _COPIED:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, tmp / name)
            UNetEngine(tmp, threads=1)  # loads: a broken ONNX file fails here, not at its first use
            os.replace(tmp, self.root / model_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("Installed model %s in %s", model_id, self.root)
        return self.get(model_id)

    def use(self, model_id: str, force: bool = False) -> Verdict:
        """Make `model_id` the site default if it is measured better than the current one (or `force`).

        Raises RegistryError with the reasons when it is not; returns the verdict otherwise.
        """
        model = self.get(model_id)
        damaged = False
        try:
            current: str | None = self.default_id()
        except RegistryError:  # a damaged pointer: the one this call rewrites (its error sends users here)
            current, damaged = None, True
        if model_id == current:
            return Verdict(True, [f"{model_id} is already the default"])
        # a damaged pointer names no current default: the card's own comparison is all there is to judge
        verdict = judge(model.card.get("comparison"), model_id, current)
        if damaged:
            verdict = Verdict(verdict.better, [*verdict.reasons, "the previous default is unknown"])
        if not verdict.better and not force:
            against = f"the current default {current}" if current else "a known default"
            raise RegistryError(
                f"Not switching the default to {model_id}: it is not measured better than {against} "
                f"({'; '.join(verdict.reasons)}). {COMPARISON_RULE} Use --force to switch anyway."
            )
        if damaged:
            log.warning(
                "The site default pointer %s was damaged (the previous default is unknown); it now names %s.",
                self.root / DEFAULT_POINTER,
                model_id,
            )
        if not verdict.better:
            log.warning(
                "Forced: %s becomes the default without being measured better than %s (%s).",
                model_id,
                current or "the unknown previous default",
                "; ".join(verdict.reasons),
            )
        self.root.mkdir(parents=True, exist_ok=True)
        pointer = {
            "model_id": model_id,
            "set_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "previous": current,
            "forced": not verdict.better,
            "reasons": verdict.reasons,
        }
        atomic_write_text(self.root / DEFAULT_POINTER, json.dumps(pointer, indent=2) + "\n")
        return verdict

    def remove(self, model_id: str) -> None:
        """Delete an installed model; the shipped model and the current default are refused."""
        model = self.get(model_id)
        if model.shipped:
            raise RegistryError(f"{model_id} is the shipped model; it cannot be removed.")
        if model_id == self.default_id():
            raise RegistryError(
                f"{model_id} is the site default; make another model the default first (`models use`)."
            )
        # renamed first, so that a failed deletion never leaves something that looks like a model
        doomed = self.root / f".removing-{uuid.uuid4().hex}"
        os.replace(model.path, doomed)
        shutil.rmtree(doomed)
        log.info("Removed model %s from %s", model_id, self.root)
