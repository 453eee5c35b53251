"""Loader for FLAME (``generic_model.pkl``), the linear part only.

Li, Bolkart, Black, Li, Romero: "Learning a model of facial shape and expression from 4D scans",
SIGGRAPH Asia 2017. https://flame.is.tue.mpg.de (registration required; not redistributable).

File: a Python 2 pickle of a dict whose arrays are numpy arrays, ``chumpy.ch.Ch`` objects (whose
pickled state keeps the value in the attribute ``x``: chumpy's ``Ch.__getstate__`` returns
``__dict__`` minus ``_parents`` and ``_cache``) and ``scipy.sparse`` matrices. It is read with a
*restricted* unpickler: only numpy array/dtype reconstruction, a few builtins (set, object) and
stand-ins for ``chumpy.*`` and ``scipy.sparse`` classes that merely keep their state, so no code from
the file runs and chumpy need not be installed. Fields and mapping to `MorphableModel`:

============  ===============  ===============================================================
field         shape            mapping
============  ===============  ===============================================================
v_template    (5023, 3)        ``mean`` = v_template * 1000 (metres -> millimetres)
shapedirs     (5023, 3, 400)   first ``num_shape`` (300) columns -> ``shape_basis`` * 1000,
                               the rest (100) -> ``expression_basis`` * 1000 (FLAME 2020
                               layout); the columns are already scaled so that coefficients
                               are standard normal, hence ``shape_std`` = ``expression_std`` = 1
f             (9976, 3)        ``triangles`` (indices count from 0)
posedirs, J_regressor, weights, kintree_table, J, bs_style, bs_type
                               ignored: pose correctives and linear blend skinning (jaw, neck,
                               eyeballs) are not part of the linear model
============  ===============  ===============================================================

Landmarks: the pickle has none; pass ``landmarks=`` as DECA's ``landmark_embedding.npy`` (a pickled
dict; its ``full_lmk_faces_idx`` (1, 68) and ``full_lmk_bary_coords`` (1, 68, 3) are converted to the
corner with the largest barycentric weight, i.e. the nearest vertex), or as 68 vertex indices.
Optional ``masks=`` is ``FLAME_masks.pkl`` (name -> vertex indices) giving regions; without it
``regions["face"]`` is every vertex. Optional ``uv_obj=`` is FLAME's ``head_template.obj`` (same
triangles) giving ``uv``/``uv_triangles``. No colour model (FLAME's albedo is a separate texture
space). Orientation: y up, face looking down +z.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import LandmarkError, ModelFormatError
from ..morphable import MorphableModel
from ..safe_pickle import NumpyOnlyUnpickler
from ._common import (
    base_meta,
    build_model,
    check_extent,
    extent_meta,
    not_a_model,
    orient_outward,
    read_landmarks,
    read_obj,
    reading,
    require,
    require_file,
)

FORMAT = "flame"
METRE_TO_MM = 1000.0
DEFAULT_NUM_SHAPE = 300
NO_LANDMARKS = (
    "FLAME's generic_model.pkl has no iBUG-68 landmarks; give DECA's landmark_embedding.npy (or a file of 68 "
    "vertex indices: .txt, .json or .npy) with --model-landmarks FILE (Python: FitConfig(model_landmarks=FILE) "
    "or load_model(..., landmarks=...))"
)

# (module, name) pairs the restricted unpickler resolves to the real object. Everything here only
# rebuilds plain data; nothing can run code chosen by the file.
_BUILTINS = {"set": set, "frozenset": frozenset, "object": object, "complex": complex, "slice": slice}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "lil_matrix", "dok_matrix", "dia_matrix", "bsr_matrix"}


class ChumpyStandIn:
    """Stands in for any ``chumpy`` class while unpickling: keeps the pickled state, runs nothing.

    ``array`` is the value of a plain ``chumpy.ch.Ch`` (its ``x`` attribute).
    """

    chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args: Any, **kwargs: Any) -> "ChumpyStandIn":
        obj = super().__new__(cls)
        obj.state = {}
        obj.args = args
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    @property
    def array(self) -> np.ndarray | None:
        x = self.state.get("x")
        if isinstance(x, ChumpyStandIn):  # a Ch wrapping another Ch
            return x.array
        return x if isinstance(x, np.ndarray) else None


class SparseStandIn:
    """Stands in for a pickled ``scipy.sparse`` matrix: keeps its state (`toarray` rebuilds it)."""

    sparse_class = "csc_matrix"

    def __new__(cls, *args: Any, **kwargs: Any) -> "SparseStandIn":
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}

    def toarray(self) -> np.ndarray:
        """The dense matrix (only csc/csr states, as FLAME and SMPL use)."""
        import scipy.sparse as sp

        shape = self.state.get("_shape", self.state.get("shape"))
        cls = {"csc_matrix": sp.csc_matrix, "csr_matrix": sp.csr_matrix}.get(self.sparse_class)
        if cls is None or shape is None:
            raise ModelFormatError(f"cannot rebuild a pickled scipy.sparse.{self.sparse_class}")
        return cls((self.state["data"], self.state["indices"], self.state["indptr"]), shape=shape).toarray()


class RestrictedUnpickler(NumpyOnlyUnpickler):
    """A `pickle.Unpickler` that resolves only numpy reconstruction helpers, a few builtins and
    stand-ins for chumpy and scipy.sparse classes; any other global raises `pickle.UnpicklingError`."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._stand_ins: dict[str, type] = {}

    def find_extra(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles written by Python 3
            import codecs

            return codecs.encode
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module == "chumpy" or module.startswith("chumpy."):
            return self._stand_in(ChumpyStandIn, "chumpy_class", f"{module}.{name}", name)
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return self._stand_in(SparseStandIn, "sparse_class", name, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a model file")

    def _stand_in(self, base: type, attr: str, value: str, name: str) -> type:
        """A subclass of `base` named like the pickled class, remembering its full name."""
        key = f"{base.__name__}:{value}"
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (base,), {attr: value})
        return self._stand_ins[key]


def restricted_load(data: bytes | Any, what: str) -> Any:
    """Unpickle `data` (bytes or a binary file) with `RestrictedUnpickler` (latin1 for Python 2 pickles)."""
    fh = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ModelFormatError(f"{what}: cannot read this pickle safely ({exc})") from exc


def load_pickled_npy(path: str | Path) -> Any:
    """A ``.npy`` file; object arrays (pickled dicts, as DECA's landmark_embedding.npy) go through
    `RestrictedUnpickler` instead of ``np.load(allow_pickle=True)``. 0-d object arrays are unwrapped."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise ModelFormatError(f"{path}: not a .npy file ({exc})") from exc
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        value = restricted_load(fh, str(path))
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        return value.item()
    return value


def _as_array(value: Any, field_name: str, path: str | Path) -> np.ndarray:
    """A pickled field as a numpy array (plain arrays, chumpy ``Ch`` values, sparse matrices)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, ChumpyStandIn):
        if value.array is None:
            raise ModelFormatError(
                f"{path}: field {field_name!r} is a chumpy {value.chumpy_class} expression without a stored "
                "value; re-save the model with plain numpy arrays"
            )
        return value.array
    if isinstance(value, SparseStandIn):
        return value.toarray()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any odd object is a format error
        raise ModelFormatError(f"{path}: field {field_name!r} is not an array ({type(value).__name__})") from exc


