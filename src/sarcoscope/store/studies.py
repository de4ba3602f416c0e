"""Studies (one row per uploaded CT series, with its L3 selection, localization and patient facts): adding,
finding, listing and changing them, a change refused when it was based on facts someone changed since."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from sqlalchemy import Text, cast, or_, select, update
from sqlalchemy.orm import Session

from sarcoscope.imaging.volume import slices_text
from sarcoscope.store.core import StoreCore
from sarcoscope.store.errors import ConflictError, NotFoundError, SelectionConflictError
from sarcoscope.store.models import AuditEvent, Study, as_utc, utcnow

#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters. Only such strings become folder names.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
STUDY_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def like_pattern(text: str) -> str:
    """`%text%` for LIKE ... ESCAPE '\\', with the wildcards in `text` matched literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def is_dicom_uid(text: str) -> bool:
    return len(text) <= 64 and bool(_UID_RE.match(text))


def new_study_id() -> str:
    return uuid.uuid4().hex


class StudiesMixin(StoreCore):
    """The study rows."""

    def add_study(self, study: Study, actor: str, client: str | None = None) -> Study:
        """Insert a study row whose files are already in `series_dir`; refuses a series uploaded before."""
        with self.session() as s:
            existing = s.scalar(select(Study).where(Study.series_uid == study.series_uid))
            if existing is not None:
                raise series_stored_already(existing, study)
            s.add(study)
            self._audit(
                s,
                actor,
                "upload",
                study.id,
                {
                    "series_uid": study.series_uid,
                    "n_slices": study.n_slices,
                    "bytes": study.upload_bytes,
                    "patient": study.patient,  # the header's facts: the first of the study's history
                },
                client,
            )
        return study

    def history(self, study_id: str) -> list[AuditEvent]:
        """The events that saved the study's patient facts or L3 selection (HISTORY_ACTIONS), newest first:
        the audit log keeps every value saved (a PUT replaces the stored one), with who saved it and when."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.study_id == study_id, AuditEvent.action.in_(HISTORY_ACTIONS))
                    .order_by(AuditEvent.id.desc())
                )
            )

    def find_series(self, series_uid: str, study_uid: str | None = None) -> Study | None:
        """The study holding a series; with `study_uid`, only if it is that study's series: a Series
        Instance UID alone is reused (anonymisers, phantom sets), and would link another patient's."""
        with self.session() as s:
            q = select(Study).where(Study.series_uid == series_uid)
            if study_uid is not None:
                q = q.where(Study.study_uid == study_uid)
            return s.scalar(q)

    def get_study(self, study_id: str) -> Study:
        if not STUDY_ID_RE.match(study_id):
            raise NotFoundError(f"No study with id '{study_id}' (ids are 32 hexadecimal characters).")
        with self.session() as s:
            study = s.get(Study, study_id)
        if study is None:
            raise NotFoundError(f"No study with id '{study_id}'.")
        return study

    def list_studies(self, query: str | None = None, limit: int | None = 500) -> list[Study]:
        """Newest first; `limit` None = every study."""
        with self.session() as s:
            q = select(Study).order_by(Study.created_at.desc()).limit(limit)
            if query and query.strip():
                like = like_pattern(query.strip())
                columns = (
                    Study.patient_id,
                    Study.series_description,
                    Study.study_date,
                    Study.id,
                    Study.series_uid,
                )
                q = q.where(or_(*(c.ilike(like, escape="\\") for c in columns)))
            return list(s.scalars(q))

    def update_study(
        self,
        study_id: str,
        actor: str,
        action: str,
        client: str | None = None,
        *,
        proposed_selection: dict[str, Any] | None = None,
        expected_patient: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Study:
        """Change study fields (selection, localization, patient, status) and audit the new values.

        `proposed_selection` (the localizer's) becomes the selection only if the study has none when this
        is written: a selection a person saved while the localizer ran is theirs and stays.
        `expected_patient`: the patient facts the change was based on; ConflictError when the stored ones
        differ (another tab or user saved meanwhile), as a stale label save is refused.
        """
        allowed = {"selection", "localization", "patient", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update study fields {sorted(unknown)}")
        with self.session() as s:
            study = s.scalars(select(Study).where(Study.id == study_id).with_for_update()).one_or_none()
            if study is None:
                raise NotFoundError(f"No study with id '{study_id}'.")
            if proposed_selection is not None and study.selection is None:
                fields = {**fields, "selection": proposed_selection}
            if "selection" in fields:  # the localizer's proposal is nobody's choice: any change replaces it
                chosen_by = None if fields["selection"] is proposed_selection else actor
                fields = {**fields, **_selection_stamp(study.selection_version, chosen_by, None)}
            if expected_patient is None:
                for key, value in fields.items():
                    setattr(study, key, value)
            else:
                _update_if_patient_is(s, study, expected_patient, fields)
            details = {k: v for k, v in fields.items() if k in allowed - {"localization"}}
            self._audit(s, actor, action, study_id, details or None, client)
        return study

    def has_study(self, study_id: str) -> bool:
        with self.session() as s:
            return s.get(Study, study_id) is not None

    def set_selection(
        self,
        study_id: str,
        selection: dict[str, Any],
        actor: str,
        client: str | None = None,
        *,
        base_version: int | None = None,
        editor: str | None = None,
    ) -> Study:
        """Store the L3 selection a person chose. `base_version`: the `selection_version` the change started
        from; SelectionConflictError when a person changed the selection since (a colleague, another tab),
        so that nobody silently moves the slices a colleague chose (and their labels are for); without it,
        when another person chose the current one (an API client or script that read nothing). Not refused:
        a change of a selection nobody chose (the localizer's proposal), or of one this page sitting
        (`editor`, with the same user) wrote itself, whose answer had not come yet (successive saves; the
        one sent as the page closes). The selection a person chose already is left as it is (who chose it
        stays). Checked and written in one conditional UPDATE, as patient facts are."""
        for _ in range(3):  # a change committed between the read and the write: decided again on it
            with self.session() as s:
                study = s.get(Study, study_id)
                if study is None:
                    raise NotFoundError(f"No study with id '{study_id}'.")
                version = study.selection_version
                chosen_by = study.selection_by
                if chosen_by is not None and study.selection == selection:
                    s.expunge(study)  # stored already: stamped again, a colleague's would become this one's
                    return study
                own = editor is not None and (study.selection_editor, chosen_by) == (editor, actor)
                if base_version not in (None, version) and chosen_by is not None and not own:
                    s.expunge(study)  # as read: the rollback would expire it
                    raise SelectionConflictError(_selection_changed_message(study), study)
                if base_version is None and chosen_by not in (None, actor):
                    s.expunge(study)
                    raise SelectionConflictError(_selection_chosen_message(study), study)
                written = s.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.selection_version == version)
                    .values(selection=selection, **_selection_stamp(version, actor, editor))
                    .execution_options(synchronize_session=False)
                )
                if written.rowcount == 1:
                    self._audit(s, actor, "select-l3", study_id, {"selection": selection}, client)
                    s.refresh(study)
                    return study
        raise ConflictError("The L3 selection is being changed by someone else right now; try again.")


