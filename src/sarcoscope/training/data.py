"""Training data: image/label pairs from folders and phantoms, prepared exactly like the engine's input.

Dataset folder layout (one folder per `sarcoscope train DATA` argument)::

    DATA/
      images/<case>.dcm | <case>.nii.gz | <case>.nii | <case>.npy
      labels/<case>.npy | .nii.gz | .nii | .tag | .png | .dcm (DICOM SEG) | <case>/ (one PNG per tissue)
      images/<case>.json          # only for .npy images: {"pixel_spacing": [y_mm, x_mm], "patient": "..."}

- An image and a label map pair up by file stem; an image named `<prefix>_<case>` also pairs with label
  `<case>` (e.g. images/L3_EMC101.dcm with labels/EMC101.npy).
- Label maps are read by sarcoscope.imaging.labelmaps onto their image's pixel grid (a file that does not
  fit is refused). They use the project's ids (0 other, 1 muscle, 2 SAT, 3 VAT, 4 IMAT) unless a mapping
  is given (`label_mapping`: a built-in name such as `slice-o-matic-alberta` for Slice-O-Matic .tag files,
  or a YAML file); an id the mapping does not list is an error. One mapping per DATA folder.
- DICOM images are single axial slices; their label map is on the `pixel_array` grid. NIfTI images are
  reoriented to the project's layout (rows anterior->posterior, columns patient right->left) and their label
  maps must be on the same grid (NIfTI label maps are reoriented alike). A 3-D image (NIfTI or .npy
  (z, y, x)) contributes every slice whose label map holds tissue.
- The patient of a case is its DICOM PatientID (or the "patient" of a .npy image's sidecar) when present,
  else the case id; the train/validation split is by patient, so slices of one patient never sit on both
  sides. The patients of the learning loop's split (`case_patients`) are written into run folders and
  model cards, which travel with a model: there a PatientID is the installation's pseudonym (the keyed
  HMAC de-identified exports name the patient with, `ANON-...`; the web app's export writes it already).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarcoscope.errors import InputError
from sarcoscope.fileio import read_npy
from sarcoscope.imaging.deidentify.policy import PSEUDONYM_PREFIX, DeidentificationPolicy, load_secret
from sarcoscope.imaging.dicom_reader import patient_key
from sarcoscope.imaging.labelmaps import (
    LABEL_EXTENSIONS,
    LabelGrid,
    label_extension,
    load_mapping,
    read_label_map,
)
from sarcoscope.imaging.nifti import read_nifti_array
from sarcoscope.imaging.volume import fill_to_air, stored_flip_of
from sarcoscope.segmentation.unet import InputSpec, body_window
from sarcoscope.training.config import TrainConfig

IMAGE_SUFFIXES = (".dcm", ".nii.gz", ".nii", ".npy")
#: Written beside images/ and labels/ by the web app's export of corrected slices (web.training_data).
EXPORT_MANIFEST = "sarcoscope-training-export.json"
#: Value of pixels outside the image when a slice is padded (air).
PAD_HU = -1024.0


@dataclass
class Sample:
    """One training slice on the model grid: HU (input_size²) float32, labels uint8, and its origin."""

    case: str
    patient: str
    source: str  # "data" | "phantom"
    hu: np.ndarray
    labels: np.ndarray


def _stem(path: Path) -> str:
    """The file name without its image or label-map extension (a folder of tissue PNGs: its name)."""
    low = path.name.lower()
    for suffix in (*IMAGE_SUFFIXES, *LABEL_EXTENSIONS):
        if low.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def find_pairs(data_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(case, image path, label path) for every label map in DATA/labels with a matching image."""
    root = Path(data_dir)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InputError(f"Training data folder {root} needs 'images/' and 'labels/' subfolders.")
    images = {_stem(p): p for p in sorted(images_dir.iterdir()) if p.name.endswith(IMAGE_SUFFIXES)}
    pairs = []
    for label in sorted(labels_dir.iterdir()):
        if label.name.startswith(".") or label_extension(label) is None:
            continue
        case = _stem(label)
        image = images.get(case)
        if image is None:
            matches = [p for s, p in images.items() if s.endswith(f"_{case}")]
            if len(matches) > 1:
                raise InputError(
                    f"Label {label} matches several images: {', '.join(str(m) for m in matches)}."
                )
            image = matches[0] if matches else None
        if image is None:
            raise InputError(
                f"Label map {label} has no image in {images_dir} (expected {case}.dcm/.nii.gz/.npy)."
            )
        pairs.append((case, image, label))
    if not pairs:
        raise InputError(
            f"No label maps ({', '.join(LABEL_EXTENSIONS)}, tissue PNG folders) in {labels_dir}."
        )
    return pairs


def read_image(path: Path) -> tuple[np.ndarray, tuple[float, float], str | None]:
    """HU array (z, y, x) float32, pixel spacing (y, x) mm and the patient (DICOM PatientID or the .npy
    sidecar's "patient"; None when the file names none). A constant fill round the image is air, as
    read_ct makes it (imaging.volume.fill_to_air): training and validation see what inference sees."""
    hu, spacing, patient = _read_image(path)
    fill_to_air(hu, [])
    return hu, spacing, patient


