"""The API's routes of segmentation and label versions: segment the selection, list, read, save, import
and restore versions, and the installed models an engine may use.
"""

from __future__ import annotations

import gzip
import shutil
from typing import Annotated, Any
from urllib.parse import unquote

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import Field

from sarcoscope.conventions import TISSUES
from sarcoscope.imaging.volume import slices_text
from sarcoscope.segmentation.base import takes_model
from sarcoscope.web.api.common import MAX_INT, Body, Ctx, User, selected_indices, version_json
from sarcoscope.web.auth import client_of
from sarcoscope.web.label_import import import_label_file, receive_label_upload

router = APIRouter()
#: The selection a segmentation or an import is made for (selected_indices refuses another).
FIRST_HELP = "The first slice of the L3 selection you chose (409 when the stored one is now another)."
LAST_HELP = "Its last slice (default: first)."
EDIT_FIRST_HELP = "The first slice your edit is of (409 when the base version is of other slices)."


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
    first: int | None = Field(default=None, ge=0, le=MAX_INT, description=FIRST_HELP)
    last: int | None = Field(default=None, ge=0, le=MAX_INT, description=LAST_HELP)


class RestoreIn(Body):
    base_version: int = Field(ge=1, le=MAX_INT)


@router.post("/studies/{study_id}/segment", tags=["labels"])
def segment(study_id: str, body: SegmentIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Segment the selected slice(s) with an engine and save the result as a new label version."""
    from sarcoscope.segmentation import get_engine
    from sarcoscope.segmentation.quality import segment_then_score
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
    indices = selected_indices(study, body.first, body.last)
    volume = ctx.volumes.get(study)
    engine = get_engine(name)
    labels, score = segment_then_score(engine, np.asarray(volume.hu[indices]), volume.pixel_spacing)
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
    ctx.score_and_prerender(row, score)
    return version_json(row)


@router.get("/studies/{study_id}/versions", tags=["labels"])
def list_versions(study_id: str, request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The study's label versions, newest first: who saved each, when, of which slices, with what note (an
    imported file's name). In the audit log as `view-results`, like the label maps (AppContext.viewed)."""
    listed = [version_json(v) for v in ctx.store.list_versions(study_id)]
    ctx.viewed(request, user, study_id, what="results")
    return listed


@router.get(
    "/studies/{study_id}/labels",
    tags=["labels"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_labels(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> Response:
    """The label maps of a version (default: latest) as raw uint8 bytes, C order (n, y, x). In the audit
    log as `view-results`, once per sitting (AppContext.viewed).

    Headers: X-Label-Version, X-Label-Shape ("n,y,x"), X-Label-Indices (axial slice of each map).
    """
    row = ctx.store.get_version(study_id, version)
    stack = ctx.store.load_labels(study_id, row.version)
    ctx.viewed(request, user, study_id, what="results")
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
    first: Annotated[int | None, Query(ge=0, le=MAX_INT, description=EDIT_FIRST_HELP)] = None,
    last: Annotated[int | None, Query(ge=0, le=MAX_INT, description=LAST_HELP)] = None,
) -> dict[str, Any]:
    """Save edited label maps as a new version. Body: raw uint8 (n, y, x) of the base version's slices.
    An optional note (at most 500 characters) goes in the `X-Label-Note` header, percent-encoded UTF-8.

    Refused with 409 when `base_version` is no longer the latest (someone else saved in between), and
    when `first`..`last` (the slices edited) are not the base version's: its slices are the new version's.
    """
    from starlette.concurrency import run_in_threadpool

    note = _label_note(request)

    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if content_type != "application/octet-stream":
        raise HTTPException(415, f"Send the labels as application/octet-stream, not {content_type[:64]}.")
    base = ctx.store.get_version(study_id, base_version)
    edited = None if first is None else list(range(first, (first if last is None else last) + 1))
    if edited is not None and edited != [int(i) for i in base.indices]:
        raise HTTPException(
            409,
            f"Not saved: version {base_version} is of {slices_text(base.indices[0], base.indices[-1])}, "
            f"your edit of {slices_text(edited[0], edited[-1])}: saved on top of it, your labels would be "
            "stored as those slices'.",
        )
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


NOTE_HEADER = "X-Label-Note"


def _label_note(request: Request) -> str | None:
    """The save's note, from its header. Not from the URL, which server and proxy access logs keep: a note
    ("checked with Dr. X", a patient's detail) would stay there, out of the study's reach and its deletion."""
    if "note" in request.query_params:
        raise HTTPException(
            400,
            f"Send the note in the {NOTE_HEADER} header (percent-encoded UTF-8), not in the URL: a URL is "
            "kept in the access logs of the server and of any proxy. Nothing was saved.",
        )
    raw = request.headers.get(NOTE_HEADER)
    if raw is None:
        return None
    try:
        note = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise HTTPException(422, f"The {NOTE_HEADER} header is not percent-encoded UTF-8.") from None
    if len(note) > 500:
        raise HTTPException(422, f"The note has {len(note)} characters; at most 500 are kept.")
    return note


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
    first: Annotated[int | None, Query(ge=0, le=MAX_INT, description=FIRST_HELP)] = None,
    last: Annotated[int | None, Query(ge=0, le=MAX_INT, description=LAST_HELP)] = None,
) -> dict[str, Any]:
    """Import a label file (Slice-O-Matic .tag, DICOM SEG, NIfTI, PNG, .npy; or one PNG per tissue, field
    `files`) for the selected slice(s) as a new label version. A file that does not fit the study: 422."""
    from starlette.concurrency import run_in_threadpool

    study = ctx.store.get_study(study_id)
    indices = selected_indices(study, first, last)
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


@router.post("/studies/{study_id}/versions/{version}/quality", tags=["labels"])
def score_version(
    study_id: str, version: Annotated[int, PathParam(ge=1, le=MAX_INT)], ctx: Ctx, user: User
) -> dict[str, Any]:
    """Compute the quality score of a version the server segmented that has none stored (segmented before
    scores were stored, or its score failed: this tries again) by running its engine on its slices again,
    and store it, or why it failed, with the version; its quality block (as the analysis's). 409 when the
    version has a score, is being scored, or no engine made it."""
    from sarcoscope.web.analysis import not_an_engines

    study = ctx.store.get_study(study_id)
    row = ctx.store.get_version(study_id, version)
    if row.source != "segment":
        raise HTTPException(409, f"Not scored: {not_an_engines(row)}.")
    if ctx.analyses.scoring(study_id, version):
        raise HTTPException(
            409, f"The quality of version {version} is being computed: the analysis shows it."
        )
    if row.quality is not None and "failed" not in row.quality:
        raise HTTPException(409, f"Version {version} has its quality score: the analysis shows it.")
    ctx.score_again(study, row)
    return ctx.analyses.quality(study_id, ctx.store.get_version(study_id, version))


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
                "comparison": m.comparison_summary(),
            }
            for m in registry.models()
        ],
    }
