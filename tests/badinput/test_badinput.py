"""Every input of the bad-input corpus: exit 1, one clear message, no traceback, no report written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from badinput_corpus import CORPUS, BadInput, Base
from typer.testing import CliRunner

from sarcoscope.cli import app


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base.make(tmp_path_factory.mktemp("base"))


def test_corpus_is_large_and_unique() -> None:
    assert len(CORPUS) >= 150
    assert len({case.id for case in CORPUS}) == len(CORPUS)


def test_the_base_inputs_are_good(base: Base, tmp_path: Path) -> None:
    """The corpus starts from inputs that analyse fine: each entry fails because of what it changed."""
    for source in (base.one, base.series, base.nifti):
        out = tmp_path / source.name
        result = CliRunner().invoke(app, ["analyze", str(source), "--engine", "threshold", "-o", str(out)])
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
    result = CliRunner().invoke(app, args, env=dict(case.env))
    text = " ".join(result.output.split())  # rich wraps long messages
    assert result.exit_code == 1, text
    assert "Traceback" not in result.output and "internal error" not in text
    assert text.count("error:") == 1, text
    assert re.search(case.match, text), text
    assert not list(tmp_path.rglob("report.json")), "a report was written for a refused input"
    assert not list(tmp_path.rglob("*.partial")), "a temporary output folder was left behind"
