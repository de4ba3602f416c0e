"""A DICOMweb server that wants an OAuth bearer token (a cloud or gateway PACS): the token from the
environment or a file is sent, a token file rewritten by a sidecar is read again after a 401, a refused
token gets one clear message, basic auth and a token together are refused, and the token is never shown."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from local_http import StreamingHandler, answer, ct_series, retrieved, serve
from typer.testing import CliRunner

from sarcoscope.cli import app
from sarcoscope.errors import InputError
from sarcoscope.pacs.dicomweb import DICOMwebServer, DICOMwebServerError
from sarcoscope.pacs.dicomweb_auth import TOKEN_ENV, TOKEN_FILE_ENV

OLD, NEW = "eyJold.expired-token_1", "eyJnew.fresh-token_2"


class Pacs:
    """What the server accepts (`token`) and the Authorization headers it was sent, in order."""

    def __init__(self, files: list[Path]) -> None:
        self.token = OLD
        self.refusal = 401  # 403: a token the server knows, without the permission
        self.files = files
        self.sent: list[str | None] = []
        ds = pydicom.dcmread(files[0])
        self.study, self.series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture
def pacs(tmp_path: Path, one_slice_ct: Callable[[Path, str], list[Path]]) -> Iterator[tuple[Pacs, str]]:
    """A DICOMweb server holding one one-slice CT study, answering only `Bearer <pacs.token>`."""
    state = Pacs(one_slice_ct(tmp_path / "ct", "P-1"))

    class Handler(StreamingHandler):
        def do_GET(self) -> None:
            state.sent.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self.send_error(401)
                return
            if state.refusal == 403:
                self.send_error(403)
                return
            path = self.path.split("?", 1)[0]
            if path == "/studies":
                answer(self, b'[{"0020000D": {"vr": "UI", "Value": ["%s"]}}]' % state.study.encode())
            elif path == f"/studies/{state.study}/series":
                answer(self, ct_series(state.series, len(state.files)))
            elif path == f"/studies/{state.study}/series/{state.series}":
                retrieved(self, state.files)
            else:
                self.send_error(404)

    with serve(Handler) as url:
        yield state, url


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token unless a test sets one; what --dicomweb-token-file sets in the environment is undone after
    the test (empty counts as unset)."""
    monkeypatch.setenv(TOKEN_ENV, "")
    monkeypatch.setenv(TOKEN_FILE_ENV, "")


def test_the_token_from_the_environment_is_sent_and_without_it_the_refusal_says_why(
    pacs: tuple[Pacs, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = pacs
    with pytest.raises(DICOMwebServerError, match=r"asks for a login .*HTTP 401.*bearer token") as refused:
        DICOMwebServer(url).search_studies({})
    assert refused.value.status == 401
    monkeypatch.setenv(TOKEN_ENV, OLD)
    assert [s.study_uid for s in DICOMwebServer(url).search_studies({})] == [state.study]
    assert state.sent[-1] == f"Bearer {OLD}"
    state.token = NEW  # it expired; the environment's token cannot be renewed
    with pytest.raises(DICOMwebServerError, match=r"refused the bearer token .*wrong or expired") as refused:
        DICOMwebServer(url).search_studies({})
    assert OLD not in str(refused.value) and NEW not in str(refused.value)
    assert refused.value.status == 401
    monkeypatch.setenv(TOKEN_ENV, NEW)
    state.refusal = 403
    with pytest.raises(
        DICOMwebServerError, match=r"refused the bearer token .*HTTP 403.*permission"
    ) as refused:
        DICOMwebServer(url).search_studies({})
    assert NEW not in str(refused.value) and refused.value.status == 403


def test_a_token_file_rewritten_by_a_sidecar_is_read_again_after_a_401(
    pacs: tuple[Pacs, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = pacs
    token_file = tmp_path / "token"
    token_file.write_text(OLD + "\n")
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token_file))
    server = DICOMwebServer(url)
    assert server.ct_series_uid(state.study) == state.series
    state.token = NEW  # the token expired, the sidecar has not written the new one yet
    with pytest.raises(DICOMwebServerError, match=r"refused the bearer token .*\(its file was read again\)"):
        server.search_studies({})
    token_file.write_text(NEW + "\n")  # now it has: the same server, not restarted, uses it
    state.sent.clear()
    assert server.retrieve_series(state.study, state.series, tmp_path / "got", expected=1) == 1
    # the retrieval (a streamed answer, whose end is checked) got a 401, was sent again with the new token
    assert state.sent == [f"Bearer {OLD}", f"Bearer {NEW}"]
    assert server.ct_series_uid(state.study) == state.series and state.sent[-1] == f"Bearer {NEW}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_a_token_file_other_users_can_read_is_warned_about_once(
    pacs: tuple[Pacs, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: int,
) -> None:
    state, url = pacs
    token_file = tmp_path / "token"
    token_file.write_text(OLD + "\n")
    token_file.chmod(mode)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token_file))
    with caplog.at_level(logging.WARNING):
        server = DICOMwebServer(url)
        state.token = NEW  # a 401: the file is read again, without a second warning
        with pytest.raises(DICOMwebServerError):
            server.search_studies({})
    warned = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert warned == (
        []
        if mode == 0o600
        else [
            f"The DICOMweb token file {token_file} is readable by other users (mode {mode:o}): chmod 600 it."
        ]
    )
    assert OLD not in caplog.text and NEW not in caplog.text


