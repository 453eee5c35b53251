"""Loader for Deep3DFaceRecon's ``BFM_model_front.mat`` (BFM 2009 face crop + Guo et al. expressions).

Deng et al., "Accurate 3D Face Reconstruction with Weakly-Supervised Learning", CVPRW 2019
(microsoft/Deep3DFaceReconstruction, sicxu/Deep3DFaceRecon_pytorch). The file is *made by the user*
from the BFM 2009 ``01_MorphableModel.mat``, Guo et al.'s ``Exp_Pca.bin`` and Deep3DFaceRecon's
``facemodel_info.mat`` with ``transferBFM09`` (``util/load_mats.py``), so it carries the BFM licence.

File: MATLAB v5 ``.mat`` (`scipy.io.loadmat`). Fields and mapping to `MorphableModel`:

===============  ==============  ===============================================================
field            shape           mapping
===============  ==============  ===============================================================
meanshape        (1, 3V)         ``mean`` = meanshape * 100: ``transferBFM09`` divides the BFM
                                 micrometres by 1e5 ("unify the scale to decimeter"), so the
                                 file is in decimetres; rows ``x1 y1 z1 x2 ...`` -> (V, 3)
idBase           (3V, 80)        ``shape_basis`` = idBase * 100 -> (V, 3, 80); already multiplied
                                 by the BFM standard deviations (``shapePC * shapeEV``), so
                                 ``shape_std`` = 1
exBase           (3V, 64)        ``expression_basis`` = exBase * 100, pre-scaled by Guo et al.'s
                                 ``std_exp.txt``; ``expression_std`` = 1
meantex          (1, 3V)         ``texture_mean`` = meantex / 255 (RGB 0..255 -> 0..1)
texBase          (3V, 80)        ``texture_basis`` = texBase / 255, pre-scaled; ``texture_std`` = 1
tri              (F, 3)          ``triangles`` = tri - 1 (indices count from 1)
keypoints        (1, 68)         ``landmark_indices`` = keypoints - 1 (iBUG-68, count from 1)
frontmask2_idx   (M, 1)          ``regions["front"]`` (photometric-loss area), indices count from 1
skinmask         (1, V)          ``regions["skin"]`` = skinmask != 0 (per-vertex 0/1 weights)
point_buf        (V, 8)          ignored (triangles around each vertex; we compute normals)
tri_mask2        (F', 3)         ignored (triangles of the front area)
===============  ==============  ===============================================================

``regions["face"]`` is every vertex (the model is already cropped to the face, 35,709 vertices).
No UV coordinates. Orientation: BFM's, y up, the face looking down +z (Deep3DFaceRecon puts its
camera at z = 10 dm looking down -z). Deep3DFaceRecon re-centres the mean at load time
(``recenter=True``); we keep the file's origin. Winding is checked and reversed if it faces inward.
"""
from __future__ import annotations

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
    interleaved_to_basis,
    interleaved_to_vertices,
    not_a_model,
    orient_outward,
    read_landmarks,
    reading,
    require,
    require_file,
)
from .bfm2009 import read_mat

FORMAT = "bfm_front"
REQUIRED_FIELDS = ("meanshape", "idBase", "exBase", "tri")
DECIMETRE_TO_MM = 100.0


def _one_based_indices(value: Any, num_vertices: int, field_name: str, path: str | Path) -> np.ndarray:
    """A MATLAB index list (any shape) as 0-based int64, range-checked."""
    idx = np.asarray(value).reshape(-1).astype(np.int64) - 1
    if idx.size and (idx.min() < 0 or idx.max() >= num_vertices):
        raise not_a_model(path, FORMAT, f"{field_name} index out of range for {num_vertices} vertices")
    return idx


def _regions(mat: dict, num_vertices: int, path: str | Path) -> dict[str, np.ndarray]:
    """``face`` (all), ``front`` from frontmask2_idx and ``skin`` from skinmask, when present."""
    regions = {"face": np.ones(num_vertices, bool)}
    if mat.get("frontmask2_idx") is not None:
        front = np.zeros(num_vertices, bool)
        front[_one_based_indices(mat["frontmask2_idx"], num_vertices, "frontmask2_idx", path)] = True
        regions["front"] = front
    skin = mat.get("skinmask")
    if skin is not None:
        skin = np.asarray(skin).reshape(-1)
        if skin.size == num_vertices:
            regions["skin"] = skin != 0
    return regions


