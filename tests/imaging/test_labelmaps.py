"""Label maps from other tools: Slice-O-Matic TAG files written here with a known layout, tissue PNG
folders, the grid rule, and a real L3 slice written in every format and read back exactly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from sarcoscope.conventions import Label
from sarcoscope.errors import InputError, LabelMapError, ValidationInputError
from sarcoscope.imaging import read_ct
from sarcoscope.imaging.labelmaps import LabelGrid, load_mapping, read_label_map

ALBERTA = load_mapping("slice-o-matic-alberta")
SARCO = load_mapping(None)
#: Slice-O-Matic Alberta tags -> project ids (the built-in mapping's table).
TAG_TO_PROJECT = {0: 0, 1: Label.MUSCLE, 2: Label.IMAT, 5: Label.VAT, 7: Label.SAT}
#: A 3 x 4 tag image: every Alberta tag, rows distinguishable from columns.
TAGS = np.array([[0, 1, 1, 7], [5, 2, 0, 7], [1, 1, 5, 0]], dtype=np.uint8)
PROJECT = np.vectorize(lambda t: int(TAG_TO_PROJECT[int(t)]))(TAGS).astype(np.uint8)


def test_tag_file_reads_back_exactly(tmp_path: Path, write_tag) -> None:
    lm = read_label_map(write_tag(tmp_path / "a.tag", TAGS), ALBERTA)
    assert lm.labels.dtype == np.uint8 and lm.labels.shape == (1, 3, 4)
    np.testing.assert_array_equal(lm.labels[0], PROJECT)
    assert (lm.labels[0, 0, 3], lm.labels[0, 1, 0], lm.labels[0, 1, 1]) == (Label.SAT, Label.VAT, Label.IMAT)
    # On its image's grid it is the same; two images in one file keep their order.
    grid = LabelGrid((1, 3, 4), name="image a.dcm")
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.tag", ALBERTA, grid).labels[0], PROJECT)
    two = np.stack([TAGS, TAGS[::-1]])
    lm2 = read_label_map(write_tag(tmp_path / "b.tag", two, "x:4 y:3 z:2\r\n"), ALBERTA)
    np.testing.assert_array_equal(lm2.labels, np.stack([PROJECT, PROJECT[::-1]]))


@pytest.mark.parametrize(
    "header",
    [
        "X:4\r\nY:3\r\nZ:1\r\nTYPE:BYTE\r\n",  # keywords in upper case, one per line
        "x:4,y:3,\tz:1 , type:byte\r\n",  # commas and tabs as separators
        "* written by hand\r\nx:4 y:3 * the size\r\norg_x:-200.5 inc_x:0.78 epais:5 uid:1.2.3 chksum:42\r\n",
        "x:4 y:3\n",  # LF only, no z and no type (one BYTE image)
        "",  # no header at all: the size comes from the image
    ],
)
def test_tag_header_variants(tmp_path: Path, header: str, write_tag) -> None:
    path = write_tag(tmp_path / "v.tag", TAGS, header)
    grid = LabelGrid((1, 3, 4))
    np.testing.assert_array_equal(read_label_map(path, ALBERTA, grid).labels[0], PROJECT)


def test_tag_files_that_do_not_fit_are_refused(tmp_path: Path, write_tag) -> None:
    grid = LabelGrid((1, 3, 4), name="image a.dcm")
    path = write_tag(tmp_path / "short.tag", TAGS.ravel()[:-1], "x:4 y:3\r\n")
    with pytest.raises(LabelMapError, match=r"short.tag: 11 bytes of tags .* need 12"):
        read_label_map(path, ALBERTA, grid)
    path = write_tag(tmp_path / "wide.tag", np.zeros((3, 5), np.uint8))
    with pytest.raises(LabelMapError, match=r"image a.dcm has shape \(1, 3, 4\) but label map wide.tag has"):
        read_label_map(path, ALBERTA, grid)
    path = write_tag(tmp_path / "nosize.tag", TAGS, "type:BYTE\r\n")
    with pytest.raises(LabelMapError, match="no x:/y: size in its header"):
        read_label_map(path, ALBERTA)
    (tmp_path / "plain.tag").write_bytes(TAGS.tobytes())  # raw bytes, no header, no form feed
    with pytest.raises(LabelMapError, match=r"plain\.tag is not a Slice-O-Matic TAG file"):
        read_label_map(tmp_path / "plain.tag", ALBERTA, grid)
    path = write_tag(tmp_path / "short16.tag", TAGS, "x:4 y:3 type:SHORT\r\n")
    with pytest.raises(LabelMapError, match="pixel type SHORT"):
        read_label_map(path, ALBERTA, grid)
    path = write_tag(tmp_path / "odd.tag", TAGS, "x:4 y:3 junk\r\n")
    with pytest.raises(LabelMapError, match="'junk' is not keyword:value"):
        read_label_map(path, ALBERTA, grid)
    # A tag the mapping does not list is an error, never silently background.
    other = TAGS.copy()
    other[0, 0] = 12
    with pytest.raises(LabelMapError, match=r"unknown label id\(s\) 12 for mapping 'slice-o-matic-alberta'"):
        read_label_map(write_tag(tmp_path / "t12.tag", other), ALBERTA, grid)
    # Tags are never read as project ids: 1 and 2 would silently be muscle and SAT.
    with pytest.raises(LabelMapError, match="Give its label mapping"):
        read_label_map(tmp_path / "t12.tag", SARCO, grid)
    # Both kinds of caller catch it: training (InputError) and validation (ValidationInputError).
    assert issubclass(LabelMapError, InputError) and issubclass(LabelMapError, ValidationInputError)


def test_other_tag_conventions_through_a_yaml_mapping(tmp_path: Path, write_tag) -> None:
    mapping = tmp_path / "site.yaml"
    mapping.write_text("name: site-x\nlabels: {0: background, 1: muscle, 2: imat, 5: vat, 7: sat, 12: 0}\n")
    other = TAGS.copy()
    other[0, 0] = 12
    lm = read_label_map(write_tag(tmp_path / "t12.tag", other), load_mapping(mapping))
    np.testing.assert_array_equal(lm.labels[0], PROJECT)


def test_tissue_png_folder(tmp_path: Path) -> None:
    folder = tmp_path / "case1"
    folder.mkdir()
    for name, label in (("muscle", 1), ("Subcutaneous fat", 2), ("vat", 3), ("imat", 4)):
        Image.fromarray(((label == PROJECT) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("ignored")
    np.testing.assert_array_equal(read_label_map(folder, SARCO).labels[0], PROJECT)
    Image.fromarray(((PROJECT > 0) * 1).astype(np.uint8)).save(folder / "sat.png")
    with pytest.raises(LabelMapError, match=r"Subcutaneous fat\.png and sat\.png are both sat"):
        read_label_map(folder, SARCO)
    (folder / "Subcutaneous fat.png").unlink()
    with pytest.raises(LabelMapError, match=r"sat.png and (imat|muscle|vat).png overlap in \d+ pixel"):
        read_label_map(folder, SARCO)
    (folder / "sat.png").unlink()
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(folder / "liver.png")
    with pytest.raises(LabelMapError, match="'liver' is not a tissue name"):
        read_label_map(folder, SARCO)


def test_grid_rule(tmp_path: Path) -> None:
    volume = np.stack([PROJECT, PROJECT[::-1], np.zeros_like(PROJECT)])
    np.save(tmp_path / "v.npy", volume)
    grid = LabelGrid((3, 3, 4), ("1.1", "1.2", "1.3"), "image ct")
    # A file holding every slice of the image gives the asked ones; one holding exactly those, itself.
    np.testing.assert_array_equal(read_label_map(tmp_path / "v.npy", SARCO, grid, [1]).labels, volume[1:2])
    np.save(tmp_path / "one.npy", PROJECT)
    np.testing.assert_array_equal(read_label_map(tmp_path / "one.npy", SARCO, grid, [2]).labels[0], PROJECT)
    with pytest.raises(LabelMapError, match=r"one.npy has 1 slice\(s\) but image ct has 3"):
        read_label_map(tmp_path / "one.npy", SARCO, grid)
    with pytest.raises(ValueError, match="3 positive sizes"):
        LabelGrid((3, 0, 4))
    with pytest.raises(ValueError, match="as many distinct SOP UIDs"):
        LabelGrid((2, 3, 4), ("1.1", "1.1"))


# -- a real L3 slice in every format --------------------------------------------------------------------
def _real_case(shared_data: Path, case: str = "EMC101") -> tuple[Path, np.ndarray]:
    real = shared_data / "real" / "l3_slices"
    return real / "images" / f"L3_{case}.dcm", np.load(real / "labels" / f"{case}.npy")


def _seg_of(dicom: Path, labels: np.ndarray, path: Path, label_text: dict[int, str] | None = None) -> Path:
    """`labels` as a DICOM SEG of `dicom` (highdicom), segments coded as the project's export codes them."""
    import highdicom as hd
    import pydicom

    from sarcoscope.conventions import TISSUE_TITLES, TISSUES
    from sarcoscope.imaging.labelmaps.seg import SEGMENT_CODES

    source = pydicom.dcmread(dicom)
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        setattr(source, keyword, source.get(keyword, ""))  # Type 2: present, may be empty (de-identified)
    present = [name for name, lab in TISSUES.items() if np.any(labels == lab)]
    descriptions, numbers = [], np.zeros(256, np.uint8)
    for number, name in enumerate(present, start=1):
        prop, region = SEGMENT_CODES[name]
        numbers[int(TISSUES[name])] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=(label_text or {}).get(number, TISSUE_TITLES[name]),
                segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
                segmented_property_type=prop,
                anatomic_regions=[region],
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        )
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=numbers[labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="sarcoscope-tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(path)
    return path


def test_real_slice_in_every_format_reads_back_identical(
    shared_data: Path, tmp_path: Path, write_tag, alberta_tags
) -> None:
    dicom, reference = _real_case(shared_data)
    volume = read_ct(dicom)
    grid = LabelGrid.of_volume(volume)
    assert grid.shape == (1, *reference.shape) and grid.sop_uids and grid.name == f"image {dicom.name}"
    tags = alberta_tags(reference)
    files = {
        "tag": (write_tag(tmp_path / "a.tag", tags), ALBERTA),
        "tag without size": (write_tag(tmp_path / "b.tag", tags, "type:BYTE\r\n"), ALBERTA),
        "png": (tmp_path / "a.png", SARCO),
        "tissue pngs": (tmp_path / "pngs", SARCO),
        "nifti": (tmp_path / "a.nii.gz", SARCO),
        "dicom seg": (_seg_of(dicom, reference, tmp_path / "a_seg.dcm"), SARCO),
        # Segment labels nobody knows: the SNOMED codes decide.
        "dicom seg by codes": (
            _seg_of(dicom, reference, tmp_path / "b_seg.dcm", {i: f"region {i}" for i in range(1, 5)}),
            SARCO,
        ),
    }
    Image.fromarray(reference).save(tmp_path / "a.png")
    (tmp_path / "pngs").mkdir()
    for name, lab in (("muscle", 1), ("sat", 2), ("vat", 3), ("imat", 4)):
        Image.fromarray(((reference == lab) * 255).astype(np.uint8)).save(tmp_path / "pngs" / f"{name}.png")
    # NIfTI in RAS, as a viewer saves it on the CT's grid (x to the left, y posterior in our layout).
    ras = np.ascontiguousarray(reference[np.newaxis].transpose(2, 1, 0)[::-1, ::-1, :])
    dy, dx = volume.pixel_spacing
    nib.save(nib.Nifti1Image(ras, np.diag([dx, dy, 5.0, 1.0])), tmp_path / "a.nii.gz")
    for what, (path, mapping) in files.items():
        lm = read_label_map(path, mapping, grid)
        assert lm.labels.shape == (1, *reference.shape), what
        assert np.array_equal(lm.labels[0], reference), what
    seg_spacing = read_label_map(files["dicom seg"][0], SARCO, grid).pixel_spacing
    assert seg_spacing == pytest.approx(volume.pixel_spacing)


def test_real_slice_refused_on_another_image(shared_data: Path, tmp_path: Path, write_tag) -> None:
    dicom, reference = _real_case(shared_data)
    other = read_ct(_real_case(shared_data, "EMC100")[0])
    seg = _seg_of(dicom, reference, tmp_path / "a_seg.dcm")
    with pytest.raises(LabelMapError, match=r"a_seg.dcm does not reference slice\(s\) 0 .* of image L3_EMC1"):
        read_label_map(seg, SARCO, LabelGrid.of_volume(other))
    with pytest.raises(LabelMapError, match="not read from DICOM"):
        read_label_map(seg, SARCO, LabelGrid((1, *reference.shape), name="image x.nii.gz"))
    cropped = write_tag(tmp_path / "c.tag", np.zeros((500, 512), np.uint8))
    with pytest.raises(LabelMapError, match=r"L3_EMC100.dcm has shape \(1, 512, 512\) but label map c.tag"):
        read_label_map(cropped, ALBERTA, LabelGrid.of_volume(other))


def test_projects_own_dicom_seg_round_trips(shared_data: Path, tmp_path: Path) -> None:
    from sarcoscope import analyze

    dicom, _ = _real_case(shared_data)
    result = analyze(dicom, out_dir=tmp_path / "out")
    grid = LabelGrid.of_volume(read_ct(dicom))
    lm = read_label_map(tmp_path / "out" / "labels.seg.dcm", SARCO, grid)
    assert np.array_equal(lm.labels, np.asarray(result.labels, np.uint8))
    assert set(np.unique(lm.labels)) == {0, 1, 2, 3, 4}
    # Its NIfTI export too (the analysed slice on the CT's grid).
    nifti = read_label_map(tmp_path / "out" / "labels.nii.gz", SARCO, grid)
    assert np.array_equal(nifti.labels, lm.labels)
