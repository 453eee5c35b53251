"""Per-triangle and per-vertex measures of a mesh or a point cloud.

Areas (3-D, and signed in UV), normals (of triangles, of vertices, and estimated for a point cloud by
PCA), edge lengths, the local vertex spacing (median distance to the nearest neighbours) and how much
a deformation stretches each triangle's edges. Pure numpy/scipy functions of arrays; the other
modules of `ganfit.model.topology` build on them.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "edge_lengths",
    "edge_stretch",
    "estimate_normals",
    "face_normals",
    "local_spacing",
    "triangle_areas",
    "uv_signed_areas",
    "vertex_normals",
]


def triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F,) unsigned areas of 3-D triangles."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    return 0.5 * np.linalg.norm(np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]]), axis=1)


def uv_signed_areas(uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F,) signed areas of 2-D triangles: positive when counter-clockwise."""
    q = np.asarray(uv, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    a, b, c = q[t[:, 0]], q[t[:, 1]], q[t[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def face_normals(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals by the right-hand rule (counter-clockwise corners -> towards the viewer)."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    n = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def vertex_normals(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals; zero for vertices no triangle uses."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    n = np.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])
    out = np.zeros_like(p)
    for k in range(3):
        np.add.at(out, t[:, k], n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(length > 0, out / np.maximum(length, 1e-30), 0.0)


def edge_lengths(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 3) lengths of the edges (v0 v1), (v1 v2), (v2 v0) of each triangle."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    return np.stack(
        [np.linalg.norm(p[t[:, (k + 1) % 3]] - p[t[:, k]], axis=1) for k in range(3)], axis=1
    )


def local_spacing(points: np.ndarray, k: int = 6) -> np.ndarray:
    """(V,) typical distance from each point to its neighbours: the median distance to its `k` nearest.

    For a nearly uniform surface sampling this is close to the local mesh edge length.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    k = min(k, len(p) - 1)
    dist, _ = cKDTree(p).query(p, k=k + 1)
    return np.median(dist[:, 1:], axis=1)


def estimate_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """(V, 3) unit surface normals of a point cloud by PCA of each point's `k` nearest neighbours.

    The sign is arbitrary (a point cloud has no inside); use them where the sign does not matter.
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    k = min(k, len(p))
    _, nn = cKDTree(p).query(p, k=k)
    q = p[nn] - p[nn].mean(axis=1, keepdims=True)
    _, vec = np.linalg.eigh(np.einsum("nki,nkj->nij", q, q))
    return vec[:, :, 0]


def edge_stretch(points: np.ndarray, triangles: np.ndarray, displacements: np.ndarray) -> np.ndarray:
    """(F,) the largest factor by which any edge of each triangle grows under any displacement.

    Each of the K displacement fields is applied with both signs, ``points +/- displacements[..., k]``.
    Edges that bridge a gap the model opens (the lips, under an expression that opens the mouth)
    grow many times; edges of the real surface grow a little.

    Args:
        points: (V, 3); triangles: (F, 3); displacements: (V, 3, K), e.g. 3 standard deviations of
            each expression component.
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    disp = np.asarray(displacements, dtype=np.float64)
    a, b = t.reshape(-1), np.roll(t, -1, axis=1).reshape(-1)
    base = np.maximum(np.linalg.norm(p[a] - p[b], axis=1), 1e-12)
    worst = np.ones(len(a))
    for k in range(disp.shape[2]):
        d = disp[a, :, k] - disp[b, :, k]
        for sign in (1.0, -1.0):
            length = np.linalg.norm(p[a] - p[b] + sign * d, axis=1)
            worst = np.maximum(worst, length / base)
    return worst.reshape(-1, 3).max(axis=1)
