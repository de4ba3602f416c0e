"""The web app's PACS routes: search a DICOMweb server (QIDO-RS), import a CT series from it (WADO-RS)
through the same ingest as an upload, and push a label version's SEG, SR and QC capture back (STOW-RS).

The server is the one `serve --dicomweb-url` (or SARCOSCOPE_DICOMWEB_URL) names; a client never names one.
Without it every route but GET /api/pacs answers 409. A server that fails answers 502, one that does not
know the study 404; bad search criteria are 422; a full disk during an import 507. Search criteria and
results never reach the server log: the audit log records which criteria were used (not their values) and
what was imported or pushed.
"""

from __future__ import annotations

import io
import shutil
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sarcoscope.web import analysis
from sarcoscope.web.api.common import MAX_INT, Body, Ctx, User, study_json
from sarcoscope.web.auth import client_of
from sarcoscope.web.context import AppContext
from sarcoscope.web.volumes import UploadedPart, ingest

if TYPE_CHECKING:  # the DICOMweb client (pydicom, requests) is imported only when a PACS is configured
    from sarcoscope.pacs.dicomweb import DICOMwebServer

router = APIRouter(prefix="/api", tags=["pacs"])
#: What is pushed back, in this order: the SEG first, since the SR references it.
PUSHED = ("dicom-seg", "dicom-sr", "dicom-qc")
_SEARCH_KEYS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "accession_number": "AccessionNumber",
}


def server_of(ctx: AppContext) -> DICOMwebServer:
    """The configured DICOMweb server; 409 when there is none."""
    if not ctx.settings.dicomweb_url:
        raise HTTPException(
            409,
            "No DICOMweb server is configured: start the server with --dicomweb-url URL "
            "(or set SARCOSCOPE_DICOMWEB_URL).",
        )
    from sarcoscope.pacs.dicomweb import DICOMwebServer

    connect, answer = ctx.settings.pacs_waits
    return DICOMwebServer(ctx.settings.dicomweb_url, answer, connect)


def _date(text: str | None, name: str) -> str:
    """YYYY-MM-DD (a browser's date field) or YYYYMMDD as YYYYMMDD; 422 otherwise."""
    if not text:
        return ""
    digits = text.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise HTTPException(422, f"{name} must be a date YYYY-MM-DD, not '{text[:32]}'.")
    return digits


@router.get("/pacs")
def pacs_config(ctx: Ctx) -> dict[str, Any]:
    """Whether a DICOMweb server is configured (asked before login, so it says nothing more)."""
    return {"configured": bool(ctx.settings.dicomweb_url)}


class PacsSearch(BaseModel):
    """Search criteria for studies on the PACS: patient name or ID, accession number, study date range."""

    patient_name: str | None = Field(default=None, max_length=64, description="Wildcards * and ? allowed.")
    patient_id: str | None = Field(default=None, max_length=64)
    accession_number: str | None = Field(default=None, max_length=64)
    date_from: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD")
    date_to: str | None = Field(default=None, max_length=10, description="YYYY-MM-DD")
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=MAX_INT)


class PacsSearchIn(PacsSearch, Body):
    """The criteria as a JSON body (strict, unknown fields refused, as every body)."""


@router.get("/pacs/studies")
def search_studies(
    criteria: Annotated[PacsSearch, Query()], request: Request, ctx: Ctx, user: User
) -> dict[str, Any]:
    """Studies on the PACS by patient name or ID, accession number and study date range (QIDO-RS).

    At least one criterion is needed: a whole archive is never listed. `more` says a next page exists.
    Better sent to POST /api/pacs/search: a URL's query string (a patient's name or ID) reaches the error
    log of a reverse proxy in front."""
    return _search(criteria, request, ctx, user)