def _landmarks_from_embedding(emb: dict, faces: np.ndarray, source: str) -> np.ndarray:
    """68 vertex indices from a barycentric landmark embedding (DECA ``full_lmk_*``, or ``lmk_*``).

    Each landmark is the triangle corner with the largest barycentric weight.
    """
    for idx_key, bary_key in (("full_lmk_faces_idx", "full_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords")):
        if idx_key in emb and bary_key in emb:
            face_idx = np.asarray(emb[idx_key]).reshape(-1).astype(np.int64)
            bary = np.asarray(emb[bary_key], dtype=np.float64).reshape(-1, 3)
            break
    else:
        raise LandmarkError(f"{source}: no 'full_lmk_faces_idx'/'full_lmk_bary_coords' in the landmark embedding")
    if face_idx.size != 68 or bary.shape[0] != 68:
        raise LandmarkError(f"{source}: landmark embedding has {face_idx.size} points, need 68")
    if face_idx.min() < 0 or face_idx.max() >= len(faces):
        raise LandmarkError(f"{source}: landmark embedding refers to a triangle that does not exist")
    return faces[face_idx, np.argmax(bary, axis=1)].astype(np.int64)


def _flame_landmarks(spec: Any, faces: np.ndarray, num_vertices: int, index_base: int) -> np.ndarray:
    """68 vertex indices from an embedding (dict, .npy or .pkl) or from plain indices."""
    if spec is None:
        raise ModelFormatError(NO_LANDMARKS)
    if isinstance(spec, dict):
        return _landmarks_from_embedding(spec, faces, "landmark embedding")
    if isinstance(spec, (str, Path)) and Path(spec).suffix.lower() in (".npy", ".pkl"):
        path = Path(spec)
        if not path.is_file():
            raise LandmarkError(f"landmark file {path} does not exist")
        if path.suffix.lower() == ".pkl":
            value = restricted_load(path.read_bytes(), str(path))
        else:
            value = load_pickled_npy(path)
        if isinstance(value, dict):
            return _landmarks_from_embedding(value, faces, str(path))
        return read_landmarks(np.asarray(value), num_vertices, index_base=index_base)
    return read_landmarks(spec, num_vertices, index_base=index_base)


def _regions(masks: Any, num_vertices: int) -> dict[str, np.ndarray]:
    """Regions from ``FLAME_masks.pkl`` (name -> vertex indices); ``face`` defaults to every vertex."""
    regions = {"face": np.ones(num_vertices, bool)}
    if masks is None:
        return regions
    data = restricted_load(Path(masks).read_bytes(), str(masks)) if isinstance(masks, (str, Path)) else masks
    if not isinstance(data, dict):
        raise ModelFormatError(f"{masks}: FLAME masks must be a dict of name -> vertex indices")
    for key, value in data.items():
        idx = np.asarray(_as_array(value, str(key), str(masks))).reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
            raise ModelFormatError(f"{masks}: mask {key!r} has a vertex index out of range")
        mask = np.zeros(num_vertices, bool)
        mask[idx] = True
        regions[str(key)] = mask
    return regions


