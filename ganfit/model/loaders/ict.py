"""Loader for the ICT-FaceKit face model (a ``FaceXModel/`` folder of OBJ files).

Li et al., "Learning Formation of Physically-Based Face Attributes", CVPR 2020.
https://github.com/ICT-VGL/ICT-FaceKit (MIT licence).

Folder contents and mapping to `MorphableModel`:

==========================  ==================  ===================================================
file / field                shape               mapping
==========================  ==================  ===================================================
generic_neutral_mesh.obj    26,719 v, quads     ``mean`` = vertices * 10 (centimetres -> mm: the
                            (+ a few tris),     head is ~25 x 34 x 22 units); faces fanned into
                            vt, usemtl          triangles ``(a,b,c), (a,c,d)`` -> ``triangles``,
                                                texture corners alike -> ``uv`` + ``uv_triangles``
identity000..099.obj        same topology       ``shape_basis[..., k]`` = (identity_k - neutral) * 10;
                                                ``shape_std`` = 1 (the modes are scaled PCA modes;
                                                ICT's ``FaceModel.randomize_identity`` samples
                                                weights from N(0, 1))
<expression>.obj            same topology       ``expression_basis`` = (expression - neutral) * 10,
                                                in the order of ``vertex_indices.json``
                                                ["expressions"] (ARKit names); ``expression_std`` = 1
                                                (blendshape weights in 0..1, not a Gaussian)
vertex_indices.json
  idx_to_landmark_verts     68                  ``landmark_indices`` (iBUG-68, count from 0)
  idx_to_fitting_verts      7,801               ``regions["face"]`` (the frontal face ICT fits to)
  idx_to_rigid_verts        1,487               ``regions["rigid"]``
usemtl groups (M_Face, ..)  per face            ``regions["mtl_face"]``, ``regions["mtl_teeth"]`` ...
                                                (vertices of the faces of each material)
==========================  ==================  ===================================================

This is how ICT's own ``face_model_io.py`` builds the model (shape modes = mesh - neutral mesh).
Only the files present are loaded (the full model has 100 identities and 53 expressions; a subset
folder works), in index/list order; a missing neutral mesh or JSON is a `ModelFormatError`.
UVs are kept as in the files, which use UDIM-style tiles: u in [k, k + 1) is tile k (the face skin,
M_Face, is tile 0; back of head 1, gums 2, teeth 3, lacrimal 4..5, lashes 6; the eye materials reuse
0..1 for their own textures); ``meta["uv_layout"]`` says so. No colour model. Orientation: y up, the face looking down +z, as in the OBJ files; the OBJ winding
is checked and reversed if it faces inward (``meta["winding_flipped"]``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelFormatError
from ..morphable import MorphableModel
from ._common import (
    LANDMARKS_HINT,
    base_meta,
    build_model,
    check_extent,
    extent_meta,
    orient_outward,
    read_landmarks,
    read_obj,
    read_obj_vertices,
    zero_basis,
)

FORMAT = "ict"
CENTIMETRE_TO_MM = 10.0
NEUTRAL = "generic_neutral_mesh.obj"
INDEX_FILE = "vertex_indices.json"
_IDENTITY_RE = re.compile(r"^identity(\d+)\.obj$")


def find_model_dir(path: str | Path) -> Path:
    """The folder holding ``vertex_indices.json``: `path` itself, its ``FaceXModel/`` (the repository
    root) or the folder of a given ``vertex_indices.json``."""
    p = Path(path)
    for candidate in (p, p / "FaceXModel", p.parent if p.name == INDEX_FILE else None):
        if candidate is not None and (candidate / INDEX_FILE).is_file():
            return candidate
    raise ModelFormatError(f"{path}: no {INDEX_FILE} found; not an ICT-FaceKit FaceXModel folder")


def _read_index(folder: Path) -> dict:
    """vertex_indices.json as a dict."""
    try:
        data = json.loads((folder / INDEX_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{folder / INDEX_FILE}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{folder / INDEX_FILE}: expected a JSON object")
    return data


def _identity_files(folder: Path, max_identities: int | None) -> list[Path]:
    """identityNNN.obj files present, sorted by NNN."""
    found = sorted(
        (int(m.group(1)), f) for f in folder.iterdir() if (m := _IDENTITY_RE.match(f.name)) is not None
    )
    files = [f for _, f in found]
    return files if max_identities is None else files[:max_identities]


def _expression_files(folder: Path, names: list[str], max_expressions: int | None) -> list[Path]:
    """``<name>.obj`` for the expression names that have a file, in list order."""
    files = [folder / f"{n}.obj" for n in names if (folder / f"{n}.obj").is_file()]
    return files if max_expressions is None else files[:max_expressions]


def _deltas(files: list[Path], neutral: np.ndarray) -> np.ndarray:
    """(V, 3, K) differences of each OBJ's vertices from the neutral mesh, same units as the files."""
    out = np.zeros((neutral.shape[0], 3, len(files)), np.float64)
    for k, f in enumerate(files):
        v = read_obj_vertices(f)
        if v.shape != neutral.shape:
            raise ModelFormatError(f"{f}: {v.shape[0]} vertices, the neutral mesh has {neutral.shape[0]}")
        out[:, :, k] = v - neutral
    return out


