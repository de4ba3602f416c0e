"""read_ct on DICOM folders: ordering, rescale, padding, series choice, skipped objects, bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import highdicom
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sarcoscope.errors import InputError, LevelError
from sarcoscope.imaging import CTMetadata, list_series, read_ct, write_dicom_series
from sarcoscope.imaging.dicom_reader import contrast_phase
from sarcoscope.pipeline import select_l3


def _edit(path: Path, change: Callable[[Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _edit_all(folder: Path, change: Callable[[Dataset], None]) -> None:
    for p in sorted(folder.iterdir()):
        _edit(p, change)


def _write_sr(path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def test_order_by_position_not_name_or_instance_number(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(volume_hu, (2.0, 1.0, 1.0), tmp_path / "s", seed=5)
    # InstanceNumber contradicting the positions, and missing on some files, must not matter
    for k, p in enumerate(paths):
        _edit(
            p,
            lambda ds, k=k: (
                setattr(ds, "InstanceNumber", 100 - k) if k % 2 else delattr(ds, "InstanceNumber")
            ),
        )
    for k, p in enumerate(paths):  # names in reverse order
        p.rename(p.with_name(f"z{len(paths) - k:02d}"))
    vol = read_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, volume_hu)
    assert np.all(np.diff(vol.slice_positions) == pytest.approx(2.0))
    # headers are kept in array order, without pixel data
    assert [float(h.ImagePositionPatient[2]) for h in vol.dicom_headers] == pytest.approx(
        list(vol.slice_positions)
    )
    assert all("PixelData" not in h for h in vol.dicom_headers)


def test_feet_first_order_along_normal(tmp_path: Path, volume_hu: np.ndarray) -> None:
    """Slice normal pointing inferior: the array still follows the normal, and positions ascend along it.
    Its columns run anterior, so the images are turned upside down into the standard layout."""
    direction = np.diag([1.0, -1.0, -1.0])  # rows to the left, columns anterior, normal inferior
    write_dicom_series(volume_hu, (2.0, 1.0, 1.0), tmp_path, direction=direction, shuffle_names=True, seed=2)
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, volume_hu[:, ::-1, :])
    np.testing.assert_allclose(vol.direction, np.diag([1.0, 1.0, -1.0]))
    assert vol.stored_flip == (True, False)
    assert any("stored upside down" in w for w in vol.warnings)


@pytest.mark.parametrize(
    ("row", "column", "flip"),
    [
        (
            (-1.0, 0.0, 0.0),
            (0.0, -1.0, 0.0),
            (True, True),
        ),  # prone, as scanners store it: the back at the top
        ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (False, True)),  # rows toward the patient's right
    ],
)
def test_turned_to_the_standard_layout_at_the_same_place(
    tmp_path: Path, volume_hu: np.ndarray, row: tuple, column: tuple, flip: tuple[bool, bool]
) -> None:
    """The same anatomy stored turned reads as the standard series does: the same HU at the same LPS
    point, in the standard layout; `stored_layout` gives the files' pixels back."""
    spacing, origin = (2.0, 0.7, 0.8), np.array([-30.0, -20.0, 100.0])
    write_dicom_series(volume_hu, spacing, tmp_path / "standard", origin=origin)
    standard = read_ct(tmp_path / "standard")
    stored = volume_hu[:, :: -1 if flip[0] else 1, :: -1 if flip[1] else 1]
    ny, nx = volume_hu.shape[1:]
    first = origin + np.array([(nx - 1) * 0.8 if flip[1] else 0, (ny - 1) * 0.7 if flip[0] else 0, 0])
    axes = np.column_stack([row, column, (0.0, 0.0, 1.0)])  # slice positions still run superior
    write_dicom_series(stored, spacing, tmp_path / "turned", origin=first, direction=axes)
    turned = read_ct(tmp_path / "turned")
    assert turned.stored_flip == flip
    assert turned.direction[0, 0] > 0.9 and turned.direction[1, 1] > 0.9
    # every voxel of the turned volume, taken to the standard volume's indices through both affines
    idx = np.indices(turned.shape)[::-1].reshape(3, -1)  # (x, y, z) per voxel
    points = turned.affine_lps @ np.vstack([idx, np.ones(idx.shape[1])])
    back = np.rint(np.linalg.inv(standard.affine_lps) @ points)[:3].astype(int)
    np.testing.assert_array_equal(turned.hu.reshape(-1), standard.hu[back[2], back[1], back[0]])
    order = slice(None, None, -1) if turned.direction[2, 2] < 0 else slice(None)
    np.testing.assert_array_equal(turned.stored_layout(turned.hu), stored[order])


