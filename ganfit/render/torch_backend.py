"""A pure-PyTorch differentiable rasterizer (backend name ``"torch"``): CPU and CUDA, no extension.

It implements the `ganfit.render.base.Rasterizer` protocol with the conventions stated there: images are
(B, H, W, C), row 0 is the top of the image (y_ndc = +1), pixel (i, j) is centred at x = j + 0.5,
y = i + 0.5 in pixel units, and the input is clip space as produced by
`ganfit.render.camera.clip_from_camera`. The design follows nvdiffrast (Laine et al., "Modular
Primitives for High-Performance Differentiable Rendering", SIGGRAPH Asia 2020): rasterization gives a
discrete triangle id per pixel plus barycentrics that are differentiable functions of the vertex
positions; `interpolate` and `texture` are differentiable in their inputs; `antialias` carries the
gradient of occlusion boundaries to the vertex positions.

This module holds the backend class `TorchRasterizer`, its settings (`TorchRasterSettings`), its
fragments (`TorchFragments`) and the input checks. The method is implemented in
`ganfit.render.torch_raster`, one module per part, each documenting its part in detail. In short:

Rasterization (two passes)
--------------------------
1. Visibility (`torch_raster.visibility`, with `torch_raster.binning`; no autograd, vectorised). The
   pixel centres in each triangle's bounding box are tested in dense chunks of bounded size; a pixel is
   covered when its centre is inside the triangle, edges inclusive (exactly antisymmetric edge values:
   no cracks in closed meshes), and ``scatter_reduce(amin)`` on packed (depth, triangle) keys keeps the
   nearest fragment per pixel (ties: lowest triangle index), so ``tile`` and ``max_pairs`` never change
   the image.
2. Differentiable attributes (`torch_raster.barycentrics`). For covered pixels only, the
   perspective-correct barycentrics and depth of the winning triangle, in 2D homogeneous coordinates
   (Olano & Greer 1997), with an analytic backward to the clip-space vertices. `interpolate` blends
   per-vertex attributes with them (`torch_raster.interpolate`).

`rasterize` returns `TorchFragments`: the protocol's `Fragments` plus the triangles' orientation and
the covered pixel list, which `interpolate` and `antialias` reuse. The rasterizer keeps the last
checked triangle list and its edge adjacency (recomputed when a different or modified tensor comes).

Clipping: a triangle with any vertex at w <= 0 (at or behind the camera plane) is not drawn (it is not
split into pieces). Fragments with z_ndc outside [-1, 1] (nearer than the near plane or beyond the far
plane) are discarded per pixel. A mesh entirely outside the view gives an empty mask.
Back faces are drawn unless ``cull_backfaces`` (a face mesh is open, so its inside can be visible);
front-facing means counter-clockwise in NDC (x right, y up), which is what the counter-clockwise
(outward-normal) triangles of the face models become when they face the camera.

Antialiasing (`torch_raster.antialias`): analytic silhouette antialiasing after nvdiffrast (paper,
sec. 3.4): adjacent pixels across a silhouette edge are blended by coverage, which gives the image a
gradient with respect to the positions of silhouette vertices. Texturing (`torch_raster.texture`):
"bilinear" (`grid_sample`, border clamping, v up) or "mipmap"/"area" (trilinear mip-mapping, no
anisotropic filtering). The triangle list layout that the passes share is in `torch_raster.triangles`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ganfit.render.base import Fragments
from ganfit.render.torch_raster.antialias import _edge_crossing, _facing, _silhouette_pairs, _Topology, edge_neighbours
from ganfit.render.torch_raster.barycentrics import _pixel_ndc, _PixelBarycentrics, perspective_barycentrics
from ganfit.render.torch_raster.interpolate import _Interpolate
from ganfit.render.torch_raster.texture import _sample, _texture_lod, mip_pyramid
from ganfit.render.torch_raster.triangles import _Triangles
from ganfit.render.torch_raster.visibility import _visibility

__all__ = [
    "TorchFragments",
    "TorchRasterSettings",
    "TorchRasterizer",
    "edge_neighbours",
    "mip_pyramid",
    "perspective_barycentrics",
]


@dataclass(frozen=True)
class TorchRasterSettings:
    """Settings of the torch rasterizer.

    tile: largest unit side in pixels (a power of two); bounding boxes larger than tile x tile are split
        into tile x tile blocks.
    max_pairs: (unit, pixel) candidates evaluated per chunk (memory bound: about 60 bytes each); a chunk
        holds at least one unit, so the working set is at most max(max_pairs, tile**2) candidates.
    cull_backfaces: skip triangles that are clockwise in NDC (facing away from the camera).
    """

    tile: int = 16
    max_pairs: int = 1 << 20
    cull_backfaces: bool = False

    def __post_init__(self) -> None:
        if self.tile < 1 or self.tile & (self.tile - 1):
            raise ValueError(f"tile must be a power of two >= 1, got {self.tile}")
        if self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")


@dataclass(frozen=True)
class TorchFragments(Fragments):
    """`Fragments` plus what `TorchRasterizer.antialias` reuses.

    facing: (B*F,) int8 orientation of each triangle when rasterized: +1 counter-clockwise in NDC
        (front-facing), -1 clockwise, 0 not drawn (a vertex at w <= 0 or degenerate).
    pixels: (N,) int64 flat indices b * H * W + i * W + j of the covered pixels, ascending.
    """

    facing: torch.Tensor | None = None
    pixels: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------
# input checks


def _check_clip(clip: torch.Tensor) -> None:
    if not isinstance(clip, torch.Tensor):
        raise TypeError(f"clip must be a torch.Tensor, got {type(clip).__name__}")
    if clip.ndim != 3 or clip.shape[-1] != 4:
        raise ValueError(f"clip-space vertices must be (B, V, 4), got {tuple(clip.shape)}")
    if not clip.is_floating_point():
        raise ValueError(f"clip-space vertices must be floating point, got {clip.dtype}")
    if clip.numel():
        lo, hi = torch.aminmax(clip.detach())  # NaN propagates
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            raise ValueError("clip-space vertices contain NaN/inf")


def _check_triangles(triangles: torch.Tensor, num_vertices: int, device: torch.device) -> torch.Tensor:
    """(F, 3) integer -> int64 on `device`, indices checked against `num_vertices`."""
    tris = torch.as_tensor(triangles, device=device)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    if tris.is_floating_point() or tris.is_complex() or tris.dtype == torch.bool:
        raise ValueError(f"triangles must be an integer tensor, got {tris.dtype}")
    tris = tris.long()
    if tris.numel():
        lo, hi = torch.aminmax(tris)
        if int(lo) < 0 or int(hi) >= num_vertices:
            raise ValueError(f"triangle index out of range for {num_vertices} vertices")
    return tris


def _check_resolution(resolution: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(r) for r in resolution)
    except (TypeError, ValueError):
        raise ValueError(f"resolution must be (H, W), got {resolution!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be positive (H, W), got {resolution!r}")
    return h, w


def _check_fragments(fragments: Fragments) -> tuple[int, int, int]:
    tid = fragments.triangle_id
    if tid.ndim != 3:
        raise ValueError(f"fragments.triangle_id must be (B, H, W), got {tuple(tid.shape)}")
    return int(tid.shape[0]), int(tid.shape[1]), int(tid.shape[2])


# --------------------------------------------------------------------------------------------------
# the backend


class TorchRasterizer:
    """Pure-PyTorch rasterizer backend (see the module docstring and `ganfit.render.torch_raster`).

    >>> raster = TorchRasterizer(TorchRasterSettings(tile=16))
    >>> frags = raster.rasterize(clip, triangles, (224, 224))          # doctest: +SKIP
    >>> color = raster.interpolate(vertex_colors, frags, triangles)     # doctest: +SKIP
    >>> color = raster.antialias(color, frags, clip, triangles)         # doctest: +SKIP
    """

    name = "torch"

    def __init__(self, settings: TorchRasterSettings | None = None) -> None:
        self.settings = settings or TorchRasterSettings()
        # Edge adjacency depends on the triangle list only; the last one is kept (checked by content).
        self._topology: _Topology | None = None
        # The last validated triangle list: (given tensor, its version, vertex count, checked copy). A fit
        # passes the same triangles every step; re-checking 100k indices three times a step is waste.
        self._checked: tuple[torch.Tensor, int, int, _Triangles] | None = None

    def _triangles(self, triangles: torch.Tensor, num_vertices: int, device: torch.device) -> _Triangles:
        """`_check_triangles` (plus corner columns), skipped for the same unmodified tensor as last time."""
        c = self._checked
        if (
            c is not None and c[0] is triangles and c[1] == triangles._version and c[2] == num_vertices
            and c[3].index.device == torch.device(device)
        ):
            return c[3]
        tris = _Triangles.of(_check_triangles(triangles, num_vertices, device))
        if isinstance(triangles, torch.Tensor):
            self._checked = (triangles, triangles._version, num_vertices, tris)
        return tris

    # ---- rasterize
    def rasterize(self, clip: torch.Tensor, triangles: torch.Tensor, resolution: tuple[int, int]) -> TorchFragments:
        """clip: (B, V, 4) clip-space vertices; triangles: (F, 3); resolution: (H, W) -> fragments.

        Raises ValueError for NaN/inf vertices, wrong shapes or out-of-range triangle indices.
        """
        _check_clip(clip)
        h, w = _check_resolution(resolution)
        tris = self._triangles(triangles, clip.shape[1], clip.device)
        b, nv = clip.shape[:2]
        tid, facing = _visibility(clip, tris, h, w, self.settings)
        pix = torch.nonzero(tid >= 0).squeeze(1)
        f = tid.index_select(0, pix)
        gv = [col.index_select(0, f) for col in tris.columns]
        if b > 1:
            off = torch.div(pix, h * w, rounding_mode="floor") * nv
            gv = [g + off for g in gv]
        qx, qy = _pixel_ndc(pix, h, w, clip.dtype)
        bary, depth = _PixelBarycentrics.apply(clip.reshape(-1, 4), *gv, pix, qx, qy, b * h * w)
        return TorchFragments(
            triangle_id=tid.view(b, h, w), barycentric=bary.view(b, h, w, 3), depth=depth.view(b, h, w),
            facing=facing, pixels=pix,
        )

    # ---- interpolate
    def interpolate(self, attributes: torch.Tensor, fragments: Fragments, triangles: torch.Tensor) -> torch.Tensor:
        """attributes: (B, V, C) or (V, C) per-vertex values -> (B, H, W, C), zeros on background.

        Differentiable with respect to the attributes and the barycentrics.
        """
        b, h, w = _check_fragments(fragments)
        if attributes.ndim == 2:
            attributes = attributes.unsqueeze(0)
        if attributes.ndim != 3 or attributes.shape[0] not in (1, b):
            raise ValueError(
                f"attributes must be (B, V, C) with B = {b} or 1, or (V, C); got {tuple(attributes.shape)}"
            )
        ba, n_v, n_c = attributes.shape
        tris = self._triangles(triangles, n_v, attributes.device)
        tid = fragments.triangle_id.reshape(-1)
        pix = getattr(fragments, "pixels", None)
        if pix is None:
            pix = torch.nonzero(tid >= 0).squeeze(1)
        f = tid.index_select(0, pix)
        vid = [col.index_select(0, f) for col in tris.columns]
        if ba > 1:
            off = torch.div(pix, h * w, rounding_mode="floor") * n_v
            vid = [v + off for v in vid]
        bary = fragments.barycentric.reshape(-1, 3).to(attributes.dtype)
        out = _Interpolate.apply(attributes.reshape(-1, n_c), bary, *vid, pix, b * h * w)
        return out.view(b, h, w, n_c)

    # ---- texture
    def texture(self, texture: torch.Tensor, uv: torch.Tensor, *, filter: str = "bilinear") -> torch.Tensor:
        """texture: (B, C, Ht, Wt) (or B = 1, shared); uv: (B, H, W, 2) in [0, 1], v up -> (B, H, W, C).

        filter: "bilinear", or "mipmap"/"area" (trilinear mip-mapping, see `torch_raster.texture`).
        Differentiable with respect to the texels and the uv coordinates.
        """
        if texture.ndim != 4:
            raise ValueError(f"texture must be (B, C, Ht, Wt), got {tuple(texture.shape)}")
        if uv.ndim != 4 or uv.shape[-1] != 2:
            raise ValueError(f"uv must be (B, H, W, 2), got {tuple(uv.shape)}")
        if filter not in ("bilinear", "mipmap", "area"):
            raise ValueError(f"filter must be 'bilinear', 'mipmap' or 'area', got {filter!r}")
        b = uv.shape[0]
        if texture.shape[0] not in (1, b):
            raise ValueError(f"texture batch {texture.shape[0]} must be 1 or match the uv batch {b}")
        if texture.shape[0] != b:
            texture = texture.expand(b, -1, -1, -1)
        uv = uv.to(texture.dtype)
        grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], -1)
        if filter == "bilinear":
            return _sample(texture, grid)
        levels = mip_pyramid(texture)
        lod = _texture_lod(uv, texture.shape[-2], texture.shape[-1]).clamp(max=len(levels) - 1)
        l0 = torch.floor(lod)
        frac = (lod - l0).unsqueeze(-1).to(texture.dtype)
        l0 = l0.long().unsqueeze(-1)
        lo, hi = int(l0.min()), min(int(l0.max()) + 1, len(levels) - 1)
        out = None
        for level in range(lo, hi + 1):
            weight = (l0 == level) * (1.0 - frac) + (l0 + 1 == level) * frac
            term = _sample(levels[level], grid) * weight
            out = term if out is None else out + term
        return out

    # ---- antialias
    def _neighbours(self, tris: _Triangles) -> _Topology:
        index = tris.index
        cached = self._topology
        if cached is not None and cached.triangles.shape == index.shape and cached.triangles.device == index.device:
            if cached.source is index and cached.version == index._version:
                return cached
            if torch.equal(cached.triangles, index):
                return cached
        self._topology = _Topology.build(index)
        return self._topology

    def antialias(
        self, color: torch.Tensor, fragments: Fragments, clip: torch.Tensor, triangles: torch.Tensor
    ) -> torch.Tensor:
        """color: (B, H, W, C) -> (B, H, W, C) with analytic silhouette antialiasing (`torch_raster.antialias`).

        Differentiable with respect to the colours and, at silhouettes, the clip-space vertices.
        """
        b, h, w = _check_fragments(fragments)
        if color.ndim != 4 or tuple(color.shape[:3]) != (b, h, w):
            raise ValueError(f"color must be (B, H, W, C) = ({b}, {h}, {w}, C), got {tuple(color.shape)}")
        _check_clip(clip)
        if clip.shape[0] != b:
            raise ValueError(f"clip must be (B, V, 4) with B = {b}, got {tuple(clip.shape)}")
        tris = self._triangles(triangles, clip.shape[1], clip.device)
        nv = clip.shape[1]
        facing = getattr(fragments, "facing", None)
        if facing is None or facing.numel() != b * tris.index.shape[0]:
            facing = _facing(clip, tris)
        found = _silhouette_pairs(fragments, facing, self._neighbours(tris))
        if found is None:
            return color
        front, other, sil = found
        gv = tris.index.index_select(0, fragments.triangle_id.reshape(-1).index_select(0, front))
        if b > 1:
            gv = gv + (torch.div(front, h * w, rounding_mode="floor") * nv)[:, None]
        corners = clip.reshape(-1, 4).index_select(0, gv.reshape(-1)).view(-1, 3, 4)  # autograd on
        crossing = _edge_crossing(corners, sil, front, other, h, w)
        if crossing is None:
            return color
        t, rows = crossing
        front, other = front.index_select(0, rows), other.index_select(0, rows)
        n_c = color.shape[-1]
        flat = color.reshape(-1, n_c)
        cf, co = flat.index_select(0, front), flat.index_select(0, other)
        beyond = t > 0.5
        target = torch.where(beyond, other, front)
        weight = torch.where(beyond, t - 0.5, 0.5 - t).to(color.dtype)[:, None]
        delta = torch.where(beyond[:, None], cf - co, co - cf) * weight
        return flat.index_add(0, target, delta).view(b, h, w, n_c)
