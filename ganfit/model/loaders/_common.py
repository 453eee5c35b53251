"""Helpers shared by the face-model loaders: field checks, landmark files, winding, OBJ parsing.

Nothing here knows a particular format; each loader module documents its own fields.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ...errors import AssetError, GanfitError, LandmarkError, ModelFormatError
from ..morphable import MorphableModel
from ..landmark_scheme import IBUG68

log = logging.getLogger(__name__)

NUM_LANDMARKS = IBUG68.num_points  # vertex tables are for the iBUG-68 scheme

#: Plausible size of a face model in millimetres (bounding-box diagonal). Anything outside this range
#: almost certainly means a wrong unit conversion (metres read as mm, or micrometres left as is).
PLAUSIBLE_DIAGONAL_MM = (50.0, 1500.0)


#: Format names as users know them, for messages.
FORMAT_NAMES = {
    "bfm2009": "BFM 2009",
    "bfm_front": "BFM_model_front (Deep3DFaceRecon)",
    "bfm2017": "BFM 2017",
    "flame": "FLAME",
    "ict": "ICT-FaceKit",
    "bfm3ddfa": "3DDFA BFM",
    "mat": "BFM .mat",
}

#: How to give landmark vertices, from the command line and from Python.
LANDMARKS_HINT = (
    "give a file of 68 landmark vertex indices (.txt, .json or .npy) with --model-landmarks FILE "
    "(Python: FitConfig(model_landmarks=FILE) or load_model(..., landmarks=...))"
)


def not_a_model(path: str | Path, fmt: str, why: str) -> ModelFormatError:
    """The error for a file that is damaged or holds something else than its extension promises:
    ``"<path>: corrupt or not a <format> file: <why>"``."""
    return ModelFormatError(f"{path}: corrupt or not a {FORMAT_NAMES.get(fmt, fmt)} file: {why}")


@contextmanager
def reading(path: str | Path, fmt: str) -> Iterator[None]:
    """Turn the errors numpy, scipy, h5py and pickle raise on damaged or foreign data (wrong types,
    shapes, truncated datasets) into `not_a_model`; ganfit's own errors pass through."""
    try:
        yield
    except GanfitError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OSError, EOFError, OverflowError, MemoryError) as exc:
        raise not_a_model(path, fmt, f"{type(exc).__name__}: {str(exc).strip() or 'no details'}") from exc


def build_model(path: str | Path, **fields: Any) -> MorphableModel:
    """``MorphableModel(**fields)``, with the file named in the message when its checks fail (zero or
    negative standard deviations, NaN, indices out of range)."""
    try:
        return MorphableModel(**fields)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from exc


def require(fields: Mapping[str, Any], name: str, path: str | Path, fmt: str) -> Any:
    """``fields[name]``, or a `not_a_model` error that names the missing field, the file and the format."""
    if name not in fields or fields[name] is None:
        raise not_a_model(
            path, fmt,
            f"missing field {name!r} (fields present: {sorted(str(k) for k in fields if not str(k).startswith('__'))})",
        )
    return fields[name]


def interleaved_to_vertices(
    flat: np.ndarray, num_vertices: int, what: str, path: str | Path, fmt: str = "face-model"
) -> np.ndarray:
    """A vector of 3V values ``x1, y1, z1, x2, ...`` (any shape: (3V,), (3V, 1), (1, 3V)) as (V, 3)."""
    arr = np.asarray(flat).reshape(-1)
    if arr.size != 3 * num_vertices or num_vertices == 0:
        raise not_a_model(path, fmt, f"{what} has {arr.size} values, expected 3 * {num_vertices} (V > 0)")
    return arr.reshape(num_vertices, 3)


def interleaved_to_basis(
    flat: np.ndarray, num_vertices: int, what: str, path: str | Path, fmt: str = "face-model"
) -> np.ndarray:
    """Reshape a (3V, K) matrix whose rows are ``x1, y1, z1, x2, ...`` into (V, 3, K)."""
    arr = np.asarray(flat)
    if arr.ndim != 2 or arr.shape[0] != 3 * num_vertices:
        raise not_a_model(path, fmt, f"{what} must be (3V={3 * num_vertices}, K), got {arr.shape}")
    return arr.reshape(num_vertices, 3, arr.shape[1])


def need_landmarks(spec: Any, fmt: str, path: str | Path | None = None) -> None:
    """A `ModelFormatError` when a format without iBUG-68 landmarks gets no ``landmarks=``, naming the file
    and saying how to give them from the command line (``--model-landmarks``) and from Python."""
    if spec is None:
        where = f"{path}: " if path is not None else ""
        raise ModelFormatError(
            f"{where}a {FORMAT_NAMES.get(fmt, fmt)} model has no iBUG-68 landmark vertices; {LANDMARKS_HINT}"
        )