@pytest.mark.parametrize(
    ("rescale", "dtype"), [((1.0, -1024.0), np.int16), ((1.0, 0.0), np.int16), ((2.0, -2048.0), np.int16)]
)
def test_rescale_integral(tmp_path: Path, volume_hu: np.ndarray, rescale, dtype) -> None:
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path, rescale=rescale)
    vol = read_ct(tmp_path)
    assert vol.hu.dtype == dtype
    expected = np.rint((volume_hu - rescale[1]) / rescale[0]) * rescale[0] + rescale[1]
    np.testing.assert_array_equal(vol.hu, np.maximum(expected, -1024))


def test_unsigned_12_bit_with_intercept(tmp_path: Path, volume_hu: np.ndarray) -> None:
    """Typical Siemens storage: unsigned, BitsStored 12, intercept -1024; garbage in unused high bits."""
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path)

    def to_u12(ds: Dataset) -> None:
        stored = np.frombuffer(ds.PixelData, "<i2").astype(np.uint16) | 0xF000  # unused bits set
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
        ds.PixelData = stored.tobytes()

    _edit_all(tmp_path, to_u12)
    np.testing.assert_array_equal(read_ct(tmp_path).hu, volume_hu)


def test_padding_and_out_of_field(tmp_path: Path, volume_hu: np.ndarray) -> None:
    hu = volume_hu.copy()
    hu[:, 0, :] = -3024  # GE-style padding (stored -2000)
    hu[:, -1, :] = -2048  # out of field without padding tag
    write_dicom_series(hu, (1.0, 1.0, 1.0), tmp_path, padding_value=-2000)
    vol = read_ct(tmp_path)
    expected = volume_hu.copy()
    expected[:, 0, :] = expected[:, -1, :] = -1024
    np.testing.assert_array_equal(vol.hu, expected)
    assert any("padding" in w for w in vol.warnings)
    assert any("field of view" in w for w in vol.warnings)


def test_missing_rescale_accepted_when_values_are_hu(tmp_path: Path, volume_hu: np.ndarray) -> None:
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path, rescale=(1.0, 0.0))

    def strip(ds: Dataset) -> None:
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType

    _edit_all(tmp_path, strip)
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, volume_hu)
    assert any("no RescaleSlope/RescaleIntercept" in w for w in vol.warnings)


def test_missing_rescale_refused_when_values_cannot_be_hu(tmp_path: Path, volume_hu: np.ndarray) -> None:
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path)  # stored 0..1724, unsigned-looking

    def strip(ds: Dataset) -> None:
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType

    _edit_all(tmp_path, strip)
    with pytest.raises(InputError, match="do not look like Hounsfield units"):
        read_ct(tmp_path)


def test_a_slice_whose_rescale_leaves_no_air_is_named(series_dir: Path) -> None:
    files = sorted(series_dir.iterdir())
    vol = read_ct(series_dir)
    assert not any("hold no air" in w for w in vol.warnings)
    before = vol.hu.astype(np.int32)
    _edit(files[2], lambda ds: setattr(ds, "RescaleIntercept", str(float(ds.RescaleIntercept) + 1000)))
    vol = read_ct(series_dir)
    (warning,) = [w for w in vol.warnings if "hold no air" in w]
    # (its air, one value at -24 HU, is then read as a fill round the image: the body keeps the shift)
    airless = int(np.flatnonzero(np.abs(vol.hu - before).mean(axis=(1, 2)) > 100)[0])
    assert warning.startswith(f"slice(s) {airless} hold no air")