def _index_mask(indices: Any, num_vertices: int, key: str, folder: Path) -> np.ndarray:
    """(V,) bool mask from a JSON index list."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
        raise ModelFormatError(f"{folder / INDEX_FILE}: {key} has a vertex index out of range")
    mask = np.zeros(num_vertices, bool)
    mask[idx] = True
    return mask


def _regions(index: dict, materials: list[str], triangles: np.ndarray, num_vertices: int, folder: Path) -> dict:
    """``face`` (fitting vertices, else the M_Face material), ``rigid`` and one ``mtl_*`` per material."""
    regions: dict[str, np.ndarray] = {}
    mats = np.asarray(materials)
    for material in dict.fromkeys(materials):
        if not material:
            continue
        mask = np.zeros(num_vertices, bool)
        mask[triangles[mats == material].reshape(-1)] = True
        key = "mtl_" + re.sub(r"[^0-9a-z]+", "_", material.removeprefix("M_").lower()).strip("_")
        regions[key] = mask
    if "idx_to_fitting_verts" in index:
        regions["face"] = _index_mask(index["idx_to_fitting_verts"], num_vertices, "idx_to_fitting_verts", folder)
    elif "mtl_face" in regions:
        regions["face"] = regions["mtl_face"].copy()
    else:
        regions["face"] = np.ones(num_vertices, bool)
    if "idx_to_rigid_verts" in index:
        regions["rigid"] = _index_mask(index["idx_to_rigid_verts"], num_vertices, "idx_to_rigid_verts", folder)
    return regions


def load_ict(
    path: str | Path,
    *,
    landmarks: Any = None,
    landmark_index_base: int = 0,
    max_identities: int | None = None,
    max_expressions: int | None = None,
    name: str = "ict-facekit",
) -> MorphableModel:
    """Load an ICT-FaceKit ``FaceXModel/`` folder as a `MorphableModel` in millimetres.

    Args:
        path: the FaceXModel folder (or the repository root, or its vertex_indices.json).
        landmarks: optional override of ``idx_to_landmark_verts`` (68 indices or a file).
        landmark_index_base: index base of ``landmarks``.
        max_identities / max_expressions: load at most this many modes (default: all present).
        name: model name.
    Raises:
        ModelFormatError: not an ICT folder, missing neutral mesh or landmarks, topology mismatch.
    """
    folder = find_model_dir(path)
    index = _read_index(folder)
    if not (folder / NEUTRAL).is_file():
        raise ModelFormatError(f"{folder}: missing {NEUTRAL} required by the {FORMAT} format")
    mesh = read_obj(folder / NEUTRAL)
    num_vertices = mesh.vertices.shape[0]
    identity_files = _identity_files(folder, max_identities)
    expression_files = _expression_files(folder, list(index.get("expressions", [])), max_expressions)
    mean = mesh.vertices * CENTIMETRE_TO_MM
    shape_basis = _deltas(identity_files, mesh.vertices) * CENTIMETRE_TO_MM
    if expression_files:
        expr_basis = _deltas(expression_files, mesh.vertices) * CENTIMETRE_TO_MM
    else:
        expr_basis, _ = zero_basis(num_vertices)
    triangles, uv_triangles, flipped = orient_outward(mean, mesh.triangles, mesh.uv_triangles)
    if landmarks is not None:
        lms = read_landmarks(landmarks, num_vertices, index_base=landmark_index_base)
    elif "idx_to_landmark_verts" in index:
        lms = read_landmarks(index["idx_to_landmark_verts"], num_vertices)
    else:
        raise ModelFormatError(f"{folder / INDEX_FILE}: missing field 'idx_to_landmark_verts' (68 landmarks); "
                               f"{LANDMARKS_HINT}")
    meta = base_meta(
        FORMAT,
        folder,
        __name__,
        converted_from="centimetres (x 10)",
        std_source="identity modes scaled for N(0, 1) weights; expression blendshape weights (std = 1)",
        identities=[f.stem for f in identity_files],
        expressions=[f.stem for f in expression_files],
        winding_flipped=flipped,
        uv_layout="udim tiles: u in [k, k+1) is tile k; face skin in tile 0",
        extent=extent_meta(mean),
        licence="ICT-FaceKit, MIT licence (USC Institute for Creative Technologies)",
    )
    check_extent(mean, name)
    return build_model(
        folder,
        name=name,
        mean=mean,
        shape_basis=shape_basis,
        shape_std=np.ones(shape_basis.shape[2]),
        expression_basis=expr_basis,
        expression_std=np.ones(expr_basis.shape[2]),
        triangles=triangles,
        landmark_indices=lms,
        uv=mesh.uv,
        uv_triangles=uv_triangles,
        regions=_regions(index, mesh.materials, mesh.triangles, num_vertices, folder),
        meta=meta,
    )


__all__ = ["load_ict", "find_model_dir"]
