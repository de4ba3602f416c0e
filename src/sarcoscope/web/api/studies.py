"""The API's study routes: list and search the studies, upload a CT series, open another series of an
upload, read and delete a study.
"""

from __future__ import annotations

import datetime as dt
import shutil
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import Field

from sarcoscope.store import Study, trash
from sarcoscope.web.api.common import MAX_INT, Body, Ctx, User, iso_utc, listed_study_json, study_json
from sarcoscope.web.auth import client_of
from sarcoscope.web.context import AppContext
from sarcoscope.web.upload import receive_upload
from sarcoscope.web.uploads import open_series, upload_series
from sarcoscope.web.volumes import ingest, viewer_nifti
from sarcoscope.web.wording import for_ui

if TYPE_CHECKING:  # the imaging package (pydicom, nibabel) loads with the first request that needs it
    from sarcoscope.imaging.volume import CTVolume

router = APIRouter()


class StudySearchIn(Body):
    q: str | None = Field(
        default=None, max_length=128, description="Patient ID, series description, date, id or UID part."
    )


class SeriesChoiceIn(Body):
    series_uid: str = Field(max_length=256, description="A series of GET /api/studies/{id}/series.")


@router.get("/studies", tags=["studies"])
def list_studies(
    request: Request, ctx: Ctx, user: User, q: Annotated[str | None, Query(max_length=128)] = None
) -> list[dict[str, Any]]:
    """The studies, newest first; `q` searches them. A search is better sent to POST /api/studies/search:
    a URL's query string (a patient's name or ID) reaches the error log of a reverse proxy in front.
    In the audit log (it names patients): AppContext.listed."""
    return _listed(request, ctx, user, q)


@router.post("/studies/search", tags=["studies"])
def search_studies(body: StudySearchIn, request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """GET /api/studies?q=..., with the search text in the body, out of every URL (and so out of the logs
    of the server and of any proxy in front of it)."""
    return _listed(request, ctx, user, body.q)


def _listed(request: Request, ctx: AppContext, user: str, q: str | None) -> list[dict[str, Any]]:
    studies = ctx.store.list_studies(q)
    ctx.listed(request, user, len(studies), q)
    latest = ctx.store.latest_versions([s.id for s in studies])  # one query, not one per study
    return [listed_study_json(ctx, s, latest.get(s.id)) for s in studies]


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
def study_series(study_id: str, request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The series of the upload the study came from, in the order the reader ranks them (the first,
    `default`, is the one `sarcoscope analyze` reads): description, slices, slice thickness, contrast
    phase when the headers tell it, and the study each was opened as. Empty: the upload held one series.
    The patient's exam: in the audit log as `view-series` (AppContext.viewed)."""
    listed = upload_series(ctx.store, ctx.store.get_study(study_id))
    ctx.viewed(request, user, study_id, what="series")
    return listed


@router.post("/studies/{study_id}/series", tags=["studies"])
def open_upload_series(
    study_id: str, body: SeriesChoiceIn, request: Request, response: Response, ctx: Ctx, user: User
) -> dict[str, Any]:
    """Open another series of the study's upload as a study of its own, without uploading again: the
    study it was opened as before (200; shown as by GET /api/studies/{id} and its series, and audited
    so), or a new one read from the stored upload (201, its `upload` event)."""
    study = ctx.store.get_study(study_id)
    other, volume = open_series(ctx.store, study, body.series_uid, actor=user, client=client_of(request))
    if volume is None:
        shown = {**study_json(ctx, other), "series": upload_series(ctx.store, other), "warnings": []}
        ctx.viewed(request, user, other.id, what="study")
        ctx.viewed(request, user, other.id, what="series")
        return shown
    response.status_code = 201
    return _opened(ctx, other, volume)


@router.get("/studies/{study_id}", tags=["studies"])
def get_study(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """The study, its patient's ID and facts: in the audit log as `view-study` (AppContext.viewed)."""
    shown = study_json(ctx, ctx.store.get_study(study_id))
    ctx.viewed(request, user, study_id, what="study")
    return shown


@router.get("/studies/{study_id}/history", tags=["studies"])
def study_history(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, list[dict[str, Any]]]:
    """Every patient-facts and L3-selection value saved for the study, newest first (the first: the header's
    facts at the upload, `source` "upload"; the localizer's proposal: "localizer"; a person's save: "saved"),
    with who saved it and when: a save replaces the stored value, and the audit log keeps each. Reading it is
    a view of the study's patient facts (`view-study`, AppContext.viewed)."""
    ctx.store.get_study(study_id)  # 404 for no such study
    sources = {"upload": "upload", "patient-info": "saved", "select-l3": "saved", "localize": "localizer"}
    history: dict[str, list[dict[str, Any]]] = {"patient": [], "selection": []}
    for event in ctx.store.history(study_id):
        for key, name in (("patient", "facts"), ("selection", "selection")):
            if (event.details or {}).get(key) is not None:
                entry = {"at": iso_utc(event.at), "by": event.actor, "source": sources[event.action]}
                history[key].append({**entry, name: event.details[key]})
    ctx.viewed(request, user, study_id, what="study")
    return history


@router.delete("/studies/{study_id}", tags=["studies"])
def delete_study(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    latest_version: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_INT,
            description="Required: the study's latest label version you were shown (0: none). When "
            "labels were saved since, the study is not deleted (409).",
        ),
    ] = None,
) -> dict[str, Any]:
    """Delete the study's rows and every file of it (the audit log keeps the deletion), only if no label
    version was saved after the one the person deleting was shown, `latest_version` (the page sends the
    study list's; without it: 428), so that nobody deletes a colleague's correction they have not seen.

    Requests and background work may be using its files (writing its viewer volume or a QC picture,
    reading its images): the rows go first, so that work from now on finds no study (404), and the files
    go once the work already on them has ended (Store.using_files). When this returns, nothing of the
    study is on disk or still to come.
    """
    if latest_version is None:
        raise HTTPException(
            428,
            "Not deleted: say which label version of the study you were shown (latest_version: the study's "
            "latest_version, 0 for none), so that no label version saved since is deleted unseen.",
        )
    keep = dt.timedelta(days=ctx.settings.keep_deleted_days)
    ctx.store.delete_study(study_id, user, client_of(request), seen_version=latest_version, keep=bool(keep))
    ctx.volumes.drop(study_id)
    ctx.analyses.drop(study_id)
    trash.erase_expired(ctx.store, keep, actor="server")
    return {"status": "deleted", "id": study_id, "kept_days": ctx.settings.keep_deleted_days}
