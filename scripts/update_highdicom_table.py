"""Regenerate src/sarcoscope/imaging/highdicom_modules.tsv.gz from the installed highdicom's module table.

Run after a highdicom upgrade (tests/imaging/test_highdicom_tables.py then says so):

    python scripts/update_highdicom_table.py
"""

from __future__ import annotations

from importlib import resources

import highdicom
from highdicom._standard_utils import get_module_attribute_map

from sarcoscope.imaging.highdicom_tables import TABLE_FILE, encode_table


def main() -> None:
    target = resources.files("sarcoscope.imaging").joinpath(TABLE_FILE)
    data = encode_table(highdicom.__version__, get_module_attribute_map())
    with resources.as_file(target) as path:
        path.write_bytes(data)
        print(f"{path}: highdicom {highdicom.__version__}, {len(data) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
