"""Body composition at L3: tissue areas and HU statistics, ratios, SMI and classification by cutoff sets."""

from sarcoscope.composition.assessment import Assessment, Classification, PatientInfo, assess
from sarcoscope.composition.cutoffs import (
    CutoffSet,
    available_cutoff_sets,
    default_cutoff_set,
    load_cutoffs,
)
from sarcoscope.composition.measure import (
    Quantity,
    SliceComposition,
    TissueStats,
    average_compositions,
    measure_slice,
)

__all__ = [
    "Assessment",
    "Classification",
    "CutoffSet",
    "PatientInfo",
    "Quantity",
    "SliceComposition",
    "TissueStats",
    "assess",
    "available_cutoff_sets",
    "average_compositions",
    "default_cutoff_set",
    "load_cutoffs",
    "measure_slice",
]
