"""The web app's corrected slices as training data: a `sarcoscope train` DATA folder (and its zip).

Which labels count as a person's: for each study, the newest label version that was **saved from the
editor or restored** (source "edit" or "restore") **and whose label maps differ from every automatic
segmentation of that study** (source "segment", compared by the stored checksum). Every version records an
author (whoever pressed the button), so the author alone cannot tell; the source and the content can. Thus a
save without any change, or a restore of an automatic result, is not training data: it would only teach the
model its own output, and would favour the model that made it in the comparison after training.

Each such version becomes one case (its slices, the CT from the study's cache) in the folder layout of
sarcoscope.training.data: `images/<case>.npy` (HU, (n, y, x)) with `images/<case>.json` (pixel spacing and
the patient), `labels/<case>.npy` (uint8, project ids). The case id is the start of the study id; the
patient is a pseudonym of the DICOM PatientID (an HMAC with this installation's secret: stable across
exports, not reversible without the data folder), or the study when the series has no PatientID. The
manifest (EXPORT_MANIFEST) lists every case with its study, label version and author, and the studies
skipped with the reason.

The export is de-identified (the basic profile, dates removed) and made to leave the server, so the author
is a pseudonym, `annotator-<n>` numbered by first appearance and the same for one user within one export
(a staff user name is personal data the training does not need; the store keeps it, found by study id and
label version), and a case carries no time (when a label was saved bounds the study date, which the
de-identification removes). The manifest's `created_utc`, the time of the export, stays: it concerns no
patient, and the download's file name carries it anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sarcoscope import __version__
from sarcoscope.errors import InputError, OutputError, SarcoscopeError
from sarcoscope.fileio import LockedTempDir, partial_beside, remove_left_folders, remove_left_partials
from sarcoscope.imaging.deidentify.policy import SECRET_FILE_NAME, DeidentificationPolicy, load_secret
from sarcoscope.imaging.deidentify.refusals import refuse_burned_in
from sarcoscope.store import LabelVersion, NotFoundError, Store, Study
from sarcoscope.training.data import EXPORT_MANIFEST
from sarcoscope.web.volumes import VolumeCache

log = logging.getLogger(__name__)

EXPORT_FORMAT = "sarcoscope.training-export/1"
#: Version sources saved by a person in the web app (the automatic segmentation's source is "segment").
PERSON_SOURCES = ("edit", "restore")
PERSON_RULE = (
    "newest label version saved from the editor or restored (source edit/restore) whose label maps differ "
    "from every automatic segmentation (source segment) of the study"
)


def person_version(versions: list[LabelVersion]) -> LabelVersion | None:
    """The newest version a person made that is not an automatic segmentation's labels (see PERSON_RULE)."""
    automatic = {v.sha256 for v in versions if v.source == "segment"}
    person = [v for v in versions if v.source in PERSON_SOURCES and v.sha256 not in automatic]
    return max(person, key=lambda v: v.version, default=None)


def _pseudonym(policy: DeidentificationPolicy, study: Study) -> str:
    """The patient's pseudonym of every de-identified export (the same keyed HMAC), or the study's own."""
    if not study.patient_id:
        return f"study-{study.id[:12]}"
    return policy.pseudonym(study.patient_id)


def export_training_data(
    store: Store, volumes: VolumeCache, dest: Path, actor: str, client: str | None = None
) -> dict[str, Any]:
    """Write every study's corrected slices into the new folder `dest` (atomically); returns the manifest.

    Raises InputError when no study has corrected labels (nothing to train on), and the OSError of a file
    that cannot be written (a full disk), leaving nothing of the export behind.
    """
    dest = Path(dest)
    if dest.exists():
        raise InputError(f"{dest} already exists; the training data export needs a new folder.")
    policy = DeidentificationPolicy(load_secret(default_file=store.data_dir / SECRET_FILE_NAME))
    partial = _partial(dest)
    tmp = Path(partial.name)
    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    annotators: dict[str, str] = {}  # user name -> its pseudonym in this export
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for study in sorted(store.list_studies(limit=None), key=lambda s: s.id):
            try:
                version = person_version(store.list_versions(study.id))
                if version is None:
                    continue
                case = _write_case(store, volumes, study, version, policy, tmp)
                case["author"] = annotators.setdefault(version.author, f"annotator-{len(annotators) + 1}")
                cases.append(case)
            except NotFoundError:  # deleted since the list was read: not in the export, nor its id
                continue
            except SarcoscopeError as exc:  # the reason goes into the shared manifest: no server folder
                reason = str(exc).replace(str(store.data_dir), "the data folder")
                log.warning("Study %s left out of the training data: %s", study.id, reason)
                skipped.append({"study_id": study.id, "reason": reason})
        if not cases:
            raise InputError(
                "No study of the web app has labels a person corrected and saved "  # no server folder
                f"({PERSON_RULE}); there is nothing to train on."
            )
        manifest = {
            "format": EXPORT_FORMAT,
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "sarcoscope": __version__,
            "rule": PERSON_RULE,
            "cases": cases,
            "skipped": skipped,
        }
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        # each study's own trail shows that its images left in a training export: audited whole, before the
        # export exists (an audit that fails leaves no export, never one half-audited)
        events = [("export-training-data", None, {"cases": len(cases), "skipped": len(skipped)})]
        events += [
            (
                "export-training-data",
                c["study_id"],
                {"label_version": c["label_version"], "slices": c["slices"]},
            )
            for c in cases
        ]
        store.audit_all(actor, events, client)
        os.replace(tmp, dest)
    finally:
        partial.cleanup()  # and its lock file; the folder is gone when it became dest
    return manifest


