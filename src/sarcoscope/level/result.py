"""What the L3 localizer returns: where L3 is, the vertebrae named, the flags with their reasons, and the
slices to analyse under each convention (`selection_from_localization`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sarcoscope.conventions import L3_INFERIOR_ENDPLATE, L3_MID, L3_RANGE
from sarcoscope.errors import LevelError
from sarcoscope.level.ribs import VertebraRibs
from sarcoscope.level.selection import L3Selection

#: Recorded with every result; bump when the output changes (v2: the CT table is no rib, the shoulder girdle
#: no sacrum; v3: rib evidence per vertebra and side, candidate probabilities; v4: ribs decided at the
#: costovertebral joint, one labelling of the column with the transverse-process lengths; v6: a level up to
#: 1.9 disc periods long is one level when its neighbours agree, and minima count as discs by their walls;
#: v7: a count from the sacrum alone is checked against the ribs it names, an inferred L5/S1 disc weighs
#: less; v8: the rib series is followed over two vertebrae whose ribs were missed; v11: the wide trace is
#: held within 70 mm in front of the spinal canal, the sacrum's width on bone joined behind the body's front;
#: v12: the aortic bifurcation and the iliac crests (`level.cues`), weighed when they lie below the scan;
#: v14: a rib whose neck runs up across the upper disc to its head is the vertebra above's; v15: a level
#: taller than both the one below it and the period costs more in the chain of discs; v16: the sacrum's
#: bone reaches up to L5/S1, and a chain that missed that disc gets it at the sacrum's top; v17: a rib is
#: followed with the column also cut a working pixel either side of the body's measured side; v18: the
#: table's flat top is no iliac wing, and an uncertain count whose L3 lies out of view names the L3 in view
#: of the other count; v19: the transverse-process profile is a likelihood ratio, so a naming gains nothing
#: by leaving lengths unscored; v20: a vessel followed to the lowest slice that runs out to the side is a
#: common iliac artery, so the bifurcation is not said to lie below the scan; v21: where the close trace's
#: bodies lie well behind the wide one's, its body is looked for in front of the canal too; v22: a side whose
#: rib is not found, where the other side's is, is followed again at a lower threshold; v23: the sacrum's
#: iliac wings are judged by what of them lies in the field of view).
METHOD = "disc-count-v23"

FLAG_NOT_IN_FOV = "l3_not_in_fov"
FLAG_PARTIAL = "l3_partially_in_fov"
FLAG_COUNTING = "counting_uncertain"
FLAG_LOW_CONFIDENCE = "low_confidence"
FLAG_MISSING_SLICES = "missing_slices"


#: Localization facts the L3Selection already holds in its own fields (left out of its `details`).
_IN_SELECTION = {"confidence", "flags", "method", "l3_inferior_endplate"}


@dataclass
class VertebraPosition:
    """Axial slice indices of one vertebral body (first <= last in array order)."""

    first: int
    last: int
    center: int
    complete: bool  # False when a neighbouring disc is outside the volume and an end was estimated
    row: int | None = None  # y (array row) of the body centre on the centre slice, for labels on pictures
    col: int | None = None  # x (array column) of the body centre on the centre slice


@dataclass
class L3Candidate:
    """One of the two places L3 may be when the count is uncertain, with its probability."""

    l3_mid: int  # slice through the centre of this candidate's L3 body
    probability: float
    counted_from: str  # which count (or which failure of it) puts L3 here


@dataclass
class L3Localization:
    """Where L3 is, how sure the localizer is, and why (JSON via `as_dict`)."""

    l3_upper_endplate: int | None  # slice index of the superior endplate of the L3 body
    l3_lower_endplate: int | None  # slice index of the inferior endplate
    l3_mid: int | None  # slice through the centre of the L3 body (default analysis slice)
    l3_inferior_endplate: int | None  # same slice as l3_lower_endplate; the Asan/Korean convention
    vertebrae: dict[str, VertebraPosition]  # every vertebra identified, "T11".."S1", inferior to superior
    confidence: float  # 0..1
    flags: list[dict[str, str]] = field(default_factory=list)  # [{"flag": ..., "reason": ...}]
    counted_from: str = ""  # "sacrum+ribs" | "sacrum" | "ribs"
    l3_mid_mm: float | None = None  # superior position (mm) of mid-L3 relative to slice 0
    rib_vertebrae: list[str] = field(default_factory=list)  # the rib series counted from, lowest first
    #: Per vertebra searched (inferior to superior): rib on each side, with reach and drop as measured.
    ribs: list[VertebraRibs] = field(default_factory=list)
    #: The two candidate L3s (more probable first) when counting is uncertain, else empty.
    candidates: list[L3Candidate] = field(default_factory=list)
    #: Probability that the vertebrae are named right (the labelling of the column from the sacrum, the ribs
    #: and the transverse processes), before the disc and field-of-view terms of `confidence`.
    labelling_probability: float = 0.0
    #: The landmarks beside the column (`level.cues`): per landmark whether it was found, its slice, the
    #: vertebra the labelling puts it on (or that it lies below the scan) and the evidence.
    landmarks: list[dict[str, Any]] = field(default_factory=list)
    #: When the landmarks changed which vertebra is L3: what they said.
    landmark_note: str = ""
    method: str = METHOD
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        return self.l3_mid is not None

    def has_flag(self, name: str) -> bool:
        return any(f["flag"] == name for f in self.flags)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uncertainty": self.uncertainty()}

    def uncertainty(self) -> str:
        """One line naming both candidate L3s with their probabilities; empty when the count is sure."""
        if len(self.candidates) < 2:
            return ""
        a, b = self.candidates[:2]
        return (
            f"L3 uncertain: L3 at slice {a.l3_mid} (p={a.probability:.2f}, {a.counted_from}) or at slice "
            f"{b.l3_mid} (p={b.probability:.2f}, {b.counted_from})"
        ) + (f"; {self.landmark_note}" if self.landmark_note else "")

    def describe(self) -> str:
        """A few lines for a terminal or a report: where L3 is, how it was counted, every flag."""
        if self.found:
            lines = [
                f"L3: mid slice {self.l3_mid}, body slices "
                f"{self.l3_lower_endplate}..{self.l3_upper_endplate} "
                f"(inferior endplate {self.l3_inferior_endplate}); "
                f"confidence {self.confidence:.2f}, counted from {self.counted_from}."
            ]
        else:
            lines = ["L3 was not located."]
        if self.vertebrae:
            lines.append(
                "Vertebrae (centre slice): "
                + ", ".join(f"{k} {v.center}" for k, v in reversed(list(self.vertebrae.items())))
            )
        if self.candidates:
            lines.append(self.uncertainty() + ".")
        lines += [f"[{f['flag']}] {f['reason']}" for f in self.flags]
        return "\n".join(lines)


def add_flag(flags: list[dict[str, str]], name: str, reason: str) -> None:
    """Raise `name` with `reason`; a flag raised twice keeps one entry with both reasons."""
    for f in flags:
        if f["flag"] == name:
            f["reason"] += " " + reason
            return
    flags.append({"flag": name, "reason": reason})


def selection_from_localization(loc: L3Localization, convention: str = L3_MID) -> L3Selection:
    """The slices to analyse under `convention`: mid-L3, the inferior endplate, or the body range."""
    if loc.l3_mid is None or loc.l3_lower_endplate is None or loc.l3_upper_endplate is None:
        reasons = "; ".join(f["reason"] for f in loc.flags) or "L3 was not found."
        raise LevelError(f"L3 cannot be located automatically: {reasons} Use --slice/--range.")
    if convention == L3_MID:
        indices = [loc.l3_mid]
    elif convention == L3_INFERIOR_ENDPLATE:
        indices = [loc.l3_lower_endplate]
    elif convention == L3_RANGE:
        lo, hi = sorted((loc.l3_lower_endplate, loc.l3_upper_endplate))
        indices = list(range(lo, hi + 1))
    else:
        raise LevelError(
            f"Unknown L3 convention '{convention}' (use {L3_MID}, {L3_INFERIOR_ENDPLATE} or {L3_RANGE})."
        )
    # one home per fact: confidence, flags and the method are the selection's own fields, and the inferior
    # endplate is the lower endplate's slice under the name of another convention
    details = {k: v for k, v in loc.as_dict().items() if k not in _IN_SELECTION}
    return L3Selection(
        indices=indices,
        mode="auto",
        convention=convention,
        method=f"automatic ({loc.method}, counted from {loc.counted_from})",
        confidence=loc.confidence,
        flags=[dict(f) for f in loc.flags],
        details=details,
    )
