"""Filling per-vertex values where they are unknown: mirror partners and harmonic interpolation.

`mirror_vertices` pairs each vertex with its partner across the face's plane of symmetry (x = 0);
`harmonic_fill` fills the remaining unknown values by the discrete Laplace equation over the mesh
graph (`vertex_adjacency`). Used to complete per-vertex colours the camera did not see.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "harmonic_fill",
    "mirror_vertices",
    "vertex_adjacency",
]


def mirror_vertices(points: np.ndarray, max_distance: float = 3.0) -> np.ndarray:
    """Each vertex's mirror partner across the x = 0 plane (the face's plane of symmetry).

    Args:
        points: (V, 3) the mean shape, symmetric about x = 0.
        max_distance: partners further than this (model units) from the exact mirror point get -1.
    Returns:
        (V,) int64 index of the nearest vertex to (-x, y, z), or -1.
    """
    from scipy.spatial import cKDTree

    mirrored = points * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(points).query(mirrored, k=1)
    idx = idx.astype(np.int64)
    idx[dist > max_distance] = -1
    return idx


def vertex_adjacency(triangles: np.ndarray, num_vertices: int):
    """Symmetric (V, V) scipy CSR matrix with 1 where two vertices share an edge."""
    import scipy.sparse as sp

    t = np.asarray(triangles, dtype=np.int64)
    rows = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    cols = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    adj = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0
    return adj


def harmonic_fill(values: np.ndarray, known: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Fill unknown per-vertex values by the discrete Laplace equation with the known values fixed
    (the smoothest interpolation over the mesh graph). Vertices with no path to a known vertex get the
    mean of the known values.

    Args:
        values: (V, C); known: (V,) bool; triangles: (F, 3).
    Returns:
        (V, C) with the known rows unchanged.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    out = np.array(values, dtype=np.float64, copy=True)
    unknown = ~known
    if not unknown.any() or not known.any():
        if not known.any():
            out[:] = 0.5
        return out
    adj = vertex_adjacency(triangles, len(values))
    lap = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    u_idx, k_idx = np.flatnonzero(unknown), np.flatnonzero(known)
    a = lap[u_idx][:, u_idx].tocsc() + sp.identity(len(u_idx), format="csc") * 1e-6
    rhs = -(lap[u_idx][:, k_idx] @ out[k_idx]) + 1e-6 * out[k_idx].mean(0)
    out[u_idx] = spla.splu(a).solve(rhs)
    degree = np.asarray(adj.sum(1)).ravel()
    isolated = unknown & (degree == 0)
    out[isolated] = out[k_idx].mean(0)
    return out
