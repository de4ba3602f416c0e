"""The objects every request handler shares: settings, store, authenticator and caches."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sarcoscope.store import Store
from sarcoscope.web.analysis import AnalysisCache, build_result, overlay_png
from sarcoscope.web.auth import Authenticator
from sarcoscope.web.background import BackgroundJobs
from sarcoscope.web.settings import WebSettings
from sarcoscope.web.volumes import VolumeCache


@dataclass
class AppContext:
    settings: WebSettings
    store: Store
    auth: Authenticator
    volumes: VolumeCache
    analyses: AnalysisCache
    #: Keys the pseudonyms and UIDs of de-identified downloads (data folder, or $SARCOSCOPE_DEID_SECRET_FILE).
    deidentification_key: bytes
    #: Renders that make later requests fast (settings.prerender), waited for when the app stops.
    jobs: BackgroundJobs

    def prerender_overlay(self, study_id: str, version: int) -> None:
        """Render a new label version's overlay in the background (exports then find it made)."""
        if not self.settings.prerender:
            return

        def run() -> None:
            study = self.store.get_study(study_id)
            row = self.store.get_version(study_id, version)
            labels = self.store.load_labels(study_id, version).labels
            overlay_png(self.store, study_id, row, build_result(study, row, labels, self.volumes.get(study)))

        self.jobs.start(f"overlay of {study_id} v{version}", run, study_id)


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx
