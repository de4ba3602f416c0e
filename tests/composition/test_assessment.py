"""SMI/BMI, every cutoff set at its boundaries, and the "not computed" reasons."""

from __future__ import annotations

import numpy as np
import pytest

from sarcoscope.composition import PatientInfo, assess, available_cutoff_sets, load_cutoffs, measure_slice
from sarcoscope.composition.measure import SliceComposition
from sarcoscope.conventions import Label
from sarcoscope.errors import CompositionError
from sarcoscope.imaging.volume import CTMetadata

# DESIGN.md's table, restated independently of cutoffs.yaml: (set, sex, BMI) -> SMI cutoff (cm²/m²).
SMI_CUTOFFS = [
    ("prado2008", "M", None, 52.4),
    ("prado2008", "F", None, 38.5),
    ("martin2013", "M", 24.99, 43.0),
    ("martin2013", "M", 25.0, 53.0),  # BMI exactly 25 belongs to "BMI ≥ 25"
    ("martin2013", "F", 22.0, 41.0),
    ("martin2013", "F", 31.0, 41.0),
    ("derstine2018", "M", None, 45.4),
    ("derstine2018", "F", None, 34.4),
    ("yoon2021_2sd", "M", None, 39.33),
    ("yoon2021_2sd", "F", None, 27.77),
    ("yoon2021_p5", "M", None, 40.96),
    ("yoon2021_p5", "F", None, 30.60),
]
MYO_CUTOFFS = [
    ("martin2013", "M", 24.99, 41.0),
    ("martin2013", "F", 24.99, 41.0),
    ("martin2013", "M", 25.0, 33.0),
    ("martin2013", "F", 30.0, 33.0),
    ("derstine2018", "M", None, 38.5),
    ("derstine2018", "F", None, 34.3),
]


def _composition(muscle_px: int, muscle_hu: float = 40.0) -> SliceComposition:
    """Muscle of `muscle_px` 1-mm² pixels (0.01 cm² each) at a constant HU, plus some fat."""
    hu = np.full((200, 200), -100.0)
    lab = np.zeros((200, 200), np.uint8)
    flat = lab.reshape(-1)
    flat[:muscle_px] = Label.MUSCLE
    hu.reshape(-1)[:muscle_px] = muscle_hu
    flat[-500:] = Label.SAT
    return measure_slice(hu, lab, (1.0, 1.0))


def test_shipped_sets_match_design() -> None:
    assert available_cutoff_sets() == [
        "prado2008",
        "martin2013",
        "derstine2018",
        "yoon2021_2sd",
        "yoon2021_p5",
    ]
    table = load_cutoffs()
    assert set(table.myosteatosis) == {"martin2013", "derstine2018"}
    for s in [*table.sarcopenia.values(), *table.myosteatosis.values()]:
        assert s.citation and s.population and s.l3_convention and s.definition


@pytest.mark.parametrize(("set_id", "sex", "bmi", "cutoff"), SMI_CUTOFFS)
def test_smi_boundaries(set_id: str, sex: str, bmi: float | None, cutoff: float) -> None:
    """Height 1 m makes SMI == muscle area; pixels of 0.01 cm² put SMI exactly on, below and above."""
    weight = bmi if bmi is not None else 70.0  # BMI = weight at height 1 m
    patient = PatientInfo(height_m=1.0, weight_kg=weight, sex=sex)
    px = round(cutoff * 100)
    for n, expected in ((px, False), (px - 1, True), (px + 1, False)):
        c = assess(_composition(n), patient).sarcopenia[set_id]
        assert c.computed, c.reason
        assert c.cutoff == cutoff
        assert c.value == pytest.approx(n / 100)
        assert c.flagged is expected, (set_id, sex, bmi, n)


@pytest.mark.parametrize(("set_id", "sex", "bmi", "cutoff"), MYO_CUTOFFS)
def test_myosteatosis_boundaries(set_id: str, sex: str, bmi: float | None, cutoff: float) -> None:
    patient = PatientInfo(height_m=1.0, weight_kg=bmi if bmi is not None else 70.0, sex=sex)
    for hu, expected in ((cutoff, False), (cutoff - 0.1, True), (cutoff + 0.1, False)):
        c = assess(_composition(5000, hu), patient).myosteatosis[set_id]
        assert c.cutoff == cutoff
        assert c.flagged is expected, (set_id, sex, bmi, hu)


def test_smi_bmi_values_and_selected_set() -> None:
    a = assess(_composition(14_000), PatientInfo(height_m=1.75, weight_kg=70.0, sex="F"), "prado2008")
    assert a.smi.value == pytest.approx(140.0 / 1.75**2)
    assert a.bmi.value == pytest.approx(70 / 1.75**2)
    assert a.cutoff_set == "prado2008" and a.selected.set.id == "prado2008"
    assert [c.selected for c in a.sarcopenia.values()] == [True, False, False, False, False]
    assert a.as_dict()["smi"] == {"status": "computed", "value": a.smi.value, "unit": "cm²/m²"}
    assert assess(_composition(100), PatientInfo()).cutoff_set == "martin2013"  # the file's default
    with pytest.raises(CompositionError, match="Unknown cutoff set 'nope'"):
        assess(_composition(100), PatientInfo(), "nope")


