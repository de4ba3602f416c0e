"""Regenerate docs/validation/: every engine on the real L3 slices of ../shared/data and on phantoms, plus the
automatic L3 localizer on the real and phantom volumes.

    python scripts/make_validation_docs.py [--shared ../shared/data] [--out docs/validation]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sarcoscope.validation.benchmark import validate_engines

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "validation")
    parser.add_argument("--phantoms", type=int, default=24)
    args = parser.parse_args()
    shared = args.shared if (args.shared / "real").is_dir() else None
    if shared is None:
        print(f"note: {args.shared} not found; only phantom reports will be made")
    for name, outcome in validate_engines(args.out, shared_data=shared, n_phantoms=args.phantoms).items():
        print(f"{name}: {outcome if isinstance(outcome, str) else 'written'}")


if __name__ == "__main__":
    main()
