"""The JSON/binary HTTP API of `sarcoscope serve` (OpenAPI at /docs and /openapi.json).

Handlers that decode, segment or measure are plain functions (FastAPI runs them in a worker thread) so the
server stays responsive. Every change is written to the audit log by the store in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import shutil
import tempfile
import zipfile
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sarcoscope import __version__
from sarcoscope.composition.assessment import HEIGHT_RANGE_M, WEIGHT_RANGE_KG
from sarcoscope.conventions import DEFAULT_HU_RANGES, LABEL_COLORS, TISSUE_TITLES, TISSUES
from sarcoscope.errors import InputError
from sarcoscope.segmentation.base import takes_model
from sarcoscope.store import LabelVersion, StorageError, Study
from sarcoscope.web import analysis, render
from sarcoscope.web.auth import COOKIE, client_of
from sarcoscope.web.context import AppContext, get_context
from sarcoscope.web.label_import import import_label_file, receive_label_upload
from sarcoscope.web.upload import receive_upload
from sarcoscope.web.uploads import open_series, upload_series
from sarcoscope.web.volumes import ingest, viewer_nifti
from sarcoscope.web.wording import for_ui

if TYPE_CHECKING:  # the imaging package (pydicom, nibabel) loads with the first request that needs it
    from sarcoscope.imaging.deidentify import DeidentificationPolicy
    from sarcoscope.imaging.volume import CTVolume

router = APIRouter(prefix="/api")
Ctx = Annotated[AppContext, Depends(get_context)]


def current_user(request: Request, ctx: Ctx) -> str:
    return ctx.auth.user(request)


User = Annotated[str, Depends(current_user)]


#: Version numbers and slice indices are stored as 32-bit integers; larger ones cannot exist.
MAX_INT = 2**31 - 1


# -- models -----------------------------------------------------------------------------------------------
class Body(BaseModel):
    """A JSON request body: unknown fields, values of the wrong type (no "5" for 5), NaN and Infinity
    are refused (422), never stored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class SessionIn(Body):
    user: str | None = Field(default=None, min_length=1, max_length=64, description="Account name.")
    password: str | None = Field(default=None, max_length=1024, description="Account password.")
    token: str | None = Field(default=None, max_length=1024, description="Access token (token mode).")


class SelectionIn(Body):
    mode: Literal["range", "slice"]
    first: int = Field(
        ge=0, le=MAX_INT, description="First (most inferior) slice index; the slice itself in Slice mode."
    )
    last: int | None = Field(default=None, ge=0, le=MAX_INT, description="Last slice index (Range mode).")


class SegmentIn(Body):
    engine: str | None = Field(default=None, max_length=1024, description="One of /api/config's engines.")
    model: str | None = Field(
        default=None,
        max_length=128,
        description="An installed model id (/api/models) for an engine that takes one (default: the site's).",
    )
    base_version: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="Latest label version you have seen."
    )


class StudySearchIn(Body):
    q: str | None = Field(
        default=None, max_length=128, description="Patient ID, series description, date, id or UID part."
    )


class SeriesChoiceIn(Body):
    series_uid: str = Field(max_length=256, description="A series of GET /api/studies/{id}/series.")


class RestoreIn(Body):
    base_version: int = Field(ge=1, le=MAX_INT)


class PatientFacts(Body):
    #: the analysis's bounds (composition.assessment), so that no saved value is refused when analysed
    height_cm: float | None = Field(default=None, ge=100 * HEIGHT_RANGE_M[0], le=100 * HEIGHT_RANGE_M[1])
    weight_kg: float | None = Field(default=None, ge=WEIGHT_RANGE_KG[0], le=WEIGHT_RANGE_KG[1])
    sex: Literal["M", "F"] | None = None
    cutoff_set: str | None = Field(default=None, max_length=64)


class PatientIn(PatientFacts):
    #: the facts the form was loaded with: a save based on facts changed meanwhile is refused (409)
    previous: PatientFacts | None = None