def test_two_frames_of_reference_in_one_series_are_warned_about(series_dir: Path) -> None:
    assert not any("frames of reference" in w for w in read_ct(series_dir).warnings)
    _edit(sorted(series_dir.iterdir())[1], lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid()))
    assert any("name 2 frames of reference" in w for w in read_ct(series_dir).warnings)


@pytest.mark.parametrize(
    ("description", "agent", "phase"),
    [
        ("Abdomen PV 1.0 B30f", "Omnipaque", "portal-venous"),
        ("ABD VENOUS 3mm", None, "portal-venous"),
        ("Arterial 0.625", "Iomeron", "arterial"),
        ("ART 1.0", None, "arterial"),
        ("Nativ 5.0 B31f", None, "non-contrast"),
        ("non-contrast abdomen", "Omnipaque", "non-contrast"),
        ("Delayed 3 min", None, "delayed"),
        ("Abdomen 3.0 B30f", "Omnipaque", "contrast"),  # enhanced, the phase not stated
        ("Abdomen 3.0 B30f", None, None),
        ("Partial abdomen 2.0", None, None),  # "art" inside a word is not "arterial"
    ],
)
def test_contrast_phase_is_read_from_the_series_description(
    description: str, agent: str | None, phase: str | None
) -> None:
    assert contrast_phase(description, agent) == phase


def test_several_series_pick_most_slices_or_requested(tmp_path: Path, volume_factory) -> None:
    thin = write_dicom_series(
        volume_factory(nz=8), (1.0, 1.0, 1.0), tmp_path / "a", series_description="thin"
    )
    write_dicom_series(
        volume_factory(nz=3, seed=1), (3.0, 1.0, 1.0), tmp_path / "b", series_description="thick"
    )
    # a sagittal series with more slices must not win over the axial one
    sag = np.column_stack([[0.0, 1, 0], [0.0, 0, -1], [-1.0, 0, 0]])  # rows -> P, columns -> I
    write_dicom_series(volume_factory(nz=12), (1.0, 1.0, 1.0), tmp_path / "c", direction=sag)
    infos = list_series(tmp_path)
    assert [(i.description, i.n_slices, i.orientation) for i in infos] == [
        ("thin", 8, "axial"),
        ("thick", 3, "axial"),
        ("sarcoscope CT", 12, "sagittal"),
    ]
    assert [(i.slice_thickness_mm, i.phase) for i in infos] == [(1.0, None), (3.0, None), (1.0, None)]
    vol = read_ct(tmp_path)
    assert vol.n_slices == 8 and vol.metadata.series_description == "thin"
    assert any("3 CT series found" in w and "thick" in w for w in vol.warnings)
    chosen = read_ct(tmp_path, series_uid=infos[1].series_uid)
    assert chosen.n_slices == 3
    with pytest.raises(InputError, match="not found"):
        read_ct(tmp_path, series_uid="1.2.3")
    assert pydicom.dcmread(thin[0]).SeriesInstanceUID == infos[0].series_uid


SEVERAL_PATIENTS = (
    r"holds the CT series of 2 patients .*one analysis is one patient's: choose a series with --series UID "
    r"\(`sarcoscope series` lists them with their patient\)"
)


