"""Building and checking a triangle mesh for a face model that ships only vertices.

Some face-model files (3DDFA's BFM arrays, for one) carry a mean shape and bases but no triangles and
no texture coordinates. This module makes both from the mean shape in a cylindrical UV layout (the
kind of UV map GANFit's texture generator works in: the face unwrapped around a vertical axis).
`build_cylindrical_mesh` runs the whole recipe:

1. `cylindrical_unwrap`: angle around a vertical axis inside the head (times a radius, so both UV
   axes are in millimetres) and height ``y``.
2. `radial_occlusion`: where the unwrap folds (the inside of a nostril, the back of an ear's rim,
   the inner lips) a second layer of the surface lies under the first in UV; those points are
   left out, since no UV triangulation (and no UV texture) can hold both layers.
3. `delaunay_triangles` of the rest in UV (counter-clockwise in UV, which is counter-clockwise seen
   from outside: outward normals), then `flip_to_delaunay_3d` to undo the long, spiky triangles a
   squeezing projection (slopes seen at a grazing angle) gives.
4. `clean_triangulation`: drop triangles bridging holes (mouth, nostrils) and the long thin ones
   along the convex hull of the UV domain (edge length against the local vertex spacing),
   triangles facing inward, triangles a deformation of the model would stretch (`edge_stretch`:
   the lips, which touch in the mean shape), bow-tie fans and small islands; `fill_small_holes`
   closes the pin-holes that leaves.
5. `mesh_report`: the checks (degenerate and UV-flipped triangles, edge manifoldness and consistent
   orientation, manifold vertices, outward normals, longest edge relative to the local vertex
   spacing, unused vertices, Euler characteristic and boundary loops).

`landmark_regions` then marks face parts (face, skin, eyes, brows, nose, lips) from the iBUG-68
landmarks. Everything is numpy/scipy, pure functions of arrays, and independent of any particular
model. Coordinates: y up, the face looking down +z (the `MorphableModel` convention).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "boundary_loops",
    "build_cylindrical_mesh",
    "clean_triangulation",
    "CylinderAxis",
    "cylindrical_unwrap",
    "CylindricalMesh",
    "default_cylinder_axis",
    "delaunay_triangles",
    "distance_to_polyline",
    "edge_lengths",
    "edge_stretch",
    "edge_table",
    "estimate_normals",
    "face_normals",
    "fill_small_holes",
    "flip_to_delaunay_3d",
    "landmark_regions",
    "local_spacing",
    "mesh_report",
    "MeshReport",
    "nonmanifold_vertices",
    "normalize_uv",
    "points_in_polygon",
    "radial_directions",
    "radial_occlusion",
    "triangle_areas",
    "uv_signed_areas",
    "vertex_normals",
]


# ---------------------------------------------------------------------------------------------- unwrap
@dataclass(frozen=True)
class CylinderAxis:
    """A vertical (y) axis through ``(x, z) = (center_x, center_z)`` and the radius that turns its
    angle into millimetres of arc (``u = radius * angle``)."""

    center_x: float
    center_z: float
    radius: float


def default_cylinder_axis(points: np.ndarray, depth_fraction: float = 0.7) -> CylinderAxis:
    """A cylinder axis for unwrapping a face mask that looks down +z.

    The axis is vertical, at the mean ``x`` of the points and ``depth_fraction`` of the mask's
    depth behind its frontmost point (``z_max - depth_fraction * (z_max - z_min)``): about the
    centre of the head for a mask that reaches back to the ears. That keeps the angle of every point
    well inside (-180, 180) degrees and looks at the sides of the face (and the ears) from the side,
    not at a grazing angle. The radius is the median distance of the points from the axis, so arc
    length in UV is close to arc length on the surface.

    Args:
        points: (V, 3) vertices.
    """
    p = np.asarray(points, dtype=np.float64)
    cx = float(p[:, 0].mean())
    zmin, zmax = float(p[:, 2].min()), float(p[:, 2].max())
    cz = zmax - depth_fraction * (zmax - zmin)
    radius = float(np.median(np.hypot(p[:, 0] - cx, p[:, 2] - cz)))
    return CylinderAxis(cx, cz, radius)


def cylindrical_unwrap(points: np.ndarray, axis: CylinderAxis | None = None) -> np.ndarray:
    """Unwrap points onto a vertical cylinder.

    ``u = radius * atan2(x - center_x, z - center_z)`` (grows towards +x, i.e. to the right in a
    frontal view) and ``v = y`` (up), both in the units of the points.

    Args:
        points: (V, 3) vertices; axis: the cylinder (default `default_cylinder_axis`).
    Returns:
        (V, 2) float64 unwrapped coordinates.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (V, 3), got {p.shape}")
    axis = axis or default_cylinder_axis(p)
    angle = np.arctan2(p[:, 0] - axis.center_x, p[:, 2] - axis.center_z)
    return np.stack([axis.radius * angle, p[:, 1]], axis=1)


