"""Every input of the bad-input corpus: exit 1, one clear message, no traceback, no report written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from badinput_corpus import CORPUS, NO_BODY, BadInput, Base
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sarcoscope.cli import app


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base.make(tmp_path_factory.mktemp("base"))


def test_corpus_is_large_and_unique() -> None:
    assert len(CORPUS) >= 150
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.slow
def test_the_base_inputs_are_good(base: Base, tmp_path: Path) -> None:
    """The corpus starts from inputs that analyse fine: each entry fails because of what it changed."""
    for source in (base.one, base.series, base.nifti):
        out = tmp_path / source.name
        args = ["analyze", str(source), "--engine", "threshold", "--slice", "1", "-o", str(out)]
        result = CliRunner().invoke(app, args[:4] + args[6:] if source == base.one else args)
        assert result.exit_code == 0, result.output
        assert (out / "report.json").is_file()


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_bad_input(case: BadInput, base: Base, tmp_path: Path) -> None:
    work = tmp_path / "in"
    work.mkdir()
    args = case.build(base, work)
    out = tmp_path / "out"
    if "-o" not in args:
        args = [*args, "-o", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100000", **dict(case.env)})  # no wrapping
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output  # one message, no traceback
    assert re.search(case.match, lines[0], re.IGNORECASE), lines[0]
    assert not list(tmp_path.rglob("report.json")), "a report was written for a refused input"
    assert not list(tmp_path.rglob("*.partial")), "a temporary output folder was left behind"


#: Corpus entries that are one unreadable input file: uploaded to the web app, they must be refused too
#: (slices without a body are refused by the analysis, not the upload; the NIfTI entries that give
#: --pixel-spacing or --series test CLI options; DICOM files with a bad PixelSpacing are uploads like any).
UPLOADS = [
    case
    for case in CORPUS
    if case.id.split("-")[0] in ("dicom", "zip", "nifti")
    and not case.match.startswith(NO_BODY)
    and not (case.id.startswith("nifti-") and any(o in case.id for o in ("pixel-spacing", "series-option")))
]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from sarcoscope.web import WebSettings, create_app

    app = create_app(WebSettings(data_dir=tmp_path_factory.mktemp("web") / "data", max_upload_bytes=8 << 20))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.state.ctx.store.close()


@pytest.mark.parametrize("case", UPLOADS, ids=lambda case: case.id)
def test_bad_upload(case: BadInput, base: Base, web: TestClient, tmp_path: Path, monkeypatch) -> None:
    upload = Path(case.build(base, tmp_path)[1])
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    files = [("files", (upload.name, upload.read_bytes(), "application/octet-stream"))]
    response = web.post("/api/studies", files=files)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
    assert web.get("/api/studies").json() == []  # nothing stored
