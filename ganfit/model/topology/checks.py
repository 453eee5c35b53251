"""Checking a triangle mesh's topology: edges, boundary loops, manifoldness, and a full report.

`edge_table` (undirected edges, their use counts and orientation balance), `boundary_loops`,
`nonmanifold_vertices` (bow-tie vertices where several fans touch) and `mesh_report`, which runs
every check (degenerate and UV-flipped triangles, edge manifoldness and consistent orientation,
manifold vertices, outward normals, longest edge against the local vertex spacing, unused vertices,
Euler characteristic and boundary loops) into a `MeshReport`. The private helpers `_fan_count` and
`_face_components` are shared with `ganfit.model.topology.triangulate`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .measures import local_spacing, triangle_areas, uv_signed_areas, vertex_normals

__all__ = [
    "boundary_loops",
    "edge_table",
    "mesh_report",
    "MeshReport",
    "nonmanifold_vertices",
]


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
