"""Deleted studies the server still keeps (store/trash.py, `serve --keep-deleted-days`): listed, restored with
their images and every label version, or erased now. An admin's, as deleting is (web.roles)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request

from sarcoscope.store import trash
from sarcoscope.web.api.common import Ctx, User, iso_utc, study_json
from sarcoscope.web.auth import client_of

router = APIRouter()


@router.get("/deleted-studies", tags=["studies"])
def list_deleted(request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The kept deletions, most recent first, with the day each will be erased (audited: it names
    patients)."""
    keep = dt.timedelta(days=ctx.settings.keep_deleted_days)
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
        for d in trash.shown_to(ctx.store, user, client_of(request))
    ]


@router.post("/deleted-studies/{study_id}/restore", tags=["studies"])
def restore_deleted(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Put a deleted study back as it was (404: not kept; 409: its series was uploaded again since)."""
    return study_json(ctx, trash.restore(ctx.store, study_id, user, client_of(request)))


@router.delete("/deleted-studies/{study_id}", tags=["studies"])
def erase_deleted(study_id: str, request: Request, ctx: Ctx, user: User) -> dict[str, str]:
    """Erase a deleted study now, before its time is up (an erasure request): it can no longer be restored."""
    trash.erase(ctx.store, study_id, user, client_of(request))
    return {"status": "erased", "id": study_id}
