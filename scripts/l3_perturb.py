"""The L3 localizer on the real volume altered the ways studies from other hospitals and scanners differ.

    python scripts/l3_perturb.py [--shared ../shared/data] [--json OUT.json] [--quick]

We have one real CT volume with a known L3 (../shared/data/real/volumes/ts_example, 3 mm, L3 from
TotalSegmentator's label). Held-out real studies differ from it in field of view, slice thickness, noise,
calibration and contrast phase, patient and table orientation, pixel shape and reconstruction field; each
condition below imitates one of those, and every condition is read on 16 crops of the column (from below at
slice 0, 30, 45 and 55: the sacrum goes at slice 42; from above at the top, 103, 95 and 86: T12, whose ribs
start on the upper half of its body, spans slices 97-111), so that each is seen with both ends, without the
sacrum, without the ribs and with neither (the localizer must refuse, not guess).

Conditions:
- `as is`;
- slices 5 mm (the 3 mm slices averaged over 5 mm slabs, as a scanner reconstructs thick slices), 7.5 mm,
  2 mm and 1 mm (interpolated);
- noise 20, 40 and 80 HU (Gaussian, correlated over about a pixel: low-dose CT);
- contrast +40, +80 and +150 HU on soft tissue (-20..120 HU), and calibration -30 / +30 HU on everything;
- orientation: the same CT written as NIfTI in other voxel orders (LPS, feet-first LAI, PIR) and read back
  with read_ct; the array with its z, y or x axis reversed and the direction saying so (feet-first, prone
  layout, mirrored);
- pixels 0.75 mm square (a 512-pixel reconstruction), 0.7 x 0.9 mm and 1.5 x 1.0 mm (non-square);
- field of view cut to 280, 240 and 200 mm (the array cropped round the column, the body edge cut off) and
  a 250 mm reconstruction circle (outside it -1024 HU, the array kept);
- combinations: 5 mm with 40 HU noise; 5 mm with +150 HU contrast; 0.75 mm pixels with 40 HU noise.

Per reading: the error of mid-L3 in mm and slices, the confidence, the flags and the CPU time of
`locate_l3`; then per condition the counts (`summary`). `--quick`: four crops per condition (whole, no
sacrum, no ribs, neither).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from sarcoscope.errors import LevelError
from sarcoscope.imaging.read import read_ct
from sarcoscope.imaging.volume import CTVolume
from sarcoscope.level import locate_l3
from sarcoscope.level.localization import FLAG_COUNTING, FLAG_LOW_CONFIDENCE
from sarcoscope.validation.benchmark import REAL_VOLUME, real_l3_centroid

REPO = Path(__file__).resolve().parents[1]
WARN = (FLAG_COUNTING, FLAG_LOW_CONFIDENCE)
#: A crop starting below SACRUM_TOP shows the sacrum (TotalSegmentator's S1 label spans slices 37-52 of the
#: real volume); one ending above RIBS_BOTTOM shows T12's rib heads (its label spans 97-111, and its ribs
#: start on the upper half of its body)
SACRUM_TOP, RIBS_BOTTOM = 42, 104
LOWS, HIGHS = (0, 30, 45, 55), (112, 103, 95, 86)


@dataclass
class Case:
    """A volume in the standard layout with the superior position (mm, real volume's frame) of each slice."""

    hu: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]


def crop(c: Case, lo: int, hi: int) -> Case:
    return Case(c.hu[lo:hi], c.z[lo:hi], c.spacing)


def reslice(c: Case, thk: float) -> Case:
    """Slices of `thk` mm every `thk` mm: thicker ones average the slab they cover, thinner interpolate."""
    dz = c.spacing[0]
    z0, z1 = c.z[0] - dz / 2, c.z[-1] + dz / 2
    centres = np.arange(z0 + thk / 2, z1 - thk / 2 + 1e-6, thk)
    if thk <= dz:
        idx = (centres - c.z[0]) / dz
        hu = ndi.map_coordinates(
            c.hu.astype(np.float32),
            np.meshgrid(idx, np.arange(c.hu.shape[1]), np.arange(c.hu.shape[2]), indexing="ij"),
            order=1,
            mode="nearest",
        )
    else:
        lo_edges = c.z - dz / 2
        slabs = []
        for m in centres:  # overlap of each original slice with the slab [m - thk/2, m + thk/2]
            w = np.clip(np.minimum(lo_edges + dz, m + thk / 2) - np.maximum(lo_edges, m - thk / 2), 0, None)
            slabs.append(np.tensordot(w / w.sum(), c.hu.astype(np.float32), axes=1))
        hu = np.stack(slabs)
    return Case(hu.astype(np.float32), centres, (thk, *c.spacing[1:]))


def noise(sigma: float, seed: int = 0) -> Callable[[Case], Case]:
    def alter(c: Case) -> Case:
        n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(c.hu.shape), (0, 0.8, 0.8))
        body = c.hu > -900
        return replace(c, hu=np.where(body, c.hu + n * (sigma / n.std()), c.hu).astype(np.float32))

    return alter


