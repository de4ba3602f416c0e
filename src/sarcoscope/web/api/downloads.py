"""The API's streamed downloads: the viewer's NIfTI volume, a zip of a study's DICOM slices (original or
de-identified) and the training-data zip, each sent in chunks from an open file.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from sarcoscope.errors import InputError
from sarcoscope.store import StorageError
from sarcoscope.web.api.common import Ctx, Deidentify, User, selected_indices
from sarcoscope.web.auth import client_of
from sarcoscope.web.context import AppContext
from sarcoscope.web.volumes import viewer_nifti

router = APIRouter()


#: A download (a zip of DICOM files or of training data) is built in memory up to this size, and beyond it
#: in the data folder's tmp/: never in the system's temporary folder, outside the data folder's protection.
SPOOL_BYTES = 64 << 20


def _download_buffer(ctx: AppContext) -> Any:
    """A file to build a download in; the caller closes it (`_iter_file` does)."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=ctx.store.data_dir / "tmp")


def _iter_file(f: Any, chunk: int = 1 << 20) -> Any:
    try:
        while data := f.read(chunk):
            yield data
    finally:
        f.close()


@router.get(
    "/studies/{study_id}/volume.nii.gz",
    tags=["viewer"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, 404: {}, 409: {}},
)
def volume_nifti(study_id: str, request: Request, ctx: Ctx, user: User) -> StreamingResponse:
    """The whole HU volume as int16 NIfTI (gzipped) for the viewer: window/level and zoom on the full HU
    data. De-identified: the header holds geometry and units only; the file name is the study id. Every
    slice of the patient's CT: in the audit log, like a DICOM download.

    The file is opened before the study's deletion may remove it, and sent from the open file."""
    try:
        with ctx.store.using_files(study_id) as study:
            path = viewer_nifti(ctx.store, study, ctx.volumes.get(study))
            file = path.open("rb")
    except (InputError, OSError) as exc:
        raise HTTPException(409, f"The images of study {study_id} are not available: {exc}") from exc
    try:  # the viewer's images need no event of their own: this one has their key
        key = ctx.view_key(request, user, study_id)
        ctx.store.audit(user, "download-volume", study_id, None, client_of(request), view_key=key)
    except BaseException:
        file.close()
        raise
    return StreamingResponse(
        _iter_file(file),
        media_type="application/gzip",
        headers={
            "Content-Length": str(os.fstat(file.fileno()).st_size),
            "Content-Disposition": f'attachment; filename="{study_id}.nii.gz"',
        },
    )


@router.get("/studies/{study_id}/dicom", tags=["l3"], response_class=StreamingResponse)
def download_dicom(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    deid: Deidentify,
    first: Annotated[int | None, Query(ge=0)] = None,
    last: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    """A zip of the original DICOM files of slices first..last (default: the current selection), or of
    de-identified copies (`deidentify=true`): an image with burned-in annotation is refused (422)."""
    from sarcoscope.imaging.deidentify.files import deidentify_file

    study = ctx.store.get_study(study_id)
    if study.source_kind != "dicom":
        raise HTTPException(409, "This study was uploaded as NIfTI: there are no original DICOM files.")
    if first is None:
        indices = selected_indices(study)
    else:
        end = first if last is None else last
        lo, hi = min(first, end), max(first, end)
        if hi >= study.n_slices:
            raise HTTPException(422, f"Slice {hi} is outside the volume (valid: 0..{study.n_slices - 1}).")
        indices = list(range(lo, hi + 1))
    folder = ctx.store.series_dir(study)
    policy = deid.policy(ctx)
    buffer = _download_buffer(ctx)
    try:
        with (
            ctx.store.using_files(study_id),
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        ):
            uids = ctx.volumes.sop_uids(study)
            for i in indices:
                name = f"slice{i:04d}.dcm"
                if policy is not None:
                    zf.writestr(name, deidentify_file(folder / f"{uids[i]}.dcm", policy, f"slice {i}"))
                else:
                    zf.write(folder / f"{uids[i]}.dcm", name)
    except Exception:
        buffer.close()
        raise
    buffer.seek(0)
    ctx.store.audit(
        user,
        "download-dicom",
        study_id,
        {"indices": [indices[0], indices[-1]], **deid.audited()},
        client_of(request),
    )
    tag = "deid" if policy is not None else "orig"
    filename = f"sarcoscope-{study_id[:8]}-slices{indices[0]}-{indices[-1]}-{tag}.zip"
    return StreamingResponse(
        _iter_file(buffer),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/training-data", tags=["models"], response_class=StreamingResponse)
def training_data(request: Request, ctx: Ctx, user: User) -> StreamingResponse:
    """A zip of every study's corrected slices and labels in the `sarcoscope train` DATA folder layout, for
    training on another machine (`sarcoscope train EXPORT.zip`); which versions count: training_data."""
    from sarcoscope.web.training_data import export_training_data, zip_folder

    work = ctx.store.new_tmp_dir()
    buffer = None
    try:
        export_training_data(ctx.store, ctx.volumes, work / "data", user, client_of(request))
        buffer = _download_buffer(ctx)
        zip_folder(work / "data", buffer)
    except OSError as exc:  # a full disk: 507 by its reason, naming no server folder (not a 500)
        if buffer is not None:
            buffer.close()
        raise StorageError.of("the training data", exc) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    buffer.seek(0)
    filename = f"sarcoscope-training-data-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.zip"
    return StreamingResponse(
        _iter_file(buffer),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
