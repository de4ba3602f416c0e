"""The vendored NiiVue build: every file listed in its README is present with the recorded sha256, carries
its licence, and is covered by the package data that goes into the wheel."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import sarcoscope

PACKAGE = Path(sarcoscope.__file__).parent
VENDOR = PACKAGE / "web" / "static" / "vendor" / "niivue"
ROOT = PACKAGE.parent.parent


def _recorded() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", (VENDOR / "README.md").read_text(), re.M)
    return dict(rows)


def test_vendored_files_match_their_recorded_hashes() -> None:
    recorded = _recorded()
    assert set(recorded) == {"niivue.js", "LICENSE", "THIRD-PARTY-LICENSES"}
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    readme = (VENDOR / "README.md").read_text()
    assert "**0.69.0** (pinned)" in readme
    assert "BSD 2-Clause License" in (VENDOR / "LICENSE").read_text()
    # an ES module exporting what the viewer imports
    bundle = (VENDOR / "niivue.js").read_text()
    for name in ("Niivue", "NVImage", "SLICE_TYPE", "DRAG_MODE", "MULTIPLANAR_TYPE"):
        assert re.search(rf"export \{{[^}}]*\b{name}\b", bundle), name


def test_vendored_files_are_package_data() -> None:
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():  # an installed wheel: the files above came with it
        return
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["sarcoscope"]
    covered = {p for pattern in patterns for p in PACKAGE.glob(pattern) if p.is_file()}
    assert {VENDOR / name for name in _recorded()} <= covered
