"""What a batch run checks of its output folder before it writes there: one run at a time, tables of this
tool, results of one kind (de-identified or not) and one de-identification key."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sarcoscope.batch.cases import Case
from sarcoscope.batch.tables import read_table
from sarcoscope.errors import OutputError
from sarcoscope.fileio import atomic_write_text
from sarcoscope.imaging.deidentify.policy import DeidentificationPolicy

#: Held in the output folder by the run writing into it (see fileio.claim_lock): a second run would rewrite
#: cohort.csv from the rows it knows, dropping the first's.
BATCH_LOCK = ".batch.lock"


def busy_message(out_root: Path) -> Callable[[str], str]:
    return lambda holder: (
        f"another batch run (process {holder}) is writing into {out_root}; wait for it to end, or give this "
        "run a folder of its own (each run rewrites cohort.csv from the rows it knows, dropping the other's)."
    )


def check_tables(out_root: Path) -> None:
    """Refuse an output folder whose cohort.csv or failures.csv is not a table of this tool (no case_id
    column): its rows would be kept and mixed with ours, or the file replaced."""
    for name in ("cohort.csv", "failures.csv"):
        path = out_root / name
        if not path.is_file():
            continue
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            header = []
        if "case_id" not in header:
            raise OutputError(
                f"{path} is not a sarcoscope {name} (it has no case_id column); choose another output folder."
            )


def deidentified_case(case: Case, policy: DeidentificationPolicy) -> Case:
    """The case under a keyed code instead of its id (ids are often folder names: a name or patient ID)."""
    return replace(case, case_id=f"case-{policy.pseudonymise_text('case', case.case_id)}")


#: A case id `deidentified_case` makes.
DEIDENTIFIED_CASE_ID = re.compile(r"case-[0-9a-f]{12}")


def check_same_kind(out_root: Path, case_ids: set[str], deidentified: bool) -> None:
    """Refuse a folder holding other cases' results of the other kind (de-identified or not): one table
    listing a patient under the folder name and under the pseudonym, with the same measurements, links
    the two."""
    kept = [
        r.get("case_id") or "" for name in ("cohort.csv", "failures.csv") for r in read_table(out_root / name)
    ]
    cases = out_root / "cases"
    kept += [p.name for p in cases.iterdir() if not p.name.startswith(".")] if cases.is_dir() else []
    other = {c for c in kept if c not in case_ids and bool(DEIDENTIFIED_CASE_ID.fullmatch(c)) != deidentified}
    if other:
        held = "results that are not de-identified" if deidentified else "de-identified results"
        raise OutputError(
            f"{out_root} holds {held} ({len(other)} case(s)); give this run a folder of its own: one table "
            "with both would list a patient under the name and the pseudonym, linking the two."
        )


#: In a de-identified run's output folder: a keyed digest naming the key its case codes and pseudonyms were
#: made with (nothing of a patient), so that a run with another key is refused.
KEY_MARKER = ".deidentification-key-id"


def check_same_key(out_root: Path, policy: DeidentificationPolicy) -> None:
    """Refuse a folder of results de-identified with another key (each patient's rows would be in the tables
    under both keys' codes and pseudonyms, with the same measurements, linking them); mark the folder with
    this key's digest otherwise."""
    key_id = policy.pseudonymise_text("key-id", "batch")
    marker = out_root / KEY_MARKER
    if not marker.is_file():
        atomic_write_text(marker, key_id + "\n")
    elif marker.read_text(encoding="utf-8").strip() != key_id:
        raise OutputError(
            f"{out_root} holds results made with another de-identification key; give this run a folder of "
            "its own, or the key those were made with: one table with both would list a patient under two "
            "pseudonyms, linking them."
        )
