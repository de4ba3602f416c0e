"""Who is calling, for the audit log: logins, server-side sessions with expiry, and login throttling.

Three modes, fixed when the server starts:
- "accounts" (the data folder has user accounts, `sarcoscope users add`): log in with name and password;
- "token" (no accounts, an access token is set): one user, named in the settings, logs in with the token
  (or sends `Authorization: Bearer <token>`);
- "open" (neither; loopback only): everyone who can reach the port is trusted and may name themselves.

An account has a role (sarcoscope.web.roles: what it may do), read at every request; without accounts the
one who holds the access (the token, or the loopback port) is the admin.

A login sets a cookie holding a random session token; the database keeps only its SHA-256 and the expiry,
so a logout ends the session on the server too. Failed logins are counted per user name and per client
address; past the limit, logins are refused with 429 until the window ends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request

from sarcoscope.store import ROLES, ConflictError, LoginSession, Role, Store, User, as_utc
from sarcoscope.web.accounts import token_fingerprint, valid_user_name, verify_password
from sarcoscope.web.settings import WebSettings

COOKIE = "sarcoscope_session"
ANONYMOUS = "local"
AuthMode = Literal["open", "token", "accounts"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> dt.datetime:
    """The time sessions are measured by (tests move it on)."""
    return dt.datetime.now(dt.UTC)


def client_of(request: Request) -> str | None:
    """The client's address (the proxy's X-Forwarded-For when uvicorn trusts that proxy)."""
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Caller:
    """Who makes a request, and their role (sarcoscope.web.roles: what it may do)."""

    name: str
    role: Role


@dataclass(frozen=True)
class Login:
    """A granted session: the cookie's value, whose it is, until when."""

    token: str
    user: str
    #: when the session ends unless its user is active (Authenticator._until)
    expires_at: dt.datetime
    #: when it ends at the latest: the cookie is kept until then
    cookie_until: dt.datetime