def iso_utc(when: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite returns the stored UTC times without a zone."""
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()


def study_json(ctx: AppContext, study: Study) -> dict[str, Any]:
    return {
        "id": study.id,
        "patient_id": study.patient_id,
        "study_date": study.study_date,
        "series_description": study.series_description,
        "source_kind": study.source_kind,
        "n_slices": study.n_slices,
        "rows": study.rows,
        "cols": study.cols,
        "spacing": study.spacing,
        "status": study.status,
        "created_at": iso_utc(study.created_at),
        "created_by": study.created_by,
        "selection": study.selection,
        "localization": study.localization,
        "patient": study.patient,
        "latest_version": ctx.store.latest_version(study.id),
        "series_uid": study.series_uid,
    }


def version_json(row: LabelVersion) -> dict[str, Any]:
    return {
        "version": row.version,
        "parent_version": row.parent_version,
        "created_at": iso_utc(row.created_at),
        "author": row.author,
        "source": row.source,
        "engine": row.engine,
        "model_id": row.model_id,
        "indices": row.indices,
        "shape": row.shape,
        "note": row.note,
    }


class DeidentifyQuery(BaseModel):
    """How a download is de-identified (DICOM PS3.15 basic profile, keyed by the installation's key)."""

    deidentify: bool = Field(default=False, description="De-identify the downloaded files.")
    keep_dates_shifted: bool = Field(default=False, description="Keep dates, moved by a per-patient offset.")
    keep_patient_characteristics: bool = Field(default=False, description="Keep sex, age, height, weight.")

    def policy(self, ctx: AppContext) -> DeidentificationPolicy | None:
        if not self.deidentify:
            return None
        from sarcoscope.imaging.deidentify import DeidentificationPolicy

        return DeidentificationPolicy(
            secret=ctx.deidentification_key,
            keep_dates_shifted=self.keep_dates_shifted,
            keep_patient_characteristics=self.keep_patient_characteristics,
        )


Deidentify = Annotated[DeidentifyQuery, Query()]


def selected_indices(study: Study) -> list[int]:
    sel = study.selection
    if not sel:
        raise HTTPException(409, "Select the L3 slice or range first (PUT /api/studies/{id}/selection).")
    return list(range(int(sel["first"]), int(sel["last"]) + 1))


# -- session and configuration --------------------------------------------------------------------------
@router.get("/health", tags=["server"])
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/config", tags=["server"])
def config(request: Request, ctx: Ctx) -> dict[str, Any]:
    """What the UI needs before login: how to log in, and who is logged in."""
    from sarcoscope.composition import available_cutoff_sets, default_cutoff_set
    from sarcoscope.imaging.labelmaps import builtin_mappings

    try:
        user: str | None = ctx.auth.user(request)
    except HTTPException:
        user = None
    return {
        "version": __version__,
        "auth_required": ctx.auth.login_required,
        "auth_mode": ctx.auth.mode,
        "user": user,
        "engines": ctx.settings.engines,
        "default_engine": ctx.settings.default_engine,
        "model_engines": [e for e in ctx.settings.engines if takes_model(e)],
        "cutoff_sets": available_cutoff_sets(),
        "default_cutoff_set": default_cutoff_set(),
        "presets": list(render.presets()),
        "windows": render.presets(),
        "hu_ranges": DEFAULT_HU_RANGES.as_dict(),
        "label_mappings": builtin_mappings(),
        "max_upload_bytes": ctx.settings.max_upload_bytes,
        "patient_ranges": {
            "height_cm": [100 * v for v in HEIGHT_RANGE_M],
            "weight_kg": list(WEIGHT_RANGE_KG),
        },
        "tissues": [
            {"name": name, "label": int(label), "title": TISSUE_TITLES[name], "color": LABEL_COLORS[label]}
            for name, label in TISSUES.items()
        ],
    }


def _secure(request: Request, ctx: AppContext) -> bool:
    """Secure cookies over HTTPS (seen directly, or by X-Forwarded-Proto from a trusted proxy)."""
    return ctx.settings.secure_cookies or request.url.scheme == "https"


@router.post("/session", tags=["server"])
def login(body: SessionIn, request: Request, response: Response, ctx: Ctx) -> dict[str, str | None]:
    """Log in: name and password (accounts), the access token (token mode), or just a name (open mode).

    Sets an HttpOnly, SameSite=Strict session cookie that expires with the session. Wrong credentials:
    401; too many failures for the name or the client address: 429 with Retry-After.
    """
    secret = body.password if body.password is not None else body.token
    granted = ctx.auth.login(body.user, secret, client_of(request))
    response.set_cookie(
        COOKIE,
        granted.token,
        max_age=int((granted.expires_at - dt.datetime.now(dt.UTC)).total_seconds()),
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx),
    )
    return {"user": granted.user, "expires_at": iso_utc(granted.expires_at)}


@router.delete("/session", tags=["server"])
def logout(request: Request, response: Response, ctx: Ctx) -> dict[str, str]:
    """End the session on the server (the cookie no longer works anywhere) and clear the cookie."""
    ctx.auth.logout(request.cookies.get(COOKIE), client_of(request))
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=_secure(request, ctx))
    return {"status": "logged out"}


