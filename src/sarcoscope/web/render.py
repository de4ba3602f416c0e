"""Windowed 8-bit PNG images of axial slices and coronal/sagittal reconstructions, for the browser viewer's
fallback (browsers without WebGL2) and the label editor, and the orientation letters at their edges. The
window presets are imaging.views' (one home for the CLI's images and the web app's)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi import HTTPException
from PIL import Image

from sarcoscope.imaging.views import WINDOW_PRESETS, window
from sarcoscope.imaging.volume import CTVolume


def preset_name(preset: str) -> str:
    """The preset's name in imaging.views ("soft-tissue" is accepted for "soft_tissue")."""
    return preset.replace("-", "_")


def presets() -> dict[str, tuple[float, float]]:
    """Window presets (level, width) in HU, by name, for the UI."""
    return dict(WINDOW_PRESETS)


def plane_image(volume: CTVolume, plane: str, index: int) -> np.ndarray:
    """The HU plane; reconstructions are flipped so the most superior slice is the top row."""
    nz, ny, nx = volume.shape
    size = {"axial": nz, "coronal": ny, "sagittal": nx}[plane]
    if not 0 <= index < size:
        raise HTTPException(404, f"No {plane} image {index}: valid indices are 0..{size - 1}.")
    if plane == "axial":
        return volume.hu[index]
    if plane == "coronal":
        return volume.hu[::-1, index, :]
    return volume.hu[::-1, :, index]


#: Beyond this tilt (degrees) of a volume's voxel axes from the body's, the letters of its images (the nearest
#: body axes') are said to be approximate; the WebGL viewer says so by the same number.
OBLIQUE_DEGREES = 3.0

#: Where each edge of plane_image's images points: (voxel axis x 0, y 1 or z 2, sign). An axial image is the
#: slice as stored (columns x, rows y); a reconstruction has its most superior slice (z) at the top.
_EDGES: dict[str, dict[str, tuple[int, int]]] = {
    "axial": {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)},
    "coronal": {"left": (0, -1), "right": (0, 1), "top": (2, 1), "bottom": (2, -1)},
    "sagittal": {"left": (1, -1), "right": (1, 1), "top": (2, 1), "bottom": (2, -1)},
}
_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) along LPS x, y, z
_BODY_PLANES = ("sagittal", "coronal", "axial")  # normal to LPS x, y, z


def _letter(lps: np.ndarray) -> str:
    """The body side an LPS direction points to most."""
    axis = int(np.argmax(np.abs(lps)))
    return _LPS_LETTERS[axis][int(lps[axis] > 0)]


def _body_plane(d: np.ndarray, edges: dict[str, tuple[int, int]]) -> str:
    """The body plane whose normal is nearest the normal of an image whose edges run along `edges`' voxel
    axes (a cross product: a sheared grid's slice axis is not the images' normal)."""
    normal = np.cross(d[:, edges["right"][0]], d[:, edges["top"][0]])
    return _BODY_PLANES[int(np.argmax(np.abs(normal)))]


def tilt_degrees(direction: np.ndarray) -> float:
    """How far (degrees) the voxel axes (columns of `direction`, LPS) are turned from the nearest body
    axes: the largest of the three axes' angles to the body axis each runs nearest to."""
    d = np.asarray(direction, dtype=float)
    cosines = np.abs(d).max(axis=0) / np.linalg.norm(d, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines, 0.0, 1.0))).max())


def orientation(direction: np.ndarray) -> dict[str, Any]:
    """The letters at the edges of the server's images of a volume whose voxel axes run along `direction`
    (columns: the LPS unit vectors of x, y and z), by plane and edge, and its tilt. The images are the
    voxels' grid as stored (an oblique or quarter-turned series is not resliced), so the letters are read
    from its direction, not assumed; beyond OBLIQUE_DEGREES they are the nearest body axes' only. `planes`
    names the body plane each image shows (the one whose normal is nearest the image's): a quarter-turned
    series' "coronal" reconstruction is a sagittal image."""
    d = np.asarray(direction, dtype=float)
    tilt = tilt_degrees(d)
    letters = {
        plane: {edge: _letter(sign * d[:, axis]) for edge, (axis, sign) in edges.items()}
        for plane, edges in _EDGES.items()
    }
    planes = {plane: _body_plane(d, edges) for plane, edges in _EDGES.items()}
    return {
        "tilt_degrees": round(tilt, 1),
        "oblique": tilt > OBLIQUE_DEGREES,
        "letters": letters,
        "planes": planes,
    }


def plane_png(volume: CTVolume, plane: str, index: int, preset: str) -> bytes:
    name = preset_name(preset)
    if name not in WINDOW_PRESETS:
        raise HTTPException(422, f"Unknown window preset '{preset}'. Available: {', '.join(WINDOW_PRESETS)}.")
    image = Image.fromarray(window(plane_image(volume, plane, index), name), mode="L")
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