def _texture(mat: dict, num_vertices: int, path: str | Path) -> dict[str, np.ndarray]:
    """meantex/texBase (0..255, pre-scaled) -> texture_mean in [0, 1], basis, std = 1."""
    if mat.get("meantex") is None or mat.get("texBase") is None:
        return {}
    basis = interleaved_to_basis(np.asarray(mat["texBase"]), num_vertices, "texBase", path, FORMAT) / 255.0
    return {
        "texture_mean": interleaved_to_vertices(np.asarray(mat["meantex"]), num_vertices, "meantex", path, FORMAT) / 255.0,
        "texture_basis": basis,
        "texture_std": np.ones(basis.shape[2]),
    }


def load_bfm_front(
    path: str | Path,
    *,
    landmarks: Any = None,
    landmark_index_base: int = 0,
    name: str = "bfm-front",
) -> MorphableModel:
    """Load Deep3DFaceRecon's ``BFM_model_front.mat`` as a `MorphableModel` in millimetres.

    Args:
        path: the ``.mat`` file.
        landmarks: optional override of the file's ``keypoints`` (68 indices or a file).
        landmark_index_base: index base of ``landmarks`` (not of ``keypoints``, which count from 1).
        name: model name.
    Raises:
        ModelFormatError: unreadable file, missing field (named), no landmarks anywhere.
    """
    require_file(path, FORMAT)
    mat = read_mat(path, FORMAT)
    for key in REQUIRED_FIELDS:
        require(mat, key, path, FORMAT)
    with reading(path, FORMAT):
        flat_mean = np.asarray(mat["meanshape"], dtype=np.float64)
        num_vertices = flat_mean.size // 3
        mean = interleaved_to_vertices(flat_mean, num_vertices, "meanshape", path, FORMAT) * DECIMETRE_TO_MM
        shape_basis = interleaved_to_basis(np.asarray(mat["idBase"]), num_vertices, "idBase", path, FORMAT) * DECIMETRE_TO_MM
        expr_basis = interleaved_to_basis(np.asarray(mat["exBase"]), num_vertices, "exBase", path, FORMAT) * DECIMETRE_TO_MM
        triangles = np.asarray(mat["tri"]).astype(np.int64) - 1
        if triangles.ndim != 2 or triangles.shape[1] != 3:
            raise not_a_model(path, FORMAT, f"tri must be (F, 3), got {triangles.shape}")
        triangles, _, flipped = orient_outward(mean, triangles)
        regions = _regions(mat, num_vertices, path)
        texture = _texture(mat, num_vertices, path)
    if landmarks is not None:
        lms = read_landmarks(landmarks, num_vertices, index_base=landmark_index_base)
    elif mat.get("keypoints") is not None:
        lms = read_landmarks(np.asarray(mat["keypoints"]).reshape(-1), num_vertices, index_base=1)
    else:
        raise ModelFormatError(f"{path}: missing field 'keypoints' (68 landmarks); {LANDMARKS_HINT}")
    meta = base_meta(
        FORMAT,
        path,
        __name__,
        converted_from="decimetres (x 100)",
        std_source="bases pre-scaled by their standard deviations (std = 1)",
        winding_flipped=flipped,
        extent=extent_meta(mean),
        licence="derived from the Basel Face Model 2009 (BFM licence) and Guo et al. expression basis",
    )
    check_extent(mean, name)
    return build_model(
        path,
        name=name,
        mean=mean,
        shape_basis=shape_basis,
        shape_std=np.ones(shape_basis.shape[2]),
        expression_basis=expr_basis,
        expression_std=np.ones(expr_basis.shape[2]),
        triangles=triangles,
        landmark_indices=lms,
        regions=regions,
        meta=meta,
        **texture,
    )


__all__ = ["load_bfm_front"]
