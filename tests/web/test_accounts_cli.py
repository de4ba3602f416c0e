"""`sarcoscope users ...` and the token options of `sarcoscope serve`: passwords and tokens never on argv."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.errors import SarcoscopeError
from sarcoscope.store import Store
from sarcoscope.web.settings import load_token

runner = CliRunner()


def _invoke(*args: object, stdin: str | None = None, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin, env=env)


def _user_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert "error" in result.output.lower() and fragment in result.output, result.output
    assert "Traceback" not in result.output


def test_users_add_list_passwd_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = _invoke("users", "add", "dr. alice", "--data-dir", data, "--password-stdin", stdin="first-password\n")
    assert r.exit_code == 0 and "added" in r.output and "restart" in r.output
    r = _invoke("users", "add", "bob", "--data-dir", data, stdin="bob-password-1\nbob-password-1\n")  # prompt
    assert r.exit_code == 0 and "restart" not in r.output
    r = _invoke("users", "list", "--data-dir", data)
    assert r.exit_code == 0 and "dr. alice" in r.output and "bob" in r.output and "never" in r.output
    _user_error(
        _invoke("users", "add", "bob", "--data-dir", data, "--password-stdin", stdin="x" * 12), "exists"
    )
    _user_error(
        _invoke("users", "add", "carol", "--data-dir", data, "--password-stdin", stdin="short\n"), "10-1024"
    )
    _user_error(
        _invoke("users", "add", "a/b", "--data-dir", data, "--password-stdin", stdin="x" * 12), "Invalid"
    )
    r = _invoke("users", "add", "carol", "a-password-on-argv", "--data-dir", data)
    assert r.exit_code == 2 and "unexpected extra argument" in r.output.lower()  # never taken from argv

    store = Store(data)
    old_hash = store.get_user("bob").password_hash
    store.close()
    r = _invoke("users", "passwd", "bob", "--data-dir", data, "--password-stdin", stdin="bob-password-2\n")
    assert r.exit_code == 0 and "sessions have ended" in r.output
    _user_error(
        _invoke("users", "passwd", "nobody", "--data-dir", data, "--password-stdin", stdin="x"), "No user"
    )
    assert _invoke("users", "remove", "dr. alice", "--data-dir", data).exit_code == 0
    _user_error(_invoke("users", "remove", "dr. alice", "--data-dir", data), "No user")

    store = Store(data)
    assert [u.name for u in store.list_users()] == ["bob"]
    assert store.get_user("bob").password_hash != old_hash
    events = [(e.actor.split(":")[0], e.action) for e in reversed(store.audit_events())]
    assert events == [
        ("cli", "user-add"),
        ("cli", "user-add"),
        ("cli", "user-passwd"),
        ("cli", "user-remove"),
    ]
    store.close()


def test_users_roles(tmp_path: Path) -> None:
    """`users add --role` (editor by default), `users role NAME ROLE` (audited like the other changes) and
    `users list` showing the roles; a role that is none of them is refused before a password is asked."""
    data, pw = tmp_path / "data", "p" * 12
    r = _invoke("users", "add", "vera", "--role", "viewer", "--data-dir", data, "--password-stdin", stdin=pw)
    assert r.exit_code == 0 and "added (viewer)" in r.output and "No account is an admin" in r.output
    r = _invoke("users", "add", "eddie", "--data-dir", data, "--password-stdin", stdin=pw)
    assert r.exit_code == 0 and "added (editor)" in r.output
    _user_error(_invoke("users", "add", "x", "--role", "owner", "--data-dir", data), "Unknown role 'owner'")
    r = _invoke("users", "role", "eddie", "admin", "--data-dir", data)
    assert r.exit_code == 0 and "eddie: admin (was editor)" in r.output and "next request" in r.output
    assert "No account is an admin" not in r.output
    _user_error(_invoke("users", "role", "eddie", "root", "--data-dir", data), "Unknown role 'root'")
    _user_error(_invoke("users", "role", "nobody", "viewer", "--data-dir", data), "No user 'nobody'")
    r = _invoke("users", "list", "--data-dir", data)
    cells = [line.split() for line in r.output.splitlines()]  # "│ eddie │ admin │ ..."
    rows = {c[1]: c[3] for c in cells if c[1:2] in (["eddie"], ["vera"])}
    assert rows == {"eddie": "admin", "vera": "viewer"}, r.output

    store = Store(data)
    events = [(e.actor.split(":")[0], e.action, e.details) for e in reversed(store.audit_events())]
    store.close()
    assert events == [
        ("cli", "user-add", {"user": "vera", "role": "viewer"}),
        ("cli", "user-add", {"user": "eddie", "role": "editor"}),
        ("cli", "user-role", {"user": "eddie", "role": "admin", "was": "editor"}),
    ]


def test_users_list_without_accounts(tmp_path: Path) -> None:
    r = _invoke("users", "list", "--data-dir", tmp_path / "data")
    assert r.exit_code == 0 and "No accounts" in r.output


def test_serve_refuses_a_token_on_the_command_line(tmp_path: Path) -> None:
    r = _invoke("serve", "--data-dir", tmp_path / "d", "--token", "a-token-on-argv-123")
    _user_error(r, "--token is not accepted")
    assert "--token-file" in r.output and "SARCOSCOPE_TOKEN" in r.output


def test_serve_token_file_problems(tmp_path: Path) -> None:
    _user_error(
        _invoke("serve", "--data-dir", tmp_path / "d", "--token-file", tmp_path / "nope"), "Cannot read"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    _user_error(_invoke("serve", "--data-dir", tmp_path / "d", "--token-file", empty), "on one line")
    good = tmp_path / "token"
    good.write_text("a-good-token-1234\n")
    r = _invoke(
        "serve",
        "--data-dir",
        tmp_path / "d",
        "--token-file",
        good,
        env={"SARCOSCOPE_TOKEN": "another-token-5"},
    )
    _user_error(r, "not both")


def test_serve_with_accounts_refuses_the_shared_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _invoke("users", "add", "alice", "--data-dir", data, "--password-stdin", stdin="first-password\n")
    r = _invoke("serve", "--data-dir", data, env={"SARCOSCOPE_TOKEN": "a-shared-token-99"})
    _user_error(r, "has user accounts")


def test_load_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SARCOSCOPE_TOKEN", raising=False)
    assert load_token(None) is None
    monkeypatch.setenv("SARCOSCOPE_TOKEN", "from-the-environment")
    assert load_token(None) == "from-the-environment"
    monkeypatch.delenv("SARCOSCOPE_TOKEN")
    path = tmp_path / "token"
    path.write_text("  from-a-file-123 \n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert load_token(path) == "from-a-file-123"
    assert caplog.records == []
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_token(path)
    assert "readable by other users" in caplog.text
    path.write_text("two\nlines\n")
    with pytest.raises(SarcoscopeError, match="one line"):
        load_token(path)


def test_the_first_account_is_an_admin_unless_told_otherwise(tmp_path: Path) -> None:
    """Whoever sets up the server makes the first account: as an editor, nobody could delete a study, restore
    a deleted one or read the audit log until they found `users role`. Later accounts are editors."""
    data, pw = tmp_path / "data", "p" * 12
    r = _invoke("users", "add", "ada", "--data-dir", data, "--password-stdin", stdin=pw)
    assert r.exit_code == 0 and "added (admin)" in r.output and "No account is an admin" not in r.output
    r = _invoke("users", "add", "eddie", "--data-dir", data, "--password-stdin", stdin=pw)
    assert r.exit_code == 0 and "added (editor)" in r.output
    store = Store(data)
    assert {u.name: u.role for u in store.list_users()} == {"ada": "admin", "eddie": "editor"}
    store.close()
