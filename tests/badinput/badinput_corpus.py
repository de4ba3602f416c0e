"""The bad-input corpus: each entry writes one damaged or wrong input (or argument) derived from a small
phantom and says which command it is given to and what the one error message must contain.

Builders get the folder of a `Base` (valid inputs made once) and a fresh folder for their own files, and
return the command line without `-o` (the test adds it). Nothing here is stored in the repository.
"""

from __future__ import annotations

import gzip
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag

from sarcoscope.imaging import write_dicom_series
from sarcoscope.imaging.nifti import ras_to_layout
from sarcoscope.phantom import make_slice

SIZE = 96  # pixels; the phantom's field of view gives about 4 mm pixels
ENGINE = ["--engine", "threshold"]


@dataclass(frozen=True)
class Base:
    """Valid inputs every entry starts from."""

    root: Path
    one: Path  # a single-slice DICOM file
    series: Path  # a folder of 3 DICOM slices
    nifti: Path  # the same 3 slices as NIfTI (with a transform)
    hu: np.ndarray  # (3, y, x)
    spacing: tuple[float, float]

    @classmethod
    def make(cls, root: Path) -> Base:
        sl = make_slice(1, size=SIZE)
        hu = np.repeat(np.rint(sl.hu)[None].astype(np.int16), 3, axis=0)
        spacing = (float(sl.pixel_spacing[0]), float(sl.pixel_spacing[1]))
        paths = write_dicom_series(hu, (3.0, *spacing), root / "series", seed=3)
        one = root / "one.dcm"
        one.write_bytes(paths[1].read_bytes())
        nifti = root / "ct.nii.gz"
        nib.save(nifti_image(hu, spacing), nifti)
        return cls(root, one, root / "series", nifti, hu, spacing)


def to_ras(zyx: np.ndarray) -> np.ndarray:
    """The inverse of ras_to_layout: (z, y, x) -> RAS (i, j, k)."""
    return np.ascontiguousarray(zyx.transpose(2, 1, 0)[::-1, ::-1, :])


def nifti_image(zyx: np.ndarray, spacing: tuple[float, float], dz: float = 3.0) -> nib.Nifti1Image:
    img = nib.Nifti1Image(to_ras(zyx), np.diag([spacing[1], spacing[0], dz, 1.0]))
    assert np.array_equal(ras_to_layout(np.asanyarray(img.dataobj)), zyx, equal_nan=True)
    return img


Builder = Callable[[Base, Path], list[str]]


@dataclass(frozen=True)
class BadInput:
    id: str
    build: Builder
    match: str  # a regular expression the one error message must match
    env: tuple[tuple[str, str], ...] = ()


CORPUS: list[BadInput] = []


def bad(id: str, match: str, env: tuple[tuple[str, str], ...] = ()) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        CORPUS.append(BadInput(id, build, match, env))
        return build

    return register


def analyze(path: Path, *extra: str) -> list[str]:
    return ["analyze", str(path), *ENGINE, *extra]


# --- DICOM: truncated ---------------------------------------------------------------------------------


def _truncated(fraction: float) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        data = base.one.read_bytes()
        (d / "cut.dcm").write_bytes(data[: int(len(data) * fraction)])
        return analyze(d / "cut.dcm")

    return build


for _k in range(20):
    _f = 0.01 + 0.049 * _k
    bad(f"dicom-truncated-{_f:.3f}", r"cut\.dcm")(_truncated(_f))


# --- DICOM: wrong tags (one file) -----------------------------------------------------------------------


def _tags(mutate: Callable[[pydicom.Dataset], None], name: str = "x.dcm") -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        ds = pydicom.dcmread(base.one)
        mutate(ds)
        ds.save_as(d / name, enforce_file_format=False)
        return analyze(d / name)

    return build


def _set(**tags: object) -> Callable[[pydicom.Dataset], None]:
    def mutate(ds: pydicom.Dataset) -> None:
        for key, value in tags.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)

    return mutate