def normalize_uv(uv: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Scale 2-D coordinates into [margin, 1 - margin] keeping the aspect ratio (longer side fills it).

    The shorter side is centred. Used for texture coordinates (v up, as in OBJ).

    Returns:
        (V, 2) float64 in [0, 1].
    """
    uv = np.asarray(uv, dtype=np.float64)
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    extent = hi - lo
    scale = (1.0 - 2.0 * margin) / max(float(extent.max()), 1e-12)
    offset = (1.0 - extent * scale) / 2.0
    return (uv - lo) * scale + offset


# ---------------------------------------------------------------------------------------------- measures
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


def radial_directions(points: np.ndarray, axis: CylinderAxis) -> np.ndarray:
    """(V, 3) unit horizontal directions from the cylinder axis out through each point."""
    p = np.asarray(points, dtype=np.float64)
    d = np.stack([p[:, 0] - axis.center_x, np.zeros(len(p)), p[:, 2] - axis.center_z], axis=1)
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-30)


def radial_occlusion(
    points: np.ndarray,
    axis: CylinderAxis,
    *,
    spacing: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    splat: float = 1.5,
    self_distance: float = 2.5,
) -> np.ndarray:
    """(V,) bool: points hidden from outside the cylinder by another part of the surface.

    A fold of the unwrap (the inside of a nostril, the back of the ear's rim, the inner lips) puts
    a second layer of the surface under the first in UV. A point is hidden when the ray from it
    straight out from the axis (a ray of constant UV) passes through the surface near another point
    ``j``: the surface there is approximated by a disc ("splat") around ``j`` in the plane of its
    normal, of radius ``splat * spacing[j]``. Points closer than ``self_distance * spacing`` to the
    hidden point are ignored (that is the point's own sheet, met at a grazing angle).

    Args:
        points: (V, 3); axis: the unwrap's cylinder; spacing: (V,) `local_spacing`;
        normals: (V, 3) `estimate_normals` (sign does not matter).
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    if spacing is None:
        spacing = local_spacing(p)
    if normals is None:
        normals = estimate_normals(p)
    uv = cylindrical_unwrap(p, axis)
    # the splat around j covers rays within splat * spacing[j] of it in 3-D; the unwrap scales
    # horizontal distances by radius / (distance of j from the axis), vertical ones by 1
    rho = np.hypot(p[:, 0] - axis.center_x, p[:, 2] - axis.center_z)
    reach = splat * spacing * np.maximum(1.0, axis.radius / np.maximum(rho, 1e-9)) * 1.01
    hidden = np.zeros(len(p), bool)
    near = cKDTree(uv).query_ball_point(uv, reach)
    counts = np.fromiter((len(n) for n in near), dtype=np.int64, count=len(near))
    if counts.sum() == 0:
        return hidden
    j_all = np.repeat(np.arange(len(p)), counts)
    i_all = np.concatenate([np.asarray(n, dtype=np.int64) for n in near])
    pairs = np.stack([i_all, j_all], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    i, j = pairs[:, 0], pairs[:, 1]
    far = np.linalg.norm(p[i] - p[j], axis=1) > self_distance * np.maximum(spacing[i], spacing[j])
    i, j = i[far], j[far]
    ray = radial_directions(p, axis)[i]
    nj = normals[j]
    den = np.einsum("ij,ij->i", ray, nj)
    num = np.einsum("ij,ij->i", p[j] - p[i], nj)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / den
    hit = p[i] + t[:, None] * ray
    occluded = (np.abs(den) > 1e-9) & (t > 0) & (np.linalg.norm(hit - p[j], axis=1) < splat * spacing[j])
    hidden[i[occluded]] = True
    return hidden


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


# ---------------------------------------------------------------------------------------------- topology
def edge_table(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The undirected edges of a triangle list.

    Returns:
        edges: (E, 2) sorted vertex pairs; count: (E,) how many triangles use each edge;
        balance: (E,) number of uses as (low -> high) minus uses as (high -> low). A consistently
        oriented manifold has count in {1, 2} and, where count is 2, balance 0 (the two triangles walk
        the edge in opposite directions).
    """
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if len(t) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    nv = int(t.max()) + 1
    a = t.reshape(-1)
    b = np.roll(t, -1, axis=1).reshape(-1)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys, inverse, count = np.unique(lo * nv + hi, return_inverse=True, return_counts=True)
    balance = np.zeros(len(keys), np.int64)
    np.add.at(balance, inverse.reshape(-1), np.where(a < b, 1, -1))
    return np.stack([keys // nv, keys % nv], axis=1), count, balance


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by exactly one triangle), longest first.

    Each loop is an array of vertex indices in order. Vertices where more than two boundary edges
    meet (a non-manifold vertex) are walked through once per pair, so the result is still a list of
    loops; `nonmanifold_vertices` reports such vertices.
    """
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if len(t) == 0:
        return []
    nv = int(t.max()) + 1
    a = t.reshape(-1)
    b = np.roll(t, -1, axis=1).reshape(-1)
    key = np.minimum(a, b) * nv + np.maximum(a, b)
    uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    on_border = count[inverse.reshape(-1)] == 1
    # keep the direction the single triangle walks each boundary edge, so loops follow the surface
    nxt: dict[int, list[int]] = {}
    for x, y in zip(a[on_border].tolist(), b[on_border].tolist()):
        nxt.setdefault(x, []).append(y)
    loops: list[np.ndarray] = []
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        cur = start
        while True:
            outs = nxt.get(cur)
            if not outs:
                break
            b = outs.pop()
            if not outs:
                del nxt[cur]
            if b == start:
                break
            loop.append(b)
            cur = b
        loops.append(np.asarray(loop, dtype=np.int64))
    loops.sort(key=len, reverse=True)
    return loops


def nonmanifold_vertices(triangles: np.ndarray, num_vertices: int | None = None) -> np.ndarray:
    """Indices of vertices whose triangles do not form one fan (a disc or a half-disc).

    A vertex is manifold when the triangles around it, connected through shared edges at that
    vertex, form a single group ("bow-tie" vertices where two fans touch are not).
    """
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if t.size == 0:
        return np.zeros(0, np.int64)
    nv = int(num_vertices if num_vertices is not None else t.max() + 1)
    fans = _fan_count(t, nv)
    return np.flatnonzero(fans > 1)


def _fan_count(t: np.ndarray, nv: int) -> np.ndarray:
    """(V,) number of edge-connected groups of triangles around each vertex (0 when unused)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = len(t)
    # corner c = (triangle, k): vertex t[tri, k]; two corners at the same vertex are linked when their
    # triangles share the edge from that vertex to a common neighbour.
    corner_vertex = t.reshape(-1)
    corner_id = np.arange(3 * f)
    keys = []
    for k in range(3):
        for other in ((k + 1) % 3, (k + 2) % 3):
            keys.append(np.stack([t[:, k], t[:, other], np.arange(f) * 3 + k], axis=1))
    key = np.concatenate(keys)  # (vertex, neighbour, corner)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key = key[order]
    same = (key[1:, 0] == key[:-1, 0]) & (key[1:, 1] == key[:-1, 1])
    a = key[:-1, 2][same]
    b = key[1:, 2][same]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(3 * f, 3 * f))
    _, labels = connected_components(graph, directed=False)
    pairs = np.unique(corner_vertex * (3 * f) + labels[corner_id])
    return np.bincount(pairs // (3 * f), minlength=nv)


def _face_components(t: np.ndarray) -> np.ndarray:
    """(F,) label of the edge-connected component of each triangle."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = len(t)
    nv = int(t.max()) + 1
    a = t.reshape(-1)
    b = np.roll(t, -1, axis=1).reshape(-1)
    face = np.repeat(np.arange(f), 3)
    _, inverse = np.unique(np.minimum(a, b) * nv + np.maximum(a, b), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    inv_s, face_s = inverse[order], face[order]
    same = inv_s[1:] == inv_s[:-1]
    a, b = face_s[:-1][same], face_s[1:][same]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(f, f))
    _, labels = connected_components(graph, directed=False)
    return labels


# ---------------------------------------------------------------------------------------------- building
def delaunay_triangles(uv: np.ndarray) -> np.ndarray:
    """2-D Delaunay triangulation of `uv`, every triangle counter-clockwise in UV.

    Returns:
        (F, 3) int64 vertex indices.
    """
    from scipy.spatial import Delaunay

    q = np.asarray(uv, dtype=np.float64)
    tri = Delaunay(q).simplices.astype(np.int64)
    flip = uv_signed_areas(q, tri) < 0
    tri[flip] = tri[flip][:, ::-1]
    return tri


def _interior_edge_quads(t: np.ndarray) -> np.ndarray:
    """(Q, 6) rows ``(a, b, c, d, f1, f2)`` for every edge used once as a->b (in triangle ``f1 =
    (a, b, c)``) and once as b->a (in ``f2 = (b, a, d)``), with the triangles' corners rotated so."""
    f = len(t)
    rows = []
    for k in range(3):
        rows.append(np.stack([t[:, k], t[:, (k + 1) % 3], t[:, (k + 2) % 3], np.arange(f)], axis=1))
    h = np.concatenate(rows)  # half-edges (a, b, opposite, face)
    nv = int(t.max()) + 1
    key_fwd = h[:, 0] * nv + h[:, 1]
    key_rev = h[:, 1] * nv + h[:, 0]
    order = np.argsort(key_fwd)
    sorted_keys = key_fwd[order]
    pos = np.searchsorted(sorted_keys, key_rev)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    found = sorted_keys[pos] == key_rev
    twin = order[pos]
    sel = found & (h[:, 0] < h[:, 1])
    a, b, c, f1 = h[sel].T
    d, f2 = h[twin[sel], 2], h[twin[sel], 3]
    return np.stack([a, b, c, d, f1, f2], axis=1)


def _corner_angle(p: np.ndarray, at: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Angle at vertex `at` between the directions to `u` and `w` (3-D)."""
    e1 = p[u] - p[at]
    e2 = p[w] - p[at]
    cosang = np.einsum("ij,ij->i", e1, e2) / np.maximum(
        np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1), 1e-30
    )
    return np.arccos(np.clip(cosang, -1.0, 1.0))


def flip_to_delaunay_3d(
    points: np.ndarray, uv: np.ndarray, triangles: np.ndarray, *, max_rounds: int = 100, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """Flip edges until the mesh is (intrinsically) Delaunay in 3-D while staying valid in UV.

    A Delaunay triangulation of a projection picks the "wrong" diagonal where the projection
    squeezes the surface (slopes seen at a grazing angle), giving long, spiky triangles. An interior
    edge (a, b) between triangles (a, b, c) and (b, a, d) is replaced by (c, d) when the two 3-D
    angles opposite it sum to more than pi, provided both new triangles stay counter-clockwise in
    `uv` (so the result is still an embedding in UV: no flips, no overlaps) and (c, d) is not
    already an edge. Flips are made in rounds of edges that share no triangle.

    Args:
        points: (V, 3); uv: (V, 2); triangles: (F, 3) counter-clockwise in `uv`.
    Returns:
        (triangles, number of flips).
    """
    p = np.asarray(points, dtype=np.float64)
    q = np.asarray(uv, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).copy()
    if len(t) == 0:
        return t, 0
    nv = len(p)
    total = 0
    for _ in range(max_rounds):
        quads = _interior_edge_quads(t)
        a, b, c, d, f1, f2 = quads.T
        excess = _corner_angle(p, c, a, b) + _corner_angle(p, d, b, a) - np.pi
        cand = excess > tol
        if cand.any():
            # new triangles (a, d, c) and (d, b, c) must be counter-clockwise in UV
            new1 = np.stack([a, d, c], axis=1)
            new2 = np.stack([d, b, c], axis=1)
            cand &= (uv_signed_areas(q, new1) > 0) & (uv_signed_areas(q, new2) > 0)
        if cand.any():
            edges, _, _ = edge_table(t)
            existing = edges[:, 0] * nv + edges[:, 1]
            newkey = np.minimum(c, d) * nv + np.maximum(c, d)
            cand &= ~np.isin(newkey, existing)
        idx = np.flatnonzero(cand)
        if len(idx) == 0:
            break
        # greedy independent set: best excess first, each triangle and each new edge used once
        idx = idx[np.argsort(-excess[idx])]
        taken = np.zeros(len(t), bool)
        seen_new: set[int] = set()
        chosen = []
        for i in idx.tolist():
            if taken[f1[i]] or taken[f2[i]]:
                continue
            k = int(min(c[i], d[i]) * nv + max(c[i], d[i]))
            if k in seen_new:
                continue
            seen_new.add(k)
            taken[f1[i]] = taken[f2[i]] = True
            chosen.append(i)
        ch = np.asarray(chosen, dtype=np.int64)
        t[f1[ch]] = np.stack([a[ch], d[ch], c[ch]], axis=1)
        t[f2[ch]] = np.stack([d[ch], b[ch], c[ch]], axis=1)
        total += len(ch)
    return t, total


def clean_triangulation(
    points: np.ndarray,
    triangles: np.ndarray,
    *,
    spacing: np.ndarray | None = None,
    max_edge_factor: float = 3.0,
    outward: np.ndarray | None = None,
    stretch: np.ndarray | None = None,
    max_stretch: float = 2.5,
    min_component_faces: int = 50,
) -> tuple[np.ndarray, dict]:
    """Remove from a triangulation of a projection the triangles the surface does not have.

    A triangle is dropped when

    * any of its 3-D edges is longer than ``max_edge_factor`` times the local vertex spacing at its
      ends (mean of the two `spacing` values): these bridge holes and fill the concave parts of the
      UV domain's convex hull with long, thin triangles;
    * its normal has a negative component along `outward` (it joins points of a layer that faces
      away: the projection folds there);
    * its `stretch` (see `edge_stretch`) exceeds `max_stretch`: it bridges a gap the model opens,
      such as the lips;
    * after that, it is one of the smaller fans at a vertex where several fans touch, or it is in an
      edge-connected component of fewer than `min_component_faces` triangles.

    Args:
        points: (V, 3); triangles: (F, 3).
        spacing: (V,) local vertex spacing (default `local_spacing`).
        outward: (F, 3) direction each triangle's normal should point along (default: from the mean
            of the points to the triangle's centroid).
        stretch: (F,) per-triangle stretch, or None to skip that rule.
    Returns:
        (triangles (F', 3), stats): what is kept, and how many triangles each rule removed.
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    stats: dict = {"input": int(len(t))}
    if spacing is None:
        spacing = local_spacing(p)
    lengths = edge_lengths(p, t)
    limit = max_edge_factor * 0.5 * (spacing[t] + spacing[np.roll(t, -1, axis=1)])
    long_edge = (lengths > limit).any(axis=1)
    if outward is None:
        outward = p[t].mean(axis=1) - p.mean(axis=0)
    inward = np.einsum("ij,ij->i", face_normals(p, t), outward) <= 0
    stretched = np.zeros(len(t), bool) if stretch is None else np.asarray(stretch) > max_stretch
    stats["long_edge"] = int(long_edge.sum())
    stats["facing_inward"] = int((inward & ~long_edge).sum())
    stats["stretched"] = int((stretched & ~inward & ~long_edge).sum())
    t = t[~(long_edge | inward | stretched)]
    removed_fans = 0
    removed_small = 0
    for _ in range(20):
        before = len(t)
        t, n = _drop_small_fans(t, len(p))
        removed_fans += n
        if len(t):
            labels = _face_components(t)
            keep = np.bincount(labels)[labels] >= min_component_faces
            removed_small += int((~keep).sum())
            t = t[keep]
        if len(t) == before:
            break
    stats["nonmanifold_fans"] = removed_fans
    stats["small_components"] = removed_small
    stats["output"] = int(len(t))
    return t, stats


def _drop_small_fans(t: np.ndarray, nv: int) -> tuple[np.ndarray, int]:
    """At every vertex with several fans keep only the fan with the most triangles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    fans = _fan_count(t, nv)
    bad = np.flatnonzero(fans > 1)
    if len(bad) == 0:
        return t, 0
    drop = np.zeros(len(t), bool)
    bad_set = np.zeros(nv, bool)
    bad_set[bad] = True
    for v in bad:
        faces = np.flatnonzero((t == v).any(axis=1) & ~drop)
        if len(faces) == 0:
            continue
        sub = t[faces]
        # link faces sharing an edge that contains v
        others = [set(row.tolist()) - {v} for row in sub]
        a, b = [], []
        for i in range(len(faces)):
            for j in range(i + 1, len(faces)):
                if others[i] & others[j]:
                    a.append(i)
                    b.append(j)
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(faces), len(faces)))
        _, labels = connected_components(graph, directed=False)
        if labels.max() == 0:
            continue
        biggest = np.argmax(np.bincount(labels))
        drop[faces[labels != biggest]] = True
    return t[~drop], int(drop.sum())


# ---------------------------------------------------------------------------------------------- regions
def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which 2-D points lie inside a simple polygon (even-odd ray casting).

    Args:
        points: (N, 2); polygon: (M, 2) corners in order (closed implicitly).
    """
    q = np.asarray(points, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = q[:, 0:1], q[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    hits = crosses & (x < xint)
    return (hits.sum(axis=1) % 2) == 1


# ---------------------------------------------------------------------------------------------- checks
@dataclass
class MeshReport:
    """What `mesh_report` found. ``ok`` is the conjunction of the hard checks.

    Attributes:
        vertices, triangles: counts.
        degenerate: triangles with 3-D area below ``min_area``.
        uv_flipped: triangles with non-positive signed UV area (None without UV).
        nonmanifold_edges: edges used by more than two triangles.
        inconsistent_edges: interior edges walked in the same direction by both triangles.
        nonmanifold_vertices: vertices where several fans touch.
        unused_vertices: vertex indices no triangle uses.
        outward_fraction: fraction of used vertices whose normal has a positive component along
            ``vertex - centre`` (None without a centre).
        max_edge_ratio: the largest ratio of an edge's length to the local spacing at its ends.
        max_edge: longest edge; median_edge: median edge length.
        components: edge-connected components.
        boundary_loop_lengths: vertices in each boundary loop, longest first.
        euler: V_used - E + F (1 - holes for one disc with holes).
    """

    vertices: int
    triangles: int
    degenerate: int
    uv_flipped: int | None
    nonmanifold_edges: int
    inconsistent_edges: int
    nonmanifold_vertices: int
    unused_vertices: np.ndarray
    outward_fraction: float | None
    max_edge_ratio: float
    max_edge: float
    median_edge: float
    components: int
    boundary_loop_lengths: list[int] = field(default_factory=list)
    euler: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.degenerate == 0
            and not self.uv_flipped
            and self.nonmanifold_edges == 0
            and self.inconsistent_edges == 0
            and self.nonmanifold_vertices == 0
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["unused_vertices"] = int(len(self.unused_vertices))
        d["ok"] = self.ok
        return d


def mesh_report(
    points: np.ndarray,
    triangles: np.ndarray,
    uv: np.ndarray | None = None,
    *,
    centre: np.ndarray | None = None,
    spacing: np.ndarray | None = None,
    min_area: float = 1e-10,
) -> MeshReport:
    """Check a triangle mesh; see `MeshReport` for what each number means.

    Args:
        points: (V, 3); triangles: (F, 3); uv: (V, 2) per-vertex texture coordinates or None.
        centre: (3,) a point inside the head for the outward-normal check, or None to skip it.
        spacing: (V,) local vertex spacing for `max_edge_ratio` (default `local_spacing`).
        min_area: triangles with a smaller 3-D area count as degenerate.
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    nv = len(p)
    area = triangle_areas(p, t)
    uv_flipped = None if uv is None else int((uv_signed_areas(uv, t) <= 0).sum())
    edges, count, balance = edge_table(t)
    used = np.zeros(nv, bool)
    used[t.reshape(-1)] = True
    outward_fraction = None
    if centre is not None:
        vn = vertex_normals(p, t)
        dots = np.einsum("ij,ij->i", vn, p - np.asarray(centre, dtype=np.float64))
        outward_fraction = float((dots[used] > 0).mean()) if used.any() else 0.0
    if spacing is None:
        spacing = local_spacing(p)
    elen = np.linalg.norm(p[edges[:, 0]] - p[edges[:, 1]], axis=1)
    ratio = elen / (0.5 * (spacing[edges[:, 0]] + spacing[edges[:, 1]]))
    loops = boundary_loops(t)
    return MeshReport(
        vertices=nv,
        triangles=len(t),
        degenerate=int((area < min_area).sum()),
        uv_flipped=uv_flipped,
        nonmanifold_edges=int((count > 2).sum()),
        inconsistent_edges=int(((count == 2) & (balance != 0)).sum()),
        nonmanifold_vertices=int(len(nonmanifold_vertices(t, nv))),
        unused_vertices=np.flatnonzero(~used),
        outward_fraction=outward_fraction,
        max_edge_ratio=float(ratio.max()) if len(ratio) else 0.0,
        max_edge=float(elen.max()) if len(elen) else 0.0,
        median_edge=float(np.median(elen)) if len(elen) else 0.0,
        components=int(_face_components(t).max() + 1) if len(t) else 0,
        boundary_loop_lengths=[int(len(l)) for l in loops],
        euler=int(used.sum() - len(edges) + len(t)),
    )


# ---------------------------------------------------------------------------------------------- pipeline
@dataclass
class CylindricalMesh:
    """What `build_cylindrical_mesh` made.

    Attributes:
        triangles: (F, 3) int64, counter-clockwise seen from outside (and in UV).
        uv: (V, 2) float64 texture coordinates in [0, 1], v up; same aspect ratio as `uv_mm`.
        uv_mm: (V, 2) the unwrap in millimetres (arc length, height).
        axis: the cylinder.
        hidden: (V,) bool, vertices left out because a fold of the unwrap hides them.
        stats: how many triangles each step made or removed, and the parameters used.
    """

    triangles: np.ndarray
    uv: np.ndarray
    uv_mm: np.ndarray
    axis: CylinderAxis
    hidden: np.ndarray
    stats: dict


def build_cylindrical_mesh(
    points: np.ndarray,
    *,
    axis: CylinderAxis | None = None,
    displacements: np.ndarray | None = None,
    max_edge_factor: float = 3.0,
    max_stretch: float = 2.5,
    splat: float = 1.5,
    margin: float = 0.02,
    min_component_faces: int = 50,
    fill_holes_up_to: int = 6,
    flip_rounds: int = 8,
) -> CylindricalMesh:
    """Triangles and UVs for a face mask given only its vertices (GANFit's cylindrical layout).

    1. Unwrap onto a vertical cylinder (`cylindrical_unwrap`).
    2. Leave out the points a fold of the unwrap hides (`radial_occlusion`): only the outermost
       layer can be triangulated in UV (and textured from a UV map).
    3. Delaunay-triangulate the rest in UV, then flip edges towards a 3-D Delaunay mesh
       (`flip_to_delaunay_3d`, at most `flip_rounds` rounds: the first few make nearly all flips),
       staying a valid triangulation of UV.
    4. Remove long-edged, inward-facing and (given `displacements`) gap-bridging triangles, bow-tie
       fans and islands (`clean_triangulation`).
    5. Fill holes of at most `fill_holes_up_to` boundary vertices that those rules punched into the
       surface (a real hole, like the mouth, is larger).

    Args:
        points: (V, 3) the mean shape, y up, looking down +z.
        axis: the cylinder (default `default_cylinder_axis`).
        displacements: (V, 3, K) deformations the mesh must survive, e.g. 3 standard deviations of
            each expression component; triangles whose edges grow by more than `max_stretch` times
            under one of them are removed (they bridge the lips).
    """
    import time

    p = np.asarray(points, dtype=np.float64)
    started = time.perf_counter()
    axis = axis or default_cylinder_axis(p)
    uv_mm = cylindrical_unwrap(p, axis)
    spacing = local_spacing(p)
    normals = estimate_normals(p)
    hidden = radial_occlusion(p, axis, spacing=spacing, normals=normals, splat=splat)
    visible = np.flatnonzero(~hidden)
    tri = visible[delaunay_triangles(uv_mm[visible])]
    stats: dict = {"hidden_vertices": int(hidden.sum()), "delaunay": int(len(tri))}
    tri, flips = flip_to_delaunay_3d(p, uv_mm, tri, max_rounds=flip_rounds)
    stats["edge_flips"] = int(flips)
    outward = radial_directions(p[tri].mean(axis=1), axis)
    stretch = None if displacements is None else edge_stretch(p, tri, displacements)
    tri, clean_stats = clean_triangulation(
        p,
        tri,
        spacing=spacing,
        max_edge_factor=max_edge_factor,
        outward=outward,
        stretch=stretch,
        max_stretch=max_stretch,
        min_component_faces=min_component_faces,
    )
    stats["clean"] = clean_stats
    filled = fill_small_holes(p, uv_mm, tri, max_vertices=fill_holes_up_to)
    stats["hole_fill_triangles"] = int(len(filled) - len(tri))
    tri = filled
    stats["triangles"] = int(len(tri))
    stats["seconds"] = round(time.perf_counter() - started, 3)
    stats["parameters"] = {
        "axis": asdict(axis),
        "max_edge_factor": max_edge_factor,
        "max_stretch": max_stretch,
        "splat": splat,
        "margin": margin,
        "min_component_faces": min_component_faces,
        "fill_holes_up_to": fill_holes_up_to,
        "flip_rounds": flip_rounds,
    }
    return CylindricalMesh(
        triangles=tri, uv=normalize_uv(uv_mm, margin), uv_mm=uv_mm, axis=axis, hidden=hidden, stats=stats
    )


def fill_small_holes(points: np.ndarray, uv: np.ndarray, triangles: np.ndarray, *, max_vertices: int = 6) -> np.ndarray:
    """Close every hole whose boundary loop has at most `max_vertices` vertices (not the outer border).

    The hole is triangulated by ear clipping in `uv` (so the mesh stays a valid triangulation of UV,
    counter-clockwise) and filled only if that succeeds without creating an existing edge again.
    The longest loop is taken to be the outer border and never filled.

    Returns:
        (F', 3) triangles with the fills appended.
    """
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    q = np.asarray(uv, dtype=np.float64)
    loops = boundary_loops(t)
    if len(loops) <= 1 or max_vertices < 3:
        return t
    edges, _, _ = edge_table(t)
    nv = max(int(t.max()) + 1, len(q))
    existing = set((edges[:, 0] * nv + edges[:, 1]).tolist())
    new: list[list[int]] = []
    for loop in loops[1:]:
        if len(loop) > max_vertices or len(set(loop.tolist())) != len(loop):
            continue
        # the single triangle of a boundary edge walks it with the hole on its right: reversed, the
        # loop runs counter-clockwise around the hole
        poly = loop[::-1].tolist()
        fill = _ear_clip(q, poly)
        if fill is None:
            continue
        keys = []
        for tri in fill:
            for k in range(3):
                a, b = tri[k], tri[(k + 1) % 3]
                keys.append(min(a, b) * nv + max(a, b))
        loop_keys = {min(a, b) * nv + max(a, b) for a, b in zip(poly, poly[1:] + poly[:1])}
        inner = [k for k in keys if k not in loop_keys]
        if any(k in existing for k in inner):
            continue
        existing.update(inner)
        new.extend(fill)
    if not new:
        return t
    return np.concatenate([t, np.asarray(new, dtype=np.int64)])


def _ear_clip(q: np.ndarray, poly: list[int]) -> list[list[int]] | None:
    """Triangulate a simple counter-clockwise polygon (vertex indices into `q`), or None."""
    poly = list(poly)
    out: list[list[int]] = []
    guard = 0
    while len(poly) > 3 and guard < 1000:
        guard += 1
        n = len(poly)
        for k in range(n):
            a, b, c = poly[k - 1], poly[k], poly[(k + 1) % n]
            if uv_signed_areas(q, np.array([[a, b, c]]))[0] <= 0:
                continue
            others = [v for v in poly if v not in (a, b, c)]
            if others and _in_triangle(q[others], q[a], q[b], q[c]).any():
                continue
            out.append([a, b, c])
            poly.pop(k)
            break
        else:
            return None
    if uv_signed_areas(q, np.array([poly]))[0] <= 0:
        return None
    out.append(poly)
    return out


def _in_triangle(x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N,) bool: points `x` (N, 2) inside or on the counter-clockwise triangle a b c."""

    def side(p0, p1):
        return (p1[0] - p0[0]) * (x[:, 1] - p0[1]) - (p1[1] - p0[1]) * (x[:, 0] - p0[0])

    return (side(a, b) >= 0) & (side(b, c) >= 0) & (side(c, a) >= 0)



# ---------------------------------------------------------------------------------------------- regions
#: iBUG-68 landmark groups (0-based), subject's right first (image left in a frontal view).
IBUG_JAW = tuple(range(0, 17))
IBUG_BROWS = (tuple(range(17, 22)), tuple(range(22, 27)))
IBUG_NOSE = tuple(range(27, 36))
IBUG_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
IBUG_OUTER_LIPS = tuple(range(48, 60))


def distance_to_polyline(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """(N,) distance from each point to an open polyline (M, D), any dimension D."""
    x = np.asarray(points, dtype=np.float64)
    line = np.asarray(polyline, dtype=np.float64)
    best = np.full(len(x), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        s = np.clip(((x - a) @ ab) / max(float(ab @ ab), 1e-30), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(x - (a + s[:, None] * ab), axis=1))
    if len(line) == 1:
        best = np.linalg.norm(x - line[0], axis=1)
    return best


def _grow(points: np.ndarray, mask: np.ndarray, radius: float, allowed: np.ndarray) -> np.ndarray:
    """`mask` plus the `allowed` points within `radius` (3-D) of a point in it."""
    from scipy.spatial import cKDTree

    if radius <= 0 or not mask.any():
        return mask & allowed
    dist, _ = cKDTree(points[mask]).query(points, k=1, distance_upper_bound=radius)
    return (mask | np.isfinite(dist)) & allowed


def _convex_hull_polygon(q: np.ndarray) -> np.ndarray:
    """Corners (counter-clockwise) of the 2-D convex hull of `q`."""
    from scipy.spatial import ConvexHull

    return q[ConvexHull(q).vertices]


def landmark_regions(
    points: np.ndarray,
    uv: np.ndarray,
    triangles: np.ndarray,
    landmark_indices: np.ndarray,
    *,
    border_mm: float = 3.0,
    face_grow_mm: float = 2.0,
    eye_grow_mm: float = 1.0,
    brow_halfwidth_mm: float = 4.0,
    nose_grow_mm: float = 3.0,
    lip_grow_mm: float = 1.0,
) -> dict[str, np.ndarray]:
    """Vertex masks of face parts, from the iBUG-68 landmarks of a face mask with a frontal UV layout.

    Polygons are taken in `uv` (an unwrap in which the face is seen from the front, u growing to the
    subject's left, v up, such as `cylindrical_unwrap`) and include their corner landmarks; growing
    by a distance is done in 3-D. Every mask contains only vertices some triangle uses.

    * ``face``: inside the jaw line (landmarks 0-16) closed over the top of the mask by vertical lines
      up from landmarks 0 and 16 (the forehead up to the mask's border, no ears, no neck), grown by
      `face_grow_mm`, minus the vertices within `border_mm` of the outer border of the mesh.
    * ``eyes``: inside the eyelid contours (36-41, 42-47), grown by `eye_grow_mm`.
    * ``brows``: within `brow_halfwidth_mm` of the brow polylines (17-21, 22-26).
    * ``nose``: the convex hull of the nose landmarks (27-35), grown by `nose_grow_mm`.
    * ``lips``: inside the outer lip contour (48-59), grown by `lip_grow_mm`.
    * ``skin``: ``face`` without ``eyes``, ``brows`` and ``lips``.

    Args:
        points: (V, 3); uv: (V, 2); triangles: (F, 3); landmark_indices: (68,).
    Returns:
        name -> (V,) bool.
    """
    p = np.asarray(points, dtype=np.float64)
    q = np.asarray(uv, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    lm = np.asarray(landmark_indices, dtype=np.int64)
    used = np.zeros(len(p), bool)
    used[t.reshape(-1)] = True

    def seeded(inside: np.ndarray, group: tuple[int, ...]) -> np.ndarray:
        # a polygon's own corners sit on its edge, where the in/out test is arbitrary: add them
        seed = inside & used
        seed[lm[list(group)]] = True
        return seed & used

    jaw = q[lm[list(IBUG_JAW)]]
    top = float(q[:, 1].max()) + 1.0
    face_poly = np.concatenate([jaw, [[jaw[-1, 0], top], [jaw[0, 0], top]]])
    face = _grow(p, seeded(points_in_polygon(q, face_poly), IBUG_JAW), face_grow_mm, used)
    loops = boundary_loops(t)
    if loops and border_mm > 0:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(p[loops[0]]).query(p, k=1)
        face &= dist > border_mm

    eyes = np.zeros(len(p), bool)
    for group in IBUG_EYES:
        eyes |= seeded(points_in_polygon(q, q[lm[list(group)]]), group)
    eyes = _grow(p, eyes, eye_grow_mm, used)

    brows = np.zeros(len(p), bool)
    for group in IBUG_BROWS:
        brows |= distance_to_polyline(p, p[lm[list(group)]]) <= brow_halfwidth_mm
    brows &= used

    nose = seeded(points_in_polygon(q, _convex_hull_polygon(q[lm[list(IBUG_NOSE)]])), IBUG_NOSE)
    nose = _grow(p, nose, nose_grow_mm, used)

    lips = seeded(points_in_polygon(q, q[lm[list(IBUG_OUTER_LIPS)]]), IBUG_OUTER_LIPS)
    lips = _grow(p, lips, lip_grow_mm, used)

    skin = face & ~eyes & ~brows & ~lips
    return {"face": face, "skin": skin, "eyes": eyes, "brows": brows, "nose": nose, "lips": lips}


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
