"""Whether a case's earlier report is this run's result, so that a resumed batch keeps it, or was made
another way (and the case is analysed again)."""

from __future__ import annotations

import math
from typing import Any

from sarcoscope.batch.cases import Case
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy


def changed_since(
    report: dict[str, Any],
    case: Case,
    engine: str,
    cutoff_set: str | None,
    deidentification: DeidentificationPolicy | None,
    pixel_spacing: tuple[float, float] | None = None,
) -> str | None:
    """What makes a case's earlier report not this run's result (None: it is): another model or engine
    version, cutoff set, patient facts, L3 choice, pixel spacing (given by the user, or another value, in
    one run and not the other: one table would hold areas measured at both), or de-identification (or
    its options: a case kept from a run that retained the patient's characteristics or shifted dates, or
    accepted burned-in annotation, would keep them in a folder this run de-identifies without). A resumed
    batch analyses such a case again instead of mixing results made two ways in one table."""
    from sarcoscope.composition import default_cutoff_set, load_cutoffs
    from sarcoscope.segmentation import get_engine

    model_id = get_engine(engine).model_id
    if report["segmentation"]["model_id"] != model_id:
        return f"made by {report['segmentation']['model_id']}, this run uses {model_id}"
    chosen = next(c["set"] for c in report["assessment"]["sarcopenia"] if c["selected"])
    wanted = cutoff_set or default_cutoff_set()
    if chosen != wanted:
        return f"classified with cutoff set {chosen}, this run uses {wanted}"
    patient = dict(report["assessment"]["patient"])
    given = {
        "height_m": case.height_cm / 100.0 if case.height_cm is not None else None,
        "weight_kg": case.weight_kg,
        "sex": case.sex,
    }
    if "deidentification" in report and patient.get("height_m") is None:
        # de-identified without the patient's characteristics: only the height can be told, from the SMI
        smi = report["assessment"]["smi"].get("value")
        area = report["average"]["tissues"]["muscle"]["area_cm2"]
        patient = {"height_m": math.sqrt(area / smi) if smi else None}
        given = {"height_m": given["height_m"]}
    for key, value in given.items():
        stored = patient.get(key)
        floats = isinstance(stored, float) and isinstance(value, float)
        same = stored == value or (floats and math.isclose(stored, value, rel_tol=1e-4))
        if value is not None and not same:
            # de-identified: the patient's characteristics stay out of the log (and Dask workers' logs)
            if deidentification is not None:
                return f"made with another {key} than the manifest gives"
            return f"made with {key} {stored}, the manifest gives {value}"
    chosen_slices = report["l3"]["slice_indices"]
    if case.slice_index is not None:
        wanted_slices = [case.slice_index]
    elif case.slice_range is not None:
        wanted_slices = list(range(min(case.slice_range), max(case.slice_range) + 1))
    else:
        wanted_slices = chosen_slices
    if chosen_slices != wanted_slices:
        return f"of slice(s) {chosen_slices}, the manifest chooses {wanted_slices}"
    measured = report["input"]["spacing_mm_zyx"][1:]
    was = " x ".join(f"{v:g}" for v in measured)
    given = report["input"].get("pixel_spacing_given")
    if given is None:  # a report made before reports said it: the reader's warning says it
        given = any("given by the user" in w for w in report["input"].get("warnings", []))
    if given and pixel_spacing is None:
        return f"measured at the pixel spacing {was} mm given by the user, this run gives none"
    if not given and pixel_spacing is not None:
        return f"measured at the file's own pixel spacing {was} mm, this run gives one (--pixel-spacing)"
    if pixel_spacing is not None and not all(
        math.isclose(a, b, rel_tol=1e-4) for a, b in zip(measured, pixel_spacing, strict=True)
    ):
        now = " x ".join(f"{v:g}" for v in pixel_spacing)
        return f"measured at pixel spacing {was} mm, this run gives {now} mm"
    made = report["deidentification"]["codes"] if "deidentification" in report else None
    # a report that does not say whether it shows burned-in annotation was made before reports said it
    shown = made is not None and report["deidentification"].get("burned_in_annotation_shown") is not False
    if shown and deidentification is not None and not deidentification.accept_burned_in:
        return "made showing images with burned-in annotation (or not saying), which this run refuses"
    wanted_codes = deidentification.method_code_values if deidentification is not None else None
    if made != wanted_codes:
        if made is None or wanted_codes is None:
            return "not de-identified" if made is None else "de-identified"
        return f"de-identified with method codes {made}, this run uses {wanted_codes}"
    if deidentification is not None and not deidentification.keep_patient_characteristics:
        # made before de-identification removed them: the rule, cutoff and flag tell the sex or BMI
        table = load_cutoffs()
        for kind, sets in (("sarcopenia", table.sarcopenia), ("myosteatosis", table.myosteatosis)):
            for c in report["assessment"][kind]:
                if c["status"] == "computed" and c["set"] in sets and sets[c["set"]].needs_sex_or_bmi:
                    return f"de-identified keeping the {kind} classification by the sex or BMI it removed"
    return None
