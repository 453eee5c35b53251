"""A face model's UV layout rasterised at one texture resolution, built once and shared by every photo.

`unwrap` (photo -> UV texture) and `complete` (fill what the photo did not see) work texel by texel on
the model's chart. Everything about the chart that does not depend on the photo lives in a `UVLayout`:
which triangle covers each texel and where (the rasterised layout), each texel's mirror texel across
the face's plane of symmetry (`mirror_uv_map`), the nearest chart texel of every texel outside the
chart (edge padding), pairs of neighbouring texels, the elimination order of the chart's texels
for the exact Poisson fill (nested dissection) and the coarse grid of the fast one
(`ganfit.render.uv_fill.CoarseSpace`). `uv_layout` builds it; a `ganfit.fitting.photo_texture.
PhotoTexture` keeps one per model, so the per-photo work starts from it.

`UVTexture` is what `unwrap` returns. Coordinates: texel ``(row j, column i)`` has its centre at
``(x, y) = (i + 0.5, j + 0.5)`` in texture pixels, which is ``(u, v) = (x / W_uv, 1 - y / H_uv)``;
flat texel indices are ``j * W_uv + i``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..model.geometry import parse_resolution, rasterize_uv
from .uv_fill import coarse_space, dissection_order

__all__ = ["UVLayout", "UVTexture", "uv_layout", "mirror_uv_map", "bilinear_sampler", "uv_to_texel", "DEFAULT_RESOLUTION"]

#: (H_uv, W_uv). The embedded model's UVs keep the unwrap's aspect ratio inside the unit square (the
#: chart is about 1.5:1, centred, u spanning [0.02, 0.98]), so a square texture has square texels:
#: 737 x 484 texels of chart, about 0.45 mm per texel.
DEFAULT_RESOLUTION = (768, 768)

#: largest block of texels the nested-dissection order leaves unsplit
_ND_LEAF = 16


@dataclass(frozen=True)
class UVTexture:
    """A photo unwrapped into a UV layout (numpy arrays).

    texture: (H_uv, W_uv, 3) float32 in [0, 1]; the photo's colour where ``mask > 0``, 0 elsewhere.
    mask: (H_uv, W_uv) float32 in [0, 1]; soft visibility weight (0: not seen, occluded, outside the
        photo or outside the chart; rising with the cosine between the normal and the view direction).
    coverage: (H_uv, W_uv) bool; texels whose centre lies in a triangle of the UV layout (the chart).
    """

    texture: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def visible(self) -> np.ndarray:
        """(H_uv, W_uv) bool: texels with any photo information."""
        return self.mask > 0


@dataclass(frozen=True, eq=False)
class UVLayout:
    """A mesh's UV layout at one resolution (read-only; do not modify the arrays).

    resolution: (H_uv, W_uv).
    num_vertices: V of the mesh it was built for.
    triangles: (F, 3) int64 the mesh's triangles (vertex indices).
    coverage: (H_uv, W_uv) bool, the chart.
    texels: (N,) int64 flat index of each chart texel.
    corners: (N, 3) int64 the mesh vertices at the corners of the triangle covering each chart texel.
    weights: (N, 3) float32 barycentric weights of those corners at the texel centre.
    interpolation: (N, V) float32 scipy CSR matrix of those weights: ``interpolation @ values`` gives
        per-vertex values (V, C) interpolated at every chart texel (N, C) in one product.
    right_pairs, down_pairs: (P, 2) int64 positions in `texels` of horizontally / vertically adjacent
        chart texels.
    mirror: (H_uv, W_uv, 2) float32 `mirror_uv_map`, or None (no mirror given, or a layout with seams).
    mirror_sampler: (H_uv * W_uv, H_uv * W_uv) float32 scipy CSR matrix: row t holds the bilinear
        weights at texel t's mirror point (zero outside the texture, as `grid_sample` with zero
        padding), empty rows off the chart or without a mirror; None with `mirror`.
    outside_distance: (H_uv, W_uv) float64 distance in texels to the nearest chart texel (0 on it).
    nearest_chart: (H_uv, W_uv) int64 flat index of the nearest chart texel (itself on the chart).
    fill_rank: (H_uv, W_uv) int64 rank of each chart texel in a nested-dissection order, -1 outside
        (`coarse`'s order restricted to the texels; `nested_dissection_rank` gives another).
    coarse: `ganfit.render.uv_fill.CoarseSpace` of the chart: the crop `complete` works on, and the
        coarse grid of the fast Poisson fill.
    crop_sampler: (Y * X, Y * X) float32 scipy CSR matrix, `mirror_sampler` over the crop's texels
        (`CoarseSpace.crop_matrix`); None with `mirror`.
    """

    resolution: tuple[int, int]
    num_vertices: int
    triangles: np.ndarray
    coverage: np.ndarray
    texels: torch.Tensor
    corners: torch.Tensor
    weights: torch.Tensor
    interpolation: Any
    right_pairs: torch.Tensor
    down_pairs: torch.Tensor
    mirror: np.ndarray | None
    mirror_sampler: Any
    outside_distance: np.ndarray
    nearest_chart: np.ndarray
    fill_rank: np.ndarray
    coarse: Any = None
    crop_sampler: Any = None


def _as_tensor(x, *, dtype=torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def uv_to_texel(uv, resolution) -> np.ndarray:
    """(N, 2) UVs (v up) -> (N, 2) texture pixel coordinates ``(x, y) = (u * W_uv, (1 - v) * H_uv)``."""
    h, w = parse_resolution(resolution)
    q = np.asarray(uv.detach().cpu().numpy() if isinstance(uv, torch.Tensor) else uv, dtype=np.float64)
    return np.stack([q[..., 0] * w, (1.0 - q[..., 1]) * h], -1)


def _check_mesh(uv: torch.Tensor, tris: torch.Tensor, uv_tris: torch.Tensor | None, num_vertices: int | None) -> int:
    """Validate the layout's arrays; returns V (the mesh's vertex count)."""
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    n_v = num_vertices if num_vertices is not None else (len(uv) if uv_tris is None else int(tris.max()) + 1 if tris.numel() else 0)
    if tris.numel() and (int(tris.min()) < 0 or int(tris.max()) >= n_v):
        raise ValueError(f"triangle index out of range for {n_v} vertices")
    if uv_tris is None:
        if uv.shape != (n_v, 2):
            raise ValueError(f"uv must be (V={n_v}, 2) without uv_triangles, got {tuple(uv.shape)}")
    else:
        if uv_tris.shape != tris.shape:
            raise ValueError(f"uv_triangles must be (F={len(tris)}, 3), got {tuple(uv_tris.shape)}")
        if uv.ndim != 2 or uv.shape[1] != 2 or (uv_tris.numel() and int(uv_tris.max()) >= len(uv)):
            raise ValueError(f"uv must be (T, 2) covering uv_triangles, got {tuple(uv.shape)}")
    return n_v


@torch.no_grad()
def uv_layout(uv, triangles, resolution=DEFAULT_RESOLUTION, *, uv_triangles=None, mirror=None,
              num_vertices: int | None = None) -> UVLayout:
    """Rasterise a mesh's UV layout and precompute what `unwrap` and `complete` need per texel.

    Args:
        uv: (V, 2) texture coordinates in [0, 1], v up; or (T, 2) with `uv_triangles` (F, 3).
        triangles: (F, 3) vertex indices of the mesh.
        resolution: (H_uv, W_uv) of the texture, or one int for a square one.
        mirror: (V,) each vertex's mirror partner or -1 (`ganfit.model.topology.mirror_vertices`), for
            `UVLayout.mirror`; ignored for a layout with seams (`uv_triangles`).
        num_vertices: V, when `uv_triangles` is given (default: the largest index in `triangles` + 1).
    Returns:
        `UVLayout`.
    """
    import scipy.sparse as sp
    from scipy import ndimage

    h, w = parse_resolution(resolution)
    q = _as_tensor(uv)
    tris = _as_tensor(triangles, dtype=torch.long)
    uv_tris = None if uv_triangles is None else _as_tensor(uv_triangles, dtype=torch.long)
    n_v = _check_mesh(q, tris, uv_tris, num_vertices)
    face, bary = rasterize_uv(q.numpy(), (tris if uv_tris is None else uv_tris).numpy(), h, w)
    face, bary = face.reshape(-1), bary.reshape(-1, 3)
    texels = torch.nonzero(face >= 0).squeeze(1)
    coverage = (face >= 0).view(h, w).numpy()
    position = torch.full((h * w,), -1, dtype=torch.long)
    position[texels] = torch.arange(len(texels))
    grid = position.view(h, w)
    right = torch.stack([grid[:, :-1].reshape(-1), grid[:, 1:].reshape(-1)], 1)
    down = torch.stack([grid[:-1].reshape(-1), grid[1:].reshape(-1)], 1)
    if coverage.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(~coverage, return_indices=True)
    else:
        dist, iy, ix = np.full((h, w), np.inf), np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    mirror_map = sampler = None
    if mirror is not None and uv_tris is None:
        mirror_map = _mirror_map(q, tris, _as_tensor(mirror, dtype=torch.long), face, bary, h, w)
        sampler = bilinear_sampler(mirror_map, coverage)
    coarse = coarse_space(coverage)
    corners, weights = tris[face[texels]], bary[texels].float()
    interpolation = sp.csr_matrix(
        (weights.numpy().reshape(-1), corners.numpy().reshape(-1), np.arange(0, 3 * len(texels) + 1, 3)),
        shape=(len(texels), n_v))
    return UVLayout(
        resolution=(h, w), num_vertices=n_v, triangles=tris.numpy(), coverage=coverage,
        texels=texels, corners=corners, weights=weights, interpolation=interpolation,
        right_pairs=right[(right >= 0).all(1)], down_pairs=down[(down >= 0).all(1)],
        mirror=mirror_map, mirror_sampler=sampler, outside_distance=dist.astype(np.float64),
        nearest_chart=(iy * w + ix).astype(np.int64), fill_rank=coarse.texture_rank(),
        coarse=coarse, crop_sampler=None if sampler is None else coarse.crop_matrix(sampler),
    )


def _mirror_map(q, tris, mir, face, bary, h: int, w: int) -> np.ndarray:
    """`mirror_uv_map` from a rasterised layout; (H, W, 2) float32."""
    if mir.shape != (len(q),):
        raise ValueError(f"mirror must be (V={len(q)},), got {tuple(mir.shape)}")
    out = torch.full((h * w, 2), float("nan"), dtype=torch.float64)
    tid = torch.nonzero(face >= 0).squeeze(1)
    if tid.numel():
        m = mir[tris[face[tid]]]  # (N, 3)
        good = (m >= 0).all(1)
        tid, m, b = tid[good], m[good], bary[tid[good]]
        mq = (b[:, :, None] * q[m]).sum(1)
        out[tid] = torch.stack([mq[:, 0] * w, (1.0 - mq[:, 1]) * h], 1)
    return out.view(h, w, 2).float().numpy()


def bilinear_sampler(xy: np.ndarray, where: np.ndarray):
    """The bilinear interpolation at texture pixel coordinates as a sparse matrix.

    Args:
        xy: (H, W, 2) ``(x, y)`` texture pixel coordinates (texel centres at +0.5), NaN for none.
        where: (H, W) bool, the texels to sample for (others get empty rows).
    Returns:
        (H * W, H * W) float32 scipy CSR matrix S with ``(S @ image.reshape(H * W, C))[t]`` the bilinear
        sample of the (H, W, C) image at ``xy[t]``; taps outside the image count as zero (the
        `torch.nn.functional.grid_sample` convention with ``padding_mode="zeros"``).
    """
    import scipy.sparse as sp

    h, w = where.shape
    rows = np.flatnonzero(where.reshape(-1) & np.isfinite(xy.reshape(-1, 2)).all(1))
    ix = xy.reshape(-1, 2)[rows, 0].astype(np.float64) - 0.5
    iy = xy.reshape(-1, 2)[rows, 1].astype(np.float64) - 0.5
    x0, y0 = np.floor(ix), np.floor(iy)
    fx, fy = ix - x0, iy - y0
    taps_r, taps_c, taps_w = [], [], []
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = (x0 + dx).astype(np.int64), (y0 + dy).astype(np.int64)
        ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        taps_r.append(rows[ok])
        taps_c.append(cy[ok] * w + cx[ok])
        taps_w.append(wt[ok])
    return sp.csr_matrix((np.concatenate(taps_w).astype(np.float32), (np.concatenate(taps_r), np.concatenate(taps_c))),
                         shape=(h * w, h * w))


@torch.no_grad()
def mirror_uv_map(uv, triangles, mirror, resolution=DEFAULT_RESOLUTION) -> np.ndarray:
    """For every texel, the texture pixel coordinates of its mirror point across the face's symmetry plane.

    The mesh is rasterised in UV space and the UVs of the mirror partners of each triangle's corners are
    interpolated with the texel's barycentric weights, so any UV layout works.

    Args:
        uv: (V, 2) per-vertex texture coordinates in [0, 1], v up.
        triangles: (F, 3).
        mirror: (V,) index of each vertex's mirror partner, -1 for none (`topology.mirror_vertices`).
        resolution: (H_uv, W_uv) or an int.
    Returns:
        (H_uv, W_uv, 2) float32 ``(x, y)`` texture pixel coordinates (texel centres at +0.5, the
        convention of `uv_to_texel`), NaN outside the chart and where a corner has no partner.
    """
    h, w = parse_resolution(resolution)
    q = _as_tensor(uv)
    tris = _as_tensor(triangles, dtype=torch.long)
    mir = _as_tensor(mirror, dtype=torch.long)
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"uv must be (V, 2), got {tuple(q.shape)}")
    if mir.shape != (len(q),):
        raise ValueError(f"mirror must be (V={len(q)},), got {tuple(mir.shape)}")
    face, bary = rasterize_uv(q.numpy(), tris.numpy(), h, w)
    return _mirror_map(q, tris, mir, face.reshape(-1), bary.reshape(-1, 3), h, w)


def nested_dissection_rank(mask: np.ndarray, leaf: int = _ND_LEAF) -> np.ndarray:
    """Rank of each True texel of `mask` (H, W) in `dissection_order`, -1 elsewhere. Eliminating the
    unknowns of a 4-neighbour grid equation in this order (any subset, kept in rank order) keeps the
    sparse factor small, so the Poisson fill factorises without a general ordering pass."""
    ys, xs = np.nonzero(mask)
    rank = np.full(mask.shape, -1, np.int64)
    if ys.size == 0:
        return rank
    order = dissection_order(ys, xs, leaf)
    rank[ys[order], xs[order]] = np.arange(order.size)
    return rank