def _read_image(path: Path) -> tuple[np.ndarray, tuple[float, float], str | None]:
    name = path.name
    if name.endswith(".dcm"):
        import pydicom
        from pydicom.pixels import apply_rescale

        try:
            ds = pydicom.dcmread(path)
            hu = np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float32)
            spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        except Exception as exc:  # pydicom raises many types for unreadable files
            raise InputError(f"Cannot read DICOM slice {path}: {exc}") from None
        if hu.ndim != 2:
            raise InputError(f"DICOM image {path} must be a single axial slice, got shape {hu.shape}.")
        patient = str(ds.get("PatientID", "") or "").strip() or None
        flip_y, flip_x = _stored_flip(ds)  # a prone patient's slice is turned as read_ct turns it
        return (
            np.ascontiguousarray(hu[None, :: -1 if flip_y else 1, :: -1 if flip_x else 1]),
            spacing,
            patient,
        )
    if name.endswith((".nii", ".nii.gz")):
        hu, spacing = read_nifti_array(path)
        return hu.astype(np.float32), spacing, None
    if name.endswith(".npy"):
        hu = read_npy(path, InputError).astype(np.float32)
        sidecar = path.with_suffix(".json")
        try:
            info = json.loads(sidecar.read_text(encoding="utf-8"))
            spacing = (float(info["pixel_spacing"][0]), float(info["pixel_spacing"][1]))
        except (OSError, KeyError, TypeError, ValueError, IndexError):
            raise InputError(
                f'NumPy image {path} needs a sidecar {sidecar.name} with {{"pixel_spacing": [y_mm, x_mm]}}.'
            ) from None
        if hu.ndim == 2:
            hu = hu[None]
        if hu.ndim != 3:
            raise InputError(f"NumPy image {path} must be (y, x) or (z, y, x), got shape {hu.shape}.")
        return hu, spacing, str(info.get("patient") or "").strip() or None
    raise InputError(f"Unsupported image file {path} (use {', '.join(IMAGE_SUFFIXES)}).")


def case_patients(data_dir: str | Path) -> dict[str, str]:
    """The patient of every case of a dataset folder, as it may be written (into a split file or a model
    card): the pseudonym of its PatientID, else the case id."""
    ids = {case: patient_key(read_image(image)[2], None) for case, image, _ in find_pairs(data_dir)}
    raw = {k for k in ids.values() if k is not None and not k.startswith(PSEUDONYM_PREFIX)}
    policy = DeidentificationPolicy(secret=load_secret()) if raw else None  # a key only when one is needed
    return {case: (policy.pseudonym(k) if policy and k in raw else k) or case for case, k in ids.items()}


def _stored_flip(ds: Any) -> tuple[bool, bool]:
    """How a DICOM slice's pixel array is turned to the standard layout (CTVolume.stored_flip)."""
    iop = [float(v) for v in ds.get("ImageOrientationPatient", None) or []]
    return stored_flip_of(iop[:3], iop[3:]) if len(iop) == 6 else (False, False)


def image_grid(path: Path, shape: tuple[int, int, int]) -> LabelGrid:
    """The pixel grid of a training image; a DICOM slice also names its SOP Instance UID (for DICOM SEG)
    and how it was turned when read (label files hold the file's own layout)."""
    uids = None
    flip = (False, False)
    if path.name.endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uid = ds.get("SOPInstanceUID")
        uids = (str(uid),) if uid else None
        flip = _stored_flip(ds)
    return LabelGrid(shape, uids, f"image {path.name}", flip)


def read_labels(path: Path, mapping_spec: str | None, grid: LabelGrid | None = None) -> np.ndarray:
    """Label map (z, y, x) uint8 in the project's ids, on `grid` when given (a file that does not fit it
    raises InputError naming the file)."""
    return read_label_map(path, load_mapping(mapping_spec), grid).labels


