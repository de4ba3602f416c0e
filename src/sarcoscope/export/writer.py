"""Write every output of one analysis into a folder, atomically.

All files are first written into a fresh temporary folder beside `out_dir` (same file system). Then:
- if `out_dir` does not exist, the temporary folder is renamed to it (one atomic step);
- otherwise files in `out_dir` that are not outputs (the user's notes...) are hard-linked into the new
  folder, and the two folders are exchanged in one atomic step (Linux renameat2 RENAME_EXCHANGE); the old
  set is then deleted. Where the exchange is not available, the old folder is renamed aside and the new one
  into place, and a write that finds the aside folder without `out_dir` puts it back first.
A crash or kill -9 at any point leaves `out_dir` holding either the complete old set or the complete new set,
never a mix and never neither (Linux); a failed run leaves the old set and removes its temporary folder. The
temporary folder is a fileio.partial_beside (its lock file held until it is removed): one a killed run left
is removed by the next write beside it, into whatever folder, once nobody holds its lock.

The SEG, SR and QC capture of the same result (the same report, label map and source images; not when or
where it ran) get the same UIDs, so one sent to a PACS again is the same object there, not a second copy.

De-identified (`deidentification` given): the SEG, SR, QC capture and report.json are de-identified
consistently (one pseudonym, the same remapped UIDs); overlay.png shows CT pixels, so a series with burned-in
annotation is refused before anything is written unless the policy accepts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import shutil
import stat
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from sarcoscope.errors import OutputError
from sarcoscope.export import SEG_NOT_DICOM
from sarcoscope.export.label_tables import (
    SARCOSCOPE,
    check_order,
    itksnap_label_description,
    slicer_color_table,
)
from sarcoscope.export.nifti import label_nifti
from sarcoscope.export.overlay import overlay_pixels, render_overlay
from sarcoscope.export.report import build_report, metrics_csv, report_json
from sarcoscope.fileio import check_output_folder, holding_lock, partial_beside, remove_left_partials
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy
from sarcoscope.memory import release_freed_memory

if TYPE_CHECKING:
    from sarcoscope.results import AnalysisResult

#: Output kind -> file name. Every name any run may write, so stale files of a previous run can be removed.
OUTPUT_FILES: dict[str, str] = {
    "metrics": "metrics.csv",
    "overlay": "overlay.png",
    "labels_nifti": "labels.nii.gz",
    "slicer_colors": "labels.ctbl",
    "itksnap_labels": "labels.itksnap.txt",
    "dicom_seg": "labels.seg.dcm",
    "dicom_sr": "report.sr.dcm",
    "qc_capture": "report.qc.dcm",
    "report": "report.json",
}
#: The outputs that are DICOM objects of the source study: what goes back to a PACS (DICOMweb or C-STORE),
#: in sending order (the SR references the SEG).
DICOM_RESULTS = ("dicom_seg", "dicom_sr", "qc_capture")


def check_replaceable(out_dir: Path) -> None:
    """Refuse, before any work, a folder holding files of the outputs' names that no analysis wrote there
    (it has no report.json of one): they are the user's, such as the reference labels.nii.gz beside a
    ct.nii.gz, not an earlier set of outputs that a new one replaces."""
    taken = sorted(name for name in OUTPUT_FILES.values() if os.path.lexists(Path(out_dir) / name))
    if taken and not _holds_an_analysis(Path(out_dir)):
        raise OutputError(
            f"{out_dir} holds {', '.join(taken)} that no analysis wrote there (it has no report.json of "
            "one): the outputs would replace them. Give the outputs a folder of their own, e.g. -o "
            f"{Path(out_dir) / 'sarcoscope-out'}."
        )


def output_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Held by an analysis writing into `out_dir` from its checks to its swap (pipeline.analyze): a second
    one at once is refused before its work, as each one's clean-up of what a killed run left would delete
    the other's half-written set. The lock file is beside the folder (the folder is swapped) and goes with
    the lock."""
    out = Path(out_dir).resolve() if Path(out_dir).is_symlink() else Path(out_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc}") from exc
    return holding_lock(
        out.parent / f".{out.name}.sarcoscope-lock",
        lambda holder: (
            f"another analysis (process {holder}) is writing into {out_dir}; wait for it to "
            "end, or give this one another output folder."
        ),
        remove=True,
    )