def test_missing_inputs_are_not_computed_with_reasons() -> None:
    comp = _composition(15_000)
    a = assess(comp, PatientInfo(sex="M"))
    assert a.smi.as_dict() == {
        "status": "not computed",
        "reason": "height unknown: pass --height-cm or PatientSize in DICOM",
    }
    assert all(not c.computed and "height unknown" in c.reason for c in a.sarcopenia.values())
    assert "weight unknown" in a.bmi.reason and "height unknown" in a.bmi.reason
    assert a.myosteatosis["derstine2018"].computed  # needs sex only
    assert "BMI unknown" in a.myosteatosis["martin2013"].reason

    a = assess(comp, PatientInfo(height_m=1.7))  # sex unknown
    assert all("sex unknown" in c.reason for c in a.sarcopenia.values())
    assert "sex unknown" in a.myosteatosis["derstine2018"].reason
    assert a.as_dict()["sarcopenia"][0]["status"] == "not computed"

    a = assess(comp, PatientInfo(height_m=1.7, sex="F"))  # Martin needs BMI for men only
    assert a.sarcopenia["martin2013"].computed and a.sarcopenia["martin2013"].rule == "women"
    a = assess(comp, PatientInfo(height_m=1.7, sex="M"))
    assert a.sarcopenia["martin2013"].reason.startswith("BMI unknown (weight unknown")
    assert a.sarcopenia["prado2008"].computed

    empty = measure_slice(np.zeros((5, 5)), np.zeros((5, 5), np.uint8), (1.0, 1.0))
    a = assess(empty, PatientInfo(height_m=1.7, weight_kg=60, sex="F"))
    assert a.smi.value == 0.0 and a.sarcopenia["prado2008"].flagged is True
    assert "no skeletal muscle pixels" in a.myosteatosis["derstine2018"].reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height_m": 175.0}, "centimetres"),
        ({"height_m": 0.9}, "Height 0.9 m is outside"),
        ({"height_m": 2.6}, "outside the plausible range 1-2.5 m"),
        ({"weight_kg": 19.9}, "Weight 19.9 kg"),
        ({"weight_kg": 401.0}, "Weight 401 kg"),
        ({"age_years": -1.0}, "Age"),
        ({"sex": "X"}, "Sex must be M or F"),
        ({"height_m": float("nan")}, "Height"),
    ],
)
def test_patient_sanity_checks(kwargs: dict, message: str) -> None:
    with pytest.raises(CompositionError, match=message):
        PatientInfo(**kwargs)


CM_RANGE = "cm is outside the plausible range 100-250 cm; the height is in centimetres"


@pytest.mark.parametrize(
    ("height_cm", "message"),
    [
        (1.75, f"Height 1.75 {CM_RANGE} (1.75 m is 175 cm)."),
        (99.0, f"Height 99 {CM_RANGE}."),
        (1750.0, f"Height 1750 {CM_RANGE}."),
        (float("nan"), f"Height nan {CM_RANGE}."),
    ],
    ids=["metres", "short", "tall", "nan"],
)
def test_a_height_given_in_centimetres_is_checked_in_centimetres(height_cm: float, message: str) -> None:
    """--height-cm 1.75 (metres) said "Height 0.0175 m is outside the plausible range 1-2.5 m"."""
    with pytest.raises(CompositionError) as refused:
        PatientInfo.from_metadata(None, height_cm=height_cm)
    assert str(refused.value) == message
    assert PatientInfo.from_metadata(None, height_cm=100.0).height_m == 1.0


def test_patient_limits_inclusive_and_sex_normalised() -> None:
    p = PatientInfo(height_m=1.0, weight_kg=400.0, sex=" f ")
    assert p.sex == "F" and p.bmi == 400.0
    PatientInfo(height_m=2.5, weight_kg=20.0)


def test_patient_from_metadata() -> None:
    md = CTMetadata(patient_sex="M", patient_height_m=1.80, patient_weight_kg=81.0, patient_age_years=60)
    p = PatientInfo.from_metadata(md)
    assert (p.height_m, p.weight_kg, p.sex, p.age_years) == (1.80, 81.0, "M", 60)
    assert p.sources == {"height_m": "DICOM", "weight_kg": "DICOM", "sex": "DICOM", "age_years": "DICOM"}
    p = PatientInfo.from_metadata(md, height_cm=170, sex="f")
    assert (p.height_m, p.sex, p.sources["height_m"], p.sources["sex"]) == (1.70, "F", "user", "user")
    # DICOM placeholders and implausible values become unknown with a reason, never an error or a guess
    bad = CTMetadata(patient_sex="O", patient_height_m=170.0, patient_weight_kg=0.0)
    p = PatientInfo.from_metadata(bad)
    assert (p.height_m, p.weight_kg, p.sex) == (None, None, None)
    assert "DICOM PatientSize 170 is outside 1-2.5 m" in p.reason("height_m")
    assert p.reason("weight_kg").startswith("weight unknown")
    assert "PatientSex is 'O'" in p.reason("sex")
    a = assess(_composition(10_000), p)
    assert "PatientSize 170" in a.smi.reason
    # user values are checked strictly
    with pytest.raises(CompositionError, match="centimetres"):
        PatientInfo.from_metadata(md, height_cm=17000)
