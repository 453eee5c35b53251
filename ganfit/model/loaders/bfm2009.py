"""Loader for the Basel Face Model 2009 (``01_MorphableModel.mat``).

Paysan, Knothe, Amberg, Romdhani, Vetter: "A 3D Face Model for Pose and Illumination Invariant Face
Recognition", AVSS 2009. https://faces.dmi.unibas.ch/bfm/ (registration required; not redistributable).

File: MATLAB v5 ``.mat`` (read with `scipy.io.loadmat`). Fields and how they map to `MorphableModel`:

============  ================  ==============================================================
field         shape             mapping
============  ================  ==============================================================
shapeMU       (3V, 1)           ``mean`` = shapeMU / 1000, rows ``x1 y1 z1 x2 ...`` -> (V, 3);
                                micrometres -> millimetres
shapePC       (3V, 199)         ``shape_basis`` = shapePC / 1000 -> (V, 3, 199); orthonormal
                                columns (per unit std, before scaling)
shapeEV       (199, 1)          ``shape_std`` = shapeEV as is: these are standard deviations
                                (in micrometres along the orthonormal basis), *not* variances
texMU         (3V, 1)           ``texture_mean`` = texMU / 255 (RGB 0..255 -> 0..1)
texPC         (3V, 199)         ``texture_basis`` = texPC / 255
texEV         (199, 1)          ``texture_std`` = texEV (standard deviations)
tl            (F, 3)            ``triangles`` = tl - 1 (MATLAB indices count from 1)
segbin        (V, 4)            regions ``segment_1`` .. ``segment_4`` (the four BFM segments:
                                nose, eyes, mouth, rest; the column order is not documented
                                by the BFM page, so they are named by column)
segMM, segMB  -                 ignored (per-segment models)
============  ================  ==============================================================

Evidence for the units and std: Deep3DFaceRecon's ``transferBFM09`` (``util/load_mats.py``,
microsoft/Deep3DFaceReconstruction) builds ``idBase = shapePC * shapeEV`` (so shapeEV scales the
orthonormal PCs as a standard deviation) and divides by 1e5 "to unify the scale to decimeter",
i.e. the file is in micrometres (1e5 um = 1 dm). The BFM page shows components at "+/- 5 STD".

Not in the file: no expression model (``expression_basis`` is (V, 3, 0)), no iBUG-68 landmarks
(``landmarks=`` is required), no UV coordinates. ``regions["face"]`` is every vertex (the BFM mesh
is already the face mask). Orientation: y up, the face looks down +z (as we use). Triangle winding
is checked and reversed if it faces inward (``meta["winding_flipped"]``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelFormatError
from ..morphable import MorphableModel
from ._common import (
    base_meta,
    build_model,
    check_extent,
    extent_meta,
    interleaved_to_basis,
    interleaved_to_vertices,
    landmarks_or_error,
    not_a_model,
    orient_outward,
    reading,
    require,
    require_file,
    zero_basis,
)

FORMAT = "bfm2009"
REQUIRED_FIELDS = ("shapeMU", "shapePC", "shapeEV", "tl")
MICROMETRE_TO_MM = 1e-3


def read_mat(path: str | Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The variables of a MATLAB v5 file, or a `ModelFormatError` saying why it cannot be read
    (``corrupt or not a <fmt> file`` for a damaged or foreign file)."""
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # v7.3 files are HDF5
        raise ModelFormatError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it with save(..., '-v7')"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted errors on corrupt files
        raise not_a_model(path, fmt, f"not a readable MATLAB .mat file ({exc!r})") from exc


def _texture(mat: dict, num_vertices: int, path: str | Path) -> dict[str, np.ndarray]:
    """texMU/texPC/texEV -> texture_mean (V, 3) in [0, 1], texture_basis (V, 3, K), texture_std (K,)."""
    if not all(k in mat for k in ("texMU", "texPC", "texEV")):
        return {}
    return {
        "texture_mean": interleaved_to_vertices(mat["texMU"], num_vertices, "texMU", path, FORMAT) / 255.0,
        "texture_basis": interleaved_to_basis(mat["texPC"], num_vertices, "texPC", path, FORMAT) / 255.0,
        "texture_std": np.asarray(mat["texEV"], dtype=np.float64).reshape(-1),
    }


