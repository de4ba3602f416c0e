"""One labelling of the visible column from every piece of evidence, with a probability per level.

The unknown is which segment (vertebra between two discs, 0 = below the lowest disc) is T12: once it is
fixed, every vertebra is named, and L3 is three below it (the anatomical L3 counted from T1, whatever the
ribs or the sacrum do). Each piece of evidence gives a likelihood over that one integer:

- the sacrum (the L5/S1 disc): T12 is six segments above it, one more with a sixth lumbar-type vertebra,
  one fewer with a sacralised L5 (transitional anatomy in ~5-10 % of people, each way);
- the last rib-bearing vertebra: T12 normally, L1 with 13 rib pairs or a lumbar "rib" wrongly found,
  T11's segment with 11 pairs or a missed lowest pair;
- the lengths of the lumbar transverse processes: L3's are the longest, L1's short (`tp_profile`, a
  likelihood ratio against lengths that say nothing, so a naming gains nothing by leaving one unscored);
- landmarks beside the column (`level.cues`: the aortic bifurcation, the top of the iliac crests), each at
  a level that published anatomy gives as a distribution over the lumbar vertebrae (`LANDMARK_LEVELS`),
  weak evidence (`landmark_loglik`) that needs neither the sacrum nor the ribs.

A small share of every likelihood is spread evenly ("the evidence is wrong in some way not listed"), so no
single cue can be certain. The posterior is normalised over the T12 positions the evidence allows, so its
maximum is a probability that the whole labelling (and so L3) is right: the reliability table of
scripts/l3_reliability.py measures how well that holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Where T12 lies relative to the L5/S1 disc's upper segment: offset (segments) -> probability.
SACRUM_OFFSETS = {5: 0.88, 6: 0.05, 4: 0.05}
#: Where T12 lies relative to the last rib-bearing segment found: offset -> probability (0: 12 pairs found;
#: +1, T12 above it: the "last rib" is on L1, 13 pairs or a false lumbar rib; -1, T12 below it: the "last
#: rib" is on T11, 11 pairs or the lowest pair missed). Segments are numbered upwards.
RIB_OFFSETS = {0: 0.85, -1: 0.06, 1: 0.07}
#: An L5/S1 disc that was inferred (no minimum seen between the bodies, as between pedicle screws' streaks)
#: is weaker evidence than a seen one: its log-likelihood is tempered by this factor, so a rib count that
#: disagrees outweighs it while the sacrum alone still names the same T12.
SACRUM_INFERRED_WEIGHT = 0.5
#: Share of each likelihood spread over every position (the cue misleads in a way not modelled).
SPREAD = 0.02
#: Relative length of the transverse processes (to the longest lumbar one seen) by vertebra, and its spread:
#: L3's are the longest, L1's short; T12 has none or a short stump.
TP_RELATIVE = {"T12": 0.5, "L1": 0.55, "L2": 0.8, "L3": 1.0, "L4": 0.9, "L5": 0.95}
TP_SD = 0.2
#: The transverse-process cue is one of several noisy measurements of the same kind: its log-likelihood
#: is tempered by this factor.
TP_WEIGHT = 0.5
#: Below this length (mm) a transverse process was not measured (out of the slice range, or not seen).
TP_MIN_MM = 5.0

#: Where each landmark lies, in vertebral levels below the middle of L4 (0.5: the L4/L5 disc, 1: mid-L5):
#: mean and standard deviation of a normal distribution fitted to published series, not to the phantoms.
#: - aortic bifurcation: at the L4 body in 67 % of 441 adults (Chithriki et al., Surg Radiol Anat 2002;
#:   24:308-312, whole-spine MRI counted from C2), 71 % of 1049 (Tokgoz et al., Korean J Radiol 2014;15:258),
#:   83 % of 210 (Lee et al., AJR 2004;182:1295), the rest L3 to L5: N(0, 0.4) puts 68 % within L4's body
#:   (|u| < 0.4);
#: - top of the iliac crests: above the L4/L5 disc in 26.5 %, at it in 29.8 %, below it in 43.7 % of 834
#:   adults on CT (Shin et al., Int J Spine Surg 2024, doi 10.14444/8651); between the lower third of L4 and
#:   the upper third of L5 in 80 %, never above L4's upper third or below L5's middle third (296 radiographs,
#:   North Cyprus): N(0.55, 0.35) gives 33 / 22 / 44 % above / at / below the disc.
LANDMARK_LEVELS = {"aortic_bifurcation": (0.0, 0.4), "iliac_crest": (0.55, 0.35)}
#: Each landmark is one noisy detection on the scan (the vessels and wings are found by thresholds, and
#: anatomy varies beyond the published series): its log-likelihood is tempered by this factor.
LANDMARK_WEIGHT = 0.5


@dataclass
class Landmark:
    """A landmark's position on the column: `segment` is the continuous segment coordinate (k + f: the
    fraction f of the way up segment k, 0 = below the lowest disc), of the landmark itself, or when `below`
    of the lowest slice, the landmark lying under it (a censored observation)."""

    name: str
    segment: float
    below: bool = False


def landmark_loglik(mark: Landmark, t12: int) -> float:
    """Log-likelihood of a landmark's position if `t12` is T12's segment: the published distribution of
    its level (in vertebrae below mid-L4; L4 is T12's segment less 4, segments numbered upwards), its
    density where it was found, or the share of it below the lowest slice."""
    mean, sd = LANDMARK_LEVELS[mark.name]
    u = (t12 - 4 + 0.5) - mark.segment  # levels below mid-L4 (each segment one level)
    k = (u - mean) / sd
    if mark.below:
        p = 0.5 * math.erfc(k / math.sqrt(2))
    else:
        p = math.exp(-0.5 * k * k) / (sd * math.sqrt(2 * math.pi))
    return LANDMARK_WEIGHT * float(np.log((1 - SPREAD) * p + SPREAD))


_NAMES_DOWN = [*(f"T{i}" for i in range(1, 13)), "L1", "L2", "L3", "L4", "L5", "S1"]


def name_of(segment: int, t12: int) -> str | None:
    """The vertebra `segment` is when `t12` is T12's segment (None outside T1..S1)."""
    k = _NAMES_DOWN.index("T12") + (t12 - segment)
    return _NAMES_DOWN[k] if 0 <= k < len(_NAMES_DOWN) else None


def tp_profile(tp_mm: dict[int, float], t12: int) -> float:
    """Log-likelihood ratio of the transverse-process lengths (per rib-free segment, mm) if `t12` is T12's
    segment: each length relative to the longest, its density under the vertebra it would be (normal about
    TP_RELATIVE) over its density under no information (uniform on (0, 1], where a relative length lies).
    A segment that would be sacral, thoracic above T12 or outside T1..S1 has no profile: the same density
    both ways, ratio 1. Every length is weighed under every naming, so a naming is not rewarded for
    leaving lengths unscored (T12 put out of view), as it was by the normal's exponent alone, whose
    missing normalisation made each scored length a penalty."""
    seen = {s: v for s, v in tp_mm.items() if v >= TP_MIN_MM}
    if len(seen) < 3:
        return 0.0
    longest = max(seen.values())
    log_norm = math.log(TP_SD * math.sqrt(2 * math.pi))  # the normal's; the uniform's density is 1
    ll = 0.0
    for s, v in seen.items():
        name = name_of(s, t12)
        if name in TP_RELATIVE:
            ll += -0.5 * ((v / longest - TP_RELATIVE[name]) / TP_SD) ** 2 - log_norm
    return TP_WEIGHT * ll


@dataclass
class Labelling:
    """The posterior over T12's segment and what follows from it."""

    t12: dict[int, float]  # segment -> probability that it is T12 (sums to 1)

    @property
    def best(self) -> int:
        return max(self.t12, key=lambda t: self.t12[t])

    @property
    def probability(self) -> float:
        return self.t12[self.best]

    def l3_candidates(self) -> list[tuple[int, float]]:
        """(segment of L3, probability), most probable first."""
        return sorted(((t - 3, p) for t, p in self.t12.items()), key=lambda c: -c[1])

    def level_probability(self, segment: int, name: str) -> float:
        """Probability that `segment` is the vertebra `name`."""
        return float(sum(p for t, p in self.t12.items() if name_of(segment, t) == name))


def label_column(
    n_segments: int,
    sacrum_disc: int | None,
    last_rib: int | None,
    tp_mm: dict[int, float],
    sacrum_seen: bool = True,
    landmarks: tuple[Landmark, ...] = (),
) -> Labelling:
    """Posterior over T12's segment from the sacrum (index of the L5/S1 disc; `sacrum_seen` False when
    that disc was inferred, not seen), the last rib-bearing segment and the transverse-process lengths.
    T12 may lie above the field of view (up to eight segments: pelvis-only scans) or just below its lower
    edge (chest scans). `landmarks` (`level.cues`) each add a weak likelihood."""
    positions = np.arange(-3, n_segments + 9)
    logp = np.zeros(len(positions))
    if sacrum_disc is not None:
        weight = 1.0 if sacrum_seen else SACRUM_INFERRED_WEIGHT
        logp += weight * np.log(_likelihood(positions, sacrum_disc + 1, SACRUM_OFFSETS))
    if last_rib is not None:
        logp += np.log(_likelihood(positions, last_rib, RIB_OFFSETS))
    logp += np.array([tp_profile(tp_mm, int(t)) for t in positions])
    for mark in landmarks:
        logp += np.array([landmark_loglik(mark, int(t)) for t in positions])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    return Labelling({int(t): float(v) for t, v in zip(positions, p, strict=True) if v > 1e-4})


def pooled(own: Labelling, other: Labelling, match: Callable[[int], int | None], share: float) -> Labelling:
    """`own` pooled with the labelling of another reading of the same column (a second trace, whose
    discs may differ by one missed or added disc): `match` maps each of the other's T12 positions to the
    position of `own` that names the same vertebra L3, or None; `share` is the other's weight. Where the
    two readings agree nothing changes; where each has one count right and one wrong (a disc missed by
    one, another by the other), the count both support wins, with a probability that says how split
    the evidence is."""
    t12 = {t: (1 - share) * p for t, p in own.t12.items()}
    for t, p in other.t12.items():
        m = match(t)
        if m is not None:
            t12[m] = t12.get(m, 0.0) + share * p
    total = sum(t12.values())
    return Labelling({t: p / total for t, p in t12.items() if p / total > 1e-4})


def _likelihood(positions: np.ndarray, anchor: int, offsets: dict[int, float]) -> np.ndarray:
    out = np.full(len(positions), SPREAD / len(positions))
    for off, pr in offsets.items():
        out[positions == anchor + off] += (1 - SPREAD) * pr
    return out
