"""Settings of one `sarcoscope serve` process."""

from __future__ import annotations

import getpass
import ipaddress
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import warn_if_shared
from sarcoscope.segmentation.base import DEFAULT_ENGINE, available_engines, get_engine, takes_model

log = logging.getLogger(__name__)

#: 4 GiB: a 1000-slice 512x512 study is about 0.5 GiB uncompressed.
DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024**3


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None) -> str | None:
    """The access token from `token_file` or the SARCOSCOPE_TOKEN environment variable (never argv, where
    every user of the machine could read it); None when neither is given."""
    from_env = os.environ.get("SARCOSCOPE_TOKEN") or None
    if token_file is None:
        return from_env
    if from_env is not None:
        raise SarcoscopeError(
            "Give the access token either in SARCOSCOPE_TOKEN or with --token-file, not both."
        )
    try:
        text = token_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SarcoscopeError(f"Cannot read the token file {token_file}: {exc}") from None
    token = text.strip()
    if not token or "\n" in token:
        raise SarcoscopeError(f"The token file {token_file} must hold the token on one line.")
    warn_if_shared(token_file, "token file")
    return token


def check_engine(name: str) -> None:
    """Refuse at the start what `get_engine(name)` would refuse at the first segmentation: an unknown engine,
    a model given to an engine that takes none, a model that is not installed, or a model folder without a
    usable card and ONNX file. Building the engine (scipy, ONNX Runtime, the model's session: 0.3-0.5 s)
    is left to the first request that needs it (AppContext.prepare_engine)."""
    engine, has_model, model = name.partition(":")
    if engine not in available_engines() or (has_model and not takes_model(engine)):
        get_engine(name)  # raises its SegmentationError naming the problem before building anything
    if takes_model(engine):
        from sarcoscope.segmentation.model_files import load_model_card, model_onnx_path
        from sarcoscope.segmentation.registry import ModelRegistry

        folder = ModelRegistry().resolve(model if has_model else None)
        model_onnx_path(folder, load_model_card(folder))


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "token-user"


@dataclass
class WebSettings:
    """Where data lives and who may use the app.

    `token`: the shared access token of a single-user server (no accounts in the database); every API
    call then needs a login (cookie) or `Authorization: Bearer <token>`, and the audit log names
    `token_user`. `serve` sets one whenever the host is not a loopback address and there are no accounts.
    """

    data_dir: Path
    database_url: str | None = None
    token: str | None = None
    token_user: str = field(default_factory=_login_name)
    #: A session ends this many hours after the login.
    session_hours: float = 12.0
    #: ... and sooner, after this many minutes without a request of the signed-in user (a workstation left
    #: unattended): the page then shows the sign-in form, not the patients' data. Not in the open mode,
    #: which has no sign-in.
    idle_minutes: float = 30.0
    #: A deleted study is kept this many days (`sarcoscope studies restore` puts it back), then erased;
    #: 0: erased at once.
    keep_deleted_days: float = 30.0
    #: Mark the session cookie Secure even when the request arrived over plain HTTP (a TLS-terminating
    #: proxy that does not send X-Forwarded-Proto). Requests seen as HTTPS always get a Secure cookie.
    secure_cookies: bool = False
    #: Failed logins allowed per user name and per client address within `login_throttle_minutes`.
    max_failed_logins_per_user: int = 5
    max_failed_logins_per_client: int = 20
    login_throttle_minutes: float = 15.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    default_engine: str = DEFAULT_ENGINE
    #: Decoded volumes kept in memory (each 300-slice 512x512 study is about 150 MB as int16).
    volume_cache_size: int = 3
    #: Make a new label version's QC overlay, and a new study's viewer volume, in the background at once,
    #: so that exports and the viewer do not wait for them (off: made on first request); and build the
    #: segmentation engine when the L3 view opens (off: at the first segmentation).
    prerender: bool = True
    #: Host names the server answers to (None: any). `serve` on a loopback address allows only the
    #: loopback names, so that a web page cannot reach the app through DNS rebinding.
    allowed_hosts: list[str] | None = None
    #: The DICOMweb root of the PACS to search, import from and push results to (None: no PACS panel).
    dicomweb_url: str | None = None
    #: Seconds to wait for the PACS to take a connection, and for each of its answers (search, import, push).
    pacs_waits: tuple[float, float] = (10.0, 60.0)

    @property
    def engines(self) -> list[str]:
        """The engines the UI offers: the registered ones and the default, which may name a trained model
        ("unet:PATH", chosen by whoever started the server; a client cannot name a path of its own)."""
        names = available_engines()
        return names if self.default_engine in names else [*names, self.default_engine]
