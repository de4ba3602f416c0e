"""Reading every label-map format, the case-id rule, and explicit label mappings."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from sarcoscope.conventions import LABEL_COLORS, Label
from sarcoscope.errors import ValidationInputError
from sarcoscope.imaging.labelmaps import builtin_mappings, load_mapping, read_label_map
from sarcoscope.validation.io import (
    case_id_from_name,
    index_folder,
    match_cases,
    parse_pixel_spacing,
    resolve_spacing,
)

LABELS = np.array([[0, 1, 1, 2], [3, 4, 0, 2], [1, 1, 3, 0]], dtype=np.uint8)
SARCO = load_mapping(None)


def test_case_id_rule():
    assert case_id_from_name("L3_EMC101") == "EMC101"
    assert case_id_from_name("EMC101_seg") == "EMC101"
    assert case_id_from_name("L3_EMC101_pred") == "EMC101"
    assert case_id_from_name("L3_") == "L3_"  # never strip to an empty id
    assert case_id_from_name("x_L3_a", strip_prefixes=("L3_",)) == "x_L3_a"  # prefix only at the start
    assert case_id_from_name("L3_a", strip_prefixes=()) == "L3_a"


def test_index_and_match(tmp_path: Path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    for name in ("L3_a.npy", "b_pred.npy", ".hidden.npy"):
        np.save(tmp_path / "p" / name, LABELS)
    (tmp_path / "p" / "notes.txt").write_text("not a label map")
    for name in ("a.npy", "b.npy", "c.npy"):
        np.save(tmp_path / "r" / name, LABELS)
    preds = index_folder(tmp_path / "p")
    refs = index_folder(tmp_path / "r")
    assert set(preds) == {"a", "b"}
    with pytest.raises(ValidationInputError, match=r"1 reference case.*without prediction: c"):
        match_cases(preds, refs)
    assert match_cases(preds, refs, allow_unmatched=True) == ["a", "b"]
    np.save(tmp_path / "r" / "L3_a.npy", LABELS)
    with pytest.raises(ValidationInputError, match=r"Two files .* case id 'a'"):
        index_folder(tmp_path / "r")
    with pytest.raises(ValidationInputError, match="Folder not found"):
        index_folder(tmp_path / "missing")


def test_npy_and_png_grey_palette_colour(tmp_path: Path):
    np.save(tmp_path / "a.npy", LABELS)
    assert np.array_equal(read_label_map(tmp_path / "a.npy", SARCO).labels, LABELS[np.newaxis])
    Image.fromarray(LABELS).save(tmp_path / "grey.png")
    assert np.array_equal(read_label_map(tmp_path / "grey.png", SARCO).labels[0], LABELS)
    pal = Image.fromarray(LABELS, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    pal.save(tmp_path / "pal.png")
    assert np.array_equal(read_label_map(tmp_path / "pal.png", SARCO).labels[0], LABELS)
    rgb = np.zeros((*LABELS.shape, 3), np.uint8)
    for lab, colour in LABEL_COLORS.items():
        rgb[np.equal(LABELS, int(lab))] = colour
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    assert np.array_equal(read_label_map(tmp_path / "colour.png", SARCO).labels[0], LABELS)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(ValidationInputError, match=r"colour \(1, 2, 3\) is not a label colour"):
        read_label_map(tmp_path / "bad.png", SARCO)


def test_nifti_orientation_and_spacing(tmp_path: Path):
    # Our (z, y, x) layout has x to the patient's left and y posterior; NIfTI stores RAS (i, j, k).
    zyx = LABELS[np.newaxis]
    ras = np.ascontiguousarray(zyx.transpose(2, 1, 0)[::-1, ::-1, :])
    nib.save(nib.Nifti1Image(ras, np.diag([0.7, 0.8, 3.0, 1.0])), tmp_path / "a.nii.gz")
    lm = read_label_map(tmp_path / "a.nii.gz", SARCO)
    assert np.array_equal(lm.labels, zyx)
    assert lm.pixel_spacing == pytest.approx((0.8, 0.7))  # (y, x)
    # An LPS-stored file (negative i/j axes) gives the same array after reorientation.
    nib.save(
        nib.Nifti1Image(zyx.transpose(2, 1, 0).copy(), np.diag([-0.7, -0.8, 3.0, 1.0])), tmp_path / "b.nii"
    )
    assert np.array_equal(read_label_map(tmp_path / "b.nii", SARCO).labels, zyx)


def test_dicom_seg_by_segment_label(tmp_path: Path):
    hd = pytest.importorskip("highdicom")
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.sr.codedict import codes

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    labels = np.zeros((ct.Rows, ct.Columns), np.uint8)
    labels[20:60, 20:60] = 1
    labels[70:90, 30:50] = 2
    labels[100:110, 100:120] = 4

    def desc(number: int, label: str, prop) -> object:
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=prop,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )

    # Segment numbers deliberately differ from project ids; the labels decide.
    descs = [
        desc(1, "Intermuscular fat (IMAT)", codes.SCT.AdiposeTissue),
        desc(2, "Skeletal muscle", codes.SCT.SkeletalMuscle),
        desc(3, "subcutaneous_fat", codes.SCT.AdiposeTissue),
    ]
    seg_arr = np.zeros_like(labels)
    seg_arr[labels == 4], seg_arr[labels == 1], seg_arr[labels == 2] = 1, 2, 3
    seg = hd.seg.Segmentation(
        source_images=[ct],
        pixel_array=seg_arr,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="sarcoscope-tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "case_seg.dcm")
    lm = read_label_map(tmp_path / "case_seg.dcm", SARCO)
    assert np.array_equal(lm.labels[0], labels)
    assert lm.pixel_spacing == pytest.approx((0.661468, 0.661468))
    # A segment nobody can name is an error that says how to fix it.
    descs[0] = desc(1, "Lesion", codes.SCT.AdiposeTissue)
    seg2 = hd.seg.Segmentation(
        source_images=[ct],
        pixel_array=seg_arr,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="t",
        manufacturer_model_name="t",
        software_versions="0",
        device_serial_number="0",
    )
    seg2.save_as(tmp_path / "bad_seg.dcm")
    with pytest.raises(ValidationInputError, match=r"unknown DICOM SEG segment.*'Lesion'.*segment_labels"):
        read_label_map(tmp_path / "bad_seg.dcm", SARCO)
    # ... unless a mapping names it by number.
    mapping = tmp_path / "m.yaml"
    mapping.write_text("labels: {0: background}\nsegment_numbers: {1: imat}\n")
    assert np.array_equal(read_label_map(tmp_path / "bad_seg.dcm", load_mapping(mapping)).labels[0], labels)
    # A CT image in a label folder is refused with a clear message.
    with pytest.raises(ValidationInputError, match="not a DICOM SEG"):
        read_label_map(Path(get_testdata_file("CT_small.dcm")), SARCO)


def test_builtin_mappings():
    assert {"sarcoscope", "totalsegmentator-tissue-types", "imat-in-muscle-4class"} <= set(builtin_mappings())
    ts = load_mapping("totalsegmentator-tissue-types")
    out = ts.apply(np.array([[0, 1, 2, 3]]), "ts")
    assert out.tolist() == [[Label.BACKGROUND, Label.SAT, Label.VAT, Label.MUSCLE]]
    assert ts.tissues == ("muscle", "sat", "vat")
    merged = load_mapping("sarcoscope-imat-as-muscle").apply(LABELS, "x")
    assert np.array_equal(merged, np.where(LABELS == 4, 1, LABELS))
    assert load_mapping("imat-in-muscle-4class").tissues == ("muscle", "sat", "vat")


def test_unknown_label_ids_and_bad_mappings(tmp_path: Path):
    with pytest.raises(ValidationInputError, match=r"unknown label id\(s\) 4 for mapping 'totalsegmentator"):
        load_mapping("totalsegmentator-tissue-types").apply(LABELS, "ref/a.npy")
    with pytest.raises(ValidationInputError, match=r"unknown label id.*7"):
        SARCO.apply(np.array([[0, 7]]), "x")
    with pytest.raises(ValidationInputError, match="non-integer"):
        SARCO.apply(np.array([[0.5, 1.0]]), "x")
    with pytest.raises(ValidationInputError, match="neither a file nor a built-in"):
        load_mapping("no-such-mapping")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: {1: bone}\n")
    with pytest.raises(ValidationInputError, match="unknown tissue 'bone'"):
        load_mapping(bad)
    custom = tmp_path / "site.yaml"
    custom.write_text("name: site-x\nlabels: {0: background, 255: muscle}\n")
    m = load_mapping(custom)
    assert m.tissues == ("muscle",)
    assert m.apply(np.array([[0, 255]], np.uint8), "x").tolist() == [[0, 1]]


def test_spacing_resolution():
    assert resolve_spacing("a", [("r", None), ("p", (0.7, 0.7))], None) == (0.7, 0.7)
    assert resolve_spacing("a", [("r", None)], (1.0, 1.0)) == (1.0, 1.0)
    assert resolve_spacing("a", [("r", None)], None) is None
    with pytest.raises(ValidationInputError, match="pixel spacing mismatch"):
        resolve_spacing("a", [("r", (0.7, 0.7)), ("img", (0.8, 0.8))], None)


def test_parse_pixel_spacing():
    assert parse_pixel_spacing("0.7") == (0.7, 0.7)
    assert parse_pixel_spacing("0.7, 0.75") == (0.7, 0.75)
    for bad in ("", "a", "0", "1,2,3", "-1", "nan,nan", "inf", "0.7,nan"):
        with pytest.raises(ValidationInputError, match="--pixel-spacing"):
            parse_pixel_spacing(bad)
