"""Accounts, sessions and login throttling of `sarcoscope serve`: whom the audit names, when logins end."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from web_synth import multipart

from sarcoscope.errors import SarcoscopeError
from sarcoscope.store import Store
from sarcoscope.store.models import LoginFailure, LoginSession, User
from sarcoscope.web import WebSettings, create_app
from sarcoscope.web.accounts import add_user, change_password, remove_user

ALICE, BOB = ("alice", "alice-password-1"), ("dr. bob", "bob-password-22")


def _with_accounts(data_dir: Path) -> None:
    """Alice is an admin (she reads the audit log), Bob an editor."""
    store = Store(data_dir)
    store.migrate()
    for (name, password), role in ((ALICE, "admin"), (BOB, "editor")):
        add_user(store, name, password, role)
    store.close()


@pytest.fixture
def accounts_app(tmp_path: Path) -> Iterator[TestClient]:
    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data"))
    with TestClient(app) as c:
        yield c
    app.state.ctx.store.close()


def _login(c: TestClient, user: str, password: str) -> int:
    return c.post("/api/session", json={"user": user, "password": password}).status_code


def _count(c: TestClient, model: type) -> int:
    with c.app.state.ctx.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def test_accounts_log_in_with_password_and_the_audit_names_the_account(
    accounts_app: TestClient, series: list[Path]
) -> None:
    c = accounts_app
    cfg = c.get("/api/config").json()
    assert cfg["auth_mode"] == "accounts" and cfg["auth_required"] is True and cfg["user"] is None
    r = c.get("/api/studies")
    assert r.status_code == 401 and "user name and password" in r.json()["detail"]
    r = c.post("/api/session", json={"user": "alice", "password": "wrong-password"})
    assert r.status_code == 401 and r.json()["detail"] == "Wrong user name or password."
    r = c.post("/api/session", json={"user": "nobody", "password": ALICE[1]})
    assert r.status_code == 401 and r.json()["detail"] == "Wrong user name or password."
    assert c.post("/api/session", json={"password": ALICE[1]}).status_code == 422
    assert c.get("/api/studies", headers={"Authorization": f"Bearer {ALICE[1]}"}).status_code == 401

    r = c.post("/api/session", json={"user": "alice", "password": ALICE[1]})
    assert r.status_code == 200 and r.json()["user"] == "alice"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert "Max-Age=43199" in cookie or "Max-Age=43200" in cookie  # 12 hours by default
    assert c.get("/api/config").json()["user"] == "alice"
    study = c.post("/api/studies", files=multipart(series), headers={"X-Sarcoscope-User": "mallory"}).json()
    assert study["created_by"] == "alice"
    events = c.get(f"/api/studies/{study['id']}/audit").json()
    assert [(e["actor"], e["action"]) for e in events] == [("alice", "upload")]
    # The stored hash is Argon2id; the password itself is nowhere in the database.
    user = c.app.state.ctx.store.get_user("alice")
    assert user.password_hash.startswith("$argon2id$") and ALICE[1] not in user.password_hash
    assert user.last_login_at is not None and user.failed_logins == 0  # reset by the successful login


def test_who_looked_at_a_study_s_images_is_in_the_audit_log_once_per_sitting(
    accounts_app: TestClient, series: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An access audit asks who saw which patient's CT: the viewer's tiles, the label editor's slices and
    its HU and body layers are recorded for the signed-in user, once per session and study (not once per
    tile), again in a new session or after half an hour without a look; a refused request is not."""
    from sarcoscope.web import context

    c = accounts_app
    assert _login(c, *ALICE) == 200
    sid = c.post("/api/studies", files=multipart(series)).json()["id"]

    def views() -> list[tuple[str, str]]:
        events = c.app.state.ctx.store.audit_events(sid)
        return [(e.actor, e.client or "") for e in reversed(events) if e.action == "view-images"]

    for z in range(3):
        for path in (f"image/axial/{z}", f"image/coronal/{z}", f"hu/{z}", f"body/{z}"):
            assert c.get(f"/api/studies/{sid}/{path}").status_code == 200
    assert views() == [("alice", "testclient")]
    with TestClient(c.app) as other:  # bob, at another workstation
        assert other.post("/api/session", json={"user": BOB[0], "password": BOB[1]}).status_code == 200
        assert other.get(f"/api/studies/{sid}/hu/1").status_code == 200
        assert other.get("/api/studies/" + "0" * 32 + "/hu/1").status_code == 404
    with TestClient(c.app) as nobody:  # not signed in: no HU, and no view recorded
        r = nobody.get(f"/api/studies/{sid}/hu/1")
        assert r.status_code == 401 and "Login required" in r.json()["detail"]
    assert views() == [("alice", "testclient"), ("dr. bob", "testclient")]
    assert c.get(f"/api/studies/{sid}/image/axial/4").status_code == 200  # alice's sitting: recorded
    assert len(views()) == 2
    monkeypatch.setattr(context, "VIEW_AGAIN_AFTER", 0)  # half an hour later
    assert c.get(f"/api/studies/{sid}/image/axial/4").status_code == 200
    assert len(views()) == 3
    monkeypatch.undo()
    c.delete("/api/session")
    assert _login(c, *ALICE) == 200  # a new session
    assert c.get(f"/api/studies/{sid}/image/axial/4").status_code == 200
    assert views() == [("alice", "testclient"), ("dr. bob", "testclient")] + [("alice", "testclient")] * 2


