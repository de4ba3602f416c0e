"""The analyses whose outputs are pinned in pins.json, so that speed work is shown to change nothing.

Each case runs `pipeline.analyze` exactly as a user would (files on disk in, default options) and reduces
the result to what must not move: a SHA-256 of every label map and the report's values (timings, dates,
temporary paths and random UIDs removed; floats to 10 significant digits). Used by test_pinned.py and by
`python scripts/update_pins.py`, which rewrites pins.json (after a model change or an intended change).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PINS_FILE = Path(__file__).with_name("pins.json")
UPDATE_COMMAND = "python scripts/update_pins.py"
ENGINES = ("threshold", "unet")
#: Report keys that differ between two identical runs (clock, temporary paths); keys ending in "_uid" too
#: (the phantom's DICOM files get fresh UIDs each time they are written).
VOLATILE = {"created_utc", "timings_s", "outputs", "seconds", "source_path"}


@dataclass(frozen=True)
class Case:
    """One pinned input: `source(shared_data, tmp)` returns what `analyze` is given."""

    name: str
    needs_shared_data: bool
    source: Callable[[Path | None, Path], Path]
    options: dict[str, Any]
    write: bool = False  # also write every output file and pin the label content of SEG and NIfTI
    #: also pin overlay.png's pixels: not for a phantom, whose HU move by 1 here and there between CPUs
    #: (numpy's AVX-512 sin/exp round otherwise), which the whole-volume reconstructions show
    overlay: bool = False


def _phantom_slice(_: Path | None, tmp: Path) -> Path:
    from sarcoscope.imaging import write_dicom_series
    from sarcoscope.phantom import make_slice

    ph = make_slice(3)
    out = tmp / "phantom_slice"
    write_dicom_series(ph.hu[None], (3.0, *ph.pixel_spacing), out)
    return out


def _phantom_volume(_: Path | None, tmp: Path) -> Path:
    from sarcoscope.imaging import write_dicom_series
    from sarcoscope.phantom import make_volume

    out = tmp / "phantom_volume"
    if not out.exists():  # made once for both engines (≈9 s)
        vol = make_volume(5, shape_xy=256)
        write_dicom_series(vol.hu, vol.spacing, out, origin=vol.origin, metadata=vol.metadata())
    return out


def _shared(relative: str) -> Callable[[Path | None, Path], Path]:
    def source(shared: Path | None, _: Path) -> Path:
        assert shared is not None
        return shared / relative

    return source


REAL_SLICES = ("EMC040", "EMC041", "EMC051", "EMC052", "EMC091", "EMC100", "EMC101", "EMC158", "EMC172")

CASES: list[Case] = [
    Case("phantom_slice", False, _phantom_slice, {}),
    Case("phantom_volume_auto_l3", False, _phantom_volume, {}, write=True),
    *(Case(f"real_slice_{c}", True, _shared(f"real/l3_slices/images/L3_{c}.dcm"), {}) for c in REAL_SLICES),
    Case(
        "real_volume_auto_l3",
        True,
        _shared("real/volumes/ts_example/example_ct.nii.gz"),
        {},
        write=True,
        overlay=True,
    ),
    Case("real_series_dcmqi", True, _shared("real/dicom_series/dcmqi_ct3slice"), {"slice_index": 1}),
    Case("real_series_j2k", True, _shared("real/dicom_series/ts_thoracoabdominal_j2k"), {"slice_index": 10}),
]


def _canonical(value: Any, shared: Path | None = None) -> Any:
    """Comparable everywhere: volatile keys dropped, floats rounded, the shared-data folder (which differs
    between checkouts) written as <shared>."""
    if isinstance(value, dict):
        return {
            k: _canonical(v, shared) for k, v in value.items() if k not in VOLATILE and not k.endswith("_uid")
        }
    if isinstance(value, list | tuple):
        return [_canonical(v, shared) for v in value]
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, str) and shared is not None:
        return value.replace(str(shared), "<shared>")
    return value


def _sha(array: Any) -> str:
    import numpy as np

    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def _written(out_dir: Path, overlay: bool) -> dict[str, Any]:
    """What the written files hold that must not move: SEG (DICOM input) and NIfTI label content,
    metrics.csv, and the QC picture's pixels when `overlay`."""
    import nibabel as nib
    import numpy as np
    import pydicom
    from PIL import Image

    written: dict[str, Any] = {
        "nifti_sha256": _sha(nib.load(out_dir / "labels.nii.gz").get_fdata(dtype="float32")),
        "metrics_csv": [
            line for line in (out_dir / "metrics.csv").read_text().splitlines() if "seconds" not in line
        ],
    }
    if (out_dir / "labels.seg.dcm").exists():
        seg = pydicom.dcmread(out_dir / "labels.seg.dcm")
        written["seg_pixels_sha256"] = _sha(seg.pixel_array)
        written["seg_segments"] = [s.SegmentLabel for s in seg.SegmentSequence]
    if overlay:
        with Image.open(out_dir / "overlay.png") as im:  # the picture, not the PNG bytes (compression)
            written["overlay_pixels_sha256"] = _sha(np.asarray(im))
    return written


def run_case(case: Case, engine: str, shared: Path | None, tmp: Path) -> dict[str, Any]:
    """The pinned values of one case analysed with one engine."""
    from sarcoscope.export.report import build_report
    from sarcoscope.pipeline import analyze

    source = case.source(shared, tmp)
    out_dir = tmp / f"out_{case.name}_{engine}" if case.write else None
    result = analyze(source, engine=engine, out_dir=out_dir, **case.options)
    pinned: dict[str, Any] = {
        "model_id": result.model_id,
        "labels_sha256": [_sha(lab) for lab in result.labels],
        "report": _canonical(build_report(result), shared),
    }
    if out_dir is not None:
        pinned["written"] = _canonical(_written(out_dir, case.overlay), shared)
    return pinned


def current_model_ids() -> dict[str, str]:
    """Engine name -> the model id it runs now (pins made with another model are stale, not wrong)."""
    from sarcoscope.segmentation import get_engine

    return {engine: get_engine(engine).model_id for engine in ENGINES}


def load_pins() -> dict[str, Any]:
    return json.loads(PINS_FILE.read_text(encoding="utf-8"))


def generate(shared: Path) -> dict[str, Any]:
    """Every case with every engine; the content of pins.json."""
    pins: dict[str, Any] = {
        "regenerate_with": UPDATE_COMMAND,
        "model_ids": current_model_ids(),
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            for engine in ENGINES:
                pins["cases"][f"{case.name}/{engine}"] = run_case(case, engine, shared, Path(tmp))
    return pins
