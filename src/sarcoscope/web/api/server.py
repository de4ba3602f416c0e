"""The API's routes about the server and its users: health, what the UI needs before login, the session
(log in, log out) and the audit log.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import Field

from sarcoscope import __version__
from sarcoscope.composition.assessment import HEIGHT_RANGE_M, WEIGHT_RANGE_KG
from sarcoscope.conventions import DEFAULT_HU_RANGES, LABEL_COLORS, TISSUE_TITLES, TISSUES
from sarcoscope.segmentation.base import takes_model
from sarcoscope.web import render
from sarcoscope.web.api.common import Body, Ctx, User, iso_utc
from sarcoscope.web.auth import COOKIE, Caller, client_of
from sarcoscope.web.context import AppContext
from sarcoscope.web.roles import permissions

router = APIRouter()


class SessionIn(Body):
    user: str | None = Field(default=None, min_length=1, max_length=64, description="Account name.")
    password: str | None = Field(default=None, max_length=1024, description="Account password.")
    token: str | None = Field(default=None, max_length=1024, description="Access token (token mode).")


@router.get("/health", tags=["server"])
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/config", tags=["server"])
def config(request: Request, ctx: Ctx) -> dict[str, Any]:
    """What the UI needs before login: how to log in, and who is logged in."""
    from sarcoscope.composition import available_cutoff_sets, default_cutoff_set
    from sarcoscope.imaging.labelmaps import builtin_mappings

    try:  # asked by the page itself (at start, and when its session may have ended): not the user's doing
        caller: Caller | None = ctx.auth.caller(request, active=False)
    except HTTPException:
        caller = None
    user = None if caller is None else caller.name
    return {
        "version": __version__,
        "auth_required": ctx.auth.login_required,
        "auth_mode": ctx.auth.mode,
        "user": user,
        # the role, and why it may not take the actions it may not (the page disables their controls)
        **(permissions(caller.role) if caller is not None else {"role": None, "denied": {}}),
        # the page shows the sign-in form when its session ends, not only at the next request
        "session_seconds_left": ctx.auth.session_seconds_left(request) if user is not None else None,
        # ... and sooner without use: the page says it is in use (GET /api/session) well within this
        "idle_seconds": 60 * ctx.settings.idle_minutes if ctx.auth.login_required else None,
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
        # how long a deleted study can be restored (`sarcoscope studies restore`): the Delete question says it
        "keep_deleted_days": ctx.settings.keep_deleted_days,
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
        max_age=int((granted.cookie_until - dt.datetime.now(dt.UTC)).total_seconds()),
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx),
    )
    return {"user": granted.user, "expires_at": iso_utc(granted.expires_at)}


@router.get("/session", tags=["server"])
def session(request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Who is signed in, with which role, and how long their session lasts from now if they do nothing
    more. The page asks while its user works without other requests (painting labels), which keeps the
    session from ending idle (WebSettings.idle_minutes), and learns of a role changed meanwhile."""
    return {
        "user": user,
        **permissions(request.state.role),
        "session_seconds_left": ctx.auth.session_seconds_left(request),
    }


@router.delete("/session", tags=["server"])
def logout(request: Request, response: Response, ctx: Ctx) -> dict[str, str]:
    """End the session on the server (the cookie no longer works anywhere) and clear the cookie."""
    ctx.auth.logout(request.cookies.get(COOKIE), client_of(request))
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=_secure(request, ctx))
    return {"status": "logged out"}


# -- audit -----------------------------------------------------------------------------------------------
@router.get("/studies/{study_id}/audit", tags=["audit"])
def study_audit(study_id: str, request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The study's audit events, newest first. They name its patient's facts as saved: reading them is in
    the audit log too, as `view-audit` (AppContext.shown, once per sitting and study)."""
    ctx.store.get_study(study_id)
    events = [_event_json(e) for e in ctx.store.audit_events(study_id)]
    ctx.shown(request, user, "view-audit", study_id, study_id, {"count": len(events)})
    return events


@router.get("/audit", tags=["audit"])
def audit(
    request: Request, ctx: Ctx, user: User, limit: Annotated[int, Query(ge=1, le=5000)] = 500
) -> list[dict[str, Any]]:
    """The latest audit events, newest first; read as `view-audit` like a study's."""
    events = [_event_json(e) for e in ctx.store.audit_events(None, limit)]
    ctx.shown(request, user, "view-audit", "", None, {"count": len(events)})
    return events


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
