"""The web labeling application (`sarcoscope serve`): FastAPI backend and static browser UI."""

from sarcoscope.web.app import create_app, serve
from sarcoscope.web.settings import WebSettings

__all__ = ["WebSettings", "create_app", "serve"]
