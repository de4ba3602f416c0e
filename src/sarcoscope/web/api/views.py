"""The API's routes of the viewer and the L3 view: windowed planes, HU and body slices, the automatic L3
localization and the L3 selection.
"""

from __future__ import annotations

import gzip
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from sarcoscope.store import SelectionConflictError
from sarcoscope.web import analysis, render
from sarcoscope.web.api.common import MAX_INT, Body, Ctx, User, study_json
from sarcoscope.web.auth import client_of
from sarcoscope.web.wording import for_ui

router = APIRouter()


class SelectionIn(Body):
    mode: Literal["range", "slice"]
    first: int = Field(
        ge=0, le=MAX_INT, description="First (most inferior) slice index; the slice itself in Slice mode."
    )
    last: int | None = Field(default=None, ge=0, le=MAX_INT, description="Last slice index (Range mode).")
    base_version: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT,
        description="The study's `selection_version` your change started from: when someone else changed "
        "the selection since, nothing is changed (409, with their selection in `study`). Without it, a "
        "selection another person chose is not replaced either (409, naming who).",
    )
    editor: str | None = Field(
        default=None,
        max_length=64,
        description="A random id of your page or program, the same for each change it makes: a change "
        "sent before the answer to your previous one came is not refused as a conflict with it.",
    )


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
    request: Request,
    ctx: Ctx,
    user: User,
    preset: Annotated[str, Query(max_length=32)] = "soft_tissue",
) -> Response:
    """A windowed 8-bit PNG: axial slice `index` (z), coronal row `index` (y) or sagittal column (x).

    Reconstructions have the most superior slice at the top and one image row per axial slice; the UI
    stretches them by spacing[z] / spacing[x] to show true proportions. Like every image route, in the
    audit log once per sitting (AppContext.viewed).
    """
    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    png = render.plane_png(volume, plane, index, preset)
    ctx.viewed(request, user, study_id)
    return Response(png, media_type="image/png")


@router.get(
    "/studies/{study_id}/hu/{index}",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def hu_slice(study_id: str, index: int, request: Request, ctx: Ctx, user: User) -> Response:
    """Axial slice `index` in HU as little-endian int16 (y, x), for "paint only within the HU range"."""
    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    plane = render.plane_image(volume, "axial", index)
    ctx.viewed(request, user, study_id)
    return _raw_slice(np.clip(np.rint(plane), -32768, 32767).astype("<i2"))


@router.get(
    "/studies/{study_id}/body/{index}",
    tags=["viewer"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def body_slice(study_id: str, index: int, request: Request, ctx: Ctx, user: User) -> Response:
    """The body in axial slice `index` as uint8 (y, x), 1 inside: the label editor's fill stays in it."""
    from sarcoscope.segmentation.body import body_mask

    study = ctx.store.get_study(study_id)
    volume = ctx.volumes.get(study)
    mask = body_mask(np.asarray(render.plane_image(volume, "axial", index)), volume.pixel_spacing)
    ctx.viewed(request, user, study_id)
    return _raw_slice(mask.astype(np.uint8))


def _raw_slice(values: np.ndarray) -> Response:
    """A slice's values as raw bytes (C order), gzipped, its (y, x) shape in X-Shape: the editor's layers."""
    return Response(
        gzip.compress(values.tobytes(), compresslevel=1),
        media_type="application/octet-stream",
        headers={"Content-Encoding": "gzip", "X-Shape": f"{values.shape[0]},{values.shape[1]}"},
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


@router.put("/studies/{study_id}/selection", tags=["l3"], response_model=None)
def set_selection(
    study_id: str, body: SelectionIn, request: Request, ctx: Ctx, user: User
) -> dict[str, Any] | JSONResponse:
    """Store the L3 selection; with `base_version`, only if nobody else changed it since (else 409); without
    it, only if no other person chose the current one."""
    study = ctx.store.get_study(study_id)
    last = body.first if body.mode == "slice" or body.last is None else body.last
    first, last = min(body.first, last), max(body.first, last)
    if last >= study.n_slices:
        raise HTTPException(
            422, f"Slice {last} is outside the volume (valid slices: 0..{study.n_slices - 1})."
        )
    selection = {"mode": body.mode, "first": first, "last": last}
    try:
        study = ctx.store.set_selection(
            study_id, selection, user, client_of(request), base_version=body.base_version, editor=body.editor
        )
    except SelectionConflictError as exc:
        return JSONResponse({"detail": str(exc), "study": study_json(ctx, exc.study)}, status_code=409)
    return study_json(ctx, study)