def _regions(mat: dict, num_vertices: int) -> dict[str, np.ndarray]:
    """``face`` (all vertices) plus ``segment_1..4`` from segbin when it is (V, 4) or (4, V)."""
    regions = {"face": np.ones(num_vertices, bool)}
    seg = mat.get("segbin")
    if seg is not None:
        seg = np.asarray(seg)
        if seg.ndim == 2 and seg.shape[0] != num_vertices and seg.shape[1] == num_vertices:
            seg = seg.T
        if seg.ndim == 2 and seg.shape[0] == num_vertices:
            for j in range(seg.shape[1]):
                regions[f"segment_{j + 1}"] = seg[:, j] != 0
    return regions


def load_bfm2009(
    path: str | Path,
    *,
    landmarks: Any = None,
    landmark_index_base: int = 0,
    name: str = "bfm2009",
) -> MorphableModel:
    """Load ``01_MorphableModel.mat`` as a `MorphableModel` in millimetres.

    Args:
        path: the BFM 2009 ``.mat`` file.
        landmarks: required; 68 iBUG landmark vertex indices (array, or .txt/.json/.npy path).
        landmark_index_base: 1 if those indices count from 1 (MATLAB lists), else 0.
        name: model name.
    Returns:
        model with 199 shape components, 0 expression components and a 199-component colour model.
    Raises:
        ModelFormatError: ``corrupt or not a BFM 2009 file`` (unreadable, a missing field (named), wrong
            shapes), or no landmarks given (the message names ``--model-landmarks``); the file is read
            first, so a damaged file is reported as such.
        LandmarkError: a landmark file that is unreadable or has the wrong count/range.
    """
    require_file(path, FORMAT)
    mat = read_mat(path)
    for key in REQUIRED_FIELDS:
        require(mat, key, path, FORMAT)
    with reading(path, FORMAT):
        mu = np.asarray(mat["shapeMU"], dtype=np.float64)
        num_vertices = mu.size // 3
        mean = interleaved_to_vertices(mu, num_vertices, "shapeMU", path, FORMAT) * MICROMETRE_TO_MM
        basis = interleaved_to_basis(np.asarray(mat["shapePC"]), num_vertices, "shapePC", path, FORMAT) * MICROMETRE_TO_MM
        std = np.asarray(mat["shapeEV"], dtype=np.float64).reshape(-1)
        if std.shape != (basis.shape[2],):
            raise not_a_model(path, FORMAT, f"shapeEV has {std.size} entries for {basis.shape[2]} components")
        triangles = np.asarray(mat["tl"]).astype(np.int64) - 1
        if triangles.ndim != 2 or 3 not in triangles.shape:
            raise not_a_model(path, FORMAT, f"tl must be (F, 3), got {triangles.shape}")
        if triangles.shape[1] != 3:
            triangles = triangles.T
        triangles, _, flipped = orient_outward(mean, triangles)
        texture = _texture(mat, num_vertices, path)
        regions = _regions(mat, num_vertices)
    lms = landmarks_or_error(landmarks, num_vertices, FORMAT, index_base=landmark_index_base, path=path)
    expr_basis, expr_std = zero_basis(num_vertices)
    meta = base_meta(
        FORMAT,
        path,
        __name__,
        converted_from="micrometres (x 1e-3)",
        std_source="shapeEV holds standard deviations",
        winding_flipped=flipped,
        extent=extent_meta(mean),
        licence="Basel Face Model 2009 licence (non-commercial research; not redistributable)",
    )
    check_extent(mean, name)
    return build_model(
        path,
        name=name,
        mean=mean,
        shape_basis=basis,
        shape_std=std,
        expression_basis=expr_basis,
        expression_std=expr_std,
        triangles=triangles,
        landmark_indices=lms,
        regions=regions,
        meta=meta,
        **texture,
    )


__all__ = ["load_bfm2009", "read_mat"]