def fit_to_size(hu: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop or pad a model-grid slice to size×size centred on the body (as the engine places its input)."""
    out_hu = np.full((size, size), PAD_HU, dtype=np.float32)
    out_lab = np.zeros((size, size), dtype=np.uint8)
    src, dst = body_window(hu, (size, size))
    out_hu[dst] = hu[src]
    out_lab[dst] = labels[src]
    return out_hu, out_lab


def prepare_slice(
    hu: np.ndarray, labels: np.ndarray, pixel_spacing: tuple[float, float], spec: InputSpec, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample one (y, x) slice and its labels to the model's pixel size and fit it to size×size."""
    grid_hu = spec.to_model_grid(hu[None], pixel_spacing)[0]
    grid_lab = spec.labels_to_model_grid(labels, pixel_spacing)
    return fit_to_size(grid_hu, grid_lab, size)


def load_folder(data_dir: str | Path, config: TrainConfig, spec: InputSpec) -> list[Sample]:
    """Every labelled slice of one dataset folder, prepared for the network."""
    samples = []
    wanted = set(config.cases) if config.cases is not None else None
    for case, image_path, label_path in find_pairs(data_dir):
        if wanted is not None and case not in wanted:
            continue
        hu, spacing, patient = read_image(image_path)
        labels = read_labels(label_path, config.label_mapping, image_grid(image_path, hu.shape))
        for z in range(hu.shape[0]):
            if hu.shape[0] > 1 and not labels[z].any():
                continue
            g_hu, g_lab = prepare_slice(hu[z], labels[z], spacing, spec, config.input_size)
            name = case if hu.shape[0] == 1 else f"{case}#{z}"
            samples.append(Sample(name, patient or case, "data", g_hu, g_lab))
    return samples


def _case_files(image: Path, label: Path) -> list[Path]:
    """Every file one case is read from: image, its .npy sidecar, the label map (or its tissue PNGs)."""
    files = [image]
    if image.name.endswith(".npy") and image.with_suffix(".json").is_file():
        files.append(image.with_suffix(".json"))
    files += sorted(p for p in label.rglob("*") if p.is_file()) if label.is_dir() else [label]
    return files


def data_fingerprint(config: TrainConfig) -> dict[str, str]:
    """SHA-256 of the files each case of the data folders is read from (`<folder>/<case>` -> hex digest),
    and of the label-mapping file when one is named, so that a resumed run can tell that its data changed.

    Checksums, not sizes and times: a folder copied or restored elsewhere is the same data. Reading the
    files costs about what loading them for training does."""
    wanted = set(config.cases) if config.cases is not None else None
    out = {}
    for folder in config.data_dirs:
        for case, image, label in find_pairs(folder):
            if wanted is not None and case not in wanted:
                continue
            digest = hashlib.sha256()
            for path in _case_files(image, label):
                digest.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
                try:
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            digest.update(chunk)
                except OSError as exc:
                    raise InputError(f"Cannot read training file {path}: {exc.strerror or exc}.") from None
            out[f"{folder.rstrip('/')}/{case}"] = digest.hexdigest()
    mapping = config.label_mapping
    if mapping and Path(mapping).is_file():
        out[f"label mapping {mapping}"] = hashlib.sha256(Path(mapping).read_bytes()).hexdigest()
    return out


def make_phantoms(config: TrainConfig, spec: InputSpec) -> list[Sample]:
    """`config.phantoms` phantom slices, seeded so runs are reproducible."""
    from sarcoscope.phantom import make_slice

    rng = np.random.default_rng(config.phantom_seed)
    samples = []
    for i in range(config.phantoms):
        seed = config.phantom_seed + i
        spacing = None
        if config.phantom_spacing_mm is not None:
            spacing = float(rng.uniform(*config.phantom_spacing_mm))
        ph = make_slice(seed, size=config.phantom_size, pixel_spacing=spacing)
        g_hu, g_lab = prepare_slice(
            np.asarray(ph.hu, np.float32),
            np.asarray(ph.labels),
            tuple(ph.pixel_spacing),
            spec,
            config.input_size,
        )
        samples.append(Sample(f"phantom-{seed}", f"phantom-{seed}", "phantom", g_hu, g_lab))
    return samples


def split_by_patient(samples: list[Sample], config: TrainConfig) -> tuple[list[Sample], list[Sample]]:
    """Train/validation split over patients (never slices), with `val_cases` forced into validation.

    The random share is `val_fraction` of the patients of the `val_from` kind (phantoms, data or all).
    """
    patients = sorted({s.patient for s in samples})
    if len(patients) < 2:
        raise InputError("Training needs at least 2 patients (one for validation); add data or phantoms.")
    forced = {
        s.patient for s in samples if s.case in set(config.val_cases) or s.patient in set(config.val_cases)
    }
    missing = set(config.val_cases) - {s.case for s in samples} - {s.patient for s in samples}
    if missing:
        raise InputError(f"val_cases not found in the training data: {', '.join(sorted(missing))}.")
    source = {s.patient: s.source for s in samples}
    wanted = {"all": ("data", "phantom"), "phantoms": ("phantom",), "data": ("data",)}[config.val_from]
    rest = [p for p in patients if p not in forced and source[p] in wanted]
    pool = [p for p in patients if source[p] in wanted]
    n_val = max(0, max(1, round(config.val_fraction * len(pool))) - len(forced))
    if not rest and n_val:
        raise InputError(f"No {' or '.join(wanted)} patients to validate on (val_from: {config.val_from}).")
    val_patients = forced | choose_patients(rest, n_val, config.seed)
    if len(val_patients) == len(patients):
        raise InputError("Validation would take every patient; lower val_fraction or list fewer val_cases.")
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val


def choose_patients(patients: list[str], n: int, seed: int) -> set[str]:
    """`n` of the (sorted) `patients`, drawn reproducibly with `seed`: the validation side of a split."""
    order = np.random.default_rng(seed).permutation(len(patients))
    return {patients[i] for i in order[:n]}
