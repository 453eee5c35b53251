"""Triangle-mesh geometry as pure torch functions: face normals, vertex normals, triangle areas.

All functions take batched vertices ``(B, V, 3)`` and one shared triangle list ``(F, 3)`` (int64
vertex indices, counter-clockwise seen from outside, so that the right-hand rule gives outward
normals). Unbatched vertices ``(V, 3)`` are accepted as well and give unbatched results.

They are differentiable with respect to the vertices and contain no Python loop over triangles:
per-vertex sums use one ``index_add`` over all triangle corners.

`rasterize_screen` (no gradients) is a small vectorised z-buffer over screen-space triangles. It is
shared by the visualisation overlay (`ganfit.io.overlay`) and the per-vertex visibility test of the
colour sampler (`ganfit.fitting.colors`); it is not the differentiable renderer (see `ganfit.render`).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["face_normals", "vertex_normals", "triangle_areas", "rasterize_screen"]

_EPS = 1e-12


def _prepare(vertices: torch.Tensor, triangles: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check shapes; return (batched vertices, long triangles on the same device, was_unbatched)."""
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"vertices must be a torch.Tensor, got {type(vertices).__name__}")
    unbatched = vertices.ndim == 2
    if unbatched:
        vertices = vertices.unsqueeze(0)
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3) or (V, 3), got {tuple(vertices.shape)}")
    tris = torch.as_tensor(triangles, device=vertices.device)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    if tris.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"triangles must be an integer tensor, got {tris.dtype}")
    tris = tris.long()
    if tris.numel() and (int(tris.min()) < 0 or int(tris.max()) >= vertices.shape[1]):
        raise ValueError(f"triangle index out of range for {vertices.shape[1]} vertices")
    return vertices, tris, unbatched


def _corner_index(tris: torch.Tensor, batch: int, num_vertices: int) -> torch.Tensor:
    """(B * 3 * F,) rows of the flattened (B * V, 3) vertices, ordered batch, corner, triangle.

    Gathering and scattering along dim 0 of a flat (B * V, 3) tensor (index_select / index_add) is
    several times faster on CPU than advanced indexing along dim 1 of (B, V, 3), whose backward is an
    accumulating index_put.
    """
    offsets = torch.arange(batch, device=tris.device, dtype=tris.dtype)[:, None, None] * num_vertices
    return (tris.T[None] + offsets).reshape(-1)


def _face_cross(vertices: torch.Tensor, tris: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F, 3) cross product (v1 - v0) x (v2 - v0): direction = normal, length = 2 * area."""
    b, v = vertices.shape[:2]
    if index is None:
        index = _corner_index(tris, b, v)
    corners = vertices.reshape(b * v, 3).index_select(0, index).view(b, 3, tris.shape[0], 3)
    v0, v1, v2 = corners.unbind(1)
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def _safe_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last axis; zero vectors stay zero (with zero gradient)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    unit = x / norm.clamp_min(_EPS)
    return torch.where(norm > _EPS, unit, torch.zeros_like(unit))


def face_normals(vertices: torch.Tensor, triangles: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Unit normal of each triangle (right-hand rule on the corner order).

    Args:
        vertices: (B, V, 3) or (V, 3) float.
        triangles: (F, 3) integer vertex indices.
    Returns:
        (B, F, 3) (or (F, 3)) unit normals; a degenerate (zero-area) triangle gets the zero vector.
    """
    verts, tris, unbatched = _prepare(vertices, triangles)
    normals = _safe_normalize(_face_cross(verts, tris))
    return normals[0] if unbatched else normals


