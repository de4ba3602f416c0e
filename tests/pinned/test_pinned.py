"""Outputs of `analyze` pinned before the speed work (issue 18): label maps pixel-identical, report values
identical. A pinned value that moves is a regression unless the change was meant; then regenerate the pins
with `python scripts/update_pins.py` and say why in the commit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pinned_cases import CASES, ENGINES, UPDATE_COMMAND, Case, current_model_ids, load_pins, run_case

PARAMS = [pytest.param(case, engine, id=f"{case.name}-{engine}") for case in CASES for engine in ENGINES]


@pytest.fixture(scope="module")
def pins() -> dict[str, Any]:
    pins = load_pins()
    now = current_model_ids()
    stale = {e: (pins["model_ids"].get(e), m) for e, m in now.items() if pins["model_ids"].get(e) != m}
    if stale:
        which = "; ".join(f"{e}: pinned {old}, now {new}" for e, (old, new) in stale.items())
        pytest.fail(
            f"the pins were made with another model ({which}): regenerate them with `{UPDATE_COMMAND}`"
        )
    return pins


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module, so the phantom volume is made once for both engines."""
    return tmp_path_factory.mktemp("pinned")


def _differences(pinned: Any, now: Any, where: str = "") -> list[str]:
    if isinstance(pinned, dict) and isinstance(now, dict):
        keys = sorted(set(pinned) | set(now))
        return [d for k in keys for d in _differences(pinned.get(k), now.get(k), f"{where}.{k}")]
    if isinstance(pinned, list) and isinstance(now, list) and len(pinned) == len(now):
        return [
            d
            for i, (a, b) in enumerate(zip(pinned, now, strict=True))
            for d in _differences(a, b, f"{where}[{i}]")
        ]
    return (
        [] if pinned == now else [f"{where}: pinned {json.dumps(pinned)[:200]}, now {json.dumps(now)[:200]}"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(("case", "engine"), PARAMS)
def test_outputs_unchanged(
    case: Case, engine: str, pins: dict[str, Any], work_dir: Path, request: pytest.FixtureRequest
) -> None:
    shared = request.getfixturevalue("shared_data") if case.needs_shared_data else None
    now = run_case(case, engine, shared, work_dir)
    diffs = _differences(pins["cases"][f"{case.name}/{engine}"], now)
    assert not diffs, (
        f"{len(diffs)} pinned output(s) changed; if meant, regenerate with `{UPDATE_COMMAND}` and explain:\n"
        + "\n".join(diffs[:20])
    )