@router.post("/pacs/search")
def search_pacs(body: PacsSearchIn, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """GET /api/pacs/studies with the criteria in the body, out of every URL (and so out of the logs of
    the server and of any proxy in front of it)."""
    return _search(body, request, ctx, user)


def _search(body: PacsSearch, request: Request, ctx: AppContext, user: str) -> dict[str, Any]:
    server = server_of(ctx)
    given = {
        "patient_name": body.patient_name,
        "patient_id": body.patient_id,
        "accession_number": body.accession_number,
    }
    limit, offset = body.limit, body.offset
    filters = {_SEARCH_KEYS[k]: v.strip() for k, v in given.items() if v and v.strip()}
    first, last = _date(body.date_from, "date_from"), _date(body.date_to, "date_to")
    if first or last:
        filters["StudyDate"] = first if first == last else f"{first}-{last}"
    if not filters:
        raise HTTPException(
            422, "Give at least one search criterion: patient name or ID, accession or a date."
        )
    found = server.search_studies(filters, limit=limit + 1, offset=offset)
    ctx.store.audit(
        user, "pacs-search", None, {"criteria": sorted(filters), "results": len(found)}, client_of(request)
    )
    studies = sorted(found[:limit], key=lambda s: s.study_date or "", reverse=True)
    return {
        "studies": [s.as_dict() for s in studies],
        "limit": limit,
        "offset": offset,
        "more": len(found) > limit,
    }


@router.get("/pacs/studies/{study_uid}/series")
def list_series(study_uid: str, request: Request, ctx: Ctx, user: User) -> list[dict[str, Any]]:
    """The series of a PACS study; `imported_as` names the local study of a series imported before, matched
    with its study: a series of another study reusing the UID (another patient's) is not this one. In the
    audit log as `pacs-view-series`, with the study's UID, once per sitting (AppContext.shown)."""
    from sarcoscope.pacs.dicomweb_query import check_uid

    server = server_of(ctx)
    check_uid(study_uid, "StudyInstanceUID")
    series = server.series(study_uid)
    if not series:
        raise HTTPException(404, f"The DICOMweb server has no study {study_uid}.")
    out = []
    for s in series:
        local = ctx.store.find_series(s.series_uid, study_uid)
        out.append({**s.as_dict(), "imported_as": local.id if local is not None else None})
    details = {"study_uid": study_uid, "series": len(out)}
    ctx.shown(request, user, "pacs-view-series", study_uid, None, details)
    return out


@router.post("/pacs/studies/{study_uid}/series/{series_uid}/import", status_code=201)
def import_series(study_uid: str, series_uid: str, request: Request, ctx: Ctx, user: User) -> dict[str, Any]:
    """Retrieve a CT series (WADO-RS) and add it as a study, exactly as if its files had been uploaded
    (and refused with 413 beyond the same size limit, and with 409 when a series of another study, maybe
    another patient's, is stored here under its UID)."""
    from sarcoscope.errors import OutputError
    from sarcoscope.pacs.dicomweb import SeriesTooLarge
    from sarcoscope.pacs.dicomweb_query import check_uid

    server = server_of(ctx)
    check_uid(study_uid, "StudyInstanceUID")
    check_uid(series_uid, "SeriesInstanceUID")
    known = {s.series_uid: s for s in server.series(study_uid)}
    if series_uid not in known:
        raise HTTPException(404, f"The DICOMweb server has no series {series_uid} in study {study_uid}.")
    if known[series_uid].modality != "CT":
        raise HTTPException(
            422, f"Series {series_uid} is {known[series_uid].modality or 'not CT'}; import a CT series."
        )
    local = ctx.store.find_series(series_uid)  # the store holds one study per series UID
    if local is not None and local.study_uid == study_uid:
        raise HTTPException(
            409, f"Series {series_uid} was already imported (study {local.id}); open it instead."
        )
    if local is not None:  # another study's: refused before the download, naming nothing of it
        raise HTTPException(
            409,
            f"Series {series_uid} is already stored here in another study: one Series Instance UID cannot "
            "hold two studies' images, so it is not imported. Check where the PACS's copy comes from (an "
            "export of another patient, or de-identification that kept the UIDs).",
        )
    work = ctx.store.new_tmp_dir()
    try:
        try:
            server.retrieve_series(
                study_uid,
                series_uid,
                work,
                max_bytes=ctx.settings.max_upload_bytes,
                expected=known[series_uid].n_instances,
            )
        except SeriesTooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except OutputError as exc:  # the server's disk is full: said, without the server's folders
            raise HTTPException(507, str(exc).replace(f" into {work}", "")) from None
        parts = [UploadedPart(p.name, p, p.stat().st_size) for p in sorted(work.glob("*.dcm"))]
        study, volume = ingest(
            ctx.store, parts, work, actor=user, client=client_of(request), series_uid=series_uid
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.volumes.put(study.id, volume)
    ctx.store.audit(user, "pacs-import", study.id, {"series_uid": series_uid}, client_of(request))
    return {**study_json(ctx, study), "warnings": list(volume.warnings)}


@router.post("/studies/{study_id}/pacs/push")
def push_results(
    study_id: str,
    request: Request,
    ctx: Ctx,
    user: User,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="Required: the label version you were shown.")
    ] = None,
    repeat: Annotated[bool, Query(description="Push a version that was pushed before again.")] = False,
) -> dict[str, Any]:
    """Store the DICOM SEG, SR and QC secondary capture of a label version (`version`, the one the person
    pushing was shown: 428 without it, so that no version saved since goes out unseen; 409 when the study
    has none yet) into the study on
    the PACS (STOW-RS): same patient and study, new series. Only into a study the PACS holds.

    A version pushed before is refused (409) unless `repeat`. The objects of the same result keep their UIDs
    (analysis.export_file), so pushed again they are not sent (`already_stored`: objects the study held
    already); the SR and capture of a result changed since (the patient's height applied) are new objects,
    stored beside the first. `warnings`: what the objects left
    out of the source's header (a malformed value, see export.seg.prepared_sources)."""
    import pydicom

    server = server_of(ctx)
    study = ctx.store.get_study(study_id)
    if version is None:  # the page sends the version it shows, none when none was saved: said so plainly
        if ctx.store.latest_version(study_id) is None:
            raise HTTPException(
                409,
                "This study has no saved labels to push yet: segment the L3 selection (and save any "
                "correction) first, then push.",
            )
        raise HTTPException(
            428,
            "The push did not say which label version it is for, so it could have sent one a colleague saved "
            "since, unchecked. Reload the study, look at its labels, then push again (a script: send the "
            "version it was shown).",
        )
    row = ctx.store.get_version(study_id, version)
    before = [
        e
        for e in ctx.store.audit_events(study_id)
        if e.action == "pacs-push" and (e.details or {}).get("version") == row.version
    ]
    if before and not repeat:
        raise HTTPException(
            409,
            f"Label version {row.version} was pushed to the PACS before (by {before[0].actor}); pushing it "
            "again stores only what changed since, such as an SR with the patient's height (repeat=true).",
        )
    if study.source_kind != "dicom":
        raise HTTPException(409, "This study was uploaded as NIfTI: it has no DICOM study to push into.")
    if not server.series(study.study_uid):
        raise HTTPException(
            409,
            f"The DICOMweb server has no study {study.study_uid}: results are pushed only into the study "
            "they were measured on.",
        )
    datasets, warnings = [], []
    for fmt in PUSHED:
        out = analysis.export_file(ctx.analyses, study, row.version, fmt, None)
        datasets.append(pydicom.dcmread(io.BytesIO(out.data)))
        if out.warning is not None and out.warning not in warnings:  # the same note for each object
            warnings.append(out.warning)
    stored = server.store(study.study_uid, datasets)
    objects = [
        {
            "modality": str(ds.Modality),
            "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
        }
        for ds in datasets
    ]
    ctx.store.audit(
        user,
        "pacs-push",
        study_id,
        {"version": row.version, "sop_instance_uids": [o["sop_instance_uid"] for o in objects]},
        client_of(request),
    )
    return {
        "stored": stored.sent,
        "already_stored": stored.held,
        "version": row.version,
        "study_uid": study.study_uid,
        "objects": objects,
        "warnings": warnings,
    }


def install(app: FastAPI) -> None:
    """Add the PACS routes to `app`, with the DICOMweb server's failures answered as 404 or 502.

    Without a configured server no such failure can happen (every route answers 409 first). The DICOMweb
    client is imported at the first PACS request, not at the start: pydicom and requests would add 0.3 s."""
    if app.state.ctx.settings.dicomweb_url:
        from sarcoscope.pacs.dicomweb_query import DICOMwebServerError

        @app.exception_handler(DICOMwebServerError)
        async def server_failed(_: Request, exc: DICOMwebServerError) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=404 if exc.status == 404 else 502)

    app.include_router(router)
