"""Synthetic CT with exact labels: L3 slices and abdominal volumes with a labelled spine.

Used by the demo, the tests, the L3 localizer tests and as U-Net training data, so the slices imitate
clinical L3 CT (contrast phases, bowel, kidneys, the liver's tip, in some against the wall, psoas
shapes from round to teardrop, table, correlated noise, partial volume).

Label definition (same as the real reference labels: "HU thresholds inside compartments"): the painted,
exact tissue compartments decide *where* a tissue may be, the final noisy HU decides *whether* a pixel is
labelled -- muscle (1) for HU -29..150 inside a muscle compartment, SAT (2) / VAT (3) / IMAT (4) for HU
-190..-30 in the subcutaneous, visceral or intramuscular fat (fat behind the vertebral body, inside the
thoracolumbar fascia, is intramuscular; the midline notch behind the spinous processes is subcutaneous).
Partial-volume edge pixels of soft tissue that read as fat take the label of the fat within 2 px; skin pixels
that read as fat (blurred into the air outside) are SAT, as in the real reference labels. So a
perfect segmenter of real reference labels also scores ~1 here. `truth["geometric_area_cm2"]` holds the
exact pre-blur areas for comparison; `truth["landmarks_px"]` the spine and paraspinal landmarks.
"""

from sarcoscope.phantom.anatomy import VARIANTS, VERTEBRA_IDS
from sarcoscope.phantom.habitus import Exam, Habitus
from sarcoscope.phantom.io import write_phantom
from sarcoscope.phantom.slice import LABEL_DEFINITION, PhantomSlice, make_slice
from sarcoscope.phantom.volume import COVERAGES, PhantomVolume, make_volume

__all__ = [
    "COVERAGES",
    "LABEL_DEFINITION",
    "VARIANTS",
    "VERTEBRA_IDS",
    "Exam",
    "Habitus",
    "PhantomSlice",
    "PhantomVolume",
    "make_slice",
    "make_volume",
    "write_phantom",
]