class Authenticator:
    def __init__(self, store: Store, settings: WebSettings) -> None:
        self.store = store
        self.settings = settings
        self.mode: AuthMode = "accounts" if store.has_users() else "token" if settings.token else "open"
        # Sessions are only honoured in the realm that granted them: a new token or the first account
        # ends every session granted before.
        self.realm = (
            f"token:{token_fingerprint(settings.token)}"
            if self.mode == "token" and settings.token
            else self.mode
        )
        # A key's throttle check, password check and failure count are one step (one server per data
        # folder, so this process's locks are enough): guesses sent at once are each checked against
        # the failures of those before them, not all let through before the first is counted.
        self._key_locks = [threading.Lock() for _ in range(64)]
        # A user name that is no account is counted under a code keyed for this run (see _user_key); the
        # counts of windows that ended before this start are deleted now.
        self._name_key = secrets.token_bytes(32)
        # Keys the views of a sitting without a secret of its own (the open mode's): see view_key.
        self._view_key = secrets.token_bytes(32)
        self.store.forget_login_failures(self._window()[0])

    def view_key(self, request: Request, user: str, action: str, subject: str) -> str:
        """What a view's audit event is known by (AuditEvent.view_key): its sitting and what it was shown
        (`action`, and `subject`: a study id, a search's criteria), as a digest keyed by the sitting's secret,
        its session cookie or a script's bearer token, which the server keeps no copy of: the same for every
        server process and after a restart, and no search's criteria can be tried against it from the
        database. Without either (the open loopback mode) the sitting is its user and client address, both in
        the event beside the key: it is keyed by a random secret of this run too, which no file holds (a
        restart audits that mode's views once more)."""
        cookie = request.cookies.get(COOKIE)
        header = request.headers.get("authorization", "")
        if cookie:
            secret = f"session:{cookie}".encode()
        elif header.lower().startswith("bearer "):
            secret = f"bearer:{header[7:].strip()}@{client_of(request)}".encode()
        else:
            secret = self._view_key + f"user:{user}@{client_of(request)}".encode()
        message = "\0".join((user, action, subject)).encode()
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    @contextmanager
    def _attempt(self, keys: list[str]) -> Iterator[None]:
        """Held from the throttle check to the count of a failure, for every key of the attempt (taken in
        one order, so two attempts sharing keys never wait for each other's)."""
        stripes = sorted({zlib.crc32(key.encode()) % len(self._key_locks) for key in keys})
        with ExitStack() as held:
            for i in stripes:
                held.enter_context(self._key_locks[i])
            yield

    @property
    def login_required(self) -> bool:
        return self.mode != "open"

    # -- requests --------------------------------------------------------------------------------------
    def caller(self, request: Request, active: bool = True) -> Caller:
        """The authenticated user and their role, or HTTP 401 with the reason. `active`: the request is the
        user's doing, which keeps their session from ending idle (the page asking whether it has ended is
        not). The role is read at every request: a role changed meanwhile applies to open sessions too."""
        row = self._session(request.cookies.get(COOKIE))
        role = None if row is None else self._role(row.user_name)
        if row is not None and role is not None:
            if active:
                self._keep_alive(row)
            return Caller(row.user_name, role)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return Caller(self._bearer_user(header[7:].strip(), client_of(request)), "admin")
        if self.mode == "open":
            return Caller(ANONYMOUS, "admin")
        what = "your user name and password" if self.mode == "accounts" else "the access token"
        raise HTTPException(401, f"Login required: sign in with {what}.")

    def _role(self, user: str) -> Role | None:
        """An account's role (None: the account is gone); without accounts, whoever holds the access (the
        token, or the loopback port of the open mode) is the admin."""
        if self.mode != "accounts":
            return "admin"
        role = self.store.user_role(user)
        return next((r for r in ROLES if r == role), None)

    def _session(self, token: str | None) -> LoginSession | None:
        """The cookie's session when it is valid here (an expired one is deleted on the way)."""
        if not token or len(token) > 128:
            return None
        row = self.store.get_session(_digest(token))
        if row is None or row.realm != self.realm:
            return None
        if as_utc(row.expires_at) <= _now():
            self.store.delete_session(row.id)
            return None
        return row

    def _until(self, created: dt.datetime, now: dt.datetime) -> dt.datetime:
        """When a session made at `created` ends if its user does nothing more from `now` on: `idle_minutes`
        later, at most `session_hours` after the login (the open mode has no sign-in to ask for: only the
        latter)."""
        last = as_utc(created) + dt.timedelta(hours=self.settings.session_hours)
        if self.mode == "open":
            return last
        return min(last, now + dt.timedelta(minutes=self.settings.idle_minutes))

    def _keep_alive(self, row: LoginSession) -> None:
        """Move the session's end on after a request of its user (written at most every 1/10 of the idle
        time, not at every image tile); and back, for a session made to last longer (by a version without
        the idle end, or a server started with more --idle-minutes): it ends idle from now on too."""
        until = self._until(row.created_at, _now())
        step = dt.timedelta(minutes=min(1.0, self.settings.idle_minutes / 10))
        if abs(until - as_utc(row.expires_at)) >= step:
            self.store.set_session_end(row.id, until)

    def session_seconds_left(self, request: Request) -> float | None:
        """How long the request's session cookie still logs in (None: it does not), so that a page left
        open can end itself when its session does."""
        row = self._session(request.cookies.get(COOKIE))
        return None if row is None else (as_utc(row.expires_at) - _now()).total_seconds()

    def _bearer_user(self, token: str, client: str | None) -> str:
        """Scripts in token mode send the token with each request; failures count as failed logins."""
        if self.mode != "token":
            raise HTTPException(
                401, "This server does not take access tokens: log in with POST /api/session."
            )
        keys = [f"client:{client}"]
        with self._attempt(keys):
            self._refuse_if_throttled(keys)
            if not self._token_matches(token):
                self._count_failure(keys, None, client)
                raise HTTPException(401, "The access token is wrong.")
        return self.settings.token_user

    def _token_matches(self, token: str) -> bool:
        expected = self.settings.token or ""
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())

    # -- login and logout ------------------------------------------------------------------------------
    def login(self, user: str | None, secret: str | None, client: str | None) -> Login:
        """Check the credentials of the server's mode and start a session (401 / 429 / 422 otherwise)."""
        if self.mode == "open":
            if user is None or not valid_user_name(user):
                raise HTTPException(422, "User names are 1-64 letters, digits, spaces or . @ + - _")
            self.store.audit(user, "login", client=client)
            return self._start_session(user, client)
        if self.mode == "token":
            if user is not None and user != self.settings.token_user:
                raise HTTPException(
                    422,
                    f"This is a single-user server: the audit log names its user "
                    f"'{self.settings.token_user}'. Send only the access token.",
                )
            user = self.settings.token_user
        elif user is None or not valid_user_name(user):
            raise HTTPException(422, "Enter your user name (1-64 letters, digits, spaces or . @ + - _).")
        keys = [f"client:{client}", self._user_key(user)]
        with self._attempt(keys):
            self._refuse_if_throttled(keys)
            if self.mode == "token":
                if not self._token_matches(secret or ""):
                    self._count_failure(keys, None, client)
                    raise HTTPException(401, "The access token is wrong.")
                self.store.audit(user, "login", client=client)
                granted = self._start_session(user, client)
            else:
                account = self.store.get_user(user)
                ok, new_hash = verify_password(account, secret or "")
                if not ok:
                    self._count_failure(keys, user, client)
                    raise HTTPException(401, "Wrong user name or password.")
                try:
                    granted = self._start_session(user, client, account)
                except ConflictError:  # `users passwd` or `users remove` committed while it was checked
                    raise HTTPException(401, "Wrong user name or password.") from None
                self.store.record_login(user, True, client, new_hash)
            self.store.clear_login_failures(keys[1], self._window()[0])
        return granted

    def _start_session(self, user: str, client: str | None, account: User | None = None) -> Login:
        token = secrets.token_urlsafe(32)
        now = _now()
        expires = self._until(now, now)
        self.store.add_session(_digest(token), user, self.realm, expires, client, account, created_at=now)
        last = now + dt.timedelta(hours=self.settings.session_hours)
        return Login(token=token, user=user, expires_at=expires, cookie_until=last)

    def logout(self, token: str | None, client: str | None) -> None:
        """End the session on the server: its cookie no longer logs anyone in, even if copied."""
        if not token or len(token) > 128:
            return
        row = self.store.delete_session(_digest(token))
        if row is not None:
            self.store.audit(row.user_name, "logout", client=client)

    # -- throttling ------------------------------------------------------------------------------------
    def _user_key(self, name: str) -> str:
        """The failure counter of a user name. A name that is no account is often a password typed into the
        name field: it is counted under a keyed code of it (the key lives in this process only), never
        written into the database; an account is counted under its name (the users table names it)."""
        if self.mode != "accounts" or self.store.get_user(name) is not None:
            return f"user:{name}"
        return "user:#" + hmac.new(self._name_key, name.encode(), hashlib.sha256).hexdigest()

    def _limit(self, key: str) -> int:
        s = self.settings
        return s.max_failed_logins_per_user if key.startswith("user:") else s.max_failed_logins_per_client

    def _window(self) -> tuple[dt.datetime, dt.timedelta]:
        window = dt.timedelta(minutes=self.settings.login_throttle_minutes)
        return dt.datetime.now(dt.UTC) - window, window

    def _refuse_if_throttled(self, keys: list[str]) -> None:
        since, window = self._window()
        for key, (count, start) in self.store.login_failures(keys, since).items():
            if count >= self._limit(key):
                wait = max(1, int((start + window - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
                who = "this user name" if key.startswith("user:") else "your address"
                raise HTTPException(
                    429,
                    f"Too many failed logins for {who}; try again in {wait // 60} min {wait % 60} s.",
                    headers={"Retry-After": str(wait)},
                )

    def _count_failure(self, keys: list[str], account: str | None, client: str | None) -> None:
        """Count the failure (one row per key, not one audit event per attempt); the audit log records
        only that a key reached its limit."""
        since, _ = self._window()
        counts = self.store.add_login_failure(keys, since)
        if account is not None:
            self.store.record_login(account, False, None)
        for key, count in counts.items():
            if count == self._limit(key):
                self.store.audit(
                    "unauthenticated",
                    "login-throttled",
                    details={"key": self._shown_key(key), "failures": count},
                    client=client,
                )

    def _shown_key(self, key: str) -> str:
        """A throttled key as the audit log (read by the admins, kept for good) names it: a user name that
        is no account is often a password typed into the name field, so it is not written."""
        return "user:(no such account)" if key.startswith("user:#") else key