def contrast(delta: float) -> Callable[[Case], Case]:
    """Soft tissue (-20..120 HU) enhanced by `delta`, ramped in over 20 HU at both ends (no new edges)."""

    def alter(c: Case) -> Case:
        hu = c.hu.astype(np.float32)
        ramp = np.clip((hu + 40) / 20, 0, 1) * np.clip((140 - hu) / 20, 0, 1)
        return replace(c, hu=hu + delta * ramp)

    return alter


def calibration(offset: float) -> Callable[[Case], Case]:
    return lambda c: replace(c, hu=np.where(c.hu > -900, c.hu + offset, c.hu).astype(np.float32))


def pixels(dy: float, dx: float) -> Callable[[Case], Case]:
    def alter(c: Case) -> Case:
        zoom = (1, c.spacing[1] / dy, c.spacing[2] / dx)
        hu = ndi.zoom(c.hu.astype(np.float32), zoom, order=1, mode="nearest")
        return Case(hu, c.z, (c.spacing[0], dy, dx))

    return alter


def field(mm: float) -> Callable[[Case], Case]:
    """The array cut to `mm` x `mm` round the column's midline, 40 mm in front of it (the body edge cut)."""

    def alter(c: Case) -> Case:
        ny, nx = c.hu.shape[1:]
        cy, cx = round(0.55 * ny), nx // 2
        hy, hx = round(mm / 2 / c.spacing[1]), round(mm / 2 / c.spacing[2])
        return replace(c, hu=c.hu[:, max(cy - hy, 0) : cy + hy, max(cx - hx, 0) : cx + hx])

    return alter


def circle(mm: float) -> Callable[[Case], Case]:
    """A reconstruction circle of diameter `mm`: outside it -1024 HU."""

    def alter(c: Case) -> Case:
        ny, nx = c.hu.shape[1:]
        yy, xx = np.mgrid[:ny, :nx]
        r = np.hypot((yy - ny / 2) * c.spacing[1], (xx - nx / 2) * c.spacing[2])
        return replace(c, hu=np.where(r[None] > mm / 2, -1024, c.hu).astype(np.float32))

    return alter


def then(*steps: Callable[[Case], Case]) -> Callable[[Case], Case]:
    def alter(c: Case) -> Case:
        for s in steps:
            c = s(c)
        return c

    return alter


def as_volume(c: Case, flip: str = "") -> tuple[CTVolume, np.ndarray]:
    """The case as a CTVolume (axes in `flip` reversed, the direction saying so) and its slices' z."""
    hu, z, direction = c.hu, c.z, np.eye(3)
    for axis, col in (("z", 2), ("y", 1), ("x", 0)):
        if axis in flip:
            hu = np.flip(hu, 2 - col)
            direction[:, col] *= -1
            if axis == "z":
                z = z[::-1]
    pos = z * direction[2, 2]
    vol = CTVolume(
        hu=np.ascontiguousarray(hu),
        spacing=c.spacing,
        origin=(0.0, 0.0, float(z[0])),
        direction=direction,
        source_kind="array",
        slice_positions=pos,
    )
    return vol, z


def via_nifti(c: Case, codes: str, folder: Path) -> tuple[CTVolume, np.ndarray]:
    """Write the case as a NIfTI whose voxel axes are `codes` (e.g. "LAI"), read it back with read_ct."""
    ras = np.ascontiguousarray(c.hu.transpose(2, 1, 0)[::-1, ::-1, :])  # (x: R->L reversed, y, z) = RAS
    dz, dy, dx = c.spacing
    affine = np.diag([dx, dy, dz, 1.0])
    affine[2, 3] = float(c.z[0])
    img = nib.Nifti1Image(ras.astype(np.int16), affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target)
    img = img.as_reoriented(transform)
    path = folder / f"{codes}.nii.gz"
    nib.save(img, str(path))
    vol = read_ct(path)
    pos = np.asarray(vol.slice_positions) * float(np.sign(vol.direction[2, 2]))
    return vol, pos - pos.min() + c.z.min()  # superior positions, same frame as the case


Condition = tuple[str, Callable[[Case], Case], str]  # name, alteration, orientation ("", "z", "nifti:LAI")
CONDITIONS: list[Condition] = [
    ("as is", then(), ""),
    ("5 mm slices", lambda c: reslice(c, 5.0), ""),
    ("7.5 mm slices", lambda c: reslice(c, 7.5), ""),
    ("2 mm slices", lambda c: reslice(c, 2.0), ""),
    ("1 mm slices", lambda c: reslice(c, 1.0), ""),
    ("noise 20 HU", noise(20), ""),
    ("noise 40 HU", noise(40), ""),
    ("noise 80 HU", noise(80), ""),
    ("contrast +40 HU", contrast(40), ""),
    ("contrast +80 HU", contrast(80), ""),
    ("contrast +150 HU", contrast(150), ""),
    ("calibration -30 HU", calibration(-30), ""),
    ("calibration +30 HU", calibration(30), ""),
    ("NIfTI LPS", then(), "nifti:LPS"),
    ("NIfTI LAI (feet first)", then(), "nifti:LAI"),
    ("NIfTI PIR", then(), "nifti:PIR"),
    ("array z reversed (feet first)", then(), "z"),
    ("array y reversed (prone layout)", then(), "y"),
    ("array x reversed", then(), "x"),
    ("pixels 0.75 mm", pixels(0.75, 0.75), ""),
    ("pixels 0.7 x 0.9 mm", pixels(0.7, 0.9), ""),
    ("pixels 1.5 x 1.0 mm", pixels(1.5, 1.0), ""),
    ("field 280 mm", field(280), ""),
    ("field 240 mm", field(240), ""),
    ("field 200 mm", field(200), ""),
    ("circle 250 mm", circle(250), ""),
    ("5 mm + noise 40 HU", then(lambda c: reslice(c, 5.0), noise(40)), ""),
    ("5 mm + contrast +150 HU", then(lambda c: reslice(c, 5.0), contrast(150)), ""),
    ("0.75 mm pixels + noise 40 HU", then(pixels(0.75, 0.75), noise(40)), ""),
]


