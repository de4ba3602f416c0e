"""The shipped copy of highdicom's module table: the same table, and highdicom's whole file is never read."""

from __future__ import annotations

import json
import pkgutil
from importlib import resources
from pathlib import Path

import highdicom

from fresh_process import fresh_process_json
from sarcoscope.imaging.highdicom_tables import TABLE_FILE, decode_table, use_module_table


def test_the_shipped_table_is_the_installed_highdicoms_own() -> None:
    """Regenerate with scripts/update_highdicom_table.py when highdicom changes; with another highdicom
    version than the file's, highdicom keeps its own table."""
    version, table = decode_table(resources.files("sarcoscope.imaging").joinpath(TABLE_FILE).read_bytes())
    if version != highdicom.__version__:
        assert use_module_table() is False
        return
    whole = json.loads(pkgutil.get_data("highdicom", "_standard/module_attribute_map.json").decode("utf-8"))
    assert list(table) == list(whole)
    for key, items in whole.items():
        assert key in table and table[key] == items, key
    assert "no-such-module" not in table


def test_seg_sr_and_capture_are_written_and_read_without_highdicoms_whole_table(tmp_path: Path) -> None:
    """A fresh process (as `sarcoscope analyze` is): analyse a DICOM series, writing the SEG, SR and QC
    capture, and read the SEG back as a label map; highdicom's loader of the whole table is never called."""
    script = f"""
import json
import numpy as np
from highdicom import _standard_utils
whole = _standard_utils.get_module_attribute_map
from sarcoscope.imaging import write_dicom_series
from sarcoscope.imaging.labelmaps.mappings import load_mapping
from sarcoscope.imaging.labelmaps.read import read_label_map
from sarcoscope.phantom import make_slice
from sarcoscope.pipeline import analyze

phantom = make_slice(2, size=192)
write_dicom_series(np.stack([phantom.hu] * 3), (3.0, *phantom.pixel_spacing), "{tmp_path}/ct")
result = analyze("{tmp_path}/ct", out_dir="{tmp_path}/out", slice_index=1, engine="threshold", quality=False)
labels = read_label_map(result.outputs["dicom_seg"], load_mapping(None))
same = np.array_equal(labels.labels[0], result.labels[0])
print(json.dumps({{"written": sorted(result.outputs), "read": same, "loaded": whole.cache_info().currsize}}))
"""
    answer = fresh_process_json(script)
    assert {"dicom_seg", "dicom_sr", "qc_capture"} <= set(answer["written"])
    assert answer["read"] is True
    assert answer["loaded"] == 0


def test_without_the_table_file_highdicom_keeps_its_own(monkeypatch) -> None:
    """A package installed without the file (a repackaging) still writes SEGs, only slower."""
    from sarcoscope.imaging import highdicom_tables

    monkeypatch.setattr(highdicom_tables, "TABLE_FILE", "no-such-table.tsv.gz")
    assert use_module_table.__wrapped__() is False


def test_the_table_stays_compressed_in_memory() -> None:
    """Issue 18: a process that wrote a SEG kept the whole table decompressed (13 MB) to its end, at the
    peak of an analysis's memory. Reading it, and a module from it, now holds well under 2 MB."""
    script = """
import json, tracemalloc
import highdicom
from sarcoscope.imaging.highdicom_tables import use_module_table
from highdicom import _standard_utils
tracemalloc.start()
used = use_module_table()
module = _standard_utils.get_module_attribute_map()["ct-image"]
held, peak = tracemalloc.get_traced_memory()
print(json.dumps({"used": used, "held": held, "attributes": len(module)}))
"""
    answer = fresh_process_json(script)
    if not answer["used"]:  # another highdicom version: its own table (see the test above)
        return
    assert answer["attributes"] > 10
    assert answer["held"] < 2_000_000
