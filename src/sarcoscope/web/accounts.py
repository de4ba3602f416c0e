"""User accounts of the web app (`sarcoscope users ...`): names, roles, Argon2 password hashes, who changed
them.

Passwords are hashed with argon2-cffi's Argon2id defaults (RFC 9106); only the hash is stored. A hash
made with weaker parameters than the current defaults is replaced at the next successful login.
"""

from __future__ import annotations

import functools
import getpass
import re
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import Type, hash_secret_raw

from sarcoscope.errors import SarcoscopeError
from sarcoscope.store import DEFAULT_ROLE, Role, Store, User

_USER_RE = re.compile(r"^[\w .@+-]{1,64}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
_hasher = PasswordHasher()
#: Each verification takes 64 MiB for a fraction of a second: a burst of logins must not take the
#: server's memory, so at most two run at once.
_verifying = threading.BoundedSemaphore(2)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so that the answer takes as long as for a real user."""
    return _hasher.hash("sarcoscope: no such user")


def valid_user_name(name: str) -> bool:
    """1-64 letters, digits, spaces or . @ + - _, without spaces at either end."""
    return bool(_USER_RE.match(name)) and name.strip() == name


def check_user_name(name: str) -> None:
    if not valid_user_name(name):
        raise SarcoscopeError(
            f"Invalid user name {name!r}: use 1-64 letters, digits, spaces or . @ + - _ "
            "(no spaces at either end)."
        )


def hash_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise SarcoscopeError(
            f"Passwords must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters long "
            f"(got {len(password)})."
        )
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> tuple[bool, str | None]:
    """Whether `password` is the user's, and a new hash when the stored one uses outdated parameters.

    An unknown user (None) takes the same time as a wrong password, so timing does not reveal names.
    """
    try:
        with _verifying:
            _hasher.verify(_dummy_hash() if user is None else user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if user is None:
        return False, None
    return True, _hasher.hash(password) if _hasher.check_needs_rehash(user.password_hash) else None


def token_fingerprint(token: str) -> str:
    """A stable digest of the access token that names its sessions' realm in the database; Argon2id, so
    that a copy of the database does not let anyone test guesses of the token quickly."""
    raw = hash_secret_raw(
        token.encode(),
        b"sarcoscope-token-realm",
        time_cost=3,
        memory_cost=65536,
        parallelism=4,
        hash_len=16,
        type=Type.ID,
    )
    return raw.hex()


def cli_actor() -> str:
    """The audit log's name for a change made on this machine's command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


def add_user(store: Store, name: str, password: str, role: Role = DEFAULT_ROLE) -> None:
    check_user_name(name)
    store.add_user(name, hash_password(password), actor=cli_actor(), role=role)


def no_admin(store: Store) -> str | None:
    """What to tell whoever runs the server when it has accounts and none is an admin (accounts made before
    roles existed are editors): then nobody can delete studies or read the audit log."""
    users = store.list_users()
    if not users or any(u.role == "admin" for u in users):
        return None
    return (
        "No account is an admin: nobody can delete studies or read the audit log in the web app "
        "(`sarcoscope users role NAME admin`)."
    )


def set_role(store: Store, name: str, role: Role) -> str:
    """Give the user another role, from their next request on (their sessions go on); the role they had."""
    return store.set_role(name, role, actor=cli_actor())


def change_password(store: Store, name: str, password: str) -> None:
    """Set a new password; the user's open sessions end."""
    store.set_password(name, hash_password(password), actor=cli_actor())


def remove_user(store: Store, name: str) -> None:
    """Delete the account and end its sessions (its name stays in the audit log and label history)."""
    store.remove_user(name, actor=cli_actor())
