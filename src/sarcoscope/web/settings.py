"""Settings of one `sarcoscope serve` process."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from sarcoscope.segmentation.base import DEFAULT_ENGINE, available_engines

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


@dataclass
class WebSettings:
    """Where data lives and who may use the app.

    `token`: the shared access token; when set, every API call needs a login (cookie) or
    `Authorization: Bearer <token>`. `serve` sets one whenever the host is not a loopback address.
    """

    data_dir: Path
    database_url: str | None = None
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    default_engine: str = DEFAULT_ENGINE
    #: Decoded volumes kept in memory (each 300-slice 512x512 study is about 150 MB as int16).
    volume_cache_size: int = 3
    #: Host names the server answers to (None: any). `serve` on a loopback address allows only the
    #: loopback names, so that a web page cannot reach the app through DNS rebinding.
    allowed_hosts: list[str] | None = None

    @property
    def auth_required(self) -> bool:
        return self.token is not None

    @property
    def engines(self) -> list[str]:
        """The engines the UI offers: the registered ones and the default, which may name a trained model
        ("unet:PATH", chosen by whoever started the server; a client cannot name a path of its own)."""
        names = available_engines()
        return names if self.default_engine in names else [*names, self.default_engine]
