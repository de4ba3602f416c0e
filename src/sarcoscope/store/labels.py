"""Label versions are append-only: a save names the version it was based on, and is refused with
`StaleVersionError` when someone else saved in between (optimistic concurrency, no silent overwrite)."""

from __future__ import annotations

import datetime as dt
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from sarcoscope.store.errors import NotFoundError, StaleVersionError, StoreError
from sarcoscope.store.models import LabelVersion, Study
from sarcoscope.store.studies import StudiesMixin


@dataclass(frozen=True)
class LabelStack:
    """A decoded label version: uint8 maps (n, y, x) for the axial slices `indices`."""

    version: int
    indices: list[int]
    labels: np.ndarray


@dataclass(frozen=True)
class VersionSummary:
    """What a list of studies shows of a label version, read without its label data: its number, where it
    came from and its stored quality score (LabelVersion's fields of the same names)."""

    version: int
    source: str
    quality: dict[str, Any] | None


def encode_labels(labels: np.ndarray) -> tuple[bytes, str]:
    raw = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    return zlib.compress(raw, 1), hashlib.sha256(raw).hexdigest()


def decode_labels(row: LabelVersion) -> np.ndarray:
    shape = tuple(int(s) for s in row.shape)
    raw = zlib.decompress(row.data)
    if hashlib.sha256(raw).hexdigest() != row.sha256:
        raise StoreError(
            f"Label version {row.version} of study {row.study_id} is corrupt (checksum mismatch)."
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


class LabelVersionsMixin(StudiesMixin):
    """The label versions of the studies."""

    def latest_version(self, study_id: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(func.max(LabelVersion.version)).where(LabelVersion.study_id == study_id))

    def latest_versions(self, study_ids: Sequence[str]) -> dict[str, VersionSummary]:
        """The latest label version of each of `study_ids` that has one, for a list of studies: one query
        however many they are, and no label data read."""
        if not study_ids:
            return {}
        latest = (
            select(LabelVersion.study_id, func.max(LabelVersion.version).label("version"))
            .where(LabelVersion.study_id.in_(set(study_ids)))
            .group_by(LabelVersion.study_id)
            .subquery()
        )
        q = select(
            LabelVersion.study_id, LabelVersion.version, LabelVersion.source, LabelVersion.quality
        ).join(
            latest, (LabelVersion.study_id == latest.c.study_id) & (LabelVersion.version == latest.c.version)
        )
        with self.session() as s:
            return {
                sid: VersionSummary(version, source, quality)
                for sid, version, source, quality in s.execute(q)
            }

    def list_versions(self, study_id: str) -> list[LabelVersion]:
        """Versions newest first, without decoding their label data."""
        self.get_study(study_id)
        with self.session() as s:
            q = (
                select(LabelVersion)
                .where(LabelVersion.study_id == study_id)
                .order_by(LabelVersion.version.desc())
            )
            return list(s.scalars(q))

    def get_version(self, study_id: str, version: int | None = None) -> LabelVersion:
        """One version (the latest when `version` is None)."""
        self.get_study(study_id)
        with self.session() as s:
            q = select(LabelVersion).where(LabelVersion.study_id == study_id)
            if version is None:
                q = q.order_by(LabelVersion.version.desc()).limit(1)
            else:
                q = q.where(LabelVersion.version == version)
            row = s.scalar(q)
        if row is None:
            what = "no label versions yet" if version is None else f"no label version {version}"
            raise NotFoundError(f"Study {study_id} has {what}.")
        return row

    def load_labels(self, study_id: str, version: int | None = None) -> LabelStack:
        row = self.get_version(study_id, version)
        return LabelStack(version=row.version, indices=list(row.indices), labels=decode_labels(row))

    def save_version(
        self,
        study_id: str,
        *,
        base_version: int | None,
        labels: np.ndarray,
        indices: list[int],
        author: str,
        source: str,
        engine: str | None = None,
        model_id: str | None = None,
        note: str | None = None,
        client: str | None = None,
    ) -> LabelVersion:
        """Append a label version on top of `base_version` (None = the study has none yet).

        Raises StaleVersionError when `base_version` is not the latest, including when another save
        committed between our check and our insert (the unique (study, version) constraint catches it).
        """
        if labels.ndim != 3 or labels.dtype != np.uint8 or labels.shape[0] != len(indices):
            raise ValueError(f"labels must be uint8 (n, y, x) with n = len(indices), got {labels.shape}")
        data, digest = encode_labels(labels)
        try:
            with self.session() as s:
                study = s.get(Study, study_id)
                if study is None:
                    raise NotFoundError(f"No study with id '{study_id}'.")
                latest_row = latest_label_row(s, study_id)
                latest = latest_row.version if latest_row is not None else None
                if latest != base_version:
                    theirs = None if latest_row is None else [int(i) for i in latest_row.indices]
                    raise StaleVersionError(_stale_message(base_version, latest_row), latest, theirs)
                row = LabelVersion(
                    study_id=study_id,
                    version=(latest or 0) + 1,
                    parent_version=base_version,
                    author=author,
                    source=source,
                    engine=engine,
                    model_id=model_id,
                    indices=[int(i) for i in indices],
                    shape=[int(n) for n in labels.shape],
                    data=data,
                    sha256=digest,
                    note=note,
                )
                s.add(row)
                study.status = "segmented" if source == "segment" else "edited"
                self._audit(
                    s,
                    author,
                    f"labels-{source}",
                    study_id,
                    {"version": row.version, "parent_version": base_version, "engine": engine, "note": note},
                    client,
                )
        except (IntegrityError, StaleDataError) as exc:
            # the study deleted after it was found: the version's insert fails on its foreign key (or
            # the status update finds no row), which is no other save committing the same version
            with self.session() as s:
                if s.get(Study, study_id) is None:
                    raise NotFoundError(f"No study with id '{study_id}'.") from None
            if not isinstance(exc, IntegrityError):
                raise
            latest = self.latest_version(study_id)
            raise StaleVersionError(
                f"Another save of study {study_id} committed at the same moment (now at version {latest}); "
                "reload the labels and apply your edit again.",
                latest,
            ) from None
        return row

    def keep_quality(self, study_id: str, version: int, sha256: str, quality: dict[str, Any]) -> bool:
        """Store the quality score of a version the server segmented (web.analysis: computed in the
        background after the version was saved, or again on request), or why it failed, `{"failed": reason}`,
        in a transaction of its own: on that version's row only while it holds the labels scored (`sha256`),
        and only while no score is stored (a score is stored once; a failure until a score replaces it). False
        when there is no such row (the study deleted meanwhile: nothing of it is written back)."""
        with self.session() as s:
            done = s.execute(
                update(LabelVersion)
                .where(
                    LabelVersion.study_id == study_id,
                    LabelVersion.version == version,
                    LabelVersion.sha256 == sha256,
                    LabelVersion.source == "segment",
                    or_(
                        LabelVersion.quality.is_(None),
                        LabelVersion.quality["failed"].as_string().is_not(None),
                    ),
                )
                .values(quality=quality)
                .execution_options(synchronize_session=False)
            )
        return done.rowcount == 1


def latest_label_row(s: Session, study_id: str) -> LabelVersion | None:
    """The study's newest label version, read in the session `s` (None: it has none)."""
    q = select(LabelVersion).where(LabelVersion.study_id == study_id).order_by(LabelVersion.version.desc())
    return s.scalar(q.limit(1))


def saved_by(latest: LabelVersion) -> str:
    """The save someone did not see: 'version N was saved by <author> at <time>'."""
    when = latest.created_at
    when_text = when.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(when, dt.datetime) else str(when)
    return f"version {latest.version} was saved by {latest.author} at {when_text}"


def _stale_message(base: int | None, latest: LabelVersion | None) -> str:
    if latest is None:
        return f"Your edit is based on label version {base}, but this study has no label versions."
    base_text = "no labels" if base is None else f"version {base}"
    return (
        f"Not saved: your edit is based on {base_text}, but {saved_by(latest)}. Reload to see their "
        "changes, then edit again."
    )
