"""Explicit label-id mappings, so label maps from another convention are compared only after conversion.

A mapping is a small YAML file (see the built-ins in `imaging/labelmaps/mappings/`)::

    name: my-hospital
    description: why the mapping is what it is
    labels: {0: background, 1: muscle, 2: sat, 3: vat}   # source id -> tissue name (or project id)
    tissues: [muscle, sat, vat]                           # tissues this convention can express
    segment_labels: {skeletal muscle: muscle}             # optional, DICOM SEG segment label -> tissue
    segment_numbers: {1: muscle}                          # optional, DICOM SEG segment number -> tissue

`segment_labels` also names the files of a per-tissue PNG folder (`skeletal muscle.png`, ...); the
project's tissue names and the usual English names are understood without it (DEFAULT_SEGMENT_LABELS).

A source id absent from `labels` is an error (never silently background): that is how a different
convention is caught before it distorts the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sarcoscope.conventions import TISSUE_TITLES, TISSUES, Label
from sarcoscope.errors import LabelMapError

BUILTIN_DIR = Path(__file__).with_name("mappings")
#: The mapping of the project's own ids, used when none is given.
PROJECT_MAPPING = "sarcoscope"
_NAMES: dict[str, int] = {"background": int(Label.BACKGROUND), **{k: int(v) for k, v in TISSUES.items()}}


def normalize_segment_label(text: str) -> str:
    """Lower-case words only, so 'Skeletal_Muscle', 'skeletal muscle' and 'Skeletal muscle.' match."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


#: Segment labels understood without a mapping (DICOM SEG written by this project or common tools).
DEFAULT_SEGMENT_LABELS: dict[str, int] = {
    normalize_segment_label(k): v
    for k, v in {
        **{name: int(lab) for name, lab in TISSUES.items()},
        **{TISSUE_TITLES[name]: int(lab) for name, lab in TISSUES.items()},
        "skeletal muscle": 1,
        "skeletal muscle tissue": 1,
        "subcutaneous fat": 2,
        "subcutaneous adipose tissue": 2,
        "visceral fat": 3,
        "visceral adipose tissue": 3,
        "intermuscular fat": 4,
        "intermuscular adipose tissue": 4,
        "intramuscular fat": 4,
        "intramuscular adipose tissue": 4,
    }.items()
}


def _target_id(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise LabelMapError(f"{where}: '{value}' is not a tissue name or label id.")
    if isinstance(value, int):
        if value not in _NAMES.values():
            raise LabelMapError(f"{where}: label id {value} is not one of the project's ids 0..4.")
        return value
    name = str(value).strip().lower()
    if name not in _NAMES:
        raise LabelMapError(
            f"{where}: unknown tissue '{value}' (use one of: {', '.join(_NAMES)} or an id 0..4)."
        )
    return _NAMES[name]


@dataclass(frozen=True)
class LabelMapping:
    """Source label ids -> project label ids, and which tissues the source convention can express."""

    name: str
    ids: dict[int, int]
    tissues: tuple[str, ...]
    description: str = ""
    segment_labels: dict[str, int] = field(default_factory=dict)
    segment_numbers: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LabelMapping:
        if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
            raise LabelMapError(f"Label mapping {source}: needs a 'labels' table (source id -> tissue).")
        ids: dict[int, int] = {}
        for key, value in data["labels"].items():
            try:
                src = int(key)
            except (TypeError, ValueError):
                raise LabelMapError(
                    f"Label mapping {source}: source label '{key}' is not an integer id."
                ) from None
            ids[src] = _target_id(value, f"Label mapping {source}, label {src}")
        tissues = data.get("tissues")
        if tissues is None:
            tissues = [t for t, lab in TISSUES.items() if int(lab) in ids.values()]
        unknown = [t for t in tissues if t not in TISSUES]
        if unknown:
            raise LabelMapError(f"Label mapping {source}: unknown tissues {unknown}.")
        seg_labels = {
            normalize_segment_label(str(k)): _target_id(v, f"Label mapping {source}, segment '{k}'")
            for k, v in (data.get("segment_labels") or {}).items()
        }
        seg_numbers = {
            int(k): _target_id(v, f"Label mapping {source}, segment {k}")
            for k, v in (data.get("segment_numbers") or {}).items()
        }
        return cls(
            name=str(data.get("name") or source),
            ids=ids,
            tissues=tuple(t for t in TISSUES if t in tissues),
            description=str(data.get("description") or "").strip(),
            segment_labels=seg_labels,
            segment_numbers=seg_numbers,
        )

    def apply(self, labels: np.ndarray, source: str) -> np.ndarray:
        """Convert to project ids; an id the mapping does not list raises LabelMapError."""
        if labels.dtype.kind not in "iub":
            rounded = np.rint(labels)
            if not np.array_equal(rounded, labels):
                raise LabelMapError(f"{source}: label map holds non-integer values; is it an image?")
            labels = rounded
        values = np.unique(labels).astype(np.int64)
        if values.size and values.min() < 0:
            raise LabelMapError(f"{source}: negative values ({values.min()}) are not label ids.")
        unknown = [int(v) for v in values if int(v) not in self.ids]
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise LabelMapError(
                f"{source}: unknown label id(s) {shown} for mapping '{self.name}' "
                f"(known: {sorted(self.ids)}). Pass the right --ref-labels/--pred-labels mapping."
            )
        lut = np.zeros(int(values.max(initial=0)) + 1, dtype=np.uint8)
        for src, dst in self.ids.items():
            if 0 <= src < lut.size:
                lut[src] = dst
        return lut[labels.astype(np.int64)]

    def tissue_id(self, name: str) -> int | None:
        """Project id for a tissue named in words (segment label, file name); None if unknown."""
        key = normalize_segment_label(name)
        return self.segment_labels.get(key, DEFAULT_SEGMENT_LABELS.get(key))

    def segment_id(
        self, number: int, label: str, property_meaning: str, coded_as: int | None = None
    ) -> int | None:
        """Project id for a DICOM SEG segment: by number, label, SNOMED codes (`coded_as`), property type."""
        if number in self.segment_numbers:
            return self.segment_numbers[number]
        if normalize_segment_label(label) in self.segment_labels:
            return self.segment_labels[normalize_segment_label(label)]
        if coded_as is not None:
            return coded_as
        for text in (label, property_meaning):
            found = self.tissue_id(text)
            if found is not None:
                return found
        return None


def builtin_mappings() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_mapping(spec: str | Path | LabelMapping | None) -> LabelMapping:
    """A built-in name, a YAML path, or None (the project's own ids)."""
    if isinstance(spec, LabelMapping):
        return spec
    if spec is None:
        spec = PROJECT_MAPPING
    path = Path(spec)
    if not path.is_file():
        builtin = BUILTIN_DIR / f"{spec}.yaml"
        if not builtin.is_file():
            raise LabelMapError(
                f"Label mapping '{spec}' is neither a file nor a built-in mapping "
                f"({', '.join(builtin_mappings())})."
            )
        path = builtin
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LabelMapError(f"Cannot read label mapping {path}: {exc}") from None
    return LabelMapping.from_dict(data, str(path))