def require_file(path: str | Path, fmt: str) -> Path:
    """`path` as a Path, or an `AssetError` when it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise AssetError(f"{fmt} face model {p} does not exist (or is not a file)")
    return p


# ---------------------------------------------------------------------------------------------- landmarks
def read_landmarks(
    spec: Any,
    num_vertices: int,
    *,
    index_base: int = 0,
    what: str = "landmarks",
) -> np.ndarray:
    """68 iBUG landmark vertex indices from an array or a file.

    Args:
        spec: a sequence/array of 68 integers, or a path to a ``.txt`` (whitespace/comma separated),
            ``.json`` (a list, or an object with a ``"landmarks"``/``"indices"`` list) or ``.npy``
            (an integer array; no pickles) file.
        num_vertices: V, for the range check.
        index_base: 0 when the indices count from 0, 1 for MATLAB-style indices.
    Returns:
        (68,) int64 vertex indices counted from 0.
    Raises:
        LandmarkError: unreadable file, wrong count, non-integers or out of range.
    """
    if isinstance(spec, (str, Path)):
        values = _read_landmark_file(Path(spec))
        source = str(spec)
    else:
        values = np.asarray(spec)
        source = "landmarks array"
    values = np.asarray(values).reshape(-1)
    if values.size != NUM_LANDMARKS:
        raise LandmarkError(f"{source}: need {NUM_LANDMARKS} landmark vertex indices, got {values.size}")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise LandmarkError(f"{source}: landmark indices must be integers")
    elif values.dtype.kind not in "iu":
        raise LandmarkError(f"{source}: landmark indices must be integers, got dtype {values.dtype}")
    idx = values.astype(np.int64) - int(index_base)
    if idx.min() < 0 or idx.max() >= num_vertices:
        raise LandmarkError(
            f"{source}: {what} index out of range for a model with {num_vertices} vertices "
            f"(min {idx.min()}, max {idx.max()} after index base {index_base})"
        )
    return idx


def _read_landmark_file(path: Path) -> np.ndarray:
    """The raw numbers in a landmark file (.txt, .json or .npy)."""
    if not path.is_file():
        raise LandmarkError(f"landmark file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                for key in ("landmarks", "indices", "landmark_indices"):
                    if key in data:
                        data = data[key]
                        break
                else:
                    raise LandmarkError(f"{path}: JSON object has no 'landmarks' or 'indices' list")
            return np.asarray(data)
        text = path.read_text().replace(",", " ")
        return np.asarray([float(tok) for tok in text.split()])
    except LandmarkError:
        raise
    except (OSError, ValueError) as exc:
        raise LandmarkError(f"{path}: unreadable landmark file ({exc})") from exc


def landmarks_or_error(
    spec: Any, num_vertices: int, fmt: str, *, index_base: int = 0, path: str | Path | None = None
) -> np.ndarray:
    """`read_landmarks`, or a `ModelFormatError` explaining that this format (the file `path`) has no
    iBUG-68 landmarks."""
    need_landmarks(spec, fmt, path)
    return read_landmarks(spec, num_vertices, index_base=index_base)


# ---------------------------------------------------------------------------------------------- geometry
def outward_score(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Sum over triangles of (centroid - mesh centre) . (area-weighted normal).

    Positive when the triangles are counter-clockwise seen from outside (normals point away from the
    mesh centre), for closed heads and for open face masks alike.

    Args:
        vertices: (V, 3); triangles: (F, 3) int.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if len(triangles) == 0:
        return 0.0
    a, b, c = v[triangles[:, 0]], v[triangles[:, 1]], v[triangles[:, 2]]
    normals = np.cross(b - a, c - a)
    centroids = (a + b + c) / 3.0 - v.mean(axis=0)
    return float(np.einsum("ij,ij->", centroids, normals))


def orient_outward(
    vertices: np.ndarray, triangles: np.ndarray, uv_triangles: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Reverse the winding of every triangle if most of the surface faces inward.

    Returns:
        (triangles (F, 3), uv_triangles (F, 3) or None, flipped).
    """
    if outward_score(vertices, triangles) >= 0:
        return triangles, uv_triangles, False
    flipped_uv = None if uv_triangles is None else uv_triangles[:, ::-1].copy()
    return triangles[:, ::-1].copy(), flipped_uv, True


def check_extent(mean_mm: np.ndarray, name: str) -> float:
    """Log a warning when the mean shape's size does not look like a face in millimetres.

    Returns:
        the bounding-box diagonal in mm.
    """
    diag = float(np.linalg.norm(np.ptp(np.asarray(mean_mm, dtype=np.float64), axis=0)))
    lo, hi = PLAUSIBLE_DIAGONAL_MM
    if not lo <= diag <= hi:
        log.warning(
            "face model %s: bounding-box diagonal %.3g mm is outside %g..%g mm; are the units right?",
            name, diag, lo, hi,
        )
    return diag


def extent_meta(mean_mm: np.ndarray) -> dict:
    """JSON-friendly bounding box of the mean shape, in mm."""
    m = np.asarray(mean_mm, dtype=np.float64)
    return {"min_mm": [round(float(x), 3) for x in m.min(axis=0)], "max_mm": [round(float(x), 3) for x in m.max(axis=0)]}