def _stored(keyword: str, text: str) -> Callable[[pydicom.Dataset], None]:
    """`keyword` holding `text` as its stored bytes: pydicom refuses to set a number (DS) that is not one."""

    def mutate(ds: pydicom.Dataset) -> None:
        tag = Tag(keyword)
        value = (text + " " * (len(text) % 2)).encode("ascii")
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)

    return mutate


MISMATCH = r"do not match the pixel data|truncated pixel data"
for _rows in (1, 16, SIZE // 2, SIZE - 1, SIZE + 1, 2 * SIZE):
    bad(f"dicom-rows-{_rows}", MISMATCH)(_tags(_set(Rows=_rows)))
for _cols in (16, SIZE // 2, SIZE + 1, 2 * SIZE):
    bad(f"dicom-columns-{_cols}", MISMATCH)(_tags(_set(Columns=_cols)))
bad("dicom-rows-and-columns-swapped-half", MISMATCH)(_tags(_set(Rows=SIZE * 2, Columns=SIZE // 2 + 1)))
bad("dicom-bits-allocated-8", MISMATCH)(_tags(_set(BitsAllocated=8, BitsStored=8, HighBit=7)))
bad("dicom-bits-allocated-32", MISMATCH)(_tags(_set(BitsAllocated=32, BitsStored=32, HighBit=31)))
SPACING = r"PixelSpacing|pixel spacing"
bad("dicom-no-pixel-spacing", SPACING)(_tags(_set(PixelSpacing=None)))
for _ps in ("0\\0", "-1\\-1", "0.001\\0.001", "500\\500", "1", "nan\\nan", "inf\\inf", "0.7\\0"):
    bad(f"dicom-pixel-spacing-{_ps.replace(chr(92), '_')}", SPACING)(_tags(_set(PixelSpacing=_ps)))
NOT_CT = r"not a readable CT image"
bad("dicom-modality-mr", NOT_CT)(_tags(_set(Modality="MR")))
bad("dicom-modality-sr", NOT_CT)(_tags(_set(Modality="SR")))
bad("dicom-no-modality-no-sop-class", r"truncated\?")(_tags(_set(Modality=None, SOPClassUID=None)))


def _no_sop_class(*, blank_study_uid: bool) -> Callable[[pydicom.Dataset], None]:
    """No SOP Class UID in the image nor its file meta; `blank_study_uid`: a UID the web app replaces too
    (it writes its stand-ins into its stored copy, whose file meta needs the class: a 500 before)."""

    def mutate(ds: pydicom.Dataset) -> None:
        del ds.SOPClassUID
        del ds.file_meta.MediaStorageSOPClassUID
        if blank_study_uid:
            ds.StudyInstanceUID = ""

    return mutate


NO_SOP_CLASS = r"x\.dcm has no SOP Class UID \(nor one in the file meta\)"
bad("dicom-no-sop-class", NO_SOP_CLASS)(_tags(_no_sop_class(blank_study_uid=False)))
bad("dicom-no-sop-class-uids-replaced", NO_SOP_CLASS)(_tags(_no_sop_class(blank_study_uid=True)))
bad("dicom-rgb", NOT_CT)(_tags(_set(PhotometricInterpretation="RGB", SamplesPerPixel=3)))
bad("dicom-localizer", NOT_CT)(_tags(_set(ImageType="ORIGINAL\\PRIMARY\\LOCALIZER")))
bad("dicom-no-pixel-data", r"without pixel data")(_tags(_set(PixelData=None)))
bad("dicom-empty-pixel-data", r"truncated pixel data")(_tags(_set(PixelData=b"")))
bad("dicom-no-geometry", NOT_CT)(
    _tags(_set(ImageOrientationPatient=None, ImagePositionPatient=None, PixelSpacing=None))
)
bad("dicom-rescale-slope-zero", r"RescaleSlope")(_tags(_set(RescaleSlope="0")))
bad("dicom-rescale-slope-nan", r"RescaleSlope")(_tags(_set(RescaleSlope="nan")))
bad("dicom-rescale-intercept-inf", r"RescaleIntercept")(_tags(_set(RescaleIntercept="inf")))
bad("dicom-not-hu-without-rescale", r"do not look like Hounsfield")(
    _tags(_set(RescaleSlope=None, RescaleIntercept=None))
)
bad("dicom-frames-2", r"multi-frame")(_tags(_set(NumberOfFrames="2")))
# rescales that map the stored values far outside Hounsfield units: refused, not measured as all zero
bad("dicom-zero-rows", r"image of 0 rows or columns")(_tags(_set(Rows=0, Columns=0)))
bad("dicom-rescale-intercept-40000", r"do not look like Hounsfield")(_tags(_set(RescaleIntercept="40000")))
bad("dicom-rescale-intercept-1e30", r"RescaleIntercept")(_tags(_set(RescaleIntercept="1e30")))
bad("dicom-rescale-slope-1e30", r"RescaleSlope")(_tags(_set(RescaleSlope="1e30")))
# unreadable rescale values were read as 1 and 0: a wrong slope gave wrong HU without a word
NOT_HU = r"; the stored values cannot be turned into Hounsfield units$"
bad("dicom-rescale-slope-text", r"x\.dcm has RescaleSlope 'abc', not a number" + NOT_HU)(
    _tags(_stored("RescaleSlope", "abc"))
)
bad("dicom-rescale-slope-empty", r"x\.dcm has an empty RescaleSlope" + NOT_HU)(_tags(_set(RescaleSlope="")))
bad("dicom-rescale-intercept-text", r"x\.dcm has RescaleIntercept '-1024 HU', not a number" + NOT_HU)(
    _tags(_stored("RescaleIntercept", "-1024 HU"))
)
bad("dicom-rescale-intercept-empty", r"x\.dcm has an empty RescaleIntercept" + NOT_HU)(
    _tags(_set(RescaleIntercept=""))
)


def _transfer_syntax(uid: str, compressed: bool) -> Callable[[pydicom.Dataset], None]:
    def mutate(ds: pydicom.Dataset) -> None:
        if compressed:  # a damaged compressed image: one fragment of garbage
            ds.PixelData = encapsulate([b"\xff\xd8\xff" + bytes(range(256)) * 4])
        ds.file_meta.TransferSyntaxUID = uid

    return mutate


TS = r"transfer syntax|cannot decode|cannot be decoded"
for _ts, _compressed in (
    ("1.2.3.4.5", False),
    ("2.25.1234", False),
    ("1.2.840.10008.1.2.4.50", True),  # JPEG baseline
    ("1.2.840.10008.1.2.4.70", True),  # JPEG lossless
    ("1.2.840.10008.1.2.4.90", True),  # JPEG 2000
    ("1.2.840.10008.1.2.4.80", True),  # JPEG-LS
    ("1.2.840.10008.1.2.5", True),  # RLE
    ("1.2.840.10008.1.2.4.100", True),  # MPEG2 video
):
    bad(f"dicom-transfer-syntax-{_ts}", TS)(_tags(_transfer_syntax(_ts, _compressed)))


# --- DICOM: series (3 slices) with one or all files wrong -----------------------------------------------


def _series(mutate: Callable[[pydicom.Dataset], None], which: tuple[int, ...] = (1,)) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        for k, path in enumerate(sorted(base.series.iterdir())):
            ds = pydicom.dcmread(path)
            if k in which:
                mutate(ds)
            ds.save_as(d / path.name, enforce_file_format=False)
        return analyze(d, "--slice", "1")

    return build


bad("series-slice-without-position", r"ImagePositionPatient")(_series(_set(ImagePositionPatient=None)))
bad("series-of-two-patients", r"belong to different patients")(_series(_set(PatientID="SOMEONE-ELSE")))
# a series UID reused by another study (an anonymiser, a copied export): two patients under one placeholder
# PatientID (ANONYMOUS), or without one, were read as one CT
bad("series-of-two-studies", r"belong to different studies")(_series(_set(StudyInstanceUID="2.25.1234")))
bad("series-of-two-studies-without-patient-id", r"belong to different studies")(
    _series(_set(PatientID=None, StudyInstanceUID="2.25.1234"))
)
bad("series-orientation-nan", r"invalid ImageOrientationPatient")(
    _series(_set(ImageOrientationPatient=["nan"] * 6), which=(0, 1, 2))
)
bad("series-position-inf", r"unusable ImagePositionPatient")(
    _series(_set(ImagePositionPatient=["0", "0", "inf"]))
)
bad("series-without-orientation", r"ImageOrientationPatient")(
    _series(_set(ImageOrientationPatient=None), (0, 1, 2))
)
bad("series-orientation-zero-vectors", r"ImageOrientationPatient")(
    _series(_set(ImageOrientationPatient=[0, 0, 0, 0, 0, 0]), (0, 1, 2))
)
bad("series-orientation-parallel-vectors", r"ImageOrientationPatient")(
    _series(_set(ImageOrientationPatient=[1, 0, 0, 1, 0, 0]), (0, 1, 2))
)
bad("series-slice-without-rescale", r"lack RescaleSlope")(
    _series(_set(RescaleSlope=None, RescaleIntercept=None))
)
bad("series-mixed-pixel-spacing", r"PixelSpacing")(_series(_set(PixelSpacing=[0.5, 0.5])))
bad("series-mixed-pixel-representation", r"PixelRepresentation|BitsStored")(
    _series(_set(PixelRepresentation=0))
)
bad("series-slice-truncated", r"damaged|truncated")(_series(_set(PixelData=None)))
bad("series-all-mr", r"no CT image series")(_series(_set(Modality="MR"), (0, 1, 2)))


def _two_patients(base: Base, d: Path) -> list[str]:
    """The base series and a copy of it as another patient's series, in one folder."""
    for k, path in enumerate(sorted(base.series.iterdir())):
        ds = pydicom.dcmread(path)
        ds.save_as(d / path.name, enforce_file_format=False)
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "SOMEONE-ELSE", "2.25.1", "2.25.2"
        ds.SOPInstanceUID = f"2.25.3{k}"
        ds.save_as(d / f"other-{path.name}", enforce_file_format=False)
    return analyze(d, "--slice", "1")


bad("folder-of-two-patients", r"holds the CT series of 2 patients .*--series UID \(`sarcoscope series`")(
    _two_patients
)


# --- ZIP ------------------------------------------------------------------------------------------------


def _zip(write: Callable[[Base, zipfile.ZipFile], None], name: str = "in.zip") -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        with zipfile.ZipFile(d / name, "w", zipfile.ZIP_DEFLATED) as zf:
            write(base, zf)
        return analyze(d / name)

    return build


def _raw(content: bytes, name: str) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        (d / name).write_bytes(content)
        return analyze(d / name)

    return build


def _encrypted(base: Base, d: Path) -> list[str]:
    """A zip whose entry is marked encrypted (what `zip -e` sets; zipfile cannot write encrypted entries,
    and the reader must refuse on the flag alone)."""
    with zipfile.ZipFile(d / "in.zip", "w") as zf:
        zf.writestr("ct/one.dcm", base.one.read_bytes())
    data = bytearray((d / "in.zip").read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    (d / "in.zip").write_bytes(bytes(data))
    return analyze(d / "in.zip")


def _symlink(base: Base, zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("ct/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


def _named(name: str) -> Callable[[Base, zipfile.ZipFile], None]:
    return lambda base, zf: zf.writestr(name, base.one.read_bytes())


bad("zip-empty-file", r"is empty|not a readable zip")(_raw(b"", "in.zip"))
bad("zip-garbage", r"not a readable zip")(_raw(b"this is not a zip file" * 10, "in.zip"))
bad("zip-broken-header", r"not a readable zip")(_raw(b"PK\x03\x04broken", "in.zip"))
bad("zip-no-entries", r"is empty")(_zip(lambda base, zf: None))
bad("zip-encrypted", r"encrypted \(password-protected\)")(_encrypted)


def _file_and_folder(base: Base, zf: zipfile.ZipFile) -> None:
    zf.writestr("ct", b"a file named like the folder below")
    zf.writestr("ct/one.dcm", base.one.read_bytes())


bad("zip-file-and-folder-of-one-name", r"cannot extract ct/one.dcm")(_zip(_file_and_folder))
bad("zip-symlink", r"symbolic link")(_zip(_symlink))
bad("zip-parent-traversal", r"unsafe path")(_zip(_named("../escape.dcm")))
bad("zip-absolute-path", r"unsafe path")(_zip(_named("/tmp/escape.dcm")))
bad("zip-drive-path", r"unsafe path")(_zip(_named("C:/escape.dcm")))
bad("zip-only-text", r"no CT image series")(_zip(lambda base, zf: zf.writestr("readme.txt", "hello")))
bad("zip-only-directories", r"contains no files")(_zip(lambda base, zf: zf.writestr("ct/", "")))
bad("zip-nested-zip", r"no CT image series")(
    _zip(lambda base, zf: zf.writestr("inner.zip", b"PK\x05\x06" + b"\0" * 18))
)
bad("zip-truncated-dicom", r"damaged|truncated|corrupt")(
    _zip(lambda base, zf: zf.writestr("ct/one.dcm", base.one.read_bytes()[:2000]))
)
bad("zip-rows-mismatch", MISMATCH)(
    _zip(lambda base, zf: zf.writestr("ct/one.dcm", _mutated(base.one, Rows=SIZE // 2)))
)
bad("zip-two-niftis", r"no CT image series")(
    _zip(lambda base, zf: [zf.writestr(n, base.nifti.read_bytes()) for n in ("a.nii.gz", "b.nii.gz")])
)
bad("zip-bomb-over-size-cap", r"the size limit", env=(("SARCOSCOPE_MAX_UNZIPPED_MB", "1"),))(
    _zip(lambda base, zf: zf.writestr("zeros.dcm", b"\0" * (2 << 20)))
)


def _mutated(path: Path, **tags: object) -> bytes:
    from io import BytesIO

    ds = pydicom.dcmread(path)
    _set(**tags)(ds)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _truncated_zip(fraction: float) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        with zipfile.ZipFile(d / "full.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in base.series.iterdir():
                zf.write(path, f"ct/{path.name}")
        data = (d / "full.zip").read_bytes()
        (d / "full.zip").unlink()
        (d / "cut.zip").write_bytes(data[: int(len(data) * fraction)])
        return analyze(d / "cut.zip")

    return build


for _f in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
    bad(f"zip-truncated-{_f}", r"cut\.zip")(_truncated_zip(_f))


# --- NIfTI ----------------------------------------------------------------------------------------------


def _nifti(make: Callable[[Base], nib.Nifti1Image], *extra: str, name: str = "x.nii.gz") -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        nib.save(make(base), d / name)
        return analyze(d / name, *extra)

    return build


def _no_transform(base: Base) -> nib.Nifti1Image:
    img = nifti_image(base.hu, (1.0, 1.0))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    return img


def _with_values(
    change: Callable[[np.ndarray], None], dtype: type = np.float32
) -> Callable[[Base], nib.Nifti1Image]:
    def make(base: Base) -> nib.Nifti1Image:
        hu = base.hu.astype(dtype)
        change(hu)
        return nifti_image(hu, base.spacing)

    return make


def _affine(scale: tuple[float, float, float]) -> Callable[[Base], nib.Nifti1Image]:
    return lambda base: nib.Nifti1Image(to_ras(base.hu), np.diag([*scale, 1.0]))


def _nifti_cut(fraction: float, name: str) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        nib.save(nifti_image(base.hu, base.spacing), d / name)
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * fraction)])
        return analyze(d / name, "--slice", "1")

    return build


NO_BODY = r"no body found in slice"
for _f in (0.05, 0.3, 0.6, 0.9, 0.999):
    bad(f"nifti-gz-truncated-{_f}", r"cannot read NIfTI")(_nifti_cut(_f, "cut.nii.gz"))
for _f in (0.05, 0.3, 0.6, 0.9):
    bad(f"nifti-truncated-{_f}", r"cannot read NIfTI")(_nifti_cut(_f, "cut.nii"))
bad("nifti-empty", r"cannot read NIfTI")(_raw(b"", "x.nii.gz"))
bad("nifti-text", r"cannot read NIfTI")(_raw(b"hello world" * 50, "x.nii"))
bad("nifti-gzip-of-garbage", r"cannot read NIfTI")(_raw(gzip.compress(b"\x01" * 4000), "x.nii.gz"))
bad("nifti-no-transform", r"no spatial transform")(_nifti(_no_transform, "--slice", "1"))
for _ps in (("0", "0"), ("-1", "1"), ("50", "50"), ("nan", "nan"), ("0.001", "0.5")):
    bad(f"nifti-no-transform-pixel-spacing-{'x'.join(_ps)}", r"pixel spacing .* not plausible")(
        _nifti(_no_transform, "--slice", "1", "--pixel-spacing", *_ps)
    )
bad("nifti-own-transform-and-pixel-spacing", r"only for NIfTI files without")(
    _nifti(lambda b: nifti_image(b.hu, b.spacing), "--slice", "1", "--pixel-spacing", "1", "1")
)
bad("nifti-series-option", r"x\.nii\.gz is NIfTI, which holds one series; --series is only for DICOM input$")(
    _nifti(lambda b: nifti_image(b.hu, b.spacing), "--slice", "1", "--series", "1.2.3")
)
bad("nifti-4d", r"4D NIfTI")(
    _nifti(lambda b: nib.Nifti1Image(np.stack([to_ras(b.hu)] * 2, axis=-1), np.eye(4)), "--slice", "1")
)
bad("nifti-complex", r"not CT numbers")(
    _nifti(lambda b: nib.Nifti1Image(to_ras(b.hu).astype(np.complex64), np.eye(4)), "--slice", "1")
)
bad("nifti-rgb", r"not CT numbers|cannot read")(
    _nifti(
        lambda b: nib.Nifti1Image(
            np.zeros(to_ras(b.hu).shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4)
        ),
        "--slice",
        "1",
    )
)
bad("nifti-tiny-pixels", r"not plausible")(_nifti(_affine((0.001, 0.001, 3.0)), "--slice", "1"))
bad("nifti-huge-pixels", r"not plausible")(_nifti(_affine((300.0, 300.0, 3.0)), "--slice", "1"))
bad("nifti-all-nan", NO_BODY + r" 1 .*NaN")(_nifti(_with_values(lambda a: a.fill(np.nan)), "--slice", "1"))
bad("nifti-all-inf", NO_BODY + r" 1 .*NaN")(_nifti(_with_values(lambda a: a.fill(np.inf)), "--slice", "1"))
bad("nifti-nan-slice-selected", NO_BODY + r" 2 .*in slice\(s\) 2 ")(
    _nifti(_with_values(lambda a: a[2].fill(np.nan)), "--slice", "2")
)
bad("nifti-nan-slices-in-range", NO_BODY + r"s 1-2 .*in slice\(s\) 1-2 ")(
    _nifti(_with_values(lambda a: a[1:].fill(np.nan)), "--range", "0:2")
)
bad("nifti-all-air", NO_BODY + r" 1 ")(
    _nifti(_with_values(lambda a: a.fill(-1000), np.int16), "--slice", "1")
)
bad("nifti-zero-size", r"holds no voxels")(
    _nifti(lambda b: nib.Nifti1Image(np.zeros((0, 96, 3), np.int16), np.eye(4)))
)
bad("nifti-sheared-affine", r"sheared or degenerate affine")(
    _nifti(
        lambda b: nib.Nifti1Image(
            b.hu.T.copy(), np.array([[0.8, 0.4, 0, 0], [0, 0.8, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]])
        )
    )
)


def _affine_not_finite(value: float) -> Callable[[Base], nib.Nifti1Image]:
    """An sform holding `value` (nibabel's constructor decomposes an affine, which fails on it)."""

    def make(base: Base) -> nib.Nifti1Image:
        header = nib.Nifti1Header()
        header.set_sform(np.diag([value, base.spacing[0], 3.0, 1.0]), code=2)
        return nib.Nifti1Image(to_ras(base.hu), None, header)

    return make


NOT_FINITE = r"x\.nii\.gz has a spatial transform with values that are not numbers \(NaN or infinite\)"
for _bad in ("nan", "inf"):  # nibabel's reorientation failed with "SVD did not converge"
    bad(f"nifti-affine-{_bad}", NOT_FINITE + r": its voxels cannot be placed or measured$")(
        _nifti(_affine_not_finite(float(_bad)), "--slice", "1")
    )
bad("nifti-normalised-0-1", r"do not look like Hounsfield units")(
    _nifti(lambda b: nifti_image(((b.hu + 1024.0) / 4095.0).astype(np.float32), b.spacing))
)
bad("nifti-one-voxel", r"do not look like Hounsfield units: no air")(
    _nifti(lambda b: nib.Nifti1Image(np.full((1, 1, 1), 40, np.int16), np.diag([0.8, 0.8, 3, 1])))
)


# --- Bad arguments on a valid input ---------------------------------------------------------------------


def _args(*extra: str, source: str = "series") -> Builder:
    return lambda base, d: analyze(getattr(base, source), *extra)


bad("arg-slice-negative", r"slice")(_args("--slice", "-1"))
bad("arg-slice-past-end", r"slice")(_args("--slice", "3"))
bad("arg-slice-huge", r"slice")(_args("--slice", "100000"))
bad("arg-range-past-end", r"range")(_args("--range", "0:99"))
bad("arg-range-text", r"range")(_args("--range", "a:b"))
bad("arg-range-one-number", r"range")(_args("--range", "5"))
bad("arg-slice-and-range", r"either --slice or --range")(_args("--slice", "1", "--range", "0:1"))
bad("arg-sex-unknown-word", r"Sex must be M or F")(_args("--slice", "1", "--sex", "X"))
bad("arg-height-negative", r"height")(_args("--slice", "1", "--height-cm", "-170"))
bad("arg-height-zero", r"height")(_args("--slice", "1", "--height-cm", "0"))
bad("arg-height-huge", r"height")(_args("--slice", "1", "--height-cm", "5000"))
bad("arg-height-nan", r"height")(_args("--slice", "1", "--height-cm", "nan"))
bad(
    "arg-height-in-metres",
    r"^error: Height 1\.75 cm is outside the plausible range 100-250 cm; the height is in centimetres "
    r"\(1\.75 m is 175 cm\)\.$",
)(_args("--slice", "1", "--height-cm", "1.75"))
bad("arg-weight-negative", r"weight")(_args("--slice", "1", "--weight-kg", "-1"))
bad("arg-weight-huge", r"weight")(_args("--slice", "1", "--weight-kg", "10000"))
bad("arg-unknown-cutoffs", r"cutoff")(_args("--slice", "1", "--cutoffs", "no-such-set"))
bad("arg-unknown-engine", r"engine")(
    lambda base, d: ["analyze", str(base.series), "--slice", "1", "--engine", "nope"]
)
bad("arg-engine-missing-model", r"model|engine")(
    lambda base, d: ["analyze", str(base.series), "--slice", "1", "--engine", f"unet:{d / 'missing'}"]
)
bad("arg-unknown-series", r"series 1\.2\.3 not found")(_args("--slice", "1", "--series", "1.2.3"))
bad("arg-pixel-spacing-on-dicom", r"is DICOM")(_args("--slice", "1", "--pixel-spacing", "0.7", "0.7"))
bad("arg-deid-option-without-deidentify", r"need --deidentify")(_args("--slice", "1", "--keep-dates-shifted"))
bad("input-missing", r"input not found")(lambda base, d: analyze(d / "nothing"))
bad("input-empty-folder", r"is empty")(lambda base, d: analyze(d))
bad("input-empty-file", r"is empty")(_raw(b"", "x.dcm"))
bad("input-text-file", r"not a readable CT image")(_raw(b"patient notes\n" * 20, "notes.txt"))
bad("input-folder-of-text", r"no CT image series")(
    lambda base, d: ((d / "a.txt").write_text("x"), analyze(d))[1]
)
bad("input-png-bytes", r"not a readable CT image")(_raw(b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "x.png"))
bad("input-dicom-preamble-only", r"not a readable CT image|corrupt")(_raw(b"\0" * 128 + b"DICM", "x.dcm"))


def _out_is(kind: str) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        (d / "blocker").write_text("a file")
        out = d / "blocker" if kind == "file" else d / "blocker" / "sub"
        return ["analyze", str(base.one), *ENGINE, "-o", str(out)]

    return build


bad("out-is-a-file", r"not a folder")(_out_is("file"))
bad("out-under-a-file", r"not a folder")(_out_is("under"))


def _out_in_input(sub: str) -> Builder:
    """-o is the input folder or a folder in it: the next run would read the SEG, SR and QC capture there as
    more series of the CT."""

    def build(base: Base, d: Path) -> list[str]:
        for path in base.series.iterdir():
            (d / path.name).write_bytes(path.read_bytes())
        return ["analyze", str(d), *ENGINE, "--slice", "1", "-o", str(d / sub)]

    return build


IN_INPUT = (
    r"^error: The output folder .* is {} input folder .*: a later run would read the outputs as input\. "
)
bad("out-is-the-input-folder", IN_INPUT.format("the") + r"Choose a folder outside it\.$")(_out_in_input("."))
bad("out-inside-the-input-folder", IN_INPUT.format("inside the") + r"Choose a folder outside it\.$")(
    _out_in_input("results/run1")
)


# --- batch ----------------------------------------------------------------------------------------------


def _manifest(text: str) -> Builder:
    def build(base: Base, d: Path) -> list[str]:
        (d / "m.csv").write_text(text.replace("SERIES", str(base.series)))
        return ["batch", str(d / "m.csv"), *ENGINE]

    return build


bad("batch-missing-folder", r"does not exist")(lambda base, d: ["batch", str(d / "none"), *ENGINE])
bad("batch-folder-without-studies", r"No studies found")(
    lambda base, d: ((d / "a.txt").write_text("x"), ["batch", str(d), *ENGINE])[1]
)
bad("batch-manifest-missing", r"does not exist")(lambda base, d: ["batch", str(d / "m.csv"), *ENGINE])
bad("batch-manifest-without-path-column", r"lacks the column")(_manifest("case_id,site\nA,H1\n"))
bad("batch-manifest-no-rows", r"lists no cases")(_manifest("case_id,path\n"))
bad("batch-manifest-bad-sex", r"Sex must be M or F")(_manifest("case_id,path,sex\nA,SERIES,X\n"))
bad("batch-manifest-bad-height", r"must be a number")(_manifest("case_id,path,height_cm\nA,SERIES,tall\n"))
bad("batch-manifest-duplicate-ids", r"appears twice")(_manifest("case_id,path\nA,SERIES\nA,SERIES\n"))
# on a disk that ignores case, cases/P01 and cases/p01 are one folder: p01 was skipped, given P01's report
bad("batch-manifest-ids-differing-in-case", r"differ only in letter case")(
    _manifest("case_id,path\nP01,SERIES\np01,SERIES\n")
)
bad("batch-manifest-bad-range", r"range")(_manifest("case_id,path,range\nA,SERIES,a:b\n"))
bad("batch-manifest-unusable-id", r"no usable characters")(_manifest("case_id,path\n///,SERIES\n"))
bad("batch-out-is-a-file", r"not a folder")(
    lambda base, d: (
        (d / "blocker").write_text("x"),
        ["batch", str(base.root), *ENGINE, "-o", str(d / "blocker")],
    )[1]
)
