"""`sarcoscope serve`: the FastAPI application (API + static browser UI) and the function that runs it."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sarcoscope import __version__
from sarcoscope.errors import SarcoscopeError, frames_of
from sarcoscope.fileio import DISK_FULL
from sarcoscope.imaging.dicom_warnings import quiet_header_values
from sarcoscope.segmentation.base import DEFAULT_ENGINE
from sarcoscope.store import ConflictError, NotFoundError, StaleVersionError, StorageError, Store, trash
from sarcoscope.web.accounts import check_user_name, no_admin
from sarcoscope.web.analysis import AnalysisCache
from sarcoscope.web.api import router
from sarcoscope.web.auth import Authenticator
from sarcoscope.web.background import BackgroundJobs
from sarcoscope.web.context import AppContext
from sarcoscope.web.dicomweb import install as install_pacs
from sarcoscope.web.settings import DEFAULT_MAX_UPLOAD_BYTES, WebSettings, check_engine, is_loopback
from sarcoscope.web.uploads import number_kept_files
from sarcoscope.web.volumes import VolumeCache
from sarcoscope.web.wording import for_ui

STATIC_DIR = Path(__file__).parent / "static"
#: Label saves: 512 slices of 1024x1024 (the route itself accepts exactly its base version's size).
MAX_LABEL_BYTES = 512 * 1024 * 1024
#: Every other body is a small JSON object.
MAX_JSON_BYTES = 64 * 1024
_LABELS_PATH = re.compile(r"^/api/studies/[^/]+/labels/?$")
_IMPORT_PATH = re.compile(r"^/api/studies/[^/]+/labels/import/?$")
log = logging.getLogger(__name__)


class HttpMiddleware:
    """An ASGI middleware of the HTTP requests (`http`); other connections pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodySizeLimit(HttpMiddleware):
    """Refuses request bodies above the route's limit with 413 and a JSON reason: by Content-Length
    before anything is read, and by counting while a (chunked) body streams in, so that a body over
    the limit is never held in memory or on disk."""

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        super().__init__(app)
        self.upload_limit = upload_limit

    def _limit(self, method: str, path: str) -> tuple[int, str]:
        if method == "POST" and (path.rstrip("/") == "/api/studies" or _IMPORT_PATH.match(path)):
            return self.upload_limit, "ask the administrator to raise --max-upload-mb"
        if method == "POST" and _LABELS_PATH.match(path):
            return MAX_LABEL_BYTES, "save fewer slices at a time"
        return MAX_JSON_BYTES, "this endpoint takes a small JSON object"

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, advice = self._limit(scope["method"], scope["path"])
        message = (
            f"The request body is larger than this server accepts here ({limit / 1024**2:.2f} MiB); {advice}."
        )
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            reason = message if declared.isdigit() else f"Invalid Content-Length {declared[:32]!r}."
            status = 413 if declared.isdigit() else 400
            await JSONResponse({"detail": reason}, status_code=status)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise HTTPException(413, message)  # raised into the handler that is reading
            return msg

        await self.app(scope, limited_receive, send)


_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


def _same_origin(origin: str, host: str) -> bool:
    parsed = urlsplit(origin)
    return bool(parsed.netloc) and parsed.netloc.lower() == host.lower()


class SecurityHeaders(HttpMiddleware):
    """Refuses cross-site changes and adds the security headers to every response; no API response (patient
    lists, CT images, downloads) may be kept in the browser's cache, where the next user of a shared
    workstation would find it."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        # Browsers send Origin with cross-site requests: another site must not change data here
        # (the open mode has no login that SameSite cookies could protect).
        if (
            scope["method"] in _UNSAFE_METHODS
            and origin is not None
            and not _same_origin(origin, headers.get("host", ""))
        ):
            refusal = JSONResponse({"detail": f"Cross-site request from {origin} refused."}, status_code=403)
            await refusal(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=msg)
                for name, value in _SECURITY_HEADERS.items():
                    response_headers.setdefault(name, value)
                if scope["path"].startswith("/api/"):
                    response_headers["Cache-Control"] = "no-store"
            await send(msg)

        await self.app(scope, receive, send_with_headers)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StaleVersionError)
    async def stale(_: Request, exc: StaleVersionError) -> JSONResponse:
        body = {"detail": str(exc), "latest_version": exc.latest, "latest_indices": exc.latest_indices}
        return JSONResponse(body, status_code=409)

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StorageError)
    async def storage(_: Request, exc: StorageError) -> JSONResponse:
        # the server's fault, not the request's: logged, by its reason only (no path, no client names)
        log.error("%s", exc)
        full = exc.errno in DISK_FULL
        return JSONResponse({"detail": str(exc)}, status_code=507 if full else 500)

    @app.exception_handler(OSError)
    async def server_files(_: Request, exc: OSError) -> JSONResponse:
        # A file of the server's that could not be read or written where no handler said which (a full disk
        # under an export, a stored file gone): 507 or 500 by the system's reason only. Its path holds the
        # patient's UIDs (ct/<study>/<series>/<instance>.dcm) or the client's names, and the traceback
        # uvicorn would log repeats it: the log gets the frames without the message.
        if exc.filename is None and exc.errno not in DISK_FULL:  # not a file's (a socket)
            return _internal_error(exc)
        reason = exc.strerror or type(exc).__name__
        log.error("A server file could not be read or written: %s\n%s", reason, frames_of(exc))
        full = exc.errno in DISK_FULL
        what = "store the request's files" if full else "read or write its files"
        return JSONResponse(
            {"detail": f"The server could not {what}: {reason}."}, status_code=507 if full else 500
        )

    @app.exception_handler(SarcoscopeError)
    async def user_error(_: Request, exc: SarcoscopeError) -> JSONResponse:
        return JSONResponse({"detail": for_ui(str(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending input is not echoed: it may be large, not JSON (NaN), or patient data.
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        problems = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"Invalid request: {problems}", "errors": errors}, status_code=422)


class InternalErrors(HttpMiddleware):
    """The last resort for an exception no handler took (a bug): a 500 naming its type only, and in the log
    the traceback's frames without any exception's text, which may quote a patient's header value (pydicom's
    ValueError for a malformed one does) or a file's path. uvicorn, which it would reach otherwise, logs the
    whole text."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if not started:  # else the answer is cut short: its client sees it
                await _internal_error(exc)(scope, receive, send)


