"""User accounts and their roles, login sessions, and the failed-login counts that throttle password
guessing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sarcoscope.store.core import StoreCore
from sarcoscope.store.errors import ConflictError, NotFoundError, StoreError
from sarcoscope.store.models import DEFAULT_ROLE, ROLES, LoginFailure, LoginSession, Role, User, as_utc


class AccountsMixin(StoreCore):
    """Accounts, login sessions and login throttling."""

    # -- accounts -----------------------------------------------------------------------------------
    def has_users(self) -> bool:
        with self.session() as s:
            return s.scalar(select(User.id).limit(1)) is not None

    def get_user(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name))

    def list_users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    def add_user(self, name: str, password_hash: str, actor: str, role: Role = DEFAULT_ROLE) -> User:
        check_role(role)
        with self.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise ConflictError(f"User '{name}' already exists.")
            user = User(name=name, password_hash=password_hash, failed_logins=0, role=role)
            s.add(user)
            self._audit(s, actor, "user-add", None, {"user": name, "role": role})
        return user

    def user_role(self, name: str) -> str | None:
        """The account's role (None: no such account), read afresh at every request of its sessions."""
        with self.session() as s:
            return s.scalar(select(User.role).where(User.name == name))

    def set_role(self, name: str, role: Role, actor: str) -> str:
        """Give the account another role (its sessions keep going, with the new role from their next
        request); returns the role it had."""
        check_role(role)
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            before, user.role = user.role, role
            self._audit(s, actor, "user-role", None, {"user": name, "role": role, "was": before})
        return before

    def remove_user(self, name: str, actor: str) -> None:
        """Delete the account and end its sessions; its name stays in the audit log and label history."""
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            s.delete(user)
            s.execute(delete(LoginSession).where(LoginSession.user_name == name))
            self._audit(s, actor, "user-remove", None, {"user": name})

    def set_password(self, name: str, password_hash: str, actor: str) -> None:
        """Replace the password hash; the user's sessions end (whoever knew the old password is out)."""
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"No user '{name}'.")
            user.password_hash = password_hash
            user.password_changed_at = dt.datetime.now(dt.UTC)
            user.failed_logins = 0
            s.execute(delete(LoginSession).where(LoginSession.user_name == name))
            self._audit(s, actor, "user-passwd", None, {"user": name})

    def record_login(self, name: str, ok: bool, client: str | None, new_hash: str | None = None) -> None:
        """Count a login on the account (a success is audited and resets the failure count; failures
        are only counted); `new_hash` replaces a hash made with older Argon2 parameters."""
        now = dt.datetime.now(dt.UTC)
        with self.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            if user is None:
                return
            if ok:
                user.last_login_at, user.failed_logins = now, 0
                if new_hash is not None:
                    user.password_hash = new_hash
                self._audit(s, name, "login", None, None, client)
            else:
                user.failed_logins, user.last_failed_login_at = user.failed_logins + 1, now

    # -- login sessions -------------------------------------------------------------------------------
    def add_session(
        self,
        session_id: str,
        user_name: str,
        realm: str,
        expires_at: dt.datetime,
        client: str | None,
        account: User | None = None,
        created_at: dt.datetime | None = None,
    ) -> None:
        """Store a new session (by the digest of its token); expired sessions are deleted on the way.

        `account`: the account row whose password was checked. ConflictError when it was removed or its
        password set since (`users remove` / `users passwd` ending the user's sessions, committed while the
        login was checked): the check runs after the insert, on the row locked (FOR SHARE; SQLite holds
        the write lock from the deletion on), so such a change either comes first and is seen here, or
        comes after and deletes this session with the others."""
        now = dt.datetime.now(dt.UTC)
        with self.session() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < now))
            s.add(
                LoginSession(
                    id=session_id,
                    user_name=user_name,
                    realm=realm,
                    created_at=created_at or now,
                    expires_at=expires_at,
                    client=client,
                )
            )
            if account is not None:
                s.flush()
                current = s.execute(
                    select(User.id, User.password_changed_at)
                    .where(User.name == user_name)
                    .with_for_update(read=True)
                ).first()
                if current is None or tuple(current) != (account.id, account.password_changed_at):
                    raise ConflictError(f"The password of '{user_name}' was changed or the account removed.")

    def set_session_end(self, session_id: str, expires_at: dt.datetime) -> None:
        """Move a session's end to `expires_at`."""
        with self.session() as s:
            s.execute(update(LoginSession).where(LoginSession.id == session_id).values(expires_at=expires_at))

    def get_session(self, session_id: str) -> LoginSession | None:
        with self.session() as s:
            return s.get(LoginSession, session_id)

    def delete_session(self, session_id: str) -> LoginSession | None:
        with self.session() as s:
            row = s.get(LoginSession, session_id)
            if row is not None:
                s.delete(row)
            return row

    # -- login throttling -----------------------------------------------------------------------------
    def login_failures(self, keys: list[str], since: dt.datetime) -> dict[str, tuple[int, dt.datetime]]:
        """Failures per key counted since `since` (older windows count as none): (count, window start)."""
        with self.session() as s:
            rows = s.scalars(select(LoginFailure).where(LoginFailure.key.in_(keys)))
            return {r.key: (r.count, as_utc(r.window_start)) for r in rows if as_utc(r.window_start) >= since}

    def add_login_failure(self, keys: list[str], since: dt.datetime) -> dict[str, int]:
        """Count one failure for each key (a window older than `since` starts again); returns the
        new counts. Windows older than `since` are deleted, so the table holds at most one row per
        key that failed recently."""
        try:
            return self._count_failure(keys, since)
        except IntegrityError:  # a concurrent failure inserted the same key first: count on its row
            return self._count_failure(keys, since)

    def _count_failure(self, keys: list[str], since: dt.datetime) -> dict[str, int]:
        now = dt.datetime.now(dt.UTC)
        counts = {}
        with self.session() as s:
            self._forget_login_failures(s, since)
            for key in keys:
                row = s.get(LoginFailure, key)
                if row is None:
                    row = LoginFailure(key=key, count=0, window_start=now)
                    s.add(row)
                row.count += 1
                counts[key] = row.count
        return counts

    def clear_login_failures(self, key: str, since: dt.datetime | None = None) -> None:
        """Forget the failures of `key` (a successful login), and every window older than `since`."""
        with self.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.key == key))
            if since is not None:
                self._forget_login_failures(s, since)

    def forget_login_failures(self, since: dt.datetime) -> None:
        """Delete the failure counts of windows older than `since` (they count as none)."""
        with self.session() as s:
            self._forget_login_failures(s, since)

    @staticmethod
    def _forget_login_failures(s: Session, since: dt.datetime) -> None:
        s.execute(delete(LoginFailure).where(LoginFailure.window_start < since))


def check_role(role: str) -> None:
    """StoreError (a user's error: the CLI says it) for a role that is none of ROLES."""
    if role not in ROLES:
        raise StoreError(f"Unknown role '{role}': choose one of {', '.join(ROLES)}.")
