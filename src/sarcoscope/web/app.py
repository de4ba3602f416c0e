"""`sarcoscope serve`: the FastAPI application (API + static browser UI) and the function that runs it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sarcoscope import __version__
from sarcoscope.errors import SarcoscopeError
from sarcoscope.imaging.deidentify import SECRET_FILE_NAME
from sarcoscope.imaging.deidentify import load_secret as load_deidentification_key
from sarcoscope.segmentation.base import DEFAULT_ENGINE
from sarcoscope.store import ConflictError, NotFoundError, StaleVersionError, Store
from sarcoscope.web.analysis import AnalysisCache
from sarcoscope.web.api import router
from sarcoscope.web.auth import Authenticator, load_secret
from sarcoscope.web.context import AppContext
from sarcoscope.web.settings import DEFAULT_MAX_UPLOAD_BYTES, WebSettings, is_loopback
from sarcoscope.web.volumes import VolumeCache

STATIC_DIR = Path(__file__).parent / "static"
#: Request bodies other than uploads (label saves) are bounded too: 512 slices of 1024x1024.
MAX_BODY_BYTES = 512 * 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuses request bodies above the limit with 413, by Content-Length and while streaming."""

    def __init__(self, app: ASGIApp, upload_limit: int, other_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.other_limit = other_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/api/studies"
        limit = self.upload_limit if is_upload else min(self.other_limit, self.upload_limit)
        message = (
            f"The upload is larger than this server accepts ({limit / 1024**2:.0f} MiB); "
            "ask the administrator to raise --max-upload-mb."
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)


_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _same_origin(origin: str, host: str) -> bool:
    parsed = urlsplit(origin)
    return bool(parsed.netloc) and parsed.netloc.lower() == host.lower()


def _security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def add_headers(request: Request, call_next: Any) -> Any:
        # Browsers send Origin with cross-site requests: another site must not change data here
        # (the loopback mode has no login that SameSite cookies could protect).
        origin = request.headers.get("origin")
        if (
            request.method in _UNSAFE_METHODS
            and origin is not None
            and not _same_origin(origin, request.headers.get("host", ""))
        ):
            return JSONResponse({"detail": f"Cross-site request from {origin} refused."}, status_code=403)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'",
        )
        return response


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StaleVersionError)
    async def stale(_: Request, exc: StaleVersionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "latest_version": exc.latest}, status_code=409)

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SarcoscopeError)
    async def user_error(_: Request, exc: SarcoscopeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse(
            {"detail": f"Invalid request: {problems}", "errors": exc.errors()}, status_code=422
        )


def create_app(settings: WebSettings) -> FastAPI:
    """The application for `settings`: migrates the database, then serves the API and the UI."""
    store = Store(settings.data_dir, settings.database_url)
    store.migrate()
    volumes = VolumeCache(store, settings.volume_cache_size)
    ctx = AppContext(
        settings=settings,
        store=store,
        auth=Authenticator(load_secret(store.data_dir), settings.token),
        volumes=volumes,
        analyses=AnalysisCache(store, volumes),
        deidentification_key=load_deidentification_key(default_file=store.data_dir / SECRET_FILE_NAME),
    )
    app = FastAPI(
        title="sarcoscope",
        version=__version__,
        description="L3 selection, segmentation, manual correction and body-composition analysis of CT.",
        # The interactive docs pages load scripts from a CDN; the schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.include_router(router)
    _error_handlers(app)
    _security_headers(app)
    app.add_middleware(BodySizeLimit, upload_limit=settings.max_upload_bytes, other_limit=MAX_BODY_BYTES)
    if settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)

    @app.api_route(
        "/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False
    )
    def unknown_api(rest: str) -> None:
        raise HTTPException(404, f"No API endpoint /api/{rest}.")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path = "sarcoscope-data",
    database_url: str | None = None,
    token: str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_BYTES // 1024**2,
    engine: str = DEFAULT_ENGINE,
    log_level: str = "info",
) -> None:
    """Run the web app until interrupted. Off-loopback addresses always require an access token:
    when none is given, a random one is generated and printed."""
    import uvicorn

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
        print(f"sarcoscope: {host} is reachable from the network; access token for this run: {token}")
    if token is not None and len(token) < 12:
        raise SarcoscopeError("The access token must be at least 12 characters long.")
    if max_upload_mb < 1:
        raise SarcoscopeError("--max-upload-mb must be at least 1.")
    from sarcoscope.segmentation import get_engine

    get_engine(engine)  # an unknown engine or a model that does not load fails here, not at the first use
    settings = WebSettings(
        data_dir=Path(data_dir),
        database_url=database_url,
        token=token,
        max_upload_bytes=max_upload_mb * 1024**2,
        default_engine=engine,
        allowed_hosts=["localhost", "127.0.0.1", "::1", "[::1]", host] if is_loopback(host) else None,
    )
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    print(f"sarcoscope {__version__}: open http://{shown}:{port}/ (data in {settings.data_dir.resolve()})")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