# -- studies ---------------------------------------------------------------------------------------------
@router.get("/studies", tags=["studies"])
def list_studies(
    ctx: Ctx, user: User, q: Annotated[str | None, Query(max_length=128)] = None
) -> list[dict[str, Any]]:
    """The studies, newest first; `q` searches them. A search is better sent to POST /api/studies/search:
    a URL's query string (a patient's name or ID) reaches the error log of a reverse proxy in front."""
    return [study_json(ctx, s) for s in ctx.store.list_studies(q)]


@router.post("/studies/search", tags=["studies"])
def search_studies(body: StudySearchIn, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """GET /api/studies?q=..., with the search text in the body, out of every URL (and so out of the logs
    of the server and of any proxy in front of it)."""
    return [study_json(ctx, s) for s in ctx.store.list_studies(body.q)]


@router.post("/studies", status_code=201, tags=["studies"])
async def upload_study(request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Upload one CT series: DICOM files (field `files`, repeated), one .zip, or one NIfTI file.

    The optional form field `series_uid` picks a series when the upload holds several (default: the one
    `sarcoscope analyze` reads); the others of the same patient are kept, listed in the answer's `series`,
    and opened with POST /api/studies/{id}/series.
    """
    from starlette.concurrency import run_in_threadpool

    work = ctx.store.new_tmp_dir()
    try:
        parts, series_uid = await receive_upload(request, work)
        study, volume = await run_in_threadpool(
            ingest, ctx.store, parts, work, actor=user, client=client_of(request), series_uid=series_uid
        )
        return await run_in_threadpool(_opened, ctx, study, volume)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _opened(ctx: AppContext, study: Study, volume: CTVolume) -> dict[str, Any]:
    """A study just read: its volume kept in memory and prepared for the viewer, which asks for it next;
    the answer lists the upload's series (a choice to offer) and what was odd in reading it."""
    ctx.volumes.put(study.id, volume)
    if ctx.settings.prerender:
        ctx.jobs.start(f"viewer volume of {study.id}", lambda: viewer_nifti(ctx.store, study, volume))
    return {
        **study_json(ctx, study),
        "series": upload_series(ctx.store, study),
        "warnings": [for_ui(w) for w in volume.warnings],
    }


@router.get("/studies/{study_id}/series", tags=["studies"])
def study_series(study_id: str, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The series of the upload the study came from, in the order the reader ranks them (the first,
    `default`, is the one `sarcoscope analyze` reads): description, slices, slice thickness, contrast
    phase when the headers tell it, and the study each was opened as. Empty: the upload held one series."""
    return upload_series(ctx.store, ctx.store.get_study(study_id))


@router.post("/studies/{study_id}/series", tags=["studies"])
def open_upload_series(
    study_id: str, body: SeriesChoiceIn, request: Request, response: Response, ctx: Ctx, user: User
) -> dict[str, Any]:
    """Open another series of the study's upload as a study of its own, without uploading again: the
    study it was opened as before (200), or a new one read from the stored upload (201)."""
    study = ctx.store.get_study(study_id)
    other, volume = open_series(ctx.store, study, body.series_uid, actor=user, client=client_of(request))
    if volume is None:
        return {**study_json(ctx, other), "series": upload_series(ctx.store, other), "warnings": []}
    response.status_code = 201
    return _opened(ctx, other, volume)


@router.get("/studies/{study_id}", tags=["studies"])
def get_study(study_id: str, ctx: Ctx, user: User) -> dict[str, Any]:
    return study_json(ctx, ctx.store.get_study(study_id))


@router.delete("/studies/{study_id}", tags=["studies"])
def delete_study(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, str]:
    """Delete the study's rows and every file of it (the audit log keeps the deletion).

    Requests and background work may be using its files (writing its viewer volume or a QC picture,
    reading its images): the rows go first, so that work from now on finds no study (404), and the files
    go once the work already on them has ended (Store.using_files). When this returns, nothing of the
    study is on disk or still to come.
    """
    ctx.store.delete_study(study_id, user, client_of(request))
    ctx.volumes.drop(study_id)
    ctx.analyses.drop(study_id)
    return {"status": "deleted", "id": study_id}


@router.get(
    "/studies/{study_id}/image/{plane}/{index}",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def image(
    study_id: str,
    plane: Literal["axial", "coronal", "sagittal"],
    index: int,
    ctx: Ctx,
    user: User,
    preset: Annotated[str, Query(max_length=32)] = "soft_tissue",
) -> Response:
    """A windowed 8-bit PNG: axial slice `index` (z), coronal row `index` (y) or sagittal column (x).

    Reconstructions have the most superior slice at the top and one image row per axial slice; the UI
    stretches them by spacing[z] / spacing[x] to show true proportions.
    """
    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    png = render.plane_png(volume, plane, index, preset)
    return Response(png, media_type="image/png")


@router.get(
    "/studies/{study_id}/hu/{index}",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def hu_slice(study_id: str, index: int, ctx: Ctx, user: User) -> Response:
    """Axial slice `index` in HU as little-endian int16 (y, x), for "paint only within the HU range"."""
    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    plane = render.plane_image(volume, "axial", index)
    data = np.clip(np.rint(plane), -32768, 32767).astype("<i2").tobytes()
    return Response(
        gzip.compress(data, compresslevel=1),
        media_type="application/octet-stream",
        headers={"Content-Encoding": "gzip", "X-Shape": f"{plane.shape[0]},{plane.shape[1]}"},
    )


@router.get(
    "/studies/{study_id}/volume.nii.gz",
    tags=["viewer"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, 404: {}, 409: {}},
)
def volume_nifti(study_id: str, ctx: Ctx, user: User) -> StreamingResponse:
    """The whole HU volume as int16 NIfTI (gzipped) for the viewer: window/level and zoom on the full HU
    data. De-identified: the header holds geometry and units only; the file name is the study id.

    The file is opened before the study's deletion may remove it, and sent from the open file."""
    try:
        with ctx.store.using_files(study_id) as study:
            path = viewer_nifti(ctx.store, study, ctx.volumes.get(study))
            file = path.open("rb")
    except (InputError, OSError) as exc:
        raise HTTPException(409, f"The images of study {study_id} are not available: {exc}") from exc
    return StreamingResponse(
        _iter_file(file),
        media_type="application/gzip",
        headers={
            "Content-Length": str(os.fstat(file.fileno()).st_size),
            "Content-Disposition": f'attachment; filename="{study_id}.nii.gz"',
        },
    )


@router.get(
    "/studies/{study_id}/body/{index}",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def body_slice(study_id: str, index: int, ctx: Ctx, user: User) -> Response:
    """The body in axial slice `index` as uint8 (y, x), 1 inside: the label editor's fill stays in it."""
    from sarcoscope.segmentation.refine import body_mask

    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    mask = body_mask(np.asarray(render.plane_image(volume, "axial", index)), volume.pixel_spacing)
    return Response(
        gzip.compress(mask.astype(np.uint8).tobytes(), compresslevel=1),
        media_type="application/octet-stream",
        headers={"Content-Encoding": "gzip", "X-Shape": f"{mask.shape[0]},{mask.shape[1]}"},
    )


@router.post("/studies/{study_id}/localize", tags=["l3"])
def localize(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Run the automatic L3 localization; pre-places the selection if none was made yet."""
    from sarcoscope.errors import SarcoscopeError, TooFewSlicesError
    from sarcoscope.level import locate_l3

    ctx.prepare_engine()  # the L3 view is open: "Segment selected" is likely next
    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    try:
        result: dict[str, Any] = locate_l3(volume).as_dict()
    except TooFewSlicesError as exc:  # normal for one slice or a few, whose level the user chose
        result = {"error": for_ui(str(exc)), "too_short": True}
    except SarcoscopeError as exc:
        result = {"error": for_ui(str(exc))}
    for flag in result.get("flags") or []:
        flag["reason"] = for_ui(str(flag.get("reason", "")))
    proposal = analysis.selection_from_localization(result, volume.n_slices)
    study = ctx.store.update_study(
        study_id, user, "localize", client_of(request), localization=result, proposed_selection=proposal
    )
    return study_json(ctx, study)


@router.put("/studies/{study_id}/selection", tags=["l3"])
def set_selection(study_id: str, body: SelectionIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    study = ctx.store.get_study(study_id)
    last = body.first if body.mode == "slice" or body.last is None else body.last
    first, last = min(body.first, last), max(body.first, last)
    if last >= study.n_slices:
        raise HTTPException(
            422, f"Slice {last} is outside the volume (valid slices: 0..{study.n_slices - 1})."
        )
    selection = {"mode": body.mode, "first": first, "last": last}
    study = ctx.store.update_study(study_id, user, "select-l3", client_of(request), selection=selection)
    return study_json(ctx, study)


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
    from sarcoscope.imaging.deidentify import deidentify_file

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
        {"indices": [indices[0], indices[-1]], "deidentified": policy is not None},
        client_of(request),
    )
    tag = "deid" if policy is not None else "orig"
    filename = f"sarcoscope-{study_id[:8]}-slices{indices[0]}-{indices[-1]}-{tag}.zip"
    return StreamingResponse(
        _iter_file(buffer),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


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


# -- labels ----------------------------------------------------------------------------------------------
@router.post("/studies/{study_id}/segment", tags=["labels"])
def segment(study_id: str, body: SegmentIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Segment the selected slice(s) with an engine and save the result as a new label version."""
    from sarcoscope.segmentation import get_engine
    from sarcoscope.segmentation.quality import segment_with_quality
    from sarcoscope.segmentation.registry import ModelRegistry

    name = body.engine or ctx.settings.default_engine
    if name not in ctx.settings.engines:
        raise HTTPException(422, f"Unknown engine '{name}'. Available: {', '.join(ctx.settings.engines)}.")
    if body.model is not None:
        if not takes_model(name):
            raise HTTPException(422, f"The engine '{name}' takes no model.")
        ModelRegistry().get(body.model)  # only installed models, never a path a client names
        name = f"{name}:{body.model}"
    study = ctx.store.get_study(study_id)
    indices = selected_indices(study)
    volume = ctx.volumes.get(study)
    engine = get_engine(name)
    labels, quality = segment_with_quality(engine, np.asarray(volume.hu[indices]), volume.pixel_spacing)
    labels = np.ascontiguousarray(labels, np.uint8)
    row = ctx.store.save_version(
        study_id,
        base_version=body.base_version,
        labels=labels,
        indices=indices,
        author=user,
        source="segment",
        engine=engine.name,
        model_id=engine.model_id,
        client=client_of(request),
    )
    ctx.analyses.remember_quality(study_id, row.version, quality.as_dict(indices))
    ctx.prerender_overlay(study_id, row.version)
    return version_json(row)


@router.get("/studies/{study_id}/versions", tags=["labels"])
def list_versions(study_id: str, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    return [version_json(v) for v in ctx.store.list_versions(study_id)]


@router.get(
    "/studies/{study_id}/labels",
    tags=["labels"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_labels(
    study_id: str, ctx: Ctx, user: User, version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None
) -> Response:
    """The label maps of a version (default: latest) as raw uint8 bytes, C order (n, y, x).

    Headers: X-Label-Version, X-Label-Shape ("n,y,x"), X-Label-Indices (axial slice of each map).
    """
    row = ctx.store.get_version(study_id, version)
    stack = ctx.store.load_labels(study_id, row.version)
    body = gzip.compress(stack.labels.tobytes(), compresslevel=1)
    return Response(
        body,
        media_type="application/octet-stream",
        headers={
            "Content-Encoding": "gzip",
            "X-Label-Version": str(row.version),
            "X-Label-Shape": ",".join(str(n) for n in stack.labels.shape),
            "X-Label-Indices": ",".join(str(i) for i in stack.indices),
        },
    )


@router.post("/studies/{study_id}/labels", tags=["labels"], status_code=201)
async def save_labels(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    base_version: Annotated[int, Query(ge=1, le=MAX_INT, description="The version the edit started from.")],
    note: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Save edited label maps as a new version. Body: raw uint8 (n, y, x) of the base version's slices.

    Refused with 409 when `base_version` is no longer the latest (someone else saved in between).
    """
    from starlette.concurrency import run_in_threadpool

    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if content_type != "application/octet-stream":
        raise HTTPException(415, f"Send the labels as application/octet-stream, not {content_type[:64]}.")
    base = ctx.store.get_version(study_id, base_version)
    n, ny, nx = (int(s) for s in base.shape)
    body = await _read_exact(request, n * ny * nx, f"uint8 labels for shape ({n}, {ny}, {nx})")
    labels = np.frombuffer(body, dtype=np.uint8).reshape(n, ny, nx)
    if int(labels.max(initial=0)) > max(int(v) for v in TISSUES.values()):
        raise HTTPException(422, f"Unknown label id {int(labels.max())}: allowed are 0-4 (0 = background).")
    row = await run_in_threadpool(
        lambda: ctx.store.save_version(
            study_id,
            base_version=base_version,
            labels=labels,
            indices=list(base.indices),
            author=user,
            source="edit",
            engine=base.engine,
            model_id=base.model_id,
            note=note,
            client=client_of(request),
        )
    )
    ctx.prerender_overlay(study_id, row.version)
    return version_json(row)


async def _read_exact(request: Request, expected: int, what: str) -> bytearray:
    """The request body, which must be exactly `expected` bytes. A longer body is refused with 413 as
    soon as its Content-Length or its streamed size shows it, before more than `expected` bytes are held."""
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) != expected:  # BodySizeLimit let only digits through
        status = 413 if int(declared) > expected else 422
        raise HTTPException(status, f"Expected {expected} bytes of {what}, got {declared}.")
    buffer = bytearray(expected)
    size = 0
    async for chunk in request.stream():
        if size + len(chunk) > expected:
            raise HTTPException(413, f"Expected {expected} bytes of {what}; the body is longer.")
        buffer[size : size + len(chunk)] = chunk
        size += len(chunk)
    if size != expected:
        raise HTTPException(422, f"Expected {expected} bytes of {what}, got {size}.")
    return buffer


@router.post("/studies/{study_id}/labels/import", tags=["labels"], status_code=201)
async def import_labels(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    mapping: Annotated[
        str | None, Query(max_length=64, description="Built-in label mapping (default: the project's ids).")
    ] = None,
    base_version: Annotated[
        int | None, Query(ge=1, description="The latest version you have seen (none: the study has none).")
    ] = None,
) -> dict[str, Any]:
    """Import a label file (Slice-O-Matic .tag, DICOM SEG, NIfTI, PNG, .npy; or one PNG per tissue, field
    `files`) for the selected slice(s) as a new label version. A file that does not fit the study: 422."""
    from starlette.concurrency import run_in_threadpool

    study = ctx.store.get_study(study_id)
    indices = selected_indices(study)
    work = ctx.store.new_tmp_dir()
    try:
        path, shown_name = await receive_label_upload(request, work)
        row = await run_in_threadpool(
            lambda: import_label_file(
                ctx,
                study,
                path,
                shown_name,
                indices=indices,
                mapping_name=mapping,
                base_version=base_version,
                author=user,
                client=client_of(request),
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.prerender_overlay(study_id, row.version)
    return version_json(row)


@router.post("/studies/{study_id}/versions/{version}/restore", tags=["labels"], status_code=201)
def restore_version(
    study_id: str,
    version: Annotated[int, PathParam(ge=1, le=MAX_INT)],
    body: RestoreIn,
    request: Request,
    ctx: Ctx,
    user: User,
) -> dict[str, Any]:
    """Make an earlier version the latest again, by appending a copy of it (history is never rewritten)."""
    old = ctx.store.get_version(study_id, version)
    stack = ctx.store.load_labels(study_id, version)
    row = ctx.store.save_version(
        study_id,
        base_version=body.base_version,
        labels=stack.labels,
        indices=stack.indices,
        author=user,
        source="restore",
        engine=old.engine,
        model_id=old.model_id,
        note=f"restored version {version}",
        client=client_of(request),
    )
    ctx.prerender_overlay(study_id, row.version)
    return version_json(row)


# -- analysis and export ---------------------------------------------------------------------------------
@router.put("/studies/{study_id}/patient", tags=["analysis"])
def set_patient(study_id: str, body: PatientIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    from sarcoscope.composition import available_cutoff_sets

    if body.cutoff_set is not None and body.cutoff_set not in available_cutoff_sets():
        raise HTTPException(
            422, f"Unknown cutoff set '{body.cutoff_set}'. Available: {', '.join(available_cutoff_sets())}."
        )
    study = ctx.store.update_study(
        study_id,
        user,
        "patient-info",
        client_of(request),
        patient=body.model_dump(exclude={"previous"}),
        expected_patient=body.previous.model_dump() if body.previous is not None else None,
    )
    return study_json(ctx, study)


@router.get("/studies/{study_id}/analysis", tags=["analysis"])
def get_analysis(
    study_id: str, ctx: Ctx, user: User, version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None
) -> dict[str, Any]:
    """Areas, HU statistics, ratios, SMI and classification for a label version (default: latest)."""
    study = ctx.store.get_study(study_id)
    return ctx.analyses.get(study, version)


@router.get("/studies/{study_id}/export/{fmt}", tags=["analysis"], response_class=FileResponse)
def export(
    study_id: str,
    fmt: str,
    request: Request,
    ctx: Ctx,
    user: User,
    deid: Deidentify,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> Response:
    """Download the label map (DICOM SEG, NIfTI), metrics (CSV), report (JSON, printable HTML) or overlay;
    `deidentify=true` de-identifies the SEG and reports like the DICOM download (same pseudonym and UIDs).
    A DICOM object that leaves a malformed source value empty says so in the header X-Sarcoscope-Warning."""
    if fmt not in analysis.EXPORTS:
        raise HTTPException(404, f"Unknown export format '{fmt}'. Available: {', '.join(analysis.EXPORTS)}.")
    study = ctx.store.get_study(study_id)
    policy = deid.policy(ctx)
    out = analysis.export_file(ctx.store, ctx.volumes, study, version, fmt, policy)
    details = {"format": fmt, "version": version, "deidentified": policy is not None}
    ctx.store.audit(user, "export", study_id, details, client_of(request))
    headers = {"Content-Disposition": f'attachment; filename="{out.filename}"'}
    if fmt == "html":  # self-contained page: its own inline style and embedded picture only
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    if out.warning is not None:  # the page shows it beside the download
        headers["X-Sarcoscope-Warning"] = out.warning
    return Response(out.data, media_type=out.media_type, headers=headers)


# -- models and training data ---------------------------------------------------------------------------
@router.get("/models", tags=["models"])
def models(ctx: Ctx, user: User) -> dict[str, Any]:
    """The installed U-Net models (as `sarcoscope models list`), the default, their measured validation."""
    from sarcoscope.segmentation.registry import ModelRegistry

    ctx.prepare_engine()  # the L3 view asks for these when it opens: "Segment selected" is likely next
    registry = ModelRegistry()
    default = registry.default_id()
    return {
        "default": default,
        "models": [
            {
                "id": m.model_id,
                "created": m.created,
                "shipped": m.shipped,
                "default": m.model_id == default,
                "training_data": m.training_summary(),
                "validation": m.measured(),
                "comparison": {
                    k: m.card["comparison"][k] for k in ("baseline", "means", "better", "reasons", "rule")
                }
                if m.card.get("comparison")
                else None,
            }
            for m in registry.models()
        ],
    }


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


# -- audit -----------------------------------------------------------------------------------------------
@router.get("/studies/{study_id}/audit", tags=["audit"])
def study_audit(study_id: str, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    ctx.store.get_study(study_id)
    return [_event_json(e) for e in ctx.store.audit_events(study_id)]


@router.get("/audit", tags=["audit"])
def audit(ctx: Ctx, user: User, limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[dict[str, Any]]:
    return [_event_json(e) for e in ctx.store.audit_events(None, limit)]


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso_utc(e.at),
        "actor": e.actor,
        "action": e.action,
        "study_id": e.study_id,
        "details": e.details,
        "client": e.client,
    }