def read_case(base: Case, condition: Condition, lo: int, hi: int, truth: float, tmp: Path) -> dict:
    name, alter, orient = condition
    c = alter(crop(base, lo, hi))
    if orient.startswith("nifti:"):
        vol, z = via_nifti(c, orient.partition(":")[2], tmp)
    else:
        vol, z = as_volume(c, orient)
    ends = lo < SACRUM_TOP or hi > RIBS_BOTTOM
    r: dict = {"condition": name, "crop": f"{lo}-{hi - 1}", "ends_visible": ends, "slice_mm": c.spacing[0]}
    t0 = time.process_time()
    try:
        loc = locate_l3(vol)
    except LevelError as exc:
        r.update(refused=str(exc).split(":")[0], seconds=time.process_time() - t0)
        return r
    r.update(
        seconds=time.process_time() - t0,
        confidence=loc.confidence,
        flags=[f["flag"] for f in loc.flags],
        counted_from=loc.counted_from,
        refused="",
    )
    if loc.l3_mid is not None:
        r["error_mm"] = float(np.interp(loc.l3_mid, np.arange(len(z)), z) - truth) if len(z) else None
    return r


def verdict(r: dict) -> str:
    if r["refused"]:
        return "refused" if r["ends_visible"] else "refused (right)"
    if r.get("error_mm") is None:
        return "L3 not in view"
    if abs(r["error_mm"]) <= 10.0:
        return "within 10 mm"
    return "wrong, flagged" if set(r["flags"]) & set(WARN) else "WRONG, NOT FLAGGED"


def summary(readings: list[dict]) -> str:
    """Per condition: within 10 mm of the crops with an end of the column in view, the errors over 10 mm
    (flagged or not, any crop), refusals with an end in view, right refusals with neither, "L3 not in
    view"."""
    lines = [
        "| condition | within 10 mm (an end in view) | wrong, flagged | wrong, NOT flagged "
        "| refused (an end in view) | refused (neither end) | L3 said out of view | max s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond in dict.fromkeys(r["condition"] for r in readings):
        rs = [r for r in readings if r["condition"] == cond]
        v = [verdict(r) for r in rs]
        ends = sum(r["ends_visible"] for r in rs)
        within = sum(verdict(r) == "within 10 mm" for r in rs if r["ends_visible"])
        lines.append(
            f"| {cond} | {within}/{ends} | {v.count('wrong, flagged')} | {v.count('WRONG, NOT FLAGGED')} "
            f"| {v.count('refused')} | {v.count('refused (right)')}/{len(rs) - ends} "
            f"| {v.count('L3 not in view')} | {max(r['seconds'] for r in rs):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="write every reading to this JSON file")
    parser.add_argument("--quick", action="store_true", help="four crops per condition")
    parser.add_argument("--only", help="conditions whose name contains this")
    args = parser.parse_args()
    folder = args.shared / REAL_VOLUME
    vol = read_ct(folder / "example_ct.nii.gz")
    dz = float(vol.spacing[0])
    base = Case(vol.hu, np.arange(vol.n_slices) * dz, vol.spacing)
    truth = real_l3_centroid(folder) * dz
    crops = [(0, 112), (55, 112), (0, 86), (55, 86)] if args.quick else [(a, b) for a in LOWS for b in HIGHS]
    readings = []
    with tempfile.TemporaryDirectory() as tmp:
        for cond in CONDITIONS:
            if args.only and args.only not in cond[0]:
                continue
            for lo, hi in crops:
                r = read_case(base, cond, lo, hi, truth, Path(tmp))
                readings.append(r)
                err = r.get("error_mm")
                err_text = "–" if err is None else f"{err:+.1f} mm ({err / r['slice_mm']:+.1f} sl)"
                print(
                    f"{r['condition']}\t{r['crop']}\t{err_text}\t{r.get('confidence', 0):.2f}\t"
                    f"{','.join(r.get('flags', [])) or '-'}\t{r['seconds']:.2f} s\t{verdict(r)}",
                    flush=True,
                )
    print("\n" + summary(readings))
    if args.json:
        args.json.write_text(json.dumps(readings, indent=1) + "\n")


if __name__ == "__main__":
    main()
