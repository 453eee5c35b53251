"""Analytic silhouette antialiasing for the torch rasterizer (`TorchRasterizer.antialias`).

After nvdiffrast (Laine et al. 2020, sec. 3.4). A silhouette edge is an edge with one adjacent triangle
(or more than two), an edge shared with a triangle that faces the other way in clip space, or an edge
next to a triangle that is not drawn (w <= 0): `edge_neighbours` (kept per triangle list as `_Topology`)
and `_facing` find them. For every horizontally or vertically adjacent pixel pair whose triangle ids
differ (`_silhouette_pairs`), the pixel with the nearer depth is the front pixel F and its triangle T;
the segment from F's centre to the other centre O leaves T through one edge (the one crossed first). If
that edge is a silhouette edge, and it is closer to vertical for a horizontal pair or closer to
horizontal for a vertical pair (so that each crossing is counted once, as in nvdiffrast), it crosses the
segment at fraction t (from F; `_edge_crossing`) and the colours are blended by coverage: if t > 1/2, T
covers (t - 1/2) of O's half of the segment and O moves towards F's colour by that amount; otherwise F
moves towards O's colour by (1/2 - t). t is computed with autograd from T's clip-space vertices, so the
image gets a gradient with respect to the positions of silhouette vertices, (colour F - colour O) times
dt/dx: the derivative of the covered area. This module finds the pairs and t; the blend itself is in
`TorchRasterizer.antialias`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ganfit.render.base import Fragments
from ganfit.render.torch_raster.barycentrics import _pixel_ndc
from ganfit.render.torch_raster.triangles import _Triangles, _corner_indices


_NEXT = [1, 2, 0]


# --------------------------------------------------------------------------------------------------
# edge adjacency and orientation: which edges are silhouette edges


def edge_neighbours(triangles: torch.Tensor) -> torch.Tensor:
    """Triangle across each edge.

    triangles: (F, 3) int64. Returns (F, 3) int64: for edge k (v_k -> v_k+1) of triangle f, the other
    triangle sharing it, or -1 on a boundary edge or an edge shared by more than two triangles.
    """
    n_f = triangles.shape[0]
    if n_f == 0:
        return torch.empty((0, 3), dtype=torch.long, device=triangles.device)
    a, b = triangles, triangles[:, _NEXT]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = (lo * (int(triangles.max()) + 1) + hi).reshape(-1)
    ks, order = torch.sort(key)
    _, counts = torch.unique_consecutive(ks, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    s = starts[counts == 2]
    e1, e2 = order[s], order[s + 1]
    nb = torch.full((n_f * 3,), -1, dtype=torch.long, device=triangles.device)
    nb[e1] = torch.div(e2, 3, rounding_mode="floor")
    nb[e2] = torch.div(e1, 3, rounding_mode="floor")
    return nb.view(n_f, 3)


@dataclass(frozen=True)
class _Topology:
    """Edge adjacency of a triangle list (see `edge_neighbours`), in the layout `antialias` uses.

    triangles: (F, 3) a copy of the list it belongs to; columns: 3 tensors (F,) neighbour across edge k,
    clamped to >= 0; boundary: (F,) int8 with bit k set when edge k has no (single) neighbour;
    source, version: the tensor it was built from and its version counter (a cheap identity check).
    """

    triangles: torch.Tensor
    columns: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    boundary: torch.Tensor
    source: torch.Tensor
    version: int

    @staticmethod
    def build(tris: torch.Tensor) -> "_Topology":
        nb = edge_neighbours(tris)
        bits = torch.zeros(tris.shape[0], dtype=torch.int8, device=tris.device)
        for k in range(3):
            bits |= (nb[:, k] < 0).to(torch.int8) << k
        cols = tuple(nb[:, k].clamp_min(0).contiguous() for k in range(3))
        return _Topology(tris.clone(), cols, bits, tris, tris._version)  # type: ignore[arg-type]


@torch.no_grad()
def _facing(clip: torch.Tensor, tris: _Triangles) -> torch.Tensor:
    """(B, V, 4), (F, 3) -> (B*F,) int8: +1 counter-clockwise in NDC, -1 clockwise, 0 not drawn (w <= 0).

    The sign of det[c0, c1, c2] with c = (x, y, w) is the NDC orientation when all w > 0.
    """
    b, v = clip.shape[:2]
    c = clip.detach().reshape(-1, 4)
    gv = _corner_indices(tris, b, v)
    xs = [c[:, 0].index_select(0, g) for g in gv]
    ys = [c[:, 1].index_select(0, g) for g in gv]
    ws = [c[:, 3].index_select(0, g) for g in gv]
    det = (
        xs[0] * (ys[1] * ws[2] - ws[1] * ys[2])
        + xs[1] * (ys[2] * ws[0] - ws[2] * ys[0])
        + xs[2] * (ys[0] * ws[1] - ws[0] * ys[1])
    )
    drawn = (ws[0] > 0) & (ws[1] > 0) & (ws[2] > 0)
    return (torch.sign(det) * drawn).to(torch.int8)


# --------------------------------------------------------------------------------------------------
# silhouette pixel pairs and where their segment crosses the edge


@torch.no_grad()
def _silhouette_pairs(fragments: Fragments, facing: torch.Tensor, topo: _Topology):
    """Adjacent pixel pairs with different triangles whose front (nearer) triangle has a silhouette edge.

    fragments: of (B, H, W); facing: (B*F,) int8 (see `TorchFragments`); topo: the triangles' adjacency.
    Returns None or (front, other, silhouette): (N,) flat pixel indices of the front and the other
    pixel, (N, 3) bool silhouette flags of the front triangle's edges.
    """
    b, h, w = fragments.triangle_id.shape
    n_f = topo.boundary.shape[0]
    tid = fragments.triangle_id.reshape(-1)
    tc = tid.clamp_min(0)
    off = None
    if b > 1:
        off = torch.div(torch.arange(tid.numel(), device=tid.device), h * w, rounding_mode="floor") * n_f
    own = facing.index_select(0, tc if off is None else tc + off)
    # bit k of `bits`: edge k of the pixel's triangle is a silhouette edge (int8 ops: fast on the CPU)
    bits = topo.boundary.index_select(0, tc)
    for k in range(3):
        nb = topo.columns[k].index_select(0, tc)
        nbf = facing.index_select(0, nb if off is None else nb + off)
        bits |= (nbf != own).to(torch.int8) << k
    pix_sil = (bits != 0) & (tid >= 0)
    t3, s3 = fragments.triangle_id, pix_sil.view(b, h, w)
    hp = (t3[:, :, 1:] != t3[:, :, :-1]) & (s3[:, :, 1:] | s3[:, :, :-1])
    vp = (t3[:, 1:, :] != t3[:, :-1, :]) & (s3[:, 1:, :] | s3[:, :-1, :])
    hb, hi, hj = torch.nonzero(hp, as_tuple=True)
    vb, vi, vj = torch.nonzero(vp, as_tuple=True)
    ph = (hb * h + hi) * w + hj
    pv = (vb * h + vi) * w + vj
    p = torch.cat([ph, pv])
    q = torch.cat([ph + 1, pv + w])
    if p.numel() == 0:
        return None
    depth = fragments.depth.detach().reshape(-1)
    p_front = depth.index_select(0, p) <= depth.index_select(0, q)
    front = torch.where(p_front, p, q)
    other = torch.where(p_front, q, p)
    keep = torch.nonzero(pix_sil.index_select(0, front)).squeeze(1)
    if keep.numel() == 0:
        return None
    front, other = front.index_select(0, keep), other.index_select(0, keep)
    fb = bits.index_select(0, front)
    sil = torch.stack([(fb >> k) & 1 for k in range(3)], 1).bool()
    return front, other, sil


def _edge_functions(corners: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4) clip corners (w > 0), (N,) NDC points -> (N, 3) edge functions cross(v_k - q, v_k+1 - q)
    of the edges v_k -> v_k+1 in NDC; positive inside a counter-clockwise triangle."""
    xs = corners[..., 0] / corners[..., 3] - qx[:, None]
    ys = corners[..., 1] / corners[..., 3] - qy[:, None]
    return xs * ys[:, _NEXT] - xs[:, _NEXT] * ys