#: The audit events that save a study's patient facts or L3 selection (their details hold the value): the
#: upload (the header's facts), a save of the facts, a person's selection, the localizer's proposal.
HISTORY_ACTIONS = ("upload", "patient-info", "select-l3", "localize")


def series_stored_already(existing: Study, study: Study) -> ConflictError:
    """The refusal of `study`, whose series `existing` holds already. The same patient's is offered ("open
    it"); another patient's (a copied or badly de-identified export reusing the UID: another PatientID, or
    another study without one) is refused naming neither that study nor its patient, which would link
    this upload's patient to another's."""
    from sarcoscope.imaging.dicom_reader import patient_key

    if patient_key(existing.patient_id, existing.study_uid) != patient_key(study.patient_id, study.study_uid):
        return ConflictError(
            f"Series {study.series_uid} is already stored as another patient's series: one Series Instance "
            "UID cannot hold two patients' images, so these files are refused. Check where they come from "
            "(a copy of another patient's export, or de-identification that kept the UIDs)."
        )
    return ConflictError(
        f"Series {study.series_uid} was already uploaded (study {existing.id}); open it instead."
    )


_PATIENT_CHANGED = (
    "The patient facts were changed (in another tab or by another user) since this page loaded them; "
    "reload the study to see them, then save again."
)


def _selection_stamp(version: int, chosen_by: str | None, editor: str | None) -> dict[str, Any]:
    """The columns a change of the L3 selection writes beside it: the count, who chose it, when, where."""
    return {
        "selection_version": version + 1,
        "selection_by": chosen_by,
        "selection_at": utcnow(),
        "selection_editor": editor,
    }


def _selection_changed_message(study: Study) -> str:
    slices, by, when = _chosen(study)
    return (
        f"Not saved: the L3 selection was changed to {slices} by {by} at {when}, after this page showed it. "
        "Look at their selection, or save yours over it."
    )


def _selection_chosen_message(study: Study) -> str:
    slices, by, when = _chosen(study)
    return (
        f"Not saved: the L3 selection ({slices}) was chosen by {by} at {when}. To change it, send "
        f"base_version {study.selection_version} (its selection_version) with yours."
    )


def _chosen(study: Study) -> tuple[str, str, str]:
    """The stored selection's slices, who chose it and when, as the conflict messages say them."""
    sel = study.selection or {}
    slices = slices_text(sel.get("first"), sel.get("last"))
    when = as_utc(study.selection_at).strftime("%Y-%m-%d %H:%M:%S UTC") if study.selection_at else "just now"
    return slices, str(study.selection_by), when


def _update_if_patient_is(s: Session, study: Study, expected: dict[str, Any], fields: dict[str, Any]) -> None:
    """Write `fields` to `study` only if its stored patient facts are `expected` (ConflictError otherwise),
    checked and written in one statement: UPDATE ... WHERE the facts are still the ones read. SQLite
    ignores the row lock (FOR UPDATE) and its reads run before the write transaction begins, so two saves
    based on the same facts both passed a check made on the read, and the later silently replaced the
    earlier; the conditional UPDATE of the second finds no row once the first has committed."""
    stored_text = s.scalar(select(cast(Study.patient, Text)).where(Study.id == study.id))
    stored = json.loads(stored_text) if stored_text is not None else None
    if {key: (stored or {}).get(key) for key in expected} != expected:
        raise ConflictError(_PATIENT_CHANGED)
    written = s.execute(
        update(Study)
        .where(Study.id == study.id, cast(Study.patient, Text).is_not_distinct_from(stored_text))
        .values(**fields)
        .execution_options(synchronize_session=False)
    )
    if written.rowcount != 1:
        if s.scalar(select(Study.id).where(Study.id == study.id)) is None:  # deleted meanwhile
            raise NotFoundError(f"No study with id '{study.id}'.")
        raise ConflictError(_PATIENT_CHANGED)
    s.refresh(study)