def _partial(dest: Path) -> LockedTempDir:
    """The folder in which an export is written and then renamed to `dest` (fileio.partial_beside; its
    lock file held until then), with the user's usual permissions, as `dest` is new. Removed first: the
    unfinished copies beside `dest` whose writer has ended (kill -9, the out-of-memory killer: patients'
    slices), whatever folder they were for, and `.<dest>.partial`, without a lock file, that an earlier
    version left in writing `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_left_partials(dest)
    if remove_left_folders(dest.parent, re.compile(re.escape(f".{dest.name}.partial")), lambda found: True):
        log.info("Removed the unfinished export that an earlier version's stopped run left.")
    return partial_beside(dest, mode=0o777)


def _write_case(
    store: Store,
    volumes: VolumeCache,
    study: Study,
    version: LabelVersion,
    policy: DeidentificationPolicy,
    folder: Path,
) -> dict[str, Any]:
    """One study's corrected slices into the export; refused (InputError) when its pixels may show the
    patient's name (burned-in annotation), or its stored files cannot be read: the export names patients
    only by pseudonym, and one damaged study does not stop the others."""
    stack = store.load_labels(study.id, version.version)
    try:
        volume = volumes.with_headers(study)
    except SarcoscopeError:
        raise
    except Exception as exc:  # a stored file missing or damaged (pydicom raises many types): this study
        # only, said without the file's path, which holds the patient's original Study and Series UIDs
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"its stored DICOM files cannot be read ({why})") from None
    refuse_burned_in(volume.dicom_headers or [], policy)
    patient = _pseudonym(policy, study)
    hu = np.asarray(volume.hu[stack.indices])
    if hu.shape != stack.labels.shape:
        raise InputError(
            f"label version {version.version} has shape {stack.labels.shape} but its CT slices {hu.shape}"
        )
    case = study.id[:12]
    np.save(folder / "images" / f"{case}.npy", hu)
    sidecar = {"pixel_spacing": [float(s) for s in volume.pixel_spacing], "patient": patient}
    (folder / "images" / f"{case}.json").write_text(json.dumps(sidecar), encoding="utf-8")
    np.save(folder / "labels" / f"{case}.npy", stack.labels)
    return {
        "case": case,
        "patient": patient,
        "study_id": study.id,
        "label_version": version.version,
        "source": version.source,
        "segmented_with": version.model_id,
        "slices": stack.indices,
    }


def zip_folder(folder: Path, out: BinaryIO) -> None:
    """Zip `folder`'s files (paths relative to it) into `out`: the layout `sarcoscope train` reads back."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())


def collect_training_data(
    source: Path, dest: Path, actor: str, database_url: str | None = None
) -> dict[str, Any]:
    """Put the corrected slices of `source` into the new folder `dest`; returns the export manifest.

    `source`: the web app's data folder (read through the store; PostgreSQL with `database_url`), or an
    export made by the web app (GET /api/training-data), zipped or unzipped. A copy is kept in `dest`, so a
    training run keeps its data and split even when the store changes meanwhile. A full disk is an
    OutputError (as the CLI says every output it cannot write), and leaves no part of `dest`.
    """
    source, dest = Path(source), Path(dest)
    try:
        return _collect(source, dest, actor, database_url)
    except OSError as exc:
        raise OutputError(f"Cannot write the training data into {dest}: {exc.strerror or exc}.") from exc


def _collect(source: Path, dest: Path, actor: str, database_url: str | None) -> dict[str, Any]:
    from sarcoscope.imaging.archive import extract_zip

    if dest.exists():
        raise InputError(f"{dest} already exists; the training data needs a new folder.")
    if source.is_dir() and (database_url or (source / "sarcoscope.db").is_file()):
        store = Store(source, database_url)
        try:
            return export_training_data(store, VolumeCache(store, 1), dest, actor)
        finally:
            store.close()
    zipped = source.is_file() and source.suffix.lower() == ".zip"
    if not zipped and not (source.is_dir() and (source / EXPORT_MANIFEST).is_file()):
        raise InputError(
            f"{source} is neither a web app data folder (with sarcoscope.db, or give --database-url) "
            f"nor a training-data export of the web app (a zip or folder with {EXPORT_MANIFEST})."
        )
    partial = _partial(dest)
    tmp = Path(partial.name)
    try:
        if zipped:
            extract_zip(source, tmp)
        else:  # the folder's own permissions, as copytree gives a folder it makes
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        try:
            manifest = json.loads((tmp / EXPORT_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{source} is not a training-data export of the web app: {exc}") from None
        if manifest.get("format") != EXPORT_FORMAT:
            raise InputError(f"{source} is an export of unknown format {manifest.get('format')!r}.")
        os.replace(tmp, dest)
    finally:
        partial.cleanup()
    return manifest
