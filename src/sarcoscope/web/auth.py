"""Login by shared access token, signed session cookies, and the user name recorded in the audit log.

Without a token (loopback only), everyone who can reach the port is trusted and may name themselves.
With a token, a request must carry `Authorization: Bearer <token>` or the session cookie that
`POST /api/session` sets after checking the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

from fastapi import HTTPException, Request

from sarcoscope.secret import load_or_create_secret

COOKIE = "sarcoscope_session"
_USER_RE = re.compile(r"^[\w .@+-]{1,64}$")
ANONYMOUS = "local"


def valid_user_name(name: str) -> bool:
    return bool(_USER_RE.match(name)) and name.strip() == name


def load_secret(data_dir: Path) -> bytes:
    """A per-installation secret (created once, readable by the owner only) that signs session cookies."""
    return load_or_create_secret(data_dir / "session.key")


class Authenticator:
    def __init__(self, secret: bytes, token: str | None) -> None:
        self.token = token
        # Changing the token invalidates every session issued under the old one.
        self._key = hmac.new(secret, (token or "").encode(), hashlib.sha256).digest()

    def check_token(self, token: str) -> bool:
        return self.token is not None and hmac.compare_digest(token.encode(), self.token.encode())

    def cookie_for(self, user: str) -> str:
        payload = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        sig = hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{sig}"

    def user_from_cookie(self, value: str | None) -> str | None:
        if not value or value.count(".") != 1:
            return None
        payload, sig = value.split(".")
        expected = hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, expected):
            return None
        try:
            user = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return user if valid_user_name(user) else None

    def user(self, request: Request) -> str:
        """The authenticated user name, or HTTP 401 with the reason."""
        cookie_user = self.user_from_cookie(request.cookies.get(COOKIE))
        if cookie_user is not None:
            return cookie_user
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            if self.check_token(header[7:].strip()):
                named = request.headers.get("x-sarcoscope-user", "api")
                return named if valid_user_name(named) else "api"
            raise HTTPException(401, "The access token is wrong.")
        if self.token is None:
            return ANONYMOUS
        raise HTTPException(
            401,
            "Login required: this server is reachable from the network; enter your name and access token.",
        )
