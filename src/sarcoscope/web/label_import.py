"""Importing a label file made elsewhere (Slice-O-Matic TAG, DICOM SEG, NIfTI, PNG, .npy) as a label version.

The file is read onto the study's CT by `sarcoscope.imaging.labelmaps` for the selected slice(s): a file that
does not fit the study is refused (HTTP 422 with the reason) and nothing is saved. An upload is saved in a
fresh folder. Its names must be plain words: they give the format and, for tissue PNGs, the tissue (the PNGs
keep their names, which are tissue names). One label file is saved under a name the server chooses, with its
ending: the client's often names the patient ("Jansen Piet 12345678.nii"), and would reach the server's log
with a header fix nibabel reports. Messages name the file as the user knows it, never the server's folders.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, Request

from sarcoscope.errors import LabelMapError
from sarcoscope.store import LabelVersion, Study
from sarcoscope.web.context import AppContext
from sarcoscope.web.upload import receive_upload

#: An uploaded name (a tissue PNG's becomes a file name on the server): letters, digits, space, dot, dash,
#: underscore.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")
#: The name (before its ending) of an imported label file on the server: not the client's (see above).
SERVER_NAME = "imported-labels"
#: One PNG per tissue at most (muscle, SAT, VAT, IMAT and a spare name).
MAX_TISSUE_FILES = 8


def _client_name(name: str | None) -> str:
    return PurePosixPath((name or "").replace("\\", "/")).name[:255]


async def receive_label_upload(request: Request, work: Path) -> tuple[Path, str]:
    """Save the uploaded label file(s) in `work`: one label file, or one binary PNG per tissue.

    The body streams to disk as a CT upload does (web.upload); the files are then given their base names,
    which carry the format and, for tissue PNGs, the tissue. Returns the path to read and how to name it in
    the version note.
    """
    from sarcoscope.imaging.labelmaps import LABEL_EXTENSIONS, label_extension  # not at the server's start

    parts, _ = await receive_upload(request, work)
    names = [_client_name(part.client_name) for part in parts]
    unsafe = [n for n in names if not SAFE_NAME.fullmatch(n)]
    if unsafe:
        raise HTTPException(
            422, f"File name '{unsafe[0]}' not accepted: use letters, digits, spaces, '.', '-', '_'."
        )
    if len(parts) == 1:
        ending = label_extension(Path(names[0]))
        if ending is None:
            raise HTTPException(422, f"{names[0]} is not a label file ({', '.join(LABEL_EXTENSIONS)}).")
        target = work / f"{SERVER_NAME}{ending}"
        destinations = [target]
    else:
        if len(parts) > MAX_TISSUE_FILES or not all(n.lower().endswith(".png") for n in names):
            raise HTTPException(
                422, "Several files must be PNG masks named by their tissue (muscle.png ...)."
            )
        if len({n.lower() for n in names}) != len(names):
            raise HTTPException(422, "Two of the PNG masks have the same name.")
        target = work / "tissue masks"
        target.mkdir()
        destinations = [target / n for n in names]
    for part, dest in zip(parts, destinations, strict=True):
        part.path.rename(dest)
    return target, names[0] if len(names) == 1 else " + ".join(names)


def import_label_file(
    ctx: AppContext,
    study: Study,
    path: Path,
    shown_name: str,
    *,
    indices: list[int],
    mapping_name: str | None,
    base_version: int | None,
    author: str,
    client: str | None,
) -> LabelVersion:
    """Read `path` onto the study's selected slices through a built-in mapping; save it as a new version."""
    from sarcoscope.imaging.labelmaps import LabelGrid, builtin_mappings, load_mapping, read_label_map

    if mapping_name is not None and mapping_name not in builtin_mappings():
        raise HTTPException(
            422, f"Unknown label mapping '{mapping_name}'. Available: {', '.join(builtin_mappings())}."
        )
    mapping = load_mapping(mapping_name)
    volume = ctx.volumes.get(study)
    uids = ctx.volumes.sop_uids(study)
    grid = LabelGrid(volume.shape, tuple(uids) if uids else None, "the study's CT", volume.stored_flip)
    try:
        labels = read_label_map(path, mapping, grid, indices).labels
    except LabelMapError as exc:  # name the file as the user knows it, not where or how the server keeps it
        said = str(exc).replace(f"{path.parent}/", "")
        if path.name.startswith(SERVER_NAME):
            said = said.replace(path.name, shown_name)
        raise LabelMapError(said) from None
    return ctx.store.save_version(
        study.id,
        base_version=base_version,
        labels=labels,
        indices=indices,
        author=author,
        source="import",
        note=f"imported from {shown_name}, mapping {mapping.name}",
        client=client,
    )