def _holds_an_analysis(out_dir: Path) -> bool:
    try:
        report = json.loads((out_dir / OUTPUT_FILES["report"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and str(report.get("schema", "")).startswith("sarcoscope.report/")


def dicom_result_files(out_dir: Path) -> list[Path]:
    """The DICOM result objects a finished run wrote into `out_dir` (none for NIfTI input)."""
    return [out_dir / OUTPUT_FILES[k] for k in DICOM_RESULTS if (out_dir / OUTPUT_FILES[k]).is_file()]


#: What differs between two runs of the same analysis: left out of its fingerprint.
_RUN_FIELDS = ("created_utc", "timings_s", "outputs")


def result_fingerprint(result: AnalysisResult) -> str:
    """A digest of everything the DICOM objects of `result` show: its report (not when it ran, how long it
    took or where the series was read from), label map and source images. It seeds their UIDs, so the same
    result sent again is the same object to a PACS, and any other result is a new one."""
    report = build_report(result)
    for key in _RUN_FIELDS:
        report.pop(key)
    report["input"].pop("source_path")
    report["l3"]["details"].pop("seconds", None)  # how long the automatic L3 took
    digest = hashlib.sha256(json.dumps(report, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(result.labels).tobytes())
    for header in result.volume.dicom_headers or []:
        digest.update(str(header.get("SOPInstanceUID", "")).encode() + b"\n")
    return digest.hexdigest()


def _write_all(
    result: AnalysisResult, tmp: Path, deidentification: DeidentificationPolicy | None, label_order: str
) -> tuple[dict[str, str], list[str]]:
    written: dict[str, str] = {}
    warnings: list[str] = []
    (tmp / OUTPUT_FILES["metrics"]).write_text(metrics_csv(result), encoding="utf-8")
    written["metrics"] = OUTPUT_FILES["metrics"]
    render_overlay(result, tmp / OUTPUT_FILES["overlay"])
    written["overlay"] = OUTPUT_FILES["overlay"]
    # What the drawing freed stayed resident under the DICOM objects, the analysis's peak (BENCHMARKS.md,
    # 2026-12-07): the QC capture's pixels are read back and highdicom (≈0.15 s) imported into that memory,
    # only for DICOM input, and the rest is handed back; the capture's memory likewise before the SEG's.
    dicom = bool(result.volume.dicom_headers)
    if dicom:
        pixels = overlay_pixels(tmp / OUTPUT_FILES["overlay"])
        from sarcoscope.export.sc import write_qc_capture
        from sarcoscope.export.seg import build_dicom_seg
        from sarcoscope.export.sr import write_dicom_sr
    release_freed_memory()
    nib.save(label_nifti(result, label_order), tmp / OUTPUT_FILES["labels_nifti"])
    written["labels_nifti"] = OUTPUT_FILES["labels_nifti"]
    for kind, text in (
        ("slicer_colors", slicer_color_table(label_order)),
        ("itksnap_labels", itksnap_label_description(label_order)),
    ):
        (tmp / OUTPUT_FILES[kind]).write_text(text, encoding="utf-8")
        written[kind] = OUTPUT_FILES[kind]
    if not dicom:
        warnings.append(SEG_NOT_DICOM)
        return _write_report(result, tmp, written, warnings, deidentification)

    # de-identified objects get new UIDs: ones derived from the source could be made again from it
    seed = None if deidentification is not None else result_fingerprint(result)
    # the SR and the QC capture belong in the source's DICOM study; the capture is made first, its pixels
    # not held under the SEG and the SR (its file and warning are still listed after theirs)
    qc = write_qc_capture(result, pixels, tmp / OUTPUT_FILES["qc_capture"], deidentification, seed)
    del pixels
    release_freed_memory()
    seg, message = build_dicom_seg(result, deidentification, uid_seed=seed)
    if message is not None:  # why it was not written, or what it left empty
        warnings.append(message)
    if seg is not None:
        seg.save_as(tmp / OUTPUT_FILES["dicom_seg"])
        written["dicom_seg"] = OUTPUT_FILES["dicom_seg"]
    sr = write_dicom_sr(result, seg, tmp / OUTPUT_FILES["dicom_sr"], deidentification, seed)
    for kind, message in (("dicom_sr", sr), ("qc_capture", qc)):
        if (tmp / OUTPUT_FILES[kind]).is_file():
            written[kind] = OUTPUT_FILES[kind]
        if message is not None and message not in warnings:  # the SEG's note is theirs too
            warnings.append(message)
    return _write_report(result, tmp, written, warnings, deidentification)


def _write_report(
    result: AnalysisResult,
    tmp: Path,
    written: dict[str, str],
    warnings: list[str],
    deidentification: DeidentificationPolicy | None,
) -> tuple[dict[str, str], list[str]]:
    """report.json, last: it lists the files written and the warnings their writing gave."""
    written["report"] = OUTPUT_FILES["report"]
    new = [w for w in warnings if w not in result.warnings]
    report = build_report(result, outputs=written, extra_warnings=new, deidentification=deidentification)
    (tmp / OUTPUT_FILES["report"]).write_text(report_json(report), encoding="utf-8")
    return written, warnings


def write_outputs(
    result: AnalysisResult,
    out_dir: Path,
    deidentification: DeidentificationPolicy | None = None,
    label_order: str = SARCOSCOPE,
) -> dict[str, Path]:
    """Write report.json, metrics.csv, overlay.png, labels.nii.gz and, for DICOM input, labels.seg.dcm,
    report.sr.dcm and report.qc.dcm, de-identified with `deidentification` when given.

    Returns the written files by kind. A DICOM object that cannot be made is skipped with a warning in the
    report and, for DICOM input, in `result.warnings` (so the console says it too), as is a source value
    the DICOM objects leave empty; any other failure raises and leaves `out_dir` as it was.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink():  # the folder it points to gets the outputs; the link stays
        out_dir = out_dir.resolve()
    check_order(label_order)
    if deidentification is not None:
        from sarcoscope.imaging.deidentify.refusals import refuse_burned_in

        refuse_burned_in(result.volume.dicom_headers or [], deidentification)
    check_output_folder(out_dir, replaced=True)
    check_replaceable(out_dir)
    _refuse_mount_points(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _recover(out_dir)
        # in the parent, often readable by others: private while written when it replaces a folder (which
        # gives it its mode at the swap); a new folder gets the user's usual permissions (not mkdtemp's 0700)
        partial = partial_beside(out_dir, mode=0o700 if out_dir.exists() else 0o777)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {out_dir}: {exc}") from exc
    tmp = Path(partial.name)
    try:
        written, warnings = _write_all(result, tmp, deidentification, label_order)
        if not out_dir.exists():
            os.replace(tmp, out_dir)
        else:
            _swap_into(tmp, out_dir)
    except OSError as exc:
        raise OutputError(f"Cannot write the outputs into {out_dir}: {exc}") from exc
    finally:
        partial.cleanup()  # and its lock file; the folder is gone when it became out_dir
    if result.volume.dicom_headers:  # for other input the report's "not DICOM" note is no news to say
        result.warnings.extend(w for w in warnings if w not in result.warnings)
    return {kind: out_dir / name for kind, name in written.items()}


def _sibling(out_dir: Path, kind: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.{kind}"


def _recover(out_dir: Path) -> None:
    """Undo what killed runs left: this folder's old set renamed aside (fallback swap), put back or removed;
    the unfinished sets (partial_beside) of any folder beside it whose writer has ended, and this folder's
    of an earlier version, without a lock file (the caller holds output_lock: no other run writes it).
    The old sets only this folder's, named exactly as `_sibling` names them: `.case.*.*` would take
    case.2's as well."""
    named = f".{glob.escape(out_dir.name)}.{'[0-9a-f]' * 12}.old"
    aside = sorted(out_dir.parent.glob(named))
    complete = [p for p in aside if (p / OUTPUT_FILES["report"]).is_file()]
    if complete and not out_dir.exists():
        os.replace(complete[-1], out_dir)
    for path in aside:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
    remove_left_partials(out_dir, lockless=True)


def _link_foreign(out_dir: Path, tmp: Path) -> None:
    """Hard-link entries of `out_dir` that are not outputs into the new set, so the swap keeps them."""
    ours = set(OUTPUT_FILES.values())
    for entry in out_dir.iterdir():
        if entry.name in ours:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, tmp / entry.name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    if Path(src).is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where not available."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _refuse_mount_points(out_dir: Path) -> None:
    """The folder is replaced as a whole on every run: a file system mounted inside it would have its files
    copied out and deleted. Refuse before writing anything."""
    if not out_dir.is_dir():
        return
    for root, dirs, _ in os.walk(out_dir):
        for name in dirs:
            if os.path.ismount(Path(root, name)):
                raise OutputError(
                    f"{Path(root, name)} is a mount point inside the output folder {out_dir}, which is "
                    "replaced as a whole on every run: give the outputs a folder of their own."
                )


def _swap_into(tmp: Path, out_dir: Path) -> None:
    _link_foreign(out_dir, tmp)
    st = out_dir.stat()
    if tmp.stat().st_gid != st.st_gid:
        with contextlib.suppress(OSError):  # a group the user is not in: the folder keeps the user's own
            os.chown(tmp, -1, st.st_gid)  # a group-shared folder stays shared
    tmp.chmod(stat.S_IMODE(st.st_mode))  # a private folder stays private
    if _exchange(tmp, out_dir):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old set
        return
    aside = _sibling(out_dir, "old")
    os.replace(out_dir, aside)
    os.replace(tmp, out_dir)
    shutil.rmtree(aside, ignore_errors=True)