def test_series_of_several_patients_are_not_picked_from(tmp_path: Path, volume_factory) -> None:
    # the series with most slices was read, with a warning, whichever patient it belonged to
    write_dicom_series(
        volume_factory(nz=8), (1.0, 1.0, 1.0), tmp_path / "a", metadata=CTMetadata(patient_id="P1")
    )
    write_dicom_series(
        volume_factory(nz=3), (3.0, 1.0, 1.0), tmp_path / "b", metadata=CTMetadata(patient_id="P2")
    )
    with pytest.raises(InputError, match=SEVERAL_PATIENTS):
        read_ct(tmp_path)
    infos = list_series(tmp_path)
    assert [(i.patient_id, i.n_slices) for i in infos] == [("P1", 8), ("P2", 3)]
    chosen = read_ct(tmp_path, series_uid=infos[1].series_uid)
    assert (chosen.metadata.patient_id, chosen.n_slices) == ("P2", 3)
    assert any("2 CT series found" in w for w in chosen.warnings)
    # without PatientID, each study is a patient of its own: two studies are not taken for one patient
    _edit_all(tmp_path / "a", lambda ds: delattr(ds, "PatientID"))
    _edit_all(tmp_path / "b", lambda ds: delattr(ds, "PatientID"))
    with pytest.raises(InputError, match=SEVERAL_PATIENTS):
        read_ct(tmp_path)
    # two studies of one patient: one is picked, as before, with the warning naming --series
    _edit_all(tmp_path / "a", lambda ds: setattr(ds, "PatientID", "P1"))
    _edit_all(tmp_path / "b", lambda ds: setattr(ds, "PatientID", "P1"))
    vol = read_ct(tmp_path)
    assert vol.n_slices == 8 and any("choose one with --series" in w for w in vol.warnings)


def test_sagittal_series_read_with_note(tmp_path: Path, volume_hu: np.ndarray) -> None:
    sag = np.column_stack([[0.0, 1, 0], [0.0, 0, -1], [-1.0, 0, 0]])
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path, direction=sag)
    vol = read_ct(tmp_path)
    assert not vol.is_axial and vol.orientation == "sagittal"
    assert any("not axial" in w for w in vol.warnings)


def test_sagittal_series_is_not_measured_even_at_a_chosen_slice(
    tmp_path: Path, volume_hu: np.ndarray
) -> None:
    sag = np.column_stack([[0.0, 1, 0], [0.0, 0, -1], [-1.0, 0, 0]])
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path, direction=sag)
    with pytest.raises(LevelError, match="sagittal, not axial"):
        select_l3(read_ct(tmp_path), slice_index=1)


def test_slices_all_at_one_position_are_refused(tmp_path: Path, volume_hu: np.ndarray) -> None:
    # Different images, one ImagePositionPatient: no order exists, so no slice may pass for L3.
    paths = write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.save_as(p)
    with pytest.raises(InputError, match="distinct position"):
        read_ct(tmp_path)
    # a series exported twice into one folder (every position twice) still reads, with a note
    for p in paths:
        shutil.copy(p, tmp_path / f"copy-{Path(p).name}")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [0.0, 0.0, float(paths.index(p))]
        ds.save_as(p)
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / f"copy-{Path(p).name}")
    vol = read_ct(tmp_path)
    assert vol.n_slices == len(paths) and any("duplicate the position" in w for w in vol.warnings)


def test_skips_scout_non_ct_dicomdir_and_junk(tmp_path: Path, volume_hu: np.ndarray) -> None:
    write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path / "nested" / "deeper")
    scout = write_dicom_series(volume_hu[:1], (1.0, 1.0, 1.0), tmp_path / "scout")

    def localizer(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    _edit(scout[0], localizer)
    _write_sr(tmp_path / "report.dcm")
    (tmp_path / "notes.txt").write_text("not dicom")
    shutil.copy(tmp_path / "report.dcm", tmp_path / "DICOMDIR")  # ignored by name
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, volume_hu)
    skipped = next(w for w in vol.warnings if w.startswith("skipped"))
    assert "1 localizer" in skipped and "1 SR" in skipped and "1 not DICOM" in skipped