def zero_basis(num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty (V, 3, 0) basis with its (0,) std, for formats without that part."""
    return np.zeros((num_vertices, 3, 0), np.float32), np.zeros((0,), np.float32)


# ---------------------------------------------------------------------------------------------- OBJ
@dataclass
class ObjMesh:
    """A Wavefront OBJ as read by `read_obj`, triangulated.

    Attributes:
        vertices: (V, 3) float64 in file order.
        uv: (T, 2) float64 texture coordinates, or None when the file has none.
        triangles: (F, 3) int64, 0-based; polygons fanned from their first corner.
        uv_triangles: (F, 3) int64 into `uv`, or None when any face lacks texture indices.
        materials: (F,) material name of each triangle (``usemtl``; "" before the first).
        polygon_sizes: (P,) corners of each original polygon.
    """

    vertices: np.ndarray
    uv: np.ndarray | None
    triangles: np.ndarray
    uv_triangles: np.ndarray | None
    materials: list[str] = field(default_factory=list)
    polygon_sizes: np.ndarray | None = None


def _obj_index(token: str, count: int) -> int:
    """A 1-based (or negative, relative) OBJ index as a 0-based index."""
    i = int(token)
    return i - 1 if i > 0 else count + i


_OBJ_VERTEX_RE = re.compile(rb"^v[ \t]+(\S+[ \t]+\S+[ \t]+\S+)", re.MULTILINE)


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """Only the ``v`` lines of an OBJ file, as (V, 3) float64 in file order (fast path for shape files;
    extra per-vertex values such as colours are ignored)."""
    try:
        with open(path, "rb") as fh:
            rows = _OBJ_VERTEX_RE.findall(fh.read())
        return np.asarray(b" ".join(rows).split(), dtype=np.float64).reshape(-1, 3)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: unreadable OBJ vertices ({exc})") from exc


def read_obj(path: str | Path) -> ObjMesh:
    """Parse an OBJ file (``v``, ``vt``, ``f`` and ``usemtl``) keeping the vertex order of the file.

    Polygons with n corners become n - 2 triangles ``(0, i, i + 1)``; for a quad ``a b c d`` that is
    ``(a, b, c), (a, c, d)``, and the texture corners are split the same way, so winding and UV seams
    are preserved.
    """
    verts: list[list[str]] = []
    uvs: list[list[str]] = []
    tris: list[tuple[int, int, int]] = []
    uv_tris: list[tuple[int, int, int]] = []
    mats: list[str] = []
    sizes: list[int] = []
    material = ""
    all_have_uv = True
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("v "):
                    verts.append(line.split()[1:4])
                elif line.startswith("vt "):
                    uvs.append(line.split()[1:3])
                elif line.startswith("f "):
                    corners = line.split()[1:]
                    vi, ti = [], []
                    for corner in corners:
                        parts = corner.split("/")
                        vi.append(_obj_index(parts[0], len(verts)))
                        if len(parts) > 1 and parts[1]:
                            ti.append(_obj_index(parts[1], len(uvs)))
                    has_uv = len(ti) == len(vi)
                    all_have_uv = all_have_uv and has_uv
                    sizes.append(len(vi))
                    for k in range(1, len(vi) - 1):
                        tris.append((vi[0], vi[k], vi[k + 1]))
                        uv_tris.append((ti[0], ti[k], ti[k + 1]) if has_uv else (0, 0, 0))
                        mats.append(material)
                elif line.startswith("usemtl"):
                    parts = line.split(maxsplit=1)
                    material = parts[1].strip() if len(parts) > 1 else ""
        vertices = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
        uv = np.asarray(uvs, dtype=np.float64).reshape(-1, 2) if uvs else None
    except (OSError, ValueError, IndexError) as exc:
        raise ModelFormatError(f"{path}: unreadable OBJ file ({exc})") from exc
    triangles = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise ModelFormatError(f"{path}: face refers to a vertex that does not exist")
    uv_triangles = None
    if uv is not None and all_have_uv and tris:
        uv_triangles = np.asarray(uv_tris, dtype=np.int64).reshape(-1, 3)
        if uv_triangles.min() < 0 or uv_triangles.max() >= len(uv):
            raise ModelFormatError(f"{path}: face refers to a texture coordinate that does not exist")
    return ObjMesh(
        vertices=vertices,
        uv=uv if uv_triangles is not None else None,
        triangles=triangles,
        uv_triangles=uv_triangles,
        materials=mats,
        polygon_sizes=np.asarray(sizes, dtype=np.int64),
    )


def base_meta(fmt: str, path: str | Path, loader: str, **extra: Any) -> dict:
    """Provenance common to every loader: format, source file name, loader module, units."""
    meta = {"format": fmt, "source": Path(path).name, "loader": loader, "units": "mm"}
    meta.update(extra)
    return meta
