"""What a cohort is: the cases to analyse, from a folder of studies, a CSV manifest, or a DICOMweb query."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sarcoscope.errors import CompositionError, InputError
from sarcoscope.fileio import read_csv
from sarcoscope.pacs.dicomweb_query import is_dicomweb

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: The report a finished case's folder (cases/<case id>/) holds.
REPORT = "report.json"
#: The columns cohort.csv fills from each case's results (batch.tables.summary_row): a manifest column of
#: one of these names would replace the measured value, so it is refused.
RESULT_COLUMNS = frozenset(
    {
        "l3_mode",
        "l3_slices",
        "l3_confidence",
        "engine",
        *(f"{t}_{q}" for t in ("muscle", "sat", "vat", "imat") for q in ("area_cm2", "mean_hu")),
        "smi_cm2_m2",
        "sarcopenia_cutoff_set",
        "sarcopenia",
        "quality",
        "quality_flag",
        "warnings",
        "patient",
    }
)
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Case:
    """One CT to analyse, with the optional patient facts and manual L3 choice of the manifest."""

    case_id: str
    #: A folder, zip, NIfTI or DICOM file; or a DICOMweb series `dicomweb+http://…/studies/S/series/X`,
    #: retrieved when the case is analysed.
    path: Path | str
    site: str | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    sex: str | None = None
    slice_index: int | None = None
    slice_range: tuple[int, int] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def folder(self, out_root: Path) -> Path:
        """The case's folder of results in the batch's output folder `out_root`."""
        return out_root / "cases" / self.case_id


def safe_case_id(text: str) -> str:
    """A case id usable as a folder name (the output folder of the case): ASCII letters, digits, '.', '_'
    and '-' kept, each run of other characters one '_', no '.' or '_' at the ends (ASCII names' ids, which
    resumed runs find their results by). A name with characters outside ASCII (in NFC, as macOS may give it
    decomposed) gets `_` and 10 hex digits of its SHA-256 appended: names that differ only there
    ("Ξανθοπούλου_X", "山田_X") would share the id "X", and the digest spells nothing of what was dropped."""
    name = unicodedata.normalize("NFC", text)
    cleaned = _SAFE_ID.sub("_", name).strip("._")
    if name.isascii():
        if not cleaned:
            raise InputError(f"Case id '{text}' has no usable characters.")
        return cleaned
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{cleaned}_{digest}" if cleaned else digest


def _is_study(path: Path) -> bool:
    name = path.name.lower()
    return path.is_dir() or name.endswith(".zip") or name.endswith(NIFTI_SUFFIXES) or name.endswith(".dcm")


def discover_cases(root: Path) -> list[Case]:
    """Every entry of `root` that can hold one CT (a sub-folder, .zip, NIfTI or DICOM file) is one case."""
    if not root.exists():
        raise InputError(f"Cohort folder {root} does not exist.")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a folder of studies or a CSV manifest.")
    cases = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not _is_study(entry):
            continue
        stem = entry.name
        for suffix in (".nii.gz", ".nii", ".zip", ".dcm"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        cases.append(Case(case_id=safe_case_id(stem), path=entry))
    if not cases:
        raise InputError(f"No studies found in {root} (expected sub-folders, .zip, .nii(.gz) or .dcm files).")
    return _unique(cases, root, "the studies {} and {} found in it, in name order")


def _float(row: dict[str, str], key: str, where: str) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: column '{key}' must be a number, got '{text}'.") from None


def read_manifest(csv_path: Path) -> list[Case]:
    """Read a CSV manifest: columns `case_id`, `path` (relative to the CSV, or a dicomweb+http:// series)
    and optionally `site`, `height_cm`, `weight_kg`, `sex`, `slice`, `range` (Z0:Z1). Other columns are
    carried into the summary."""
    from sarcoscope.composition.assessment import parse_sex

    if not csv_path.is_file():
        raise InputError(f"Manifest {csv_path} does not exist.")
    fieldnames, rows = read_csv(csv_path, "Manifest", InputError)
    missing = {"case_id", "path"} - set(fieldnames)
    if missing:
        raise InputError(f"Manifest {csv_path} lacks the column(s) {', '.join(sorted(missing))}.")
    known = {"case_id", "path", "site", "height_cm", "weight_kg", "sex", "slice", "range"}
    clash = sorted(RESULT_COLUMNS.intersection(fieldnames))
    if clash:
        raise InputError(
            f"Manifest {csv_path} has column(s) {', '.join(clash)}, which cohort.csv fills with the "
            "results; rename them (e.g. manual_sarcopenia) to carry them into the table."
        )
    cases = []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path.name} line {line}"
        try:
            sex = parse_sex(row.get("sex"))
        except CompositionError as exc:
            raise InputError(f"{where}: {exc}") from None
        slice_text = (row.get("slice") or "").strip()
        range_text = (row.get("range") or "").strip()
        if not (row.get("case_id") or "").strip() or not (row.get("path") or "").strip():
            raise InputError(f"{where}: every row needs a case_id and a path.")
        if slice_text and not slice_text.isdigit():
            raise InputError(
                f"{where}: column 'slice' must be a slice index (0, 1, ...), got '{slice_text}'."
            )
        if slice_text and range_text:
            raise InputError(f"{where}: give a slice or a range, not both.")
        given = row["path"].strip()
        cases.append(
            Case(
                case_id=safe_case_id(row["case_id"].strip()),
                path=given if is_dicomweb(given) else (csv_path.parent / given).resolve(),
                site=(row.get("site") or "").strip() or None,
                height_cm=_float(row, "height_cm", where),
                weight_kg=_float(row, "weight_kg", where),
                sex=sex,
                slice_index=int(slice_text) if slice_text else None,
                slice_range=_range(range_text, where) if range_text else None,
                extra={k: v for k, v in row.items() if k not in known and k is not None},
            )
        )
    if not cases:
        raise InputError(f"Manifest {csv_path} lists no cases.")
    return _unique(cases, csv_path, "lines {} and {}", first=2)


def _range(text: str, where: str) -> tuple[int, int]:
    """A manifest's `range` (Z0:Z1), or an error naming the manifest's line."""
    from sarcoscope.errors import LevelError
    from sarcoscope.level import parse_range

    try:
        return parse_range(text)
    except LevelError:
        raise InputError(
            f"{where}: column 'range' must look like Z0:Z1 (two slice indices), got '{text}'."
        ) from None


def dicomweb_cases(
    root: str,
    filters: dict[str, str],
    modality: str = "CT",
    page: int = 100,
    every_series: bool = False,
    waits: tuple[float, float] = (10.0, 60.0),
) -> list[Case]:
    """One case per study the DICOMweb server at `root` finds for `filters` (QIDO-RS): its `modality` series
    with the most images, or every such series with `every_series`; the case id is the SeriesInstanceUID
    (`<series UID>_<study UID>` where several studies reuse it).

    A CT study usually holds a scout, the axial series and often more reconstructions (thin and thick, soft
    tissue and bone kernels) or phases: analysed one by one they cost as many analyses, and with --push each
    puts another result set into the study. The series with the most images is the one `analyze` reads from
    a folder by default (the axial CT series with most slices); ties go to the lower series number. At least
    one filter is needed: a whole archive is never analysed by accident. The server's answers are checked
    here, not trusted: studies whose listed modalities lack `modality` are dropped and paging stops when the
    server repeats itself. `waits`: the (connect, each answer) timeouts of every search, in seconds."""
    from sarcoscope.pacs.dicomweb import DICOMwebServer
    from sarcoscope.pacs.dicomweb_query import check_query, parse_dicomweb_root

    base = parse_dicomweb_root(root)
    if not check_query(filters):
        raise InputError(
            "A DICOMweb cohort needs at least one --query KEY=VALUE (e.g. StudyDate=20240101-20241231, "
            "PatientID=…, AccessionNumber=…): the whole archive is never analysed by accident."
        )
    server = DICOMwebServer(base, waits[1], waits[0])
    wanted = modality.strip().upper()
    chosen: list[tuple[str, str]] = []  # (study UID, series UID)
    passed_over = 0
    for study in server.iter_studies({"ModalitiesInStudy": wanted, **filters}, page=page):
        found = [s for s in server.series(study.study_uid) if (s.modality or "").upper() == wanted]
        if found and not every_series:
            first = min(
                found, key=lambda s: (-(s.n_instances or 0), s.number is None, s.number or 0, s.series_uid)
            )
            passed_over += len(found) - 1
            found = [first]
        chosen += [(study.study_uid, series.series_uid) for series in found]
    if not chosen:
        raise InputError(f"No {wanted} series on the DICOMweb server {server.shown} match the query.")
    # a Series Instance UID reused by several studies (an anonymiser, a copied export): each is its own case,
    # named with its study, rather than one pair of studies refusing the whole cohort as a case id twice
    shared = {uid for uid, n in Counter(series for _, series in chosen).items() if n > 1}
    if shared:
        log.warning(
            "%d Series Instance UID(s) are used by more than one study on %s; those cases are named "
            "<series UID>_<study UID>.",
            len(shared),
            server.shown,
        )
    cases = [
        Case(
            case_id=safe_case_id(f"{series}_{study}" if series in shared else series),
            path=f"dicomweb+{base}/studies/{study}/series/{series}",
        )
        for study, series in chosen
    ]
    if passed_over:
        log.warning(
            "%d other %s series of these studies (scouts, other reconstructions or phases) are not analysed: "
            "each study's series with the most images is (--every-series analyses them all).",
            passed_over,
            wanted,
        )
    return _unique(cases, server.shown, "series {} and {} of its answers")


def _unique(cases: list[Case], source: Path | str, at: str, first: int = 1) -> list[Case]:
    """`cases`, refused when two share a case id, or ids that differ only in letter case: on a disk that
    ignores case (macOS, Windows, exFAT, many network shares) their results would share one folder, the
    second patient's row made from the first's report. The refusal says where the two are (`at`, formatted
    with their positions counted from `first`) besides their ids: a de-identified run's console shows no id
    (quoted values are scrubbed, cli.common.scrubbed_errors), and an id is often a folder's name."""
    seen: dict[str, tuple[int, str]] = {}  # case id in one letter case -> its position and the case id
    for n, c in enumerate(cases, start=first):
        if (other := seen.get(c.case_id.casefold())) is None:
            seen[c.case_id.casefold()] = (n, c.case_id)
            continue
        where = at.format(other[0], n)
        if other[1] == c.case_id:
            raise InputError(
                f"Case id '{c.case_id}' appears twice in {source} ({where}); case ids must be unique."
            )
        raise InputError(
            f"Case ids '{other[1]}' and '{c.case_id}' in {source} ({where}) differ only in letter case: on a "
            "disk that ignores case their results would share one folder; rename one."
        )
    return cases
