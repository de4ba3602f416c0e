"""Regenerate tests/pinned/pins.json: the outputs of `analyze` that the pinned tests hold still.

Run after a model change (the pinned test then says so) or a change of outputs that is meant and explained:

    python scripts/update_pins.py

Needs the real data in ../shared/data. Uses the shipped models only (an empty model registry, as in
the tests).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    if not (SHARED / "real").is_dir():
        sys.exit(f"needs the real data in {SHARED}")
    sys.path.insert(0, str(ROOT / "tests" / "pinned"))
    from sarcoscope.segmentation.registry import MODELS_DIR_ENV

    with tempfile.TemporaryDirectory() as registry:
        os.environ[MODELS_DIR_ENV] = registry
        from pinned_cases import PINS_FILE, generate

        pins = generate(SHARED)
    PINS_FILE.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PINS_FILE.relative_to(ROOT)}: {len(pins['cases'])} analyses, models {pins['model_ids']}")


if __name__ == "__main__":
    main()
