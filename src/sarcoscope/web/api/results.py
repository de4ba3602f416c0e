"""The API's routes of a study's results: the patient facts the analysis needs, the analysis of a label
version and its exports (SEG, NIfTI, CSV, report, overlay).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import Field

from sarcoscope.composition.assessment import HEIGHT_RANGE_M, WEIGHT_RANGE_KG
from sarcoscope.web import analysis
from sarcoscope.web.api.common import MAX_INT, Body, Ctx, Deidentify, User, study_json
from sarcoscope.web.auth import client_of

router = APIRouter()


class PatientFacts(Body):
    #: the analysis's bounds (composition.assessment), so that no saved value is refused when analysed
    height_cm: float | None = Field(default=None, ge=100 * HEIGHT_RANGE_M[0], le=100 * HEIGHT_RANGE_M[1])
    weight_kg: float | None = Field(default=None, ge=WEIGHT_RANGE_KG[0], le=WEIGHT_RANGE_KG[1])
    sex: Literal["M", "F"] | None = None
    cutoff_set: str | None = Field(default=None, max_length=64)


class PatientIn(PatientFacts):
    #: what the sender was shown of each fact it changes (the page: the facts the form was loaded with): a
    #: save based on facts changed meanwhile is refused (409), one that does not say them too (428)
    previous: PatientFacts | None = None


@router.put("/studies/{study_id}/patient", tags=["analysis"])
def set_patient(study_id: str, body: PatientIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Save the patient facts sent (null clears one); a fact not sent stays as stored, not erased. Each fact
    sent needs its value as the sender was shown it in `previous` (428 otherwise): the save is refused (409)
    when a stored fact is another now, so that nobody replaces a colleague's correction unseen."""
    from sarcoscope.composition import available_cutoff_sets

    if body.cutoff_set is not None and body.cutoff_set not in available_cutoff_sets():
        raise HTTPException(
            422, f"Unknown cutoff set '{body.cutoff_set}'. Available: {', '.join(available_cutoff_sets())}."
        )
    sent = body.model_dump(exclude={"previous"}, exclude_unset=True)
    seen = body.previous.model_dump(exclude_unset=True) if body.previous is not None else {}
    if unseen := [key for key in sent if key not in seen]:
        raise HTTPException(
            428,
            "Not saved: say in `previous` what you were shown for each fact you change "
            f"({', '.join(unseen)}), so that no fact a colleague saved since is replaced unseen.",
        )
    # the facts not shown: as stored now, checked again as they are written (a save meanwhile: 409)
    stored = ctx.store.get_study(study_id).patient or {}
    based_on = {key: stored.get(key) for key in PatientFacts.model_fields} | seen
    study = ctx.store.update_study(
        study_id,
        user,
        "patient-info",
        client_of(request),
        patient={**based_on, **sent},
        expected_patient=based_on,
    )
    return study_json(ctx, study)


@router.get("/studies/{study_id}/analysis", tags=["analysis"])
def get_analysis(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> dict[str, Any]:
    """Areas, HU statistics, ratios, SMI and classification for a label version (default: latest). In the
    audit log as `view-results`, once per sitting (AppContext.viewed)."""
    study = ctx.store.get_study(study_id)
    analysed = ctx.analyses.get(study, version)
    ctx.viewed(request, user, study_id, what="results")
    return analysed


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
    # the version that leaves the server, also when the latest was asked for (one saved later is another)
    version = ctx.store.get_version(study_id, version).version
    out = analysis.export_file(ctx.analyses, study, version, fmt, policy)
    details = {"format": fmt, "version": version, **deid.audited()}
    ctx.store.audit(user, "export", study_id, details, client_of(request))
    headers = {"Content-Disposition": f'attachment; filename="{out.filename}"'}
    if fmt == "html":  # self-contained page: its own inline style and embedded picture only
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    if out.warning is not None:  # the page shows it beside the download
        headers["X-Sarcoscope-Warning"] = out.warning
    return Response(out.data, media_type=out.media_type, headers=headers)