def test_who_was_shown_a_study_s_results_is_in_the_audit_log_once_per_sitting(
    accounts_app: TestClient, series: list[Path]
) -> None:
    """A study's measurements (SMI, sarcopenia, the patient's facts applied: GET .../analysis) and its label
    maps (GET .../labels) were served without an audit event, while its images and every export are
    recorded: any signed-in user or script could read every patient's results and leave no trace. Each is
    now `view-results`, once per sitting and study as `view-images`; a refused request is not."""
    c = accounts_app
    assert _login(c, *ALICE) == 200
    sid = c.post("/api/studies", files=multipart(series)).json()["id"]
    assert c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5}).status_code == 200
    assert c.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200

    def shown() -> list[tuple[str, str]]:
        events = c.app.state.ctx.store.audit_events(sid)
        return [(e.actor, e.action) for e in reversed(events) if e.action.startswith("view-")]

    assert c.get(f"/api/studies/{sid}/analysis", params={"version": 9}).status_code == 404
    assert shown() == []
    for _ in range(2):
        assert c.get(f"/api/studies/{sid}/analysis").status_code == 200
        assert c.get(f"/api/studies/{sid}/labels").status_code == 200
    assert shown() == [("alice", "view-results")]
    assert c.get(f"/api/studies/{sid}/hu/5").status_code == 200  # the images: an event of their own
    assert shown() == [("alice", "view-results"), ("alice", "view-images")]
    with TestClient(c.app) as other:  # bob's script, reading the measurements only
        assert other.post("/api/session", json={"user": BOB[0], "password": BOB[1]}).status_code == 200
        assert other.get(f"/api/studies/{sid}/analysis").status_code == 200
    assert shown()[-1] == ("dr. bob", "view-results") and len(shown()) == 3


def test_logout_revokes_the_session_on_the_server(accounts_app: TestClient) -> None:
    c = accounts_app
    assert _login(c, *ALICE) == 200
    stolen = c.cookies.get("sarcoscope_session")
    assert c.delete("/api/session").status_code == 200
    c.cookies.clear()
    c.cookies.set("sarcoscope_session", stolen)  # a copy of the cookie taken before the logout
    r = c.get("/api/studies")
    assert r.status_code == 401 and "Login required" in r.json()["detail"]
    assert _count(c, LoginSession) == 0
    actions = [e.action for e in c.app.state.ctx.store.audit_events()]
    assert actions[:2] == ["logout", "login"]


def test_sessions_expire(accounts_app: TestClient) -> None:
    c = accounts_app
    assert _login(c, *ALICE) == 200
    assert c.get("/api/studies").status_code == 200
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with c.app.state.ctx.store.session() as s:
        s.execute(update(LoginSession).values(expires_at=past))
    assert c.get("/api/studies").status_code == 401
    assert _count(c, LoginSession) == 0  # the expired session is deleted when it is presented


