"""Importing a label file made elsewhere (Slice-O-Matic TAG, DICOM SEG, NIfTI, PNG, .npy) as a label version.

The file is read onto the study's CT by `sarcoscope.imaging.labelmaps` for the selected slice(s): a file that
does not fit the study is refused (HTTP 422 with the reason) and nothing is saved. An upload is saved in a
fresh folder under its base name, which must be plain words (it gives the format and, for tissue PNGs, the
tissue); messages name the file as the user knows it, never the server's folders.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, Request

from sarcoscope.errors import LabelMapError
from sarcoscope.imaging.labelmaps import (
    LABEL_EXTENSIONS,
    LabelGrid,
    builtin_mappings,
    label_extension,
    load_mapping,
    read_label_map,
)
from sarcoscope.store import LabelVersion, Study
from sarcoscope.web.context import AppContext

#: An uploaded name becomes a file name on the server: letters, digits, space, dot, dash, underscore.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")


def _client_name(name: str | None) -> str:
    return PurePosixPath((name or "").replace("\\", "/")).name[:255]


async def receive_label_upload(request: Request, work: Path) -> tuple[Path, str]:
    """Save the uploaded label file(s) in `work`: one label file, or one binary PNG per tissue.

    Returns the path to read and how to name it in the version note.
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "Send the label file as multipart/form-data (field 'files').")
    form = await request.form(max_files=8, max_fields=4)
    try:
        items = form.getlist("files")
        if not items or any(isinstance(i, str) for i in items):
            raise HTTPException(422, "No label file received: send it in the multipart field 'files'.")
        names = [_client_name(i.filename) for i in items]  # type: ignore[union-attr]
        unsafe = [n for n in names if not SAFE_NAME.fullmatch(n)]
        if unsafe:
            raise HTTPException(
                422, f"File name '{unsafe[0]}' not accepted: use letters, digits, spaces, '.', '-', '_'."
            )
        if len(items) == 1:
            if label_extension(Path(names[0])) is None:
                raise HTTPException(422, f"{names[0]} is not a label file ({', '.join(LABEL_EXTENSIONS)}).")
            target = work / names[0]
            destinations = [target]
        else:
            if not all(n.lower().endswith(".png") for n in names):
                raise HTTPException(
                    422, "Several files must be PNG masks named by their tissue (muscle.png ...)."
                )
            if len({n.lower() for n in names}) != len(names):
                raise HTTPException(422, "Two of the PNG masks have the same name.")
            target = work / "tissue masks"
            target.mkdir()
            destinations = [target / n for n in names]
        for item, dest in zip(items, destinations, strict=True):
            with dest.open("wb") as fh:
                while chunk := await item.read(1 << 20):  # type: ignore[union-attr]
                    fh.write(chunk)
    finally:
        await form.close()
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
    if mapping_name is not None and mapping_name not in builtin_mappings():
        raise HTTPException(
            422, f"Unknown label mapping '{mapping_name}'. Available: {', '.join(builtin_mappings())}."
        )
    mapping = load_mapping(mapping_name)
    volume = ctx.volumes.get(study)
    uids = ctx.volumes.sop_uids(study)
    grid = LabelGrid(volume.shape, tuple(uids) if uids else None, "the study's CT")
    try:
        labels = read_label_map(path, mapping, grid, indices).labels
    except LabelMapError as exc:  # name the file as the user knows it, not where the server keeps it
        raise LabelMapError(str(exc).replace(f"{path.parent}/", "")) from None
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
