"""Loader for the Basel Face Model 2017 (``model2017-1_bfm_nomouth.h5``, ``model2017-1_face12_nomouth.h5``).

Gerig et al., "Morphable Face Models - An Open Framework", FG 2018 (arXiv:1709.08398).
https://faces.dmi.unibas.ch/bfm/bfm2017.html (registration required; not redistributable).

File: HDF5 in the statismo/scalismo-faces layout (read with h5py). One statismo model per part, each
``<part>/model/{mean, pcaBasis, pcaVariance, noiseVariance}`` and ``<part>/representer/{points, cells}``,
for the parts ``shape``, ``expression`` and ``color``. Mapping to `MorphableModel`:

==============================  ============  =========================================================
field                           shape         mapping
==============================  ============  =========================================================
shape/model/mean                (3V,)         ``mean`` (rows ``x1 y1 z1 x2 ...``), already millimetres;
                                              plus expression/model/mean (the mean expression offset)
shape/model/pcaBasis            (3V, K)       ``shape_basis`` -> (V, 3, K); orthonormal columns
shape/model/pcaVariance         (K,)          ``shape_std`` = sqrt(pcaVariance): the file holds
                                              *variances* (eigenvalues)
expression/model/...            same          ``expression_basis``, ``expression_std`` likewise
color/model/{mean,pcaBasis,     (3V,) ...     ``texture_mean`` (RGB in 0..1), ``texture_basis``,
pcaVariance}                                  ``texture_std`` = sqrt(variance) (optional)
shape/representer/cells         (3, F)        ``triangles`` = cells.T, indices count from 0
shape/representer/points        (3, V)        reference mesh; used only for the vertex count
version/{majorVersion,          int           0.9: pcaBasis orthonormal; 0.8: pcaBasis stored as
minorVersion}                                 U * sqrt(variance), divided back out here
==============================  ============  =========================================================

Evidence: statismo's ``StatisticalModel::Load``/``Save`` (statismo/statismo,
``modules/core/include/StatisticalModel.txx``) writes ``GetOrthonormalPCABasisMatrix()`` as
``pcaBasis`` in version 0.9 and reads 0.8 files as ``U * D`` with ``D = sqrt(pcaVariance)``; eos's
``convert-bfm2017-to-eos.py`` notes the BFM 2017 basis columns have unit norm and passes
``pcaVariance`` as eigenvalues. When no version is stored, the column norms decide (unit norm ->
orthonormal). Units are millimetres (a mean face about 150 mm wide; `check_extent` warns otherwise).

Not in the file: iBUG-68 landmarks (``metadata/landmarks`` holds BFM's own named points), so
``landmarks=`` is required; no UV coordinates. ``regions["face"]`` is every vertex. Orientation:
y up, face looking down +z; winding checked and reversed if it faces inward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

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
    require_file,
    zero_basis,
)

FORMAT = "bfm2017"


def _dataset(h5: Any, key: str, path: str | Path, required: bool = True) -> np.ndarray | None:
    """``h5[key]`` as a numpy array, None if absent and optional, else a `ModelFormatError` naming it."""
    if key in h5:
        return np.asarray(h5[key][()])
    if required:
        raise not_a_model(path, FORMAT, f"missing field {key!r} (a statismo model with shape/, expression/ and "
                          "color/ parts)")
    return None


def _statismo_version(h5: Any, part: str) -> tuple[int, int] | None:
    """(major, minor) from ``<part>/version`` or ``/version``, or None when the file has none."""
    for group in (f"{part}/version", "version"):
        if f"{group}/majorVersion" in h5 and f"{group}/minorVersion" in h5:
            return int(np.asarray(h5[f"{group}/majorVersion"][()])), int(np.asarray(h5[f"{group}/minorVersion"][()]))
    return None


def _pca_part(h5: Any, part: str, num_vertices: int, path: str | Path, required: bool = True):
    """mean (V, 3), orthonormal basis (V, 3, K) and std (K,) of one statismo part, or None."""
    mean = _dataset(h5, f"{part}/model/mean", path, required)
    if mean is None:
        return None
    basis = _dataset(h5, f"{part}/model/pcaBasis", path).astype(np.float32, copy=False)
    variance = _dataset(h5, f"{part}/model/pcaVariance", path).astype(np.float64).reshape(-1)
    if basis.ndim != 2 or basis.shape[1] != variance.size:
        raise not_a_model(path, FORMAT, f"{part}/model/pcaBasis {basis.shape} does not match pcaVariance ({variance.size},)")
    if not np.all(variance > 0):  # also NaN
        i = int(np.flatnonzero(~(variance > 0))[0])
        raise not_a_model(path, FORMAT, f"{part}/model/pcaVariance[{i}] is {variance[i]:g}; variances must be positive")
    std = np.sqrt(variance)
    if _basis_is_scaled(h5, part, basis):
        basis = basis / std.astype(np.float32)
    return (
        interleaved_to_vertices(mean, num_vertices, f"{part}/model/mean", path, FORMAT),
        interleaved_to_basis(basis, num_vertices, f"{part}/model/pcaBasis", path, FORMAT),
        std,
    )


def _basis_is_scaled(h5: Any, part: str, basis: np.ndarray) -> bool:
    """True when pcaBasis holds U * sqrt(variance) (statismo 0.8) rather than orthonormal U (0.9)."""
    version = _statismo_version(h5, part)
    if version is not None:
        return version < (0, 9)
    if basis.shape[1] == 0:
        return False
    norms = np.linalg.norm(basis, axis=0)
    return not np.allclose(norms, 1.0, rtol=1e-3, atol=1e-3)


def load_bfm2017(
    path: str | Path,
    *,
    landmarks: Any = None,
    landmark_index_base: int = 0,
    name: str | None = None,
) -> MorphableModel:
    """Load a BFM 2017 ``.h5`` file as a `MorphableModel` in millimetres.

    Args:
        path: ``model2017-1_bfm_nomouth.h5`` or ``model2017-1_face12_nomouth.h5`` (or BFM 2019 files
            of the same layout).
        landmarks: required; 68 iBUG landmark vertex indices (array, or .txt/.json/.npy path).
        landmark_index_base: 1 if those indices count from 1, else 0.
        name: model name; default ``"bfm2017-<file stem>"``.
    Raises:
        ModelFormatError: ``corrupt or not a BFM 2017 file`` (not HDF5, damaged, a missing field (named),
            wrong shapes, variances that are not positive), or no landmarks given (the message names
            ``--model-landmarks``); the file is read first, so a damaged file is reported as such.
    """
    import h5py

    require_file(path, FORMAT)
    try:
        h5 = h5py.File(str(path), "r")
    except OSError as exc:
        raise not_a_model(path, FORMAT, f"not a readable HDF5 file ({exc})") from exc
    with reading(path, FORMAT), h5:
        points = _dataset(h5, "shape/representer/points", path)
        cells = _dataset(h5, "shape/representer/cells", path)
        if points.ndim != 2 or 3 not in points.shape:
            raise not_a_model(path, FORMAT, f"shape/representer/points must be (3, V), got {points.shape}")
        num_vertices = points.shape[1] if points.shape[0] == 3 else points.shape[0]
        shape_mean, shape_basis, shape_std = _pca_part(h5, "shape", num_vertices, path)
        expression = _pca_part(h5, "expression", num_vertices, path, required=False)
        color = _pca_part(h5, "color", num_vertices, path, required=False)
        if expression is None:
            expr_mean = np.zeros_like(shape_mean)
            expr_basis, expr_std = zero_basis(num_vertices)
        else:
            expr_mean, expr_basis, expr_std = expression
        mean = shape_mean + expr_mean
        triangles = np.asarray(cells).astype(np.int64)
        if triangles.ndim != 2 or 3 not in triangles.shape:
            raise not_a_model(path, FORMAT, f"shape/representer/cells must be (3, F), got {triangles.shape}")
        if triangles.shape[0] == 3 and triangles.shape[1] != 3:
            triangles = triangles.T
        triangles, _, flipped = orient_outward(mean, triangles)
    lms = landmarks_or_error(landmarks, num_vertices, FORMAT, index_base=landmark_index_base, path=path)
    name = name or f"bfm2017-{Path(path).stem}"
    texture = {}
    if color is not None:
        texture = {"texture_mean": color[0], "texture_basis": color[1], "texture_std": color[2]}
    meta = base_meta(
        FORMAT,
        path,
        __name__,
        converted_from="millimetres (no conversion)",
        std_source="sqrt(pcaVariance)",
        expression_mean_added=expression is not None,
        winding_flipped=flipped,
        extent=extent_meta(mean),
        licence="Basel Face Model 2017 licence (non-commercial research; not redistributable)",
    )
    check_extent(mean, name)
    return build_model(
        path,
        name=name,
        mean=mean,
        shape_basis=shape_basis,
        shape_std=shape_std,
        expression_basis=expr_basis,
        expression_std=expr_std,
        triangles=triangles,
        landmark_indices=lms,
        regions={"face": np.ones(num_vertices, bool)},
        meta=meta,
        **texture,
    )


__all__ = ["load_bfm2017"]
