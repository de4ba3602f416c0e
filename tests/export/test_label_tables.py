"""Label orders and viewer colour tables: TotalSegmentator tissue_4_types ids, Slicer and ITK-SNAP files."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from sarcoscope.conventions import LABEL_COLORS, Label
from sarcoscope.errors import OutputError
from sarcoscope.export import label_nifti, write_outputs
from sarcoscope.export.label_tables import (
    LABEL_ORDERS,
    itksnap_label_description,
    relabel,
    slicer_color_table,
)

#: TotalSegmentator tissue_4_types class map (its map_to_binary.py), written out independently here.
TOTALSEG_TISSUE_4_TYPES = {
    1: "subcutaneous_fat",
    2: "torso_fat",
    3: "skeletal_muscle",
    4: "intermuscular_fat",
}


def test_totalsegmentator_order_matches_its_class_map() -> None:
    order = LABEL_ORDERS["totalsegmentator"]
    assert {i: name for i, name in order.values()} == TOTALSEG_TISSUE_4_TYPES
    labels = np.array([[0, Label.MUSCLE, Label.SAT], [Label.VAT, Label.IMAT, 0]], np.uint8)
    np.testing.assert_array_equal(relabel(labels, "totalsegmentator"), [[0, 3, 1], [2, 4, 0]])
    np.testing.assert_array_equal(relabel(labels, "sarcoscope"), labels)
    with pytest.raises(OutputError, match="Available: sarcoscope, totalsegmentator"):
        relabel(labels, "nnunet")


@pytest.mark.parametrize("order", ["sarcoscope", "totalsegmentator"])
def test_slicer_color_table_rows(order) -> None:
    rows = [line.split() for line in slicer_color_table(order).splitlines() if not line.startswith("#")]
    assert rows[0] == ["0", "background", "0", "0", "0", "0"]
    parsed = {int(r[0]): (r[1], tuple(int(v) for v in r[2:6])) for r in rows[1:]}
    for tissue, (i, name) in LABEL_ORDERS[order].items():
        label = {"muscle": Label.MUSCLE, "sat": Label.SAT, "vat": Label.VAT, "imat": Label.IMAT}[tissue]
        assert parsed[i] == (name, (*LABEL_COLORS[label], 255))
    assert all(len(r) == 6 for r in rows)  # id name R G B A, names without spaces


def test_itksnap_label_description_format() -> None:
    text = itksnap_label_description("totalsegmentator")
    pattern = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([01])\s+([01])\s+"([^"]*)"$')
    rows = [pattern.match(line) for line in text.splitlines() if not line.startswith("#")]
    assert all(rows) and len(rows) == 5
    by_id = {int(m[1]): (int(m[2]), int(m[3]), int(m[4]), m[8]) for m in rows}
    assert by_id[0] == (0, 0, 0, "Clear Label")
    assert by_id[3] == (*LABEL_COLORS[Label.MUSCLE], "Skeletal muscle")
    assert by_id[2][3] == "Visceral fat (VAT)"


def test_written_nifti_uses_the_chosen_order(make_result, tmp_path) -> None:
    result = make_result((5,))
    data = np.asarray(label_nifti(result, "totalsegmentator").dataobj)[..., 0].T
    np.testing.assert_array_equal(data, relabel(result.labels[0], "totalsegmentator"))
    written = write_outputs(result, tmp_path / "out", label_order="totalsegmentator")
    img = nib.load(written["labels_nifti"])
    assert int((np.asarray(img.dataobj) == 3).sum()) == int((result.labels == Label.MUSCLE).sum())
    assert b"3=skeletal_muscle" in img.header["descrip"].tobytes()
    assert written["slicer_colors"].read_text() == slicer_color_table("totalsegmentator")
    assert written["itksnap_labels"].read_text() == itksnap_label_description("totalsegmentator")