def _uv_from_obj(uv_obj: str | Path | None, faces: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(uv (T, 2), uv_triangles (F, 3)) from FLAME's head_template.obj, whose triangles must equal `f`."""
    if uv_obj is None:
        return None, None
    mesh = read_obj(uv_obj)
    if mesh.uv_triangles is None or not np.array_equal(mesh.triangles, faces):
        raise ModelFormatError(f"{uv_obj}: its triangles (with texture coordinates) do not match the FLAME model's 'f'")
    return mesh.uv, mesh.uv_triangles


def load_flame(
    path: str | Path,
    *,
    landmarks: Any = None,
    landmark_index_base: int = 0,
    num_shape: int | None = None,
    masks: Any = None,
    uv_obj: str | Path | None = None,
    name: str = "flame",
) -> MorphableModel:
    """Load FLAME's ``generic_model.pkl`` (linear shape + expression) as a `MorphableModel` in mm.

    Args:
        path: the pickle.
        landmarks: required; DECA's ``landmark_embedding.npy`` (or a dict with ``full_lmk_faces_idx`` /
            ``full_lmk_bary_coords``), or 68 vertex indices (array or .txt/.json/.npy).
        landmark_index_base: index base of plain vertex indices.
        num_shape: how many shapedirs columns are identity; default 300 (FLAME 2020: 300 + 100).
        masks: optional ``FLAME_masks.pkl`` path (or dict) for regions.
        uv_obj: optional ``head_template.obj`` for texture coordinates.
        name: model name.
    Raises:
        ModelFormatError: ``corrupt or not a FLAME file`` (an unsafe or unreadable pickle, a missing field
            (named), wrong shapes), or no landmarks given (the message names ``--model-landmarks``); the
            file is read first, so a damaged file is reported as such.
    """
    require_file(path, FORMAT)
    try:
        data = restricted_load(Path(path).read_bytes(), str(path))
    except ModelFormatError as exc:
        raise not_a_model(path, FORMAT, str(exc).removeprefix(f"{path}: ")) from exc
    if not isinstance(data, dict):
        raise not_a_model(path, FORMAT, f"expected a pickled dict, got {type(data).__name__}")
    with reading(path, FORMAT):
        v_template = _as_array(require(data, "v_template", path, FORMAT), "v_template", path).astype(np.float64)
        shapedirs = _as_array(require(data, "shapedirs", path, FORMAT), "shapedirs", path)
        faces = _as_array(require(data, "f", path, FORMAT), "f", path).astype(np.int64)
        num_vertices = v_template.shape[0] if v_template.ndim else 0
        if num_vertices == 0 or v_template.shape != (num_vertices, 3) or shapedirs.ndim != 3 \
                or shapedirs.shape[:2] != (num_vertices, 3):
            raise not_a_model(path, FORMAT, f"v_template {v_template.shape} and shapedirs {shapedirs.shape} do not match")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise not_a_model(path, FORMAT, f"f must be (F, 3), got {faces.shape}")
        total = shapedirs.shape[2]
        k_shape = min(total, DEFAULT_NUM_SHAPE if num_shape is None else int(num_shape))
        mean = v_template * METRE_TO_MM
        if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
            raise not_a_model(path, FORMAT, f"f has vertex indices outside 0..{num_vertices - 1}")
    uv, uv_triangles = _uv_from_obj(uv_obj, faces)
    triangles, uv_triangles, flipped = orient_outward(mean, faces, uv_triangles)
    if landmarks is None:
        raise ModelFormatError(f"{path}: {NO_LANDMARKS}")
    lms = _flame_landmarks(landmarks, faces, num_vertices, landmark_index_base)
    meta = base_meta(
        FORMAT,
        path,
        __name__,
        converted_from="metres (x 1000)",
        std_source="shapedirs pre-scaled (std = 1)",
        shapedirs_split=[k_shape, total - k_shape],
        winding_flipped=flipped,
        extent=extent_meta(mean),
        licence="FLAME licence (non-commercial scientific research; not redistributable)",
    )
    check_extent(mean, name)
    return build_model(
        path,
        name=name,
        mean=mean,
        shape_basis=shapedirs[:, :, :k_shape] * METRE_TO_MM,
        shape_std=np.ones(k_shape),
        expression_basis=shapedirs[:, :, k_shape:] * METRE_TO_MM,
        expression_std=np.ones(total - k_shape),
        triangles=triangles,
        landmark_indices=lms,
        uv=uv,
        uv_triangles=uv_triangles,
        regions=_regions(masks, num_vertices),
        meta=meta,
    )


__all__ = ["load_flame", "RestrictedUnpickler", "restricted_load", "load_pickled_npy"]