def triangle_areas(vertices: torch.Tensor, triangles: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Area of each triangle (in squared vertex units, e.g. mm^2).

    Args:
        vertices: (B, V, 3) or (V, 3) float.
        triangles: (F, 3) integer vertex indices.
    Returns:
        (B, F) (or (F,)) non-negative areas.
    """
    verts, tris, unbatched = _prepare(vertices, triangles)
    # The norm's gradient at zero (a degenerate triangle) is defined as zero by torch.
    areas = 0.5 * torch.linalg.vector_norm(_face_cross(verts, tris), dim=-1)
    return areas[0] if unbatched else areas


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Each vertex normal is the normalised sum of the (un-normalised) cross products of the triangles
    around it, i.e. the face normals weighted by twice their area.

    Args:
        vertices: (B, V, 3) or (V, 3) float.
        triangles: (F, 3) integer vertex indices, counter-clockwise seen from outside.
    Returns:
        (B, V, 3) (or (V, 3)) unit normals. A vertex in no triangle (or only in degenerate ones, or
        where the contributions cancel exactly) gets the **zero vector**, so callers can detect it
        (``normals.norm(dim=-1) == 0``); it never produces NaN, neither forward nor backward.
    """
    verts, tris, unbatched = _prepare(vertices, triangles)
    b, v = verts.shape[:2]
    index = _corner_index(tris, b, v)
    cross = _face_cross(verts, tris, index)  # (B, F, 3)
    # One index_add over all corners of the flat (B * V, 3) sums (see `_corner_index`).
    contributions = cross.unsqueeze(1).expand(b, 3, tris.shape[0], 3).reshape(-1, 3)
    summed = verts.new_zeros(b * v, 3).index_add(0, index, contributions).view(b, v, 3)
    normals = _safe_normalize(summed)
    return normals[0] if unbatched else normals


@torch.no_grad()
def rasterize_screen(
    projected: torch.Tensor | np.ndarray,
    depth: torch.Tensor | np.ndarray,
    triangles: torch.Tensor | np.ndarray,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = True,
    max_pairs: int = 4_000_000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffer rasterisation of screen-space triangles (not differentiable).

    A pixel (column i, row j) is covered by a triangle when its centre ``(i + 0.5, j + 0.5)`` lies
    inside it (edges inclusive). Depth is interpolated linearly in screen space with barycentric
    weights; the nearest (smallest depth) triangle wins.

    Args:
        projected: (V, 2) pixel coordinates, x right, y down, origin at the top-left image corner.
        depth: (V,) depth of each vertex, larger = farther from the camera.
        triangles: (F, 3) vertex indices, counter-clockwise seen from outside in a y-up camera frame.
            Such a triangle facing the camera appears clockwise in y-down pixel coordinates.
        height, width: image size in pixels.
        cull_backfaces: drop triangles that face away from the camera (counter-clockwise on screen).
        max_pairs: candidate (triangle, pixel) pairs processed at once (bounds memory).
    Returns:
        face_index: (H, W) int64 index of the visible triangle, -1 where nothing is drawn.
        bary: (H, W, 3) barycentric weights of the visible triangle's corners (zeros where empty).
        zbuf: (H, W) interpolated depth, +inf where empty.
        All on the device of `projected` (float tensors in its float dtype, at least float32).
    Triangles with a non-finite corner or zero screen area are skipped.
    """
    proj = torch.as_tensor(projected)
    dtype = proj.dtype if proj.dtype in (torch.float32, torch.float64) else torch.float32
    proj = proj.to(dtype)
    device = proj.device
    z = torch.as_tensor(depth, device=device).to(dtype)
    tris = torch.as_tensor(triangles, device=device).long()
    if proj.ndim != 2 or proj.shape[1] != 2:
        raise ValueError(f"projected must be (V, 2), got {tuple(proj.shape)}")
    if z.shape != proj.shape[:1]:
        raise ValueError(f"depth must be (V,) = ({proj.shape[0]},), got {tuple(z.shape)}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    h, w = int(height), int(width)

    face_index = torch.full((h * w,), -1, dtype=torch.long, device=device)
    bary = torch.zeros((h * w, 3), dtype=dtype, device=device)
    zbuf = torch.full((h * w,), float("inf"), dtype=dtype, device=device)
    if tris.numel() == 0 or h <= 0 or w <= 0:
        return face_index.view(h, w), bary.view(h, w, 3), zbuf.view(h, w)

    p = proj[tris]  # (F, 3, 2)
    zt = z[tris]  # (F, 3)
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)  # < 0: clockwise on screen = front facing
    ok = torch.isfinite(p).all(dim=(1, 2)) & torch.isfinite(zt).all(dim=1) & (area2 != 0)
    if cull_backfaces:
        ok &= area2 < 0
    # Pixel-centre bounding box: column i is a candidate when x_min <= i + 0.5 <= x_max.
    xmin = torch.ceil(p[..., 0].amin(1) - 0.5).clamp(0, w)
    xmax = torch.floor(p[..., 0].amax(1) - 0.5).clamp(-1, w - 1)
    ymin = torch.ceil(p[..., 1].amin(1) - 0.5).clamp(0, h)
    ymax = torch.floor(p[..., 1].amax(1) - 0.5).clamp(-1, h - 1)
    ok &= (xmax >= xmin) & (ymax >= ymin)
    sel = torch.nonzero(ok).squeeze(1)
    if sel.numel() == 0:
        return face_index.view(h, w), bary.view(h, w, 3), zbuf.view(h, w)
    nx = (xmax[sel] - xmin[sel] + 1).long()
    ny = (ymax[sel] - ymin[sel] + 1).long()
    counts = nx * ny
    cum = torch.cumsum(counts, 0)

    start = 0
    n_sel = sel.numel()
    while start < n_sel:
        # Chunk of triangles whose candidate pairs fit in `max_pairs` (at least one triangle).
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + max_pairs, device=device), right=True))
        stop = max(stop, start + 1)
        idx = torch.arange(start, stop, device=device)
        cnt = counts[idx]
        total = int(cnt.sum())
        local_tri = torch.repeat_interleave(idx, cnt)  # index into `sel`
        offsets = torch.cumsum(cnt, 0) - cnt
        k = torch.arange(total, device=device) - torch.repeat_interleave(offsets, cnt)
        nxk = nx[local_tri]
        f = sel[local_tri]
        px = xmin[f].long() + k % nxk
        py = ymin[f].long() + torch.div(k, nxk, rounding_mode="floor")
        cx = px.to(dtype) + 0.5
        cy = py.to(dtype) + 0.5
        a = area2[f]
        w0 = ((x1[f] - cx) * (y2[f] - cy) - (x2[f] - cx) * (y1[f] - cy)) / a
        w1 = ((x2[f] - cx) * (y0[f] - cy) - (x0[f] - cx) * (y2[f] - cy)) / a
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        f, px, py, w0, w1, w2 = f[inside], px[inside], py[inside], w0[inside], w1[inside], w2[inside]
        zz = w0 * zt[f, 0] + w1 * zt[f, 1] + w2 * zt[f, 2]
        pid = py * w + px
        zbuf.scatter_reduce_(0, pid, zz, reduce="amin")
        win = torch.nonzero(zz <= zbuf[pid]).squeeze(1)
        # Exactly one winner per pixel (ties at shared edges: the last candidate), so that
        # face_index and bary always come from the same triangle.
        last = torch.full((h * w,), -1, dtype=torch.long, device=device)
        last.scatter_reduce_(0, pid[win], win, reduce="amax")
        win = win[last[pid[win]] == win]
        pid_w = pid[win]
        face_index[pid_w] = f[win]
        bary[pid_w] = torch.stack([w0[win], w1[win], w2[win]], dim=1)
        start = stop
    return face_index.view(h, w), bary.view(h, w, 3), zbuf.view(h, w)


def parse_resolution(resolution, *, max_side: int = 16384, error: type[Exception] = ValueError) -> tuple[int, int]:
    """An int (square) or an (H, W) pair -> (H, W), each side in [2, max_side]; `error` otherwise."""
    if isinstance(resolution, (int, np.integer)):
        h = w = int(resolution)
    else:
        try:
            h, w = (int(r) for r in resolution)
        except (TypeError, ValueError):
            raise error(f"resolution must be an int or (H, W), got {resolution!r}") from None
    if not (2 <= h <= max_side and 2 <= w <= max_side):
        raise error(f"resolution must be between 2 and {max_side} texels a side, got {(h, w)}")
    return h, w


def rasterize_uv(uv, uv_triangles, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which UV triangle covers each texel of an (H, W) texture, and where.

    Texel (row j, column i) is covered when its centre ``(u, v) = ((i + 0.5) / W, 1 - (j + 0.5) / H)``
    lies in a triangle (row 0 is the top of the texture, v up).
    Args:
        uv: (T, 2) texture coordinates; uv_triangles: (F, 3) indices into `uv`.
    Returns:
        face: (H, W) int64 triangle index, -1 outside the chart; bary: (H, W, 3) float64 weights.
    """
    q = torch.as_tensor(np.asarray(uv, dtype=np.float64))
    t = torch.as_tensor(np.asarray(uv_triangles, dtype=np.int64))
    pos = torch.stack([q[:, 0] * width, (1.0 - q[:, 1]) * height], 1)
    face, bary, _ = rasterize_screen(pos, torch.zeros(len(pos), dtype=pos.dtype), t, height, width, cull_backfaces=False)
    return face, bary