def test_basic_auth_and_a_token_together_are_refused(
    pacs: tuple[Pacs, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = pacs
    host = url.removeprefix("http://")
    token_file = tmp_path / "token"
    token_file.write_text(OLD)
    runner = CliRunner()
    env = {TOKEN_FILE_ENV: str(token_file)}
    both = f"http://radiology:s3cret@{host}"
    for args in (
        ["analyze", f"dicomweb+{both}/studies/1.2.3", "-o", str(tmp_path / "out")],
        ["serve", "--data-dir", str(tmp_path / "data"), "--dicomweb-url", both],
        ["batch", f"dicomweb+{both}", "--query", "PatientID=P-1", "-o", str(tmp_path / "b")],
        ["listen", "-o", str(tmp_path / "node"), "--engine", "threshold", "--push-dicomweb", both],
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 1, result.output
        assert "both HTTP basic auth" in result.output and "give one of them" in result.output
        assert "s3cret" not in result.output and OLD not in result.output
    monkeypatch.setenv(TOKEN_ENV, OLD)  # the token in the environment and a file: which one?
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token_file))
    with pytest.raises(InputError, match=r"one way.*not both") as refused:
        DICOMwebServer(url)
    assert OLD not in str(refused.value)


def test_the_token_is_never_shown(
    pacs: tuple[Pacs, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """analyze with the right token (the report, its logs) and with an expired one (the message, --debug's
    traceback): the token is nowhere."""
    state, url = pacs
    token_file = tmp_path / "token"
    token_file.write_text(OLD)
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    address = f"dicomweb+{url}/studies/{state.study}"
    ok = runner.invoke(
        app,
        [
            "analyze",
            address,
            "-o",
            str(tmp_path / "out"),
            "--engine",
            "threshold",
            "--no-quality",
            "--dicomweb-token-file",
            str(token_file),
        ],
    )
    assert ok.exit_code == 0, ok.output
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written and state.sent[-1] == f"Bearer {OLD}"
    state.token = NEW
    failed = runner.invoke(
        app,
        [
            "--debug",
            "analyze",
            address,
            "-o",
            str(tmp_path / "out2"),
            "--dicomweb-token-file",
            str(token_file),
        ],
    )
    assert failed.exit_code != 0 and "refused the bearer token" in failed.output
    shown = ok.output + failed.output + caplog.text + repr(failed.exception)
    shown += "".join(p.read_bytes().decode("latin-1") for p in written)
    assert OLD not in shown and "eyJold" not in shown


def test_the_web_app_sends_the_token_and_its_answers_and_audit_log_never_hold_it(
    pacs: tuple[Pacs, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from sarcoscope.web import WebSettings, create_app

    state, url = pacs
    token_file = tmp_path / "token"
    token_file.write_text(OLD)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(token_file))
    with TestClient(create_app(WebSettings(data_dir=tmp_path / "data", dicomweb_url=url))) as client:
        found = client.get("/api/pacs/studies", params={"patient_id": "P-1"})
        assert found.status_code == 200 and found.json()["studies"][0]["study_uid"] == state.study
        imported = client.post(f"/api/pacs/studies/{state.study}/series/{state.series}/import")
        assert imported.status_code == 201, imported.text
        state.token = NEW  # expired; the sidecar is late
        refused = client.get("/api/pacs/studies", params={"patient_id": "P-1"})
        assert refused.status_code == 502 and "refused the bearer token" in refused.json()["detail"]
        token_file.write_text(NEW)  # renewed: the running server takes it
        assert client.get("/api/pacs/studies", params={"patient_id": "P-1"}).status_code == 200
        events = client.app.state.ctx.store.audit_events()  # type: ignore[attr-defined]
        client.app.state.ctx.store.close()  # type: ignore[attr-defined]
    assert any(e.action == "pacs-import" for e in events)
    shown = refused.text + imported.text + repr(events)
    assert OLD not in shown and NEW not in shown
