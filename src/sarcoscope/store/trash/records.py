"""What a trash entry holds and how it is named: the record of a deleted study's database rows (RECORD,
VERSIONS), read back as a `DeletedStudy` or as the rows to restore; an entry whose record cannot be read
raises `UnreadableRecordError`, never a traceback naming the patient's data."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime

from sarcoscope.store.errors import ConflictError, NotFoundError, reason_of
from sarcoscope.store.files import private_dir
from sarcoscope.store.models import LabelVersion, Study, as_utc

if TYPE_CHECKING:
    from sarcoscope.store.store import Store

RECORD = "study.json"
#: The label versions' rows, apart from RECORD: listing the kept deletions (the page, the expiry at each
#: deletion) reads RECORD only, not every version's label maps.
VERSIONS = "label_versions.json"
#: The names of trash/'s entries: a kept deletion (`<id>`), and one taken out of place by a deletion, a
#: restore or an erasure under way (or stopped by a kill).
ENTRY_RE = re.compile(r"^[0-9a-f]{32}$")
DELETING = re.compile(r"^\.([0-9a-f]{32})\.deleting$")
RESTORING = re.compile(r"^\.([0-9a-f]{32})\.restoring$")
ERASING = re.compile(r"^\.([0-9a-f]{32})\.erasing$")
ERASED = re.compile(r"^\.([0-9a-f]{32})\.erased$")
OUT_OF_PLACE = re.compile(r"^\.([0-9a-f]{32})\.(deleting|restoring|erasing|erased)$")


@dataclasses.dataclass(frozen=True)
class DeletedStudy:
    """What `sarcoscope studies deleted` lists of one kept deletion."""

    id: str
    deleted_at: dt.datetime
    deleted_by: str
    patient_id: str | None
    study_date: str | None
    series_description: str | None
    n_versions: int
    #: A random id of this deletion, which its erasure's audit event names (None: kept by a version before
    #: deletions had one).
    deletion_id: str | None = None


def trash_dir(store: Store) -> Path:
    return private_dir(store.data_dir / "trash")


def not_kept(study_id: str) -> NotFoundError:
    return NotFoundError(f"No deleted study with id '{study_id}' is kept.")


def study_id_of(entry: Path) -> str:
    """The study id an entry of trash/ is named by (`<id>`, `.<id>.restoring`, ...)."""
    return entry.name.lstrip(".").split(".")[0]


class UnreadableRecordError(ConflictError):
    """A kept entry whose record (RECORD or VERSIONS) cannot be read: kept as it is, neither restored nor
    erased; the message names the study's id and the file, never the patient's data."""

    def __init__(self, entry: Path, name: str, why: str) -> None:
        self.study_id = study_id_of(entry)
        self.what = f"The record of deleted study {self.study_id} cannot be read ({name}: {why})"
        self.entry = entry.name
        super().__init__(
            f"{self.what}: it is kept as it is, and cannot be restored or erased here. Look at the data "
            f"folder's trash/{entry.name}/."
        )


def kept_entry(store: Store, study_id: str) -> Path:
    """The kept deletion of `study_id`; NotFoundError when there is none."""
    entry = trash_dir(store) / study_id
    if not (ENTRY_RE.match(study_id) and entry.is_dir()):
        raise not_kept(study_id)
    return entry


# -- the record of the database rows ------------------------------------------------------------------
def row_values(row: Study | LabelVersion, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.key in skip:
            continue
        value = getattr(row, column.key)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        values[column.key] = value
    return values


def _row_from(model: type[Study] | type[LabelVersion], values: dict[str, Any]) -> Any:
    kwargs = dict(values)
    for column in model.__table__.columns:
        value = kwargs.get(column.key)
        if value is None:
            continue
        if isinstance(column.type, DateTime):
            kwargs[column.key] = dt.datetime.fromisoformat(value)
        elif column.key == "data":
            kwargs[column.key] = base64.b64decode(value)
    return model(**kwargs)


# -- what is kept ---------------------------------------------------------------------------------------
def _read(entry: Path, name: str = RECORD) -> Any:
    """One of an entry's record files; UnreadableRecordError when it cannot be read (FileNotFoundError when
    the entry itself is gone: restored or erased meanwhile)."""
    path = entry / name
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        if entry.is_dir() and not path.exists():
            raise UnreadableRecordError(entry, name, "missing") from None
        raise
    except ValueError:  # UnicodeDecodeError too
        raise UnreadableRecordError(entry, name, "empty" if not path.stat().st_size else "not JSON") from None
    except OSError as exc:
        raise UnreadableRecordError(entry, name, reason_of(exc)) from None


def _parsed(entry: Path, name: str, parse: Any) -> Any:
    """`parse(record)` of an entry's record file; UnreadableRecordError when a value is missing or wrong."""
    record = _read(entry, name)
    try:
        return parse(record)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UnreadableRecordError(entry, name, "incomplete") from None


def deleted_study(entry: Path) -> DeletedStudy:
    def parse(record: dict[str, Any]) -> DeletedStudy:
        study = record["study"]
        return DeletedStudy(
            id=study_id_of(entry),
            deleted_at=as_utc(dt.datetime.fromisoformat(record["deleted_at"])),
            deleted_by=str(record["deleted_by"]),
            patient_id=study.get("patient_id"),
            study_date=study.get("study_date"),
            series_description=study.get("series_description"),
            n_versions=int(record["n_versions"]),
            deletion_id=record.get("deletion_id"),
        )

    return _parsed(entry, RECORD, parse)


def study_of(entry: Path) -> Study:
    """The study row an entry's record holds."""
    return _parsed(entry, RECORD, lambda record: _row_from(Study, record["study"]))


def versions_of(entry: Path) -> list[LabelVersion]:
    """The label versions' rows an entry's record holds."""
    return _parsed(entry, VERSIONS, lambda rows: [_row_from(LabelVersion, v) for v in rows])


def kept(store: Store) -> tuple[list[DeletedStudy], list[str]]:
    """The kept deletions, most recent first, and the ids of those whose record cannot be read."""
    found, unreadable = [], []
    for entry in trash_dir(store).iterdir():
        if not ENTRY_RE.match(entry.name):
            continue
        try:
            found.append(deleted_study(entry))
        except FileNotFoundError:  # restored or erased meanwhile
            continue
        except UnreadableRecordError as exc:
            unreadable.append(exc.study_id)
    return sorted(found, key=lambda d: d.deleted_at, reverse=True), sorted(unreadable)