def test_scout_inside_the_series_is_dropped(tmp_path: Path, volume_hu: np.ndarray) -> None:
    """A coronal image sharing the SeriesInstanceUID (no LOCALIZER flag) is left out by majority geometry."""
    paths = write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path, seed=9)
    extra = tmp_path / "extra.dcm"
    shutil.copy(paths[0], extra)

    def coronal(ds: Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.SOPInstanceUID = generate_uid()

    _edit(extra, coronal)
    vol = read_ct(tmp_path)
    assert vol.n_slices == volume_hu.shape[0]
    assert any("another orientation" in w for w in vol.warnings)


def test_nothing_usable_names_folder_and_contents(tmp_path: Path) -> None:
    _write_sr(tmp_path / "a.dcm")
    (tmp_path / "b.txt").write_text("x")
    (tmp_path / "c.bin").write_bytes(b"\x00" * 300)
    with pytest.raises(InputError) as err:
        read_ct(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "found 3 files" in msg and "2 not DICOM" in msg and "1 SR" in msg


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_ct(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_ct(tmp_path / "empty")
    (tmp_path / "zero.dcm").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_ct(tmp_path / "zero.dcm")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match=r"x\.txt is not a readable CT image .*not DICOM"):
        read_ct(tmp_path / "x.txt")


def test_truncated_files_are_named(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path / "pix")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-50])
    with pytest.raises(InputError, match=paths[2].name):
        read_ct(tmp_path / "pix")
    paths = write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path / "hdr")
    paths[3].write_bytes(paths[3].read_bytes()[:700])  # cut inside the header
    with pytest.raises(InputError, match=f"damaged DICOM file .*{paths[3].name}"):
        read_ct(tmp_path / "hdr")


def test_unsupported_compression_names_syntax_and_file(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(volume_hu, (1.0, 1.0, 1.0), tmp_path)

    def mpeg(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
        ds.PixelData = encapsulate([b"\x00" * 64])

    _edit(paths[0], mpeg)
    with pytest.raises(InputError, match=r"MPEG2.*cannot be decoded") as err:
        read_ct(tmp_path)
    assert paths[0].name in str(err.value)


def test_rgb_only_is_refused(tmp_path: Path, volume_hu: np.ndarray) -> None:
    paths = write_dicom_series(volume_hu[:1], (1.0, 1.0, 1.0), tmp_path)

    def rgb(ds: Dataset) -> None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = np.zeros((*volume_hu.shape[1:], 3), np.uint8).tobytes()

    _edit(paths[0], rgb)
    with pytest.raises(InputError, match="RGB"):
        read_ct(tmp_path)


def test_duplicates_gaps_and_tilt_are_reported(tmp_path: Path, volume_factory) -> None:
    hu = volume_factory(nz=8)
    paths = write_dicom_series(hu, (2.0, 1.0, 1.0), tmp_path / "gap", origin=(0, 0, 0))
    paths[4].unlink()  # missing slice at z=8
    shutil.copy(paths[1], tmp_path / "gap" / "dup.dcm")
    vol = read_ct(tmp_path / "gap")
    assert vol.n_slices == 7
    assert any("duplicate the position" in w for w in vol.warnings)
    gap = next(w for w in vol.warnings if "uneven slice spacing" in w)
    assert "6->10 mm" in gap and "1 slices missing" in gap
    np.testing.assert_allclose(vol.slice_positions, [0, 2, 4, 6, 10, 12, 14])

    tilted = write_dicom_series(hu, (2.0, 1.0, 1.0), tmp_path / "tilt")
    for k, p in enumerate(tilted):  # positions drift in y: sheared stack from a tilted gantry

        def tilt(ds: Dataset, k: int = k) -> None:
            ds.ImagePositionPatient = [0.0, 0.7 * k, 2.0 * k]
            ds.GantryDetectorTilt = 19.3

        _edit(p, tilt)
    vol = read_ct(tmp_path / "tilt")
    warning = next(w for w in vol.warnings if w.startswith("gantry tilt"))
    assert "19.3" in warning and "off the slice normal" in warning


def test_single_slice_and_metadata_without_ids(tmp_path: Path, volume_hu: np.ndarray) -> None:
    meta = CTMetadata(patient_sex="M", patient_age_years=71)
    path = write_dicom_series(volume_hu[2:3], (5.0, 0.7, 0.7), tmp_path, metadata=meta)[0]

    def deidentify(ds: Dataset) -> None:
        del ds.PatientID, ds.PatientBirthDate, ds.FrameOfReferenceUID, ds.InstanceNumber

    _edit(path, deidentify)
    vol = read_ct(path)
    assert vol.shape == (1, *volume_hu.shape[1:]) and vol.spacing == pytest.approx((5.0, 0.7, 0.7))
    np.testing.assert_array_equal(vol.hu[0], volume_hu[2])
    assert vol.metadata.patient_id is None and vol.metadata.frame_of_reference_uid is None
    assert (vol.metadata.patient_sex, vol.metadata.patient_age_years) == ("M", 71.0)


def test_enhanced_multiframe_ct(tmp_path: Path, volume_hu: np.ndarray) -> None:
    """A Legacy Converted Enhanced CT (one file, all frames) reads like its single-frame source series."""
    paths = write_dicom_series(volume_hu, (2.5, 0.8, 0.7), tmp_path / "single", origin=(1.0, 2.0, 3.0))
    single = read_ct(tmp_path / "single")
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in paths], generate_uid(), 7, generate_uid(), 1
    )
    (tmp_path / "mf").mkdir()
    enhanced.save_as(tmp_path / "mf" / "enhanced.dcm")
    info = list_series(tmp_path / "mf")[0]
    assert (info.n_slices, info.orientation) == (6, "axial") and "multi-frame" in info.note
    vol = read_ct(tmp_path / "mf")
    np.testing.assert_array_equal(vol.hu, single.hu)
    assert vol.spacing == pytest.approx(single.spacing)
    assert vol.origin == pytest.approx(single.origin)
    np.testing.assert_allclose(vol.direction, single.direction, atol=1e-6)
    np.testing.assert_allclose(vol.slice_positions, single.slice_positions)
    assert vol.dicom_headers is None


