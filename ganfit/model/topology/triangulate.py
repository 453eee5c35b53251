"""Triangulating a surface from its vertices laid out in UV, and cleaning the result.

`delaunay_triangles` triangulates in UV (counter-clockwise), `flip_to_delaunay_3d` flips edges
towards a 3-D Delaunay mesh while staying valid in UV, `clean_triangulation` drops the triangles
the surface does not have (long edges bridging holes, inward-facing, stretched by a deformation,
bow-tie fans, small islands) and `fill_small_holes` closes the pin-holes that leaves.
"""
from __future__ import annotations

import numpy as np

from .checks import _face_components, _fan_count, boundary_loops, edge_table
from .measures import edge_lengths, face_normals, local_spacing, uv_signed_areas

__all__ = [
    "clean_triangulation",
    "delaunay_triangles",
    "fill_small_holes",
    "flip_to_delaunay_3d",
]


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