def _internal_error(exc: BaseException) -> JSONResponse:
    """A 500 that gives the client no internals; the log has the traceback without any text (frames_of)."""
    log.error("Internal server error (%s)\n%s", type(exc).__name__, frames_of(exc))
    return JSONResponse(
        {"detail": f"Internal server error ({type(exc).__name__}); the server log has the details."},
        status_code=500,
    )


def create_app(settings: WebSettings, require_login: bool = False) -> FastAPI:
    """The application for `settings`: claims the data folder, migrates the database, deletes what an
    interrupted upload or deletion left behind, then serves the API and the UI.

    `require_login` (a server reachable from the network): without accounts and without a token, a
    random access token is made for this run and logged.
    """
    store = Store(settings.data_dir, settings.database_url)
    try:
        store.lock()
        store.migrate()
        left = trash.recover(store)  # first: a deletion stopped half-way has files that look unowned
        # entries left as they are (a record unreadable, or a `sarcoscope studies` command working on one):
        # the files no study owns may be theirs
        store.remove_orphan_files(keep_unowned=bool(left))
        trash.erase_expired(store, dt.timedelta(days=settings.keep_deleted_days), actor="server")
        number_kept_files(store)
        if require_login and not settings.token and not store.has_users():
            settings.token = secrets.token_urlsafe(18)
            log.warning(
                "No user accounts: access token for this run (user %s): %s",
                settings.token_user,
                settings.token,
            )
        auth = Authenticator(store, settings)
        if auth.mode == "accounts" and settings.token:
            raise SarcoscopeError(
                "This data folder has user accounts: users log in with their own passwords. The shared "
                "access token (SARCOSCOPE_TOKEN or --token-file) is for single-user servers; unset it."
            )
        check_user_name(settings.token_user)
        if auth.mode == "accounts" and (hint := no_admin(store)):
            log.warning("%s", hint)
    except BaseException:
        store.close()
        raise
    volumes = VolumeCache(store, settings.volume_cache_size)
    ctx = AppContext(
        settings=settings,
        store=store,
        auth=auth,
        volumes=volumes,
        analyses=AnalysisCache(store, volumes),
        jobs=BackgroundJobs(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.jobs.wait()  # a half-rendered picture would be left as a temporary file

    app = FastAPI(
        lifespan=lifespan,
        title="sarcoscope",
        version=__version__,
        description="L3 selection, segmentation, manual correction and body-composition analysis of CT.",
        # The interactive docs pages load scripts from a CDN; the schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.include_router(router)
    install_pacs(app)
    _error_handlers(app)
    app.add_middleware(BodySizeLimit, upload_limit=settings.max_upload_bytes)
    app.add_middleware(SecurityHeaders)
    if settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(InternalErrors)  # outermost: it takes what the others raise too
    quiet_header_values()

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


def browser_urls(host: str, port: int, public_host: str | None = None) -> list[str]:
    """Addresses to type in a browser: `public_host` behind a reverse proxy (a full URL, or a host name
    served over HTTPS on the default port). A wildcard host (0.0.0.0, ::) is not one: this machine's name
    is, and, on this machine, localhost."""
    if public_host:
        url = public_host if "://" in public_host else f"https://{public_host}"
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise SarcoscopeError(f"--public-host '{public_host}' is not a host name or an http(s) URL.")
        return [url.rstrip("/") + "/"]
    if host in ("0.0.0.0", "::", ""):
        import socket

        return [f"http://{socket.getfqdn()}:{port}/", f"http://localhost:{port}/ (on this machine)"]
    shown = f"[{host}]" if ":" in host else host
    return [f"http://{shown}:{port}/"]


#: A DICOM UID as a path segment (four or more numeric components).
_UID_SEGMENT = re.compile(r"(?<=/)\d+(?:\.\d+){3,}(?=/|$)")


class RedactedAccessLog(logging.Filter):
    """uvicorn's access log without what may identify a patient: no query string (study and PACS search
    criteria: names, IDs, accession numbers) and no DICOM UID in a path (PACS study and series routes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):  # uvicorn's access record
            path = _UID_SEGMENT.sub("<uid>", args[2].split("?", 1)[0])
            record.args = (args[0], args[1], path, args[3], args[4])
        return True


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path = "sarcoscope-data",
    database_url: str | None = None,
    token: str | None = None,
    token_user: str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_BYTES // 1024**2,
    engine: str = DEFAULT_ENGINE,
    session_hours: float = 12.0,
    idle_minutes: float = 30.0,
    keep_deleted_days: float = 30.0,
    secure_cookies: bool = False,
    trusted_proxies: str = "127.0.0.1",
    log_level: str = "info",
    dicomweb_url: str | None = None,
    public_host: str | None = None,
    pacs_waits: tuple[float, float] = (10.0, 60.0),
) -> None:
    """Run the web app until interrupted. Off-loopback addresses always require a login: accounts,
    the given token, or a random token made for the run.

    `trusted_proxies`: addresses whose X-Forwarded-Proto / X-Forwarded-For uvicorn believes (an HTTPS
    proxy in front: the cookie is then marked Secure and login throttling sees the real client).
    `dicomweb_url`: the PACS's DICOMweb root for the PACS panel; `pacs_waits`: the (connect, each answer)
    timeouts of its requests in seconds. `public_host`: the address users open
    behind a reverse proxy (a host name, meaning https://HOST/, or a URL), printed instead of HOST:PORT."""
    import uvicorn

    if token is not None and len(token) < 12:
        raise SarcoscopeError("The access token must be at least 12 characters long.")
    if max_upload_mb < 1:
        raise SarcoscopeError("--max-upload-mb must be at least 1.")
    if not 0 < session_hours <= 24 * 30:
        raise SarcoscopeError("--session-hours must be more than 0 and at most 720 (30 days).")
    if not 0 < idle_minutes <= 24 * 60:
        raise SarcoscopeError("--idle-minutes must be more than 0 and at most 1440 (a day).")
    if not 0 <= keep_deleted_days <= 3650:
        raise SarcoscopeError("--keep-deleted-days must be from 0 (erase at once) to 3650.")
    check_engine(engine)  # an unknown engine or model fails here, not at the first use
    pacs_url = None
    if dicomweb_url:  # its address and waits, checked without the DICOMweb client (pydicom, requests)
        from sarcoscope.pacs.dicomweb_query import check_waits, parse_dicomweb_root

        pacs_url = parse_dicomweb_root(dicomweb_url)
        check_waits(*pacs_waits)
    settings = WebSettings(
        data_dir=Path(data_dir),
        database_url=database_url,
        token=token,
        max_upload_bytes=max_upload_mb * 1024**2,
        default_engine=engine,
        session_hours=session_hours,
        idle_minutes=idle_minutes,
        keep_deleted_days=keep_deleted_days,
        secure_cookies=secure_cookies,
        allowed_hosts=["localhost", "127.0.0.1", "::1", "[::1]", host] if is_loopback(host) else None,
        dicomweb_url=pacs_url,
        pacs_waits=pacs_waits,
    )
    if token_user is not None:
        settings.token_user = token_user
    if not logging.getLogger("sarcoscope").handlers:
        logging.basicConfig(level=logging.INFO, format="sarcoscope: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin and migration chatter at each start
    # highdicom names each source image's SOP Instance UID at INFO whenever a SEG or SR is made: the server
    # log keeps DICOM UIDs out (as the access log's paths do)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    addresses = browser_urls(host, port, public_host)
    app = create_app(settings, require_login=not is_loopback(host))
    log.info(
        "sarcoscope %s: open %s (data in %s; logins: %s)",
        __version__,
        " or ".join(addresses),
        settings.data_dir.resolve(),
        app.state.ctx.auth.mode,
    )
    if settings.dicomweb_url:
        from sarcoscope.pacs.dicomweb_query import shown_url

        log.info("PACS panel: DICOMweb server %s", shown_url(settings.dicomweb_url))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=True,
        forwarded_allow_ips=trusted_proxies,
    )  # configures uvicorn's loggers: its access log is filtered after that
    logging.getLogger("uvicorn.access").addFilter(RedactedAccessLog())
    try:
        uvicorn.Server(config).run()
    finally:
        app.state.ctx.store.close()