def test_height_in_centimetres_is_converted(tmp_path: Path, volume_hu: np.ndarray) -> None:
    meta = CTMetadata(patient_height_m=172.0, patient_weight_kg=5000.0)
    write_dicom_series(volume_hu[:1], (1.0, 1.0, 1.0), tmp_path, metadata=meta)
    vol = read_ct(tmp_path)
    assert vol.metadata.patient_height_m == pytest.approx(1.72) and vol.metadata.patient_weight_kg is None
    assert any("centimetres" in w for w in vol.warnings) and any("PatientWeight" in w for w in vol.warnings)


def test_image_numbers_are_each_slices_instance_number_or_none(tmp_path: Path) -> None:
    """The "image 7" the app and the reports say beside a slice index is its DICOM Instance Number, in the
    volume's slice order (a series numbered head first: slice 0 is its last image); none is said when a
    slice lacks one or two slices share one (which would name two slices alike)."""
    from sarcoscope.imaging.volume import image_numbers, image_text

    hu = np.full((4, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = 40
    out = tmp_path / "ct"
    write_dicom_series(hu, (3.0, 1.0, 1.0), out)
    _edit_all(out, lambda ds: setattr(ds, "InstanceNumber", 5 - int(ds.InstanceNumber)))  # head first
    volume = read_ct(out)
    assert image_numbers(volume) == [4, 3, 2, 1]
    assert image_text([image_numbers(volume)[i] for i in (1, 2)]) == " · images 2–3"
    assert image_text([None]) == image_text(None) == ""
    _edit(sorted(out.iterdir())[0], lambda ds: setattr(ds, "InstanceNumber", 2))
    assert image_numbers(read_ct(out)) is None


def test_a_volume_refuses_instance_numbers_that_do_not_name_each_slice_once(tmp_path: Path) -> None:
    """A volume's `instance_numbers` (the web app's cache gives them) name every slice, each its own: a
    wrong list would put another slice's "image 7" in the reports."""
    import dataclasses

    from sarcoscope.imaging.volume import image_numbers

    hu = np.full((3, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = 40
    write_dicom_series(hu, (3.0, 1.0, 1.0), tmp_path / "ct")
    volume = read_ct(tmp_path / "ct")
    assert image_numbers(dataclasses.replace(volume, instance_numbers=[3, 2, 1])) == [3, 2, 1]
    for wrong in ([1, 2], [1, 1, 2]):
        with pytest.raises(ValueError, match="each of the 3 slices its own number"):
            dataclasses.replace(volume, instance_numbers=wrong)