def test_a_session_ends_after_its_user_did_nothing_for_the_idle_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed-in page left on an unattended workstation (a ward, a reading room) kept its session, and so
    the patients' data on screen, for the whole --session-hours (12 h): nothing ended it for lack of use.
    A session now ends after idle_minutes (30) without a request of its user; each request moves that end
    on, up to session_hours after the login. The page asking whether its session has ended (GET
    /api/config) does not count as use; its activity ping (GET /api/session) does."""
    from sarcoscope.web import auth

    clock = [dt.datetime.now(dt.UTC)]
    monkeypatch.setattr(auth, "_now", lambda: clock[0])

    def later(minutes: float) -> None:
        clock[0] += dt.timedelta(minutes=minutes)

    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data", session_hours=1.0))
    with TestClient(app) as c:
        r = c.post("/api/session", json={"user": "alice", "password": ALICE[1]})
        assert r.status_code == 200
        max_age = int(r.headers["set-cookie"].split("Max-Age=")[1].split(";")[0])
        assert 3500 < max_age <= 3600  # the cookie is kept for the session's most (the server ends it sooner)
        assert c.get("/api/config").json()["session_seconds_left"] == pytest.approx(30 * 60, abs=5)
        later(20)
        assert c.get("/api/studies").status_code == 200  # in use: ends 30 minutes from now
        later(20)
        config = c.get("/api/config").json()  # the page's own question, 40 minutes in
        assert config["user"] == "alice" and config["session_seconds_left"] == pytest.approx(10 * 60, abs=5)
        later(11)  # 31 minutes without a request of hers
        assert c.get("/api/config").json()["user"] is None
        r = c.get("/api/studies")
        assert r.status_code == 401 and "sign in" in r.json()["detail"]
        assert _count(c, LoginSession) == 0

        assert _login(c, *ALICE) == 200
        later(29)
        r = c.get("/api/session")  # the page's ping while she paints (no other request)
        assert r.json() == {
            "user": "alice",
            "role": "admin",
            "denied": {},
            "session_seconds_left": pytest.approx(30 * 60, abs=5),
        }
        later(29)
        assert c.get("/api/studies").status_code == 200
        later(29)  # in use all along, but 87 minutes after the login: session_hours (1) is the most
        assert c.get("/api/studies").status_code == 401

        assert _login(c, *ALICE) == 200  # a session made by a version without the idle end: 1 h
        with c.app.state.ctx.store.session() as s:
            s.execute(update(LoginSession).values(expires_at=clock[0] + dt.timedelta(hours=1)))
        assert c.get("/api/studies").status_code == 200  # its next request: it ends idle from now on
        assert c.get("/api/config").json()["session_seconds_left"] == pytest.approx(30 * 60, abs=5)
    app.state.ctx.store.close()


def test_session_length_is_configurable_and_cookies_are_secure_over_https(tmp_path: Path) -> None:
    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data", session_hours=0.5))
    with TestClient(app, base_url="https://sarcoscope.example") as c:
        r = c.post("/api/session", json={"user": "alice", "password": ALICE[1]})
        assert "Secure" in r.headers["set-cookie"] and "Max-Age=179" in r.headers["set-cookie"]
        expires = dt.datetime.fromisoformat(r.json()["expires_at"])
        assert dt.timedelta(minutes=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=30)
        assert "Secure" in c.delete("/api/session").headers["set-cookie"]
    app.state.ctx.store.close()
    # Behind a proxy that terminates TLS without saying so, the setting marks cookies Secure.
    app = create_app(WebSettings(data_dir=tmp_path / "data", secure_cookies=True))
    with TestClient(app) as c:
        r = c.post("/api/session", json={"user": "alice", "password": ALICE[1]})
        assert "Secure" in r.headers["set-cookie"]
    app.state.ctx.store.close()


def test_password_change_and_removal_end_the_users_sessions(accounts_app: TestClient) -> None:
    c = accounts_app
    store = c.app.state.ctx.store
    assert _login(c, *ALICE) == 200
    change_password(store, "alice", "a-new-password-3")
    assert c.get("/api/studies").status_code == 401
    assert _login(c, *ALICE) == 401
    assert _login(c, "alice", "a-new-password-3") == 200
    remove_user(store, "alice")
    assert c.get("/api/studies").status_code == 401
    assert _login(c, "alice", "a-new-password-3") == 401
    with pytest.raises(SarcoscopeError, match="10-1024 characters"):
        change_password(store, "dr. bob", "short")
    with pytest.raises(SarcoscopeError, match="Invalid user name"):
        add_user(store, " padded", "long-enough-password")


@pytest.mark.parametrize("change", ["passwd", "remove"])
def test_a_login_checked_while_the_password_changes_gets_no_session(
    accounts_app: TestClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """`users passwd` or `users remove` (another process) committing while a login with the old password is
    being checked: that login must not start a session that outlives the change, which was meant to end
    them all (the session would last its 12 hours)."""
    from sarcoscope.web import auth

    store = accounts_app.app.state.ctx.store
    real_verify = auth.verify_password

    def verify_while_the_admin_acts(user: object, password: str) -> tuple[bool, str | None]:
        answer = real_verify(user, password)  # the old hash, read before the change: it matches
        if change == "passwd":
            change_password(store, "alice", "a-new-password-3")
        else:
            remove_user(store, "alice")
        return answer

    monkeypatch.setattr(auth, "verify_password", verify_while_the_admin_acts)
    assert _login(accounts_app, *ALICE) == 401
    assert accounts_app.get("/api/studies").status_code == 401
    with store.session() as s:
        assert s.scalar(select(func.count()).where(LoginSession.user_name == "alice")) == 0


def test_an_outdated_hash_is_replaced_at_login(accounts_app: TestClient) -> None:
    c = accounts_app
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(ALICE[1])
    with c.app.state.ctx.store.session() as s:
        s.execute(update(User).where(User.name == "alice").values(password_hash=weak))
    assert _login(c, *ALICE) == 200
    stored = c.app.state.ctx.store.get_user("alice").password_hash
    assert stored != weak and not PasswordHasher().check_needs_rehash(stored)


def test_failed_logins_are_throttled_per_user_with_retry_after(accounts_app: TestClient) -> None:
    c = accounts_app
    for _ in range(5):
        assert _login(c, "alice", "wrong-password") == 401
    r = c.post("/api/session", json={"user": "alice", "password": ALICE[1]})  # right, but locked now
    assert r.status_code == 429 and "Too many failed logins for this user name" in r.json()["detail"]
    assert 14 * 60 < int(r.headers["retry-after"]) <= 15 * 60 + 1
    assert _login(c, *BOB) == 200  # another account from the same client is not locked
    # Failures are counted, not written to the audit log one by one: one event when the limit is hit.
    events = c.app.state.ctx.store.audit_events()
    assert [e.action for e in events].count("login-throttled") == 1
    assert not any(e.action == "login-failed" for e in events)
    assert c.app.state.ctx.store.get_user("alice").failed_logins == 5
    # When the window has passed, alice can log in again.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    with c.app.state.ctx.store.session() as s:
        s.execute(update(LoginFailure).values(window_start=past))
    assert _login(c, *ALICE) == 200


def test_guesses_sent_at_once_are_throttled_like_guesses_one_by_one(
    accounts_app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of wrong passwords sent together (each password check takes a fraction of a second) must
    not get more of them checked than the limit: only 5 of 12 are answered 'wrong', the others 429."""
    from sarcoscope.web import auth

    checked = []
    real_verify = auth.verify_password

    def slow_verify(user: object, password: str) -> tuple[bool, str | None]:
        checked.append(password)
        time.sleep(0.2)  # Argon2 at a busy server's pace: the burst arrives before any failure is counted
        return real_verify(user, password)

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    answers: list[int] = []

    def guess(i: int) -> None:
        try:
            accounts_app.app.state.ctx.auth.login("alice", f"guess-{i}-password", "192.0.2.7")
        except HTTPException as exc:
            answers.append(exc.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [401] * 5 + [429] * 7 and len(checked) == 5
    assert _login(accounts_app, *ALICE) == 429  # and alice's account is locked for the window


def test_a_password_typed_as_the_user_name_is_not_kept_in_the_audit_log(accounts_app: TestClient) -> None:
    """A password typed into the name field (a password manager filling the wrong field) until the name is
    throttled: the audit log, which every user reads and which is kept for good, does not hold it; a
    throttled account is still named."""
    for _ in range(5):
        assert _login(accounts_app, "alice-password-1", "alice-password-1") == 401
        assert _login(accounts_app, "dr. bob", "wrong-password") == 401
    assert _login(accounts_app, *ALICE) == 200
    events = accounts_app.get("/api/audit").json()
    throttled = sorted(e["details"]["key"] for e in events if e["action"] == "login-throttled")
    assert throttled == ["user:(no such account)", "user:dr. bob"]
    assert "alice-password-1" not in json.dumps(events)


def test_a_password_typed_as_the_user_name_is_not_stored_and_failures_are_forgotten(tmp_path: Path) -> None:
    """The failed-login counters are in the database (and its backups): a name that is no account, often a
    password typed into the name field, is counted under a code that names nothing (keyed for this run of
    the server), and a counter whose window has ended is deleted at the next login and at the next start,
    not kept until some later failure."""
    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data"))
    c = TestClient(app)
    for _ in range(5):
        assert _login(c, "alice-password-1", "alice-password-1") == 401
    assert _login(c, "alice-password-1", "x" * 10) == 429  # still throttled by that name

    def keys() -> set[str]:
        with app.state.ctx.store.session() as s:
            return set(s.scalars(select(LoginFailure.key)))

    assert len(keys()) == 2 and not any("alice-password-1" in k for k in keys())
    with app.state.ctx.store.session() as s:  # the window ends
        s.execute(update(LoginFailure).values(window_start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    assert _login(c, *ALICE) == 200
    assert keys() == set()
    assert _login(c, "alice", "wrong-password") == 401
    with app.state.ctx.store.session() as s:
        s.execute(update(LoginFailure).values(window_start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    app.state.ctx.store.close()
    app = create_app(WebSettings(data_dir=tmp_path / "data"))  # a restart, before any login
    assert keys() == set()
    app.state.ctx.store.close()


def test_failed_logins_are_throttled_per_client_and_stay_bounded(tmp_path: Path) -> None:
    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data", max_failed_logins_per_client=8))
    c = TestClient(app)
    for i in range(8):  # four (unknown) names, each below the per-user limit: the client limit catches it
        assert _login(c, f"guess{i % 4}", "wrong-password") == 401
    r = c.post("/api/session", json={"user": "dr. bob", "password": BOB[1]})
    assert r.status_code == 429 and "your address" in r.json()["detail"] and r.headers["retry-after"]
    for _ in range(30):
        assert _login(c, "guess0", "wrong-password") == 429  # refused before any password check
    # 38 failed logins: one counter row per user name and client, and one audit event for the client
    # reaching its limit (besides the two accounts being added).
    assert _count(c, LoginFailure) == 5
    actions = [e.action for e in c.app.state.ctx.store.audit_events()]
    assert sorted(actions) == ["login-throttled", "user-add", "user-add"]
    app.state.ctx.store.close()


def test_sessions_of_another_mode_or_token_are_not_honoured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = create_app(WebSettings(data_dir=data))  # open mode: people name themselves
    with TestClient(app) as c:
        assert c.post("/api/session", json={"user": "alice"}).status_code == 200
        assert c.get("/api/config").json()["user"] == "alice"
        open_cookie = c.cookies.get("sarcoscope_session")
    app.state.ctx.store.close()

    app = create_app(WebSettings(data_dir=data, token="first-token-123"))
    with TestClient(app) as c:
        c.cookies.clear()
        c.cookies.set("sarcoscope_session", open_cookie)
        assert c.get("/api/studies").status_code == 401  # a self-named session is no login
        r = c.post("/api/session", json={"token": "first-token-123"})
        assert r.status_code == 200
        token_cookie = r.cookies["sarcoscope_session"]
    app.state.ctx.store.close()

    app = create_app(WebSettings(data_dir=data, token="second-token-456"))
    with TestClient(app) as c:
        c.cookies.clear()
        c.cookies.set("sarcoscope_session", token_cookie)
        assert c.get("/api/studies").status_code == 401  # a new token ends the old token's sessions
    app.state.ctx.store.close()

    _with_accounts(data)
    with pytest.raises(SarcoscopeError, match="has user accounts"):
        create_app(WebSettings(data_dir=data, token="second-token-456"))
    app = create_app(WebSettings(data_dir=data))
    with TestClient(app) as c:
        for cookie in (open_cookie, token_cookie):
            c.cookies.clear()
            c.cookies.set("sarcoscope_session", cookie)
            assert c.get("/api/studies").status_code == 401
    app.state.ctx.store.close()


def test_wrong_bearer_tokens_are_throttled(tmp_path: Path) -> None:
    app = create_app(WebSettings(data_dir=tmp_path / "d", token="the-right-token"))
    with TestClient(app) as c:
        for _ in range(20):
            assert c.get("/api/studies", headers={"Authorization": "Bearer guess"}).status_code == 401
        r = c.get("/api/studies", headers={"Authorization": "Bearer the-right-token"})
        assert r.status_code == 429 and r.headers["retry-after"]
    app.state.ctx.store.close()


def test_a_network_server_without_accounts_gets_a_token(tmp_path: Path) -> None:
    settings = WebSettings(data_dir=tmp_path / "d")
    app = create_app(settings, require_login=True)
    with TestClient(app) as c:
        assert c.get("/api/config").json()["auth_mode"] == "token" and len(settings.token or "") >= 20
        assert c.get("/api/studies").status_code == 401
    app.state.ctx.store.close()
    _with_accounts(tmp_path / "d2")
    settings = WebSettings(data_dir=tmp_path / "d2")
    app = create_app(settings, require_login=True)
    assert app.state.ctx.auth.mode == "accounts" and settings.token is None
    app.state.ctx.store.close()


def test_one_server_per_data_folder(tmp_path: Path) -> None:
    app = create_app(WebSettings(data_dir=tmp_path / "d"))
    with pytest.raises(SarcoscopeError, match="Another sarcoscope server"):
        create_app(WebSettings(data_dir=tmp_path / "d"))
    app.state.ctx.store.close()
    create_app(WebSettings(data_dir=tmp_path / "d")).state.ctx.store.close()


def test_forwarded_headers_count_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """As `serve` runs it: uvicorn's proxy-header middleware trusting 127.0.0.1."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    _with_accounts(tmp_path / "data")
    app = create_app(WebSettings(data_dir=tmp_path / "data"))
    behind_tls = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    wrong = {"user": "alice", "password": "wrong-password"}
    with TestClient(behind_tls, client=("127.0.0.1", 40000)) as proxy:
        r = proxy.post("/api/session", json={"user": "alice", "password": ALICE[1]}, headers=forwarded)
        assert "Secure" in r.headers["set-cookie"]
        assert proxy.post("/api/session", json=wrong, headers=forwarded).status_code == 401
    with TestClient(behind_tls, client=("198.51.100.7", 40000)) as direct:  # not the proxy: not believed
        r = direct.post("/api/session", json={"user": "alice", "password": ALICE[1]}, headers=forwarded)
        assert "Secure" not in r.headers["set-cookie"]
        assert direct.post("/api/session", json=wrong, headers=forwarded).status_code == 401
    with app.state.ctx.store.session() as s:
        keys = set(s.scalars(select(LoginFailure.key)))
    assert keys == {"user:alice", "client:203.0.113.9", "client:198.51.100.7"}
    app.state.ctx.store.close()


def test_the_server_log_holds_no_search_criteria_or_uids(tmp_path: Path, series: list[Path]) -> None:
    """`serve` as a user runs it: the access log shows requests without query strings or DICOM UIDs, and
    no library logs the UIDs of the images a SEG or SR is made from."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    import httpx
    import pydicom

    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sarcoscope.cli", "serve", "--data-dir", str(tmp_path / "d")]
    cmd += ["--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/api/config", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(f"{base}/api/studies?q=Jansen", timeout=5).close()
        with pytest.raises(urllib.error.HTTPError):  # no PACS configured: 409, logged all the same
            urllib.request.urlopen(f"{base}/api/pacs/studies/1.2.826.0.1.3680043.2.77/series", timeout=5)
        with httpx.Client(base_url=base, timeout=60) as c:
            sid = c.post("/api/studies", files=multipart(series)).json()["id"]
            c.put(f"/api/studies/{sid}/selection", json={"mode": "slice", "first": 5})
            assert c.post(f"/api/studies/{sid}/segment", json={"engine": "threshold"}).status_code == 200
            for fmt in ("dicom-seg", "dicom-sr"):
                assert c.get(f"/api/studies/{sid}/export/{fmt}").status_code == 200
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    assert '"GET /api/studies HTTP/1.1" 200' in log and '"GET /api/pacs/studies/<uid>/series' in log
    assert '"GET /api/studies/' in log and '/export/dicom-sr HTTP/1.1" 200' in log
    assert "Jansen" not in log and "1.2.826.0.1.3680043.2.77" not in log
    assert not [uid for uid in uids if uid in log], log