def _edge_crossing(corners: torch.Tensor, silhouette: torch.Tensor, front: torch.Tensor, other: torch.Tensor,
                   height: int, width: int):
    """Where the segment from a front pixel centre to its neighbour's leaves the front triangle.

    corners: (N, 3, 4) clip corners of the front triangles (autograd on); silhouette: (N, 3) bool per
    edge; front, other: (N,) flat pixel indices of horizontally or vertically adjacent pixels. The
    exit edge is the edge with the other centre outside it that the segment crosses first. As in
    nvdiffrast, an edge is handled by horizontal pairs if it is closer to vertical (|dy| >= |dx| in
    pixels) and by vertical pairs otherwise, so that no crossing is counted twice.
    Returns None or (t, rows): t (M,) the crossing fraction in [0, 1] from the front centre
    (differentiable in the corners), rows (M,) the pairs that blend.
    """
    f_ndc = _pixel_ndc(front, height, width, corners.dtype)
    o_ndc = _pixel_ndc(other, height, width, corners.dtype)
    with torch.no_grad():
        c = corners.detach()
        ef = _edge_functions(c, *f_ndc)
        eo = _edge_functions(c, *o_ndc)
        orient = torch.where(ef.sum(1, keepdim=True) >= 0, 1.0, -1.0).to(ef.dtype)  # sum = twice the area
        ef, eo = ef * orient, eo * orient
        cand = (eo < 0) & (ef > eo)
        tt = torch.where(cand, ef / torch.where(cand, ef - eo, torch.ones_like(ef)), torch.full_like(ef, float("inf")))
        k = tt.argmin(1, keepdim=True)
        # edge direction in pixels
        sx = c[..., 0] / c[..., 3] * (0.5 * width)
        sy = c[..., 1] / c[..., 3] * (0.5 * height)
        ex = (sx[:, _NEXT] - sx).gather(1, k)[:, 0].abs()
        ey = (sy[:, _NEXT] - sy).gather(1, k)[:, 0].abs()
        horizontal = ((other - front).abs() == 1) & (width > 1)
        steep = torch.where(horizontal, ey >= ex, ex > ey)
        ok = cand.gather(1, k)[:, 0] & silhouette.gather(1, k)[:, 0] & steep
        rows = torch.nonzero(ok).squeeze(1)
        if rows.numel() == 0:
            return None
        k = k.index_select(0, rows)
    sub = corners.index_select(0, rows)
    e_f = _edge_functions(sub, f_ndc[0].index_select(0, rows), f_ndc[1].index_select(0, rows)).gather(1, k)[:, 0]
    e_o = _edge_functions(sub, o_ndc[0].index_select(0, rows), o_ndc[1].index_select(0, rows)).gather(1, k)[:, 0]
    return (e_f / (e_f - e_o)).clamp(0.0, 1.0), rows
