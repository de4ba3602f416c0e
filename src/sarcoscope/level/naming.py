"""From a reading of the column to its names and back: the labelling of one reading with its landmarks,
the landmarks placed on its vertebrae, the two candidate L3s and the checks of the names against the
ribs found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sarcoscope.level import cues, labelling, spine
from sarcoscope.level.reading import Reading
from sarcoscope.level.result import L3Candidate, VertebraPosition
from sarcoscope.level.ribs import VertebraRibs

#: An L3 in view less probable than this is not named beside one out of view (`in_view_alternative`).
MIN_ALTERNATIVE_P = 0.01
#: The vertebrae the localizer names, top down.
ORDER = [f"T{i}" for i in range(1, 13)] + ["L1", "L2", "L3", "L4", "L5", "S1"]


def bare_thoracic(ribs: list[VertebraRibs], names: list[str]) -> list[str]:
    """T11 and T12 when the labelling names both rib-free while a vertebra above them bears ribs (none
    otherwise). One rib-free T12 is 11 rib pairs or a missed short pair; two in a row below ribs are a count
    the ribs contradict."""
    if "T12" not in names:
        return []
    t12 = names.index("T12")  # T11 is the segment above it
    bears = {r.segment: r.bears_ribs for r in ribs}
    if bears.get(t12, True) or bears.get(t12 + 1, True):  # not searched, or ribs found
        return []
    return ["T11", "T12"] if any(b for s, b in bears.items() if s > t12 + 1) else []


def rib_bearing(ribs: list[VertebraRibs], segment: int) -> bool:
    """Whether `segment` was searched and counted as rib-bearing."""
    return any(r.segment == segment and r.bears_ribs for r in ribs)


def ribless_thorax(ribs: list[VertebraRibs], names: list[str], n_seg: int) -> bool:
    """Whether the labelling names T11 and T12, both wholly in view (between two discs), searched and
    neither bearing a rib on either side."""
    if "T12" not in names:
        return False
    t12 = names.index("T12")  # T11 is the segment above it
    bears = {r.segment: r.any for r in ribs}
    in_view = t12 > 0 and t12 + 1 < n_seg - 1
    return in_view and not any(bears.get(s, True) for s in (t12, t12 + 1))  # True: not searched


def reading_labelling(reading: Reading, marks: list[cues.Cue], dz: float) -> labelling.Labelling:
    """The posterior over T12 from one reading's anchors, transverse-process lengths (the reach beside
    the body of its rib-free vertebrae) and the landmarks `marks` placed on its segments."""
    tp_mm = {r.segment: max(r.right_reach_mm, r.left_reach_mm) for r in reading.ribs if not r.any}
    seen = reading.sacrum is None or bool(reading.discs.prominence[reading.sacrum] > 0)
    return labelling.label_column(
        len(reading.discs.z) + 1,
        reading.sacrum,
        reading.last_rib,
        tp_mm,
        seen,
        tuple(landmarks_of(reading, marks, dz)),
    )


def landmark_report(mark: cues.Cue, grid: spine.WorkGrid, discs: spine.Discs, t12: int) -> dict[str, Any]:
    """One landmark for `l3.details`: found or not, its slice, the vertebra the labelling puts it on."""
    dz = grid.spacing[0]
    out: dict[str, Any] = {
        "name": mark.name,
        "found": mark.found,
        "below_view": mark.below_view,
        "weighed": weighed(mark),
    }
    label = mark.name.replace("_", " ")
    if mark.found and mark.z is not None:
        on = labelling.name_of(int(np.floor(segment_at(discs, mark.z, dz))), t12) or "?"
        out.update(slice=grid.to_index(grid.z_mm[0] + mark.z * dz), vertebra=on)
        # found in view, a landmark is too often misplaced to weigh in (`landmarks_of`): say so beside it
        out["reading"] = f"{label} at slice {out['slice']}, on {on} (not weighed: unvalidated in view)"
    elif mark.below_view:
        out["reading"] = f"{label} below the scan"
    else:
        out["reading"] = f"{label} not found"
    out["evidence"] = mark.evidence
    return out


def segment_at(discs: spine.Discs, z: float, dz: float) -> float:
    """The continuous segment coordinate of working slice z (k + the fraction of the way up segment k)."""
    lo, hi = discs.segments(dz)
    k = int(np.searchsorted(np.asarray(discs.z), z, side="right"))
    return k + (z - lo[k]) / max(hi[k] - lo[k], 1e-6)


def landmarks_of(reading: Reading, marks: list[cues.Cue], dz: float) -> list[labelling.Landmark]:
    """The landmarks that weigh in, on this reading's segments: those that lie below the lowest slice (the
    aorta followed undivided to it, no iliac wing on it; right on every one of 94 phantoms where it was
    said). A landmark found in view is reported, not weighed: the bifurcation found lay within 15 mm of the
    phantom's in 32 of 70, and the crest (30 of 32) only gained where the phantoms draw it as the published
    prior expects it (docs/validation/l3-notes.md, 2026-12-06, landmarks)."""
    lowest = segment_at(reading.discs, 0.0, dz)
    return [labelling.Landmark(m.name, lowest, below=True) for m in marks if weighed(m)]


def weighed(mark: cues.Cue) -> bool:
    """Whether a landmark weighs in the labelling (see `landmarks_of`)."""
    return mark.below_view


def candidates(
    lab: labelling.Labelling,
    n_seg: int,
    sacrum: int | None,
    last_rib: int | None,
    position: Callable[[int], VertebraPosition],
) -> list[L3Candidate]:
    """The two most probable L3s in view with their probabilities and the evidence behind each."""
    seen = [(s, p) for s, p in lab.l3_candidates() if 0 <= s < n_seg][:2]
    if len(seen) < 2:
        return []
    return [L3Candidate(position(s).center, round(p, 2), why(s, sacrum, last_rib)) for s, p in seen]


def why(l3: int, sacrum: int | None, last_rib: int | None) -> str:
    """The evidence that puts L3 on segment `l3` (the strongest when several do)."""
    reasons: dict[int, str] = {}  # T12's segment -> the evidence that puts it there (strongest last)
    if last_rib is not None:
        # segments are numbered upwards: T12 below the last rib found makes that rib T11's, above it L1's
        reasons[last_rib - 1] = "if the lowest rib pair was missed or there are 11"
        reasons[last_rib + 1] = "if the last rib found is a 13th or no rib"
    if sacrum is not None:
        # one lumbar vertebra more or fewer above the sacrum found: the anatomy, or the sacrum's disc missed
        reasons[sacrum + 7] = "with six lumbar-type vertebrae or the sacrum found a disc low"
        reasons[sacrum + 5] = "with a sacralised L5 or the sacrum found a disc high"
        reasons[sacrum + 6] = "counted from the sacrum"
    if last_rib is not None:
        both = sacrum is not None and last_rib == sacrum + 6
        reasons[last_rib] = (
            "counted from the sacrum and the last rib" if both else "counted from the last rib"
        )
    return reasons.get(l3 + 3, "from the transverse-process lengths")


def in_view_alternative(lab: labelling.Labelling, in_view: Callable[[int], bool]) -> tuple[int, float] | None:
    """The most probable L3 (segment, probability) in view when the most probable one is not, or None."""
    cands = lab.l3_candidates()
    if not cands or in_view(cands[0][0]):
        return None
    return next(((s, p) for s, p in cands if in_view(s) and p >= MIN_ALTERNATIVE_P), None)


def below_l3(seen: list[str]) -> bool:
    """True when every vertebra seen is below L3 (so L3 is above the field of view)."""
    return bool(seen) and all(ORDER.index(n) > ORDER.index("L3") for n in seen if n in ORDER)
