"""The objects every request handler shares: settings, store, authenticator and caches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from sarcoscope.store import LabelVersion, Store, Study
from sarcoscope.web.analysis import AnalysisCache, build_result, overlay_png
from sarcoscope.web.auth import Authenticator, client_of
from sarcoscope.web.background import BackgroundJobs
from sarcoscope.web.settings import WebSettings
from sarcoscope.web.volumes import VolumeCache

if TYPE_CHECKING:
    from sarcoscope.segmentation.quality import QualityAssessment

log = logging.getLogger(__name__)

#: A study's images (or the study list, or a search's results) viewed again in one sitting this long after
#: the audit log last recorded a view of them are a new view in it (seconds).
VIEW_AGAIN_AFTER = 30 * 60


@dataclass
class AppContext:
    settings: WebSettings
    store: Store
    auth: Authenticator
    volumes: VolumeCache
    analyses: AnalysisCache
    #: Renders that make later requests fast (settings.prerender), waited for when the app stops.
    jobs: BackgroundJobs
    #: The key and whether the engine is being prepared: made on first use (see below), under `_lock`.
    _key: bytes | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _engine_prepared: bool = field(default=False, init=False, repr=False)
    #: A view's key (Authenticator.view_key: its sitting and what it was shown) -> when the audit log last
    #: recorded it (time.time()), as this process learnt it: looks within VIEW_AGAIN_AFTER of that need no
    #: query.
    _views: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    @property
    def deidentification_key(self) -> bytes:
        """Keys the pseudonyms and UIDs of de-identified downloads (data folder, or
        $SARCOSCOPE_DEID_SECRET_FILE). Read (or made) at the first de-identified download: reading it
        imports the DICOM stack (pydicom and the imaging package, about 0.4 s), which the server's start
        need not wait for."""
        with self._lock:
            if self._key is None:
                from sarcoscope.imaging.deidentify.policy import SECRET_FILE_NAME, load_secret

                self._key = load_secret(default_file=self.store.data_dir / SECRET_FILE_NAME)
            return self._key

    def viewed(self, request: Request, user: str, study_id: str, what: str = "images") -> None:
        """Record in the audit log that `user` was shown the study's CT images (`view-images`), or with
        `what` "results" its labels or measurements (`view-results`), "study" its patient and study facts
        (`view-study`), "series" the series of its upload (`view-series`): once per sitting (session) and
        study, and again when the last event of it is VIEW_AGAIN_AFTER old, not once per slice tile the
        viewer asks for (a download of the viewer's volume counts as a view of the images: its event has
        their key, view_key)."""
        self.shown(request, user, f"view-{what}", study_id, study_id, None)

    def view_key(self, request: Request, user: str, study_id: str, what: str = "images") -> str:
        """The key of `viewed`'s event, for an event that shows the same (the viewer's volume download)."""
        return self.auth.view_key(request, user, f"view-{what}", study_id)

    def listed(self, request: Request, user: str, count: int, search: str | None = None) -> None:
        """Record that `user` was shown the study list (`view-studies`) or a search's results
        (`search-studies`), which name patients, with how many studies were listed: the list once per
        sitting, again VIEW_AGAIN_AFTER after its last event (the page reloads it as it goes back to it),
        a search once per sitting and criteria likewise. The criteria are patient identifiers: the event
        says that a search was made, never what was searched for (only in its key, a digest keyed by the
        sitting's secret: Authenticator.view_key)."""
        text = (search or "").strip().casefold()  # the store's search: trimmed, case-insensitive
        action = "search-studies" if text else "view-studies"
        self.shown(request, user, action, text, None, {"count": count})

    def shown(
        self,
        request: Request,
        user: str,
        action: str,
        subject: str,
        study_id: str | None,
        details: dict[str, Any] | None,
    ) -> None:
        """Audit `action` (shown `subject`: a study id, a search's criteria, a PACS study's UID) with
        `details` unless the audit log has an event of this sitting's look at `subject` less than
        VIEW_AGAIN_AFTER old (Store.audit_view): this process remembers the ones it learnt of, so that a
        viewer's many tiles ask the database once."""
        key, now, again_after = (
            self.auth.view_key(request, user, action, subject),
            time.time(),
            VIEW_AGAIN_AFTER,
        )
        with self._lock:
            last = self._views.get(key)
        if last is not None and now - last <= again_after:
            return
        when = self.store.audit_view(user, action, study_id, details, client_of(request), key, again_after)
        with self._lock:
            self._views[key] = when.timestamp()
            if len(self._views) > 10_000:  # sittings long over
                self._views = {k: t for k, t in self._views.items() if now - t <= again_after}

    def prepare_engine(self) -> None:
        """Build the default segmentation engine in the background, once per process, when a segmentation
        is likely soon (the L3 view opened). Its imports (scipy, ONNX Runtime) and the model's session take
        0.3-0.5 s, which the server's start no longer pays; the engines of later requests reuse the session
        (segmentation.unet keeps one per model file and process)."""
        with self._lock:
            if self._engine_prepared or not self.settings.prerender:
                return
            self._engine_prepared = True
        name = self.settings.default_engine

        def build() -> None:
            from sarcoscope.errors import SegmentationError
            from sarcoscope.segmentation import get_engine

            try:
                get_engine(name)
            except SegmentationError as exc:  # the first segment request reports it to its user
                log.warning("The segmentation engine %s cannot be built: %s", name, exc)

        self.jobs.start(f"engine {name}", build)

    def prerender_overlay(self, study_id: str, version: int) -> None:
        """Render a new label version's overlay in the background (exports then find it made)."""
        if self.settings.prerender:
            self.jobs.start(
                f"overlay of {study_id} v{version}", lambda: self._render_overlay(study_id, version)
            )

    def score_and_prerender(self, row: LabelVersion, score: Callable[[], QualityAssessment]) -> None:
        """What a segment request leaves to the background: the quality of the version it saved, `row`,
        `score()` (the second opinion is another whole engine; the analysis waits for it; stored with the
        version), then its overlay (as prerender_overlay). One after the other: the page asks for the
        analysis next, an export of the overlay only later."""
        study_id, version = row.study_id, row.version
        keep_quality = self.analyses.score_later(row, score)

        def run() -> None:
            keep_quality()
            if self.settings.prerender:
                self._render_overlay(study_id, version)

        try:
            self.jobs.start(f"quality and overlay of {study_id} v{version}", run)
        except RuntimeError:  # no thread to be had: scored here, as before it went to the background
            log.warning(
                "No background thread for the quality score of %s v%d: computed now", study_id, version
            )
            keep_quality()

    def score_again(self, study: Study, row: LabelVersion) -> None:
        """Compute the quality of a version the server segmented again, here (AnalysisCache.score_again),
        and store it, or why it failed, with the version; the analysis waits for it meanwhile."""
        self.analyses.score_later(row, lambda: self.analyses.score_again(study, row))()

    def score_restored(self, study_id: str) -> None:
        """After a deleted study's restore, score in the background its versions the server segmented that
        have nothing stored (deleted while their score was computed, whose result then went nowhere, or
        segmented before scores were stored): the restored study shows them scored."""
        study = self.store.get_study(study_id)
        for row in self.store.list_versions(study_id):
            if row.source != "segment" or row.quality is not None:
                continue
            job = self.analyses.score_later(row, lambda row=row: self.analyses.score_again(study, row))
            try:
                self.jobs.start(f"quality of {study_id} v{row.version}", job)
            except RuntimeError:  # no thread to be had: scored here
                job()

    def _render_overlay(self, study_id: str, version: int) -> None:
        study = self.store.get_study(study_id)
        row = self.store.get_version(study_id, version)
        labels = self.store.load_labels(study_id, version).labels
        overlay_png(self.store, study_id, row, build_result(study, row, labels, self.volumes.get(study)))


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx
