"""Deleted studies the server still keeps (store/trash/, `serve --keep-deleted-days`): listed, restored with
their images and every label version, or erased now. An admin's, as deleting is (web.roles)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from sarcoscope.store import trash
from sarcoscope.web.api.common import Ctx, User, iso_utc, study_json
from sarcoscope.web.auth import client_of

router = APIRouter()


@router.get("/deleted-studies", tags=["studies"])
def list_deleted(request: Request, response: Response, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The kept deletions, most recent first, with the day each will be erased (audited: it names
    patients). Those whose record cannot be read are kept, not listed: their ids are in the
    `X-Unreadable-Deleted-Studies` header (comma-separated) and the server's log."""
    keep = dt.timedelta(days=ctx.settings.keep_deleted_days)
    kept, unreadable = trash.shown_to(ctx.store, user, client_of(request))
    if unreadable:
        response.headers["X-Unreadable-Deleted-Studies"] = ",".join(unreadable)
    return [
        {
            "id": d.id,
            "patient_id": d.patient_id,
            "study_date": d.study_date,
            "series_description": d.series_description,
            "n_versions": d.n_versions,
            "deleted_at": iso_utc(d.deleted_at),
            "deleted_by": d.deleted_by,
            "erased_at": iso_utc(d.deleted_at + keep),
        }
        for d in kept
    ]


@router.post("/deleted-studies/{study_id}/restore", tags=["studies"])
def restore_deleted(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Put a deleted study back as it was (404: not kept; 409: its series was uploaded again since, it is
    being restored or erased (try again), its record cannot be read, or its images are not kept with it).
    Its segmented versions with no quality score stored are scored again in the background."""
    restored = trash.restore(ctx.store, study_id, user, client_of(request))
    ctx.score_restored(study_id)
    return study_json(ctx, restored)


@router.delete("/deleted-studies/{study_id}", tags=["studies"])
def erase_deleted(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    deleted_at: Annotated[
        dt.datetime | None,
        Query(
            description="Required: the deletion's `deleted_at` as GET /api/deleted-studies listed it to you. "
            "When the study was restored and deleted again since, it is not erased (409)."
        ),
    ] = None,
) -> dict[str, str]:
    """Erase a deleted study now, before its time is up (an erasure request): it can no longer be restored.
    Only the deletion the person erasing was shown (`deleted_at`; without it: 428), as a study is deleted
    only with the label version its deleter saw."""
    if deleted_at is None:
        raise HTTPException(
            428,
            "Not erased: say which deletion you were shown (deleted_at, as the deleted studies list it), so "
            "that no work saved since is erased unseen.",
        )
    if deleted_at.tzinfo is None:
        raise HTTPException(422, "deleted_at needs its time zone, as the deleted studies list it.")
    trash.erase(ctx.store, study_id, user, client_of(request), deleted_at=deleted_at)
    return {"status": "erased", "id": study_id}
