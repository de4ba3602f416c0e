"""How a DICOMweb client logs in: HTTP basic auth from an address's `user:password@`, or an OAuth bearer
token (`BearerToken`: cloud and gateway DICOMweb servers) from SARCOSCOPE_DICOMWEB_TOKEN or a token file;
never both. Neither is ever shown.

Apart from the client (pacs.dicomweb) because it is a concern of its own (what is sent, when a token is
read again, what is never shown), and so that `serve --dicomweb-url` checks the login at its start without
importing pydicom (the token is a requests auth: this imports requests). It reads addresses through
pacs.dicomweb_query and imports nothing of the client's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import requests.auth

from sarcoscope.errors import InputError
from sarcoscope.fileio import warn_if_shared
from sarcoscope.pacs.dicomweb_query import SCHEME, shown_url

#: Where the bearer token comes from: the token itself, or a file holding it (--dicomweb-token-file).
TOKEN_ENV = "SARCOSCOPE_DICOMWEB_TOKEN"
TOKEN_FILE_ENV = "SARCOSCOPE_DICOMWEB_TOKEN_FILE"
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: what an Authorization header can carry


class BearerToken(requests.auth.AuthBase):
    """An OAuth bearer token sent with every request (`Authorization: Bearer …`), from
    SARCOSCOPE_DICOMWEB_TOKEN or from a file. Tokens of cloud DICOMweb servers expire (hourly) and a
    sidecar rewrites the file: a 401 answer makes it read the file again and, if the token changed, send
    the request once more with it.

    The token is never shown: not in repr, messages or logs (a header is not logged)."""

    def __init__(self, value: str | None = None, file: Path | None = None) -> None:
        if (value is None) == (file is None):
            raise InputError(
                f"Give the DICOMweb bearer token one way: {TOKEN_ENV} or a token file "
                f"(--dicomweb-token-file, {TOKEN_FILE_ENV}), not both."
            )
        self.file = file
        if file is not None:
            self._value = self._read()
            warn_if_shared(file, "DICOMweb token file")  # once: it is read again after every 401
        else:
            self._value = _checked_token(value or "", f"{TOKEN_ENV}")

    @classmethod
    def from_env(cls) -> BearerToken | None:
        """The token the environment configures (None: none)."""
        value, file = os.environ.get(TOKEN_ENV) or None, os.environ.get(TOKEN_FILE_ENV) or None
        if value is None and file is None:
            return None
        return cls(value, Path(file) if file else None)

    def __repr__(self) -> str:
        return f"BearerToken(file={self.file})" if self.file else "BearerToken(from the environment)"

    def _read(self) -> str:
        assert self.file is not None
        try:
            text = self.file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not ASCII text"
            raise InputError(f"Cannot read the DICOMweb token file {self.file}: {why or exc}.") from None
        return _checked_token(text, f"the DICOMweb token file {self.file}")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._value}"
        request.register_hook("response", self._renew_on_401)
        return request

    def _renew_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """A 401 answer: read the token file again; a new token is sent once (the server's answer to it
        stands, whatever it is). An unchanged token, or one from the environment, leaves the 401."""
        if response.status_code != 401 or self.file is None or response.request is None:
            return response
        try:
            fresh = self._read()
        except InputError:
            return response  # a file half-written by its sidecar: the 401 stands, the next request reads it
        if fresh == self._value:
            return response
        self._value = fresh
        if not isinstance(response.request.body, (bytes, str, type(None))):
            # a chunked STOW-RS body was read as it was sent and cannot be sent again: the 401 stands and
            # the next request has the new token (a store searches the study first, which renews it)
            return response
        _ = response.content  # the 401's body, so that its connection can be reused
        response.close()
        again = response.request.copy()
        again.headers["Authorization"] = f"Bearer {fresh}"
        renewed = response.connection.send(again, **kwargs)
        renewed.history.append(response)
        renewed.request = again
        return renewed


def _checked_token(text: str, where: str) -> str:
    """The token in `text` (surrounding whitespace dropped); InputError naming `where`, never the text."""
    token = text.strip()
    if not token:
        raise InputError(f"No DICOMweb bearer token in {where}: it is empty.")
    if not _TOKEN.match(token):
        raise InputError(
            f"The DICOMweb bearer token in {where} must be one line of visible ASCII characters (no spaces; "
            "just the token, without 'Bearer')."
        )
    return token


def use_token_file(file: Path | None) -> None:
    """Make every DICOMweb server of this process (and of processes it starts) use the token in `file`
    (the --dicomweb-token-file option); checked now, before any work."""
    if file is not None:
        os.environ[TOKEN_FILE_ENV] = str(file)
        BearerToken.from_env()


def check_auth(url: str) -> None:
    """Refuse, before any work, a server address with `user:password@` when a bearer token is configured
    too, and a token that cannot be read (see DICOMwebServer)."""
    try:
        parts = urlsplit(url.removeprefix(SCHEME))
    except ValueError:  # an address that cannot be read is refused where it is read, saying so
        parts = urlsplit("")
    auth_for(parts)


def auth_for(parts: Any) -> BearerToken | tuple[str, str] | None:
    """How to log in to the server at `parts` (a urlsplit): HTTP basic auth from its user:password@, the
    configured bearer token, or neither; both is refused (which one would the server want?)."""
    token = BearerToken.from_env()
    if parts.username is None:
        return token
    if token is not None:
        raise InputError(
            f"The DICOMweb server {shown_url(urlunsplit(parts))} is given both HTTP basic auth "
            f"(user:password@ in its address) and a bearer token ({TOKEN_ENV} or --dicomweb-token-file): "
            "give one of them."
        )
    return (unquote(parts.username), unquote(parts.password or ""))
