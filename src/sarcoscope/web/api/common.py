"""What the API's route modules share: the request's context and user, the strict JSON body, the JSON
form of a study (alone and in the list) and of a label version, the de-identification options of a
download, and the selection's slices.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sarcoscope.imaging.volume import slices_text
from sarcoscope.store import LabelVersion, Study
from sarcoscope.store.labels import VersionSummary
from sarcoscope.web import render, roles
from sarcoscope.web.context import AppContext, get_context

if TYPE_CHECKING:  # the imaging package (pydicom, nibabel) loads with the first request that needs it
    from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy


Ctx = Annotated[AppContext, Depends(get_context)]


def current_user(request: Request, ctx: Ctx) -> str:
    """The signed-in user (401 otherwise), whose role allows this request (403 otherwise: web.roles)."""
    caller = ctx.auth.caller(request)
    roles.check(caller.role, request)
    request.state.role = caller.role
    return caller.name


User = Annotated[str, Depends(current_user)]


#: Version numbers and slice indices are stored as 32-bit integers; larger ones cannot exist.
MAX_INT = 2**31 - 1


class Body(BaseModel):
    """A JSON request body: unknown fields, values of the wrong type (no "5" for 5), NaN and Infinity
    are refused (422), never stored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def iso_utc(when: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite returns the stored UTC times without a zone."""
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()


def study_json(ctx: AppContext, study: Study) -> dict[str, Any]:
    """The study as the API shows it, with `orientation` (render.orientation: the letters at its images'
    edges, its tilt) and `image_numbers` (each slice's DICOM Instance Number)."""
    shown = _study_fields(study, ctx.store.latest_version(study.id))
    direction, shown["image_numbers"] = ctx.volumes.shown(study)
    shown["orientation"] = None if direction is None else render.orientation(direction)
    return shown


def listed_study_json(ctx: AppContext, study: Study, latest: VersionSummary | None) -> dict[str, Any]:
    """The study as the study list shows it, with its latest label version, `latest` (Store.latest_versions:
    read for the whole list at once), and that version's `quality` (AnalysisCache.listed): no images, so
    its geometry is not read."""
    return {
        **_study_fields(study, None if latest is None else latest.version),
        "quality": ctx.analyses.listed(study.id, latest),
    }


def _study_fields(study: Study, latest_version: int | None) -> dict[str, Any]:
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
        "selection_version": study.selection_version,
        "selection_by": study.selection_by,
        "selection_at": iso_utc(study.selection_at),
        "localization": study.localization,
        "patient": study.patient,
        "latest_version": latest_version,
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

    def audited(self) -> dict[str, Any]:
        """What a download's audit event says of it: de-identified or not, and then what it kept."""
        if not self.deidentify:
            return {"deidentified": False}
        kept = [
            ("dates-shifted", self.keep_dates_shifted),
            ("patient-characteristics", self.keep_patient_characteristics),
        ]
        return {"deidentified": True, "kept": [name for name, keep in kept if keep]}

    def policy(self, ctx: AppContext) -> DeidentificationPolicy | None:
        if not self.deidentify:
            return None
        from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy

        return DeidentificationPolicy(
            secret=ctx.deidentification_key,
            keep_dates_shifted=self.keep_dates_shifted,
            keep_patient_characteristics=self.keep_patient_characteristics,
        )


Deidentify = Annotated[DeidentifyQuery, Query()]


def selected_indices(study: Study, first: int | None = None, last: int | None = None) -> list[int]:
    """The slices of the study's L3 selection. `first`, `last`: the selection the request was made for (the
    one the page shows); 409 when the stored one is another (changed since in another tab or by another
    user), so that no labels are made or imported for slices other than the ones the user chose."""
    sel = study.selection
    if not sel:
        raise HTTPException(409, "Select the L3 slice or range first (PUT /api/studies/{id}/selection).")
    stored = int(sel["first"]), int(sel["last"])
    if first is not None and (first, first if last is None else last) != stored:
        asked = (first, first if last is None else last)
        raise HTTPException(
            409,
            "The L3 selection was changed (in another tab or by another user) to "
            f"{slices_text(*stored)}; you chose {slices_text(*asked)}. Nothing was made: look at the L3 "
            "selection again, then try again.",
        )
    return list(range(stored[0], stored[1] + 1))
