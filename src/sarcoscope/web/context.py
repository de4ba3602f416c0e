"""The objects every request handler shares: settings, store, authenticator and caches."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from fastapi import Request

from sarcoscope.store import Store
from sarcoscope.web.analysis import AnalysisCache, build_result, overlay_png
from sarcoscope.web.auth import Authenticator, client_of, sitting_of
from sarcoscope.web.background import BackgroundJobs
from sarcoscope.web.settings import WebSettings
from sarcoscope.web.volumes import VolumeCache

log = logging.getLogger(__name__)

#: A study's images (or the study list, or a search's results) viewed again in one sitting after this long
#: without a look at them are a new view in the audit log (seconds).
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
    #: (sitting, audit action, what was shown: a study id, a search's digest) -> when it was last shown
    #: (time.monotonic), for `viewed` and `listed`.
    _views: dict[tuple[str, str, str], float] = field(default_factory=dict, init=False, repr=False)
    #: Keys the digests of searches in `_views` (this process's only): no search text is kept.
    _search_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), init=False, repr=False)

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

    def viewed(
        self, request: Request, user: str, study_id: str, recorded: bool = False, what: str = "images"
    ) -> None:
        """Record in the audit log that `user` was shown the study's CT images (`view-images`), or with
        `what` "results" its labels or measurements (`view-results`), "study" its patient and study facts
        (`view-study`), "series" the series of its upload (`view-series`): once per sitting (session) and
        study, and again after VIEW_AGAIN_AFTER without a look at them, not once per slice tile the viewer
        asks for. `recorded`: the request's own audit event says it (a volume download)."""
        self._shown(request, user, f"view-{what}", study_id, study_id, None, recorded)

    def listed(self, request: Request, user: str, count: int, search: str | None = None) -> None:
        """Record that `user` was shown the study list (`view-studies`) or a search's results
        (`search-studies`), which name patients, with how many studies were listed: the list once per
        sitting, again after VIEW_AGAIN_AFTER without a look (the page reloads it as it goes back to it), a
        search once per sitting and criteria likewise. The criteria are patient identifiers: the event
        says that a search was made, never what was searched for (here only a digest of it, keyed for
        this process)."""
        text = (search or "").strip().casefold()  # the store's search: trimmed, case-insensitive
        if not text:
            self._shown(request, user, "view-studies", "", None, {"count": count})
            return
        digest = hmac.new(self._search_key, text.encode(), hashlib.sha256).hexdigest()
        self._shown(request, user, "search-studies", digest, None, {"count": count})

    def _shown(
        self,
        request: Request,
        user: str,
        action: str,
        subject: str,
        study_id: str | None,
        details: dict[str, int] | None,
        recorded: bool = False,
    ) -> None:
        """Audit `action` unless this sitting was shown `subject` within VIEW_AGAIN_AFTER."""
        key, now = (sitting_of(request, user), action, subject), time.monotonic()
        with self._lock:
            last = self._views.get(key)
            self._views[key] = now
            if len(self._views) > 10_000:  # sittings long over
                self._views = {k: t for k, t in self._views.items() if now - t <= VIEW_AGAIN_AFTER}
        if not recorded and (last is None or now - last > VIEW_AGAIN_AFTER):
            try:
                self.store.audit(user, action, study_id, details, client_of(request))
            except BaseException:
                with self._lock:  # not recorded: the next look records it
                    self._views.pop(key, None)
                raise

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
        if not self.settings.prerender:
            return

        def run() -> None:
            study = self.store.get_study(study_id)
            row = self.store.get_version(study_id, version)
            labels = self.store.load_labels(study_id, version).labels
            overlay_png(self.store, study_id, row, build_result(study, row, labels, self.volumes.get(study)))

        self.jobs.start(f"overlay of {study_id} v{version}", run)


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx
