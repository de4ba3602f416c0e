"""The objects every request handler shares: settings, store, authenticator and caches."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from sarcoscope.store import Store
from sarcoscope.web.analysis import AnalysisCache
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


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx
