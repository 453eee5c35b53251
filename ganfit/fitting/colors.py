"""Per-vertex colours sampled from a photo, with a visibility test (not differentiable).

A vertex takes the photo's colour at its projection (bilinear) when it is

1. inside the image and in front of the camera,
2. facing the camera: ``cos(normal, vertex -> camera) > min_cos``, and
3. not occluded: its depth is at most the z-buffer depth at its pixel plus a tolerance.

The z-buffer is the rasterised mesh when `triangles` is given (exact; recommended; see
`ganfit.render.zbuffer`, which a caller that has already built one for the photo can pass in) and
otherwise a min-depth splat of the vertices dilated by about one vertex spacing (approximate: it may
call vertices next to a depth discontinuity occluded, and misses occluders thinner than the spacing).

The tolerance is ``depth_tol`` millimetres plus what a surface at the vertex's slope rises over the
distance between the vertex and the pixel centre (or the splat window), so smooth, steep surfaces are
not mistaken for self-occlusion. The slope comes from the normal; millimetres per pixel come from the
pinhole focal length (given, or estimated by least squares from `vertices_cam` and `projected`).

Vertices that fail any test are ``visible = False`` and get the **mean colour of the visible
vertices** (mid-grey 0.5 if none is visible); use `visible` to treat them differently (e.g. mirror or
inpaint in UV space, `fill_unseen_colors`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..render.zbuffer import ScreenZBuffer, screen_zbuffer

__all__ = ["sample_vertex_colors", "fill_unseen_colors", "vertex_laplacian"]

_FALLBACK_GREY = 0.5


def _tensor(x, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.ascontiguousarray(x), device=device, dtype=dtype)


def _check_image(image) -> tuple[int, int]:
    """(H, W) of an (H, W, 3) numpy or torch image; ValueError otherwise."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {tuple(image.shape)}")
    return int(image.shape[0]), int(image.shape[1])


def _bilinear(image, xy: torch.Tensor) -> torch.Tensor:
    """Sample (H, W, 3) (numpy or torch; uint8 or float) at (N, 2) pixel coordinates (pixel centres at
    +0.5), clamped at the border. Only the 4 x N pixels needed are read (and converted to float32)."""
    h, w = image.shape[:2]
    x = (xy[:, 0] - 0.5).clamp(0, w - 1)
    y = (xy[:, 1] - 0.5).clamp(0, h - 1)
    x0 = x.floor().long().clamp(max=w - 2) if w > 1 else torch.zeros_like(x, dtype=torch.long)
    y0 = y.floor().long().clamp(max=h - 2) if h > 1 else torch.zeros_like(y, dtype=torch.long)
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    fx = (x - x0.to(x.dtype)).unsqueeze(1)
    fy = (y - y0.to(y.dtype)).unsqueeze(1)
    if isinstance(image, torch.Tensor):
        def at(yy, xx):
            v = image[yy.to(image.device), xx.to(image.device)]
            return (v.float() / 255.0 if v.dtype == torch.uint8 else v.float()).to(xy.device)
    else:
        def at(yy, xx):
            v = image[yy.cpu().numpy(), xx.cpu().numpy()]
            return torch.from_numpy(v.astype(np.float32) / np.float32(255.0) if v.dtype == np.uint8 else v.astype(np.float32))
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def _focal_estimate(proj: torch.Tensor, verts: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Pinhole focal length (px) fitted to u = cx + f x/(-z), v = cy - f y/(-z); None if degenerate."""
    if int(mask.sum()) < 3:
        return None
    p = proj[mask].double()
    v = verts[mask].double()
    a = torch.cat([v[:, 0] / -v[:, 2], -v[:, 1] / -v[:, 2]])
    b = torch.cat([p[:, 0] - p[:, 0].mean(), p[:, 1] - p[:, 1].mean()])
    a = torch.cat([a[: len(p)] - a[: len(p)].mean(), a[len(p):] - a[len(p):].mean()])
    denom = float((a * a).sum())
    if denom <= 1e-18:
        return None
    f = float((a * b).sum()) / denom
    return f if math.isfinite(f) and f > 0 else None


@torch.no_grad()
def sample_vertex_colors(
    image,
    projected,
    normals_cam,
    vertices_cam,
    *,
    triangles=None,
    min_cos: float = 0.1,
    depth_tol: float = 2.0,
    zbuffer: ScreenZBuffer | None = None,
    focal: float | None = None,
):
    """Colour of each vertex from a photo, and whether the vertex is visible in it.

    Args:
        image: (H, W, 3) float in [0, 1] or uint8, numpy or torch.
        projected: (V, 2) pixel coordinates of the vertices (x right, y down, pixel centres at +0.5).
        normals_cam: (V, 3) vertex normals in camera space (normalised here).
        vertices_cam: (V, 3) vertices in camera space, millimetres (camera at the origin looking down -z).
        triangles: (F, 3) vertex indices; when given, occlusion uses the rasterised mesh (recommended),
            otherwise a splat of the vertices (see the module docstring).
        min_cos: a vertex is front-facing when the cosine between its normal and the direction to the
            camera exceeds this.
        depth_tol: occlusion tolerance in millimetres (added to the slope allowance).
        zbuffer: the mesh's `screen_zbuffer` for this photo, if the caller has it (then `triangles` is
            not rasterised again); it must come from the same `projected` and depths.
        focal: the camera's focal length in pixels, if known (otherwise estimated from the projection).
    Returns:
        colors: (V, 3) float32 in [0, 1]; invisible vertices get the mean visible colour.
        visible: (V,) bool.
        Both numpy when `image` is numpy, else tensors on the image's device.
    """
    as_torch = isinstance(image, torch.Tensor)
    h, w = _check_image(image)
    device = image.device if as_torch else torch.device("cpu")
    proj = _tensor(projected, device)
    nrm = _tensor(normals_cam, device)
    verts = _tensor(vertices_cam, device)
    n_v = proj.shape[0]
    if proj.ndim != 2 or proj.shape[1] != 2:
        raise ValueError(f"projected must be (V, 2), got {tuple(proj.shape)}")
    if nrm.shape != (n_v, 3):
        raise ValueError(f"normals_cam must be (V={n_v}, 3), got {tuple(nrm.shape)}")
    if verts.shape != (n_v, 3):
        raise ValueError(f"vertices_cam must be (V={n_v}, 3), got {tuple(verts.shape)}")

    depth = -verts[:, 2]
    finite = torch.isfinite(proj).all(1) & torch.isfinite(verts).all(1) & torch.isfinite(nrm).all(1)
    inside = (
        finite & (depth > 0)
        & (proj[:, 0] >= 0) & (proj[:, 0] < w)
        & (proj[:, 1] >= 0) & (proj[:, 1] < h)
    )  # fmt: skip
    to_cam = -verts / verts.norm(dim=1, keepdim=True).clamp_min(1e-12)
    unit_n = nrm / nrm.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (unit_n * to_cam).sum(1)
    facing = inside & (cos > min_cos)

    # Slope allowance: depth change over `window` pixels on a surface tilted by acos(cos).
    if focal is None:
        focal = _focal_estimate(proj, verts, inside)
    cos_c = cos.clamp(min=max(min_cos, 1e-3), max=1.0)
    tan = torch.sqrt((1.0 - cos_c * cos_c).clamp_min(0.0)) / cos_c
    mm_per_px = depth.clamp_min(0) / focal if focal is not None else torch.zeros_like(depth)

    if zbuffer is None and triangles is not None:
        tris = torch.as_tensor(
            triangles if isinstance(triangles, torch.Tensor) else np.ascontiguousarray(triangles, dtype=np.int64)
        )
        # Triangles with a corner that is non-finite or behind the camera are left out (NaN depth).
        usable = finite & (depth > 0)
        zbuffer = screen_zbuffer(proj.cpu(), torch.where(usable, depth, torch.full_like(depth, float("nan"))).cpu(),
                                 tris.cpu(), (w, h))
    if zbuffer is not None:
        window = zbuffer.window
        z_at = zbuffer.depth_at(proj.cpu()).to(device)
    else:
        window, z_at = _splat_depth(proj, depth, inside, h, w)
    tol = depth_tol + window * mm_per_px * tan
    visible = facing & (depth <= z_at + tol)

    colors = torch.empty((n_v, 3), device=device)
    if bool(visible.any()):
        sampled = _bilinear(image if not as_torch else image.detach(), proj[visible]).to(device).clamp(0.0, 1.0)
        colors[visible] = sampled
        colors[~visible] = sampled.mean(0)
    else:
        colors.fill_(_FALLBACK_GREY)
    if as_torch:
        return colors, visible
    return colors.cpu().numpy(), visible.cpu().numpy()


def _splat_depth(proj: torch.Tensor, depth: torch.Tensor, inside: torch.Tensor, h: int, w: int) -> tuple[float, torch.Tensor]:
    """Without triangles: splat every vertex in the image (facing or not: anything can occlude) into a
    min-depth buffer, dilate it by about one vertex spacing. Returns (window in pixels, (V,) depth at
    each vertex's pixel)."""
    device = proj.device
    safe = torch.where(torch.isfinite(proj), proj, torch.zeros_like(proj))
    px = safe[:, 0].clamp(0, w - 1).floor().long()
    py = safe[:, 1].clamp(0, h - 1).floor().long()
    ids = (py * w + px)[inside]
    zbuf = torch.full((h * w,), float("inf"), device=device)
    zbuf.scatter_reduce_(0, ids, depth[inside], reduce="amin")
    n_in = int(inside.sum())
    if n_in > 1:
        span = (proj[inside].amax(0) - proj[inside].amin(0)).clamp_min(1.0)
        spacing = math.sqrt(float(span[0] * span[1]) / n_in)
    else:
        spacing = 1.0
    radius = int(min(8, max(1, math.ceil(spacing))))
    zbuf = -F.max_pool2d(-zbuf.view(1, 1, h, w), 2 * radius + 1, stride=1, padding=radius).view(h, w)
    return radius + math.sqrt(0.5), zbuf[py, px]


def vertex_laplacian(triangles: np.ndarray, num_vertices: int):
    """The (V, V) graph Laplacian (degree - adjacency, scipy CSR) of a mesh's edges; a model's is the
    same for every photo, so `fill_unseen_colors` takes it precomputed."""
    import scipy.sparse as sp

    from ..model.topology import vertex_adjacency

    adj = vertex_adjacency(triangles, num_vertices)
    return (sp.diags(np.asarray(adj.sum(1)).ravel()) - adj).tocsr()


def fill_unseen_colors(
    colors: np.ndarray, visible: np.ndarray, triangles: np.ndarray, mirror: np.ndarray | None = None, *, laplacian=None
) -> np.ndarray:
    """Colours for vertices the photo does not show: the mirror vertex's colour where that one is
    visible (faces are nearly symmetric), then a harmonic fill over the mesh for the rest, so there is
    no flat patch and no seam at the visibility boundary.

    Args:
        colors: (V, 3) sampled colours (rows of invisible vertices are ignored); visible: (V,) bool;
        triangles: (F, 3); mirror: (V,) mirror vertex index or -1 (see `topology.mirror_vertices`);
        laplacian: `vertex_laplacian(triangles, V)` if the caller keeps it (otherwise built here).
    Returns:
        (V, 3) float32 in [0, 1].
    """
    out = np.asarray(colors, dtype=np.float64).copy()
    known = np.asarray(visible, dtype=bool).copy()
    if mirror is not None:
        m = np.asarray(mirror)
        take = ~known & (m >= 0)
        take[take] = known[m[take]]
        out[take] = out[m[take]]
        known = known | take
    if laplacian is None:
        laplacian = vertex_laplacian(triangles, len(out))
    return np.clip(_harmonic_fill(out, known, laplacian), 0.0, 1.0).astype(np.float32)


def _harmonic_fill(values: np.ndarray, known: np.ndarray, laplacian) -> np.ndarray:
    """`ganfit.model.topology.harmonic_fill` with the mesh's Laplacian given: the discrete Laplace
    equation over the unknown vertices with the known ones fixed; vertices in no edge get the mean
    known value. values: (V, C); known: (V,) bool -> (V, C)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    out = values
    unknown = ~known
    if not unknown.any() or not known.any():
        if not known.any():
            out[:] = 0.5
        return out
    u_idx, k_idx = np.flatnonzero(unknown), np.flatnonzero(known)
    rows = laplacian[u_idx]
    a = rows[:, u_idx].tocsc() + sp.identity(len(u_idx), format="csc") * 1e-6
    rhs = -(rows[:, k_idx] @ out[k_idx]) + 1e-6 * out[k_idx].mean(0)
    # symmetric and diagonally dominant: a symmetric ordering and no pivoting (~20% faster than the default)
    lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    out[u_idx] = lu.solve(rhs)
    isolated = unknown & (laplacian.diagonal() == 0)
    out[isolated] = out[k_idx].mean(0)
    return out
