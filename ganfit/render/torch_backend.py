"""A pure-PyTorch differentiable rasterizer (backend name ``"torch"``): CPU and CUDA, no extension.

It implements the `ganfit.render.base.Rasterizer` protocol with the conventions stated there: images are
(B, H, W, C), row 0 is the top of the image (y_ndc = +1), pixel (i, j) is centred at x = j + 0.5,
y = i + 0.5 in pixel units, and the input is clip space as produced by
`ganfit.render.camera.clip_from_camera`. The design follows nvdiffrast (Laine et al., "Modular
Primitives for High-Performance Differentiable Rendering", SIGGRAPH Asia 2020): rasterization gives a
discrete triangle id per pixel plus barycentrics that are differentiable functions of the vertex
positions; `interpolate` and `texture` are differentiable in their inputs; `antialias` carries the
gradient of occlusion boundaries to the vertex positions.

Rasterization (two passes)
--------------------------
1. Visibility (no autograd, vectorised: no Python loop over triangles or pixels). Vertices go to pixel
   coordinates (x/w, y/w); each triangle gets its pixel-centre bounding box. Every triangle is tested
   at the first centre of its box in one dense pass over all triangles: in a dense mesh most boxes
   hold at most one centre, so this pass alone rasterizes most triangles (all of a 100k-triangle face
   at 224 px). Boxes of two or more centres are sorted by size into classes of unit shape
   (2**kx x 2**ky pixels up to ``tile`` x ``tile``; larger boxes are cut into tile x tile blocks);
   classes too small to pay for their own pass are merged into a larger shape. The units of a class
   are evaluated densely in an (S, n) layout (S candidate pixels per unit, n units), in chunks of at
   most ``max_pairs`` candidates, so the working set is bounded whatever the triangle and image sizes
   (2048^2 included) and no (pixels x triangles) array is ever formed. A pixel is covered when its
   centre is inside the triangle, edges inclusive. Edge values are cross(a - p, b - p) with a, b the
   edge's corners and p the pixel centre, each difference rounded once: exactly antisymmetric in
   floating point, so the two triangles of a shared edge agree on every centre (no cracks in closed
   meshes). The depth test uses z_ndc (affine in screen space, computed from the same edge values in
   every pass): each covered candidate packs ``(float32 bits of z_ndc + 2) << 32 | triangle`` into an
   int64 and ``scatter_reduce(amin)`` keeps the nearest fragment per pixel (ties: lowest triangle
   index), independently of the evaluation order, so ``tile`` and ``max_pairs`` never change the
   image. Inside/outside and depth-range tests are arithmetic penalties on the key rather than
   boolean masks (several times faster on the CPU).
2. Differentiable attributes. For covered pixels only, the winner's three clip-space vertices are
   gathered and the perspective-correct barycentrics computed in 2D homogeneous coordinates (Olano &
   Greer 1997): for the pixel ray q = (x_ndc, y_ndc, 1) and c_i = (x_i, y_i, w_i),
   b_i ~ det[q, c_j, c_k], normalised to sum 1 (equal to screen-space barycentrics weighted by 1/w);
   depth = sum(b_i z_i) / sum(b_i w_i) = z_ndc of the surface point. This is one autograd function
   with an analytic backward (the gradient with respect to the clip-space vertices).

`rasterize` returns `TorchFragments`: the protocol's `Fragments` plus the triangles' orientation and
the covered pixel list, which `interpolate` and `antialias` reuse. The rasterizer keeps the last
checked triangle list and its edge adjacency (recomputed when a different or modified tensor comes).

Clipping: a triangle with any vertex at w <= 0 (at or behind the camera plane) is not drawn (it is not
split into pieces). Fragments with z_ndc outside [-1, 1] (nearer than the near plane or beyond the far
plane) are discarded per pixel. A mesh entirely outside the view gives an empty mask.
Back faces are drawn unless ``cull_backfaces`` (a face mesh is open, so its inside can be visible);
front-facing means counter-clockwise in NDC (x right, y up), which is what the counter-clockwise
(outward-normal) triangles of the face models become when they face the camera.

Antialiasing
------------
Analytic silhouette antialiasing after nvdiffrast (paper, sec. 3.4). A silhouette edge is an edge with
one adjacent triangle (or more than two), an edge shared with a triangle that faces the other way in
clip space, or an edge next to a triangle that is not drawn (w <= 0). For every horizontally or
vertically adjacent pixel pair whose triangle ids differ, the pixel with the nearer depth is the front
pixel F and its triangle T; the segment from F's centre to the other centre O leaves T through one edge
(the one crossed first). If that edge is a silhouette edge, and it is closer to vertical for a
horizontal pair or closer to horizontal for a vertical pair (so that each crossing is counted once,
as in nvdiffrast), it crosses the segment at fraction t (from F) and the colours are blended by
coverage: if t > 1/2, T covers (t - 1/2) of O's half of the segment and O moves towards F's colour by
that amount; otherwise F moves towards O's colour by (1/2 - t). t is computed with autograd from T's
clip-space vertices, so the image gets a gradient with respect to the positions of silhouette
vertices, (colour F - colour O) times dt/dx: the derivative of the covered area.

Texturing
---------
"bilinear": `torch.nn.functional.grid_sample` (align_corners=False, border clamping; v up in the UV map,
so v = 1 is the top row of the texture image). "mipmap" and "area" (the same here): trilinear
mip-mapping. A pyramid is built by 2x2 average pooling; the level of detail per pixel is
log2 of the texel footprint, the longer of the x and y screen derivatives of uv (in level-0 texels),
each derivative being the finite difference to the neighbouring pixel (the smaller of the forward and
backward differences, so that jumps at silhouettes or UV seams do not blur). The LOD is not
differentiated; the two nearest levels are sampled bilinearly and blended. No anisotropic filtering.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganfit.render.base import Fragments

__all__ = [
    "TorchFragments",
    "TorchRasterSettings",
    "TorchRasterizer",
    "edge_neighbours",
    "mip_pyramid",
    "perspective_barycentrics",
]

_KEY_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
# Bit pattern of 3.0f: keys above (_KEY_LIMIT << 32) are not fragments (see `_pack_keys`).
_KEY_LIMIT = 0x40400000


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
# pass 1: visibility (no autograd). Per-triangle data is kept one component per contiguous 1-D tensor
# ("structure of arrays"): index_select and element-wise ops on those are much faster on the CPU than
# advanced indexing and strided (N, 3) columns.


@dataclass(frozen=True)
class _Triangles:
    """A checked triangle list: index (F, 3) int64 and its corner columns, 3 contiguous (F,) tensors."""

    index: torch.Tensor
    columns: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @staticmethod
    def of(tris: torch.Tensor) -> "_Triangles":
        return _Triangles(tris, tuple(tris[:, k].contiguous() for k in range(3)))  # type: ignore[arg-type]


def _corner_indices(tris: _Triangles, batch: int, num_vertices: int) -> list[torch.Tensor]:
    """3 tensors (B*F,): global vertex index b * V + v of each corner of triangle b * F + f."""
    cols = list(tris.columns)
    if batch == 1:
        return cols
    offs = torch.arange(batch, device=tris.index.device)[:, None] * num_vertices
    return [(offs + c[None]).reshape(-1) for c in cols]


def _vertex_screen(clip: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Per-vertex screen positions in *centre coordinates* (pixel (i, j) is centred at (j, i)).

    clip: (B, V, 4). Returns u, v, zn: (B*V,) pixel x - 0.5, pixel y (down) - 0.5 and z_ndc; non-finite
    where w <= 0 (so those triangles drop out of every test).
    """
    c = clip.detach().to(dtype).reshape(-1, 4)
    inv = 1.0 / c[:, 3].clamp_min(0.0)  # +inf for w <= 0
    u = c[:, 0] * inv * (0.5 * width) + (0.5 * width - 0.5)
    v = c[:, 1] * inv * (-0.5 * height) + (0.5 * height - 0.5)
    return u, v, c[:, 2] * inv


def _edge_values(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> list[torch.Tensor]:
    """Edge functions from corner positions relative to the sample point.

    xs, ys: 3 tensors each, corner coordinates minus the sample's (broadcastable). Returns e_k =
    cross(v_k - p, v_k+1 - p) for k = 0, 1, 2: the weight of corner k + 2 times twice the signed area.
    The form is exactly antisymmetric in floating point (swapping the edge's ends swaps the two
    products and negates the difference exactly), so triangles sharing an edge never both miss a
    sample on it: no cracks in closed meshes.
    """
    return [xs[k] * ys[(k + 1) % 3] - xs[(k + 1) % 3] * ys[k] for k in range(3)]


def _depth(e: list[torch.Tensor], z: list[torch.Tensor]) -> torch.Tensor:
    """z_ndc at the sample from its edge values (screen-space barycentrics; z_ndc is affine on screen).

    Every pass uses this same formula on the same exactly computed edge values, so a (triangle, pixel)
    candidate gets the same depth key whatever the unit shape or chunk: the image does not depend on
    `tile` or `max_pairs`.
    """
    return (e[1] * z[0] + e[2] * z[1] + e[0] * z[2]) / (e[0] + e[1] + e[2])


def _inside_measure(e: list[torch.Tensor], cull_backfaces: bool) -> torch.Tensor:
    """>= 0 where the sample is inside (edges inclusive), < 0 outside; NaN for culled triangles.

    Inside means all edge values have the sign of the area. In pixel coordinates (y down) front faces
    have negative area, so with back-face culling only "all <= 0" counts.
    """
    emax = torch.maximum(torch.maximum(e[0], e[1]), e[2])
    if cull_backfaces:
        return -emax
    emin = torch.minimum(torch.minimum(e[0], e[1]), e[2])
    return torch.maximum(emin, -emax)


def _pack_keys(z: torch.Tensor, inside: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Depth keys (float32 bits of z_ndc + 2) << 32 | f, int64, same shape as z.

    z: z_ndc of the candidate; inside: `_inside_measure`; f: int64 triangle index. A candidate outside
    the triangle or outside z in [-1, 1] gets +1e30 per unit of violation, so its key is above
    _KEY_LIMIT; NaN (culled triangle) becomes +inf. For z in [-1, 1], z + 2 is in [1, 3] and its float
    bits order like the depth.
    """
    penalty = torch.relu(torch.minimum(inside, 1.0 - z.abs()).neg_())
    zk = torch.add(z + 2.0, penalty, alpha=1e30).float()
    zk = torch.nan_to_num_(zk, nan=float("inf"), neginf=float("inf"))
    return zk.view(torch.int32).long().bitwise_left_shift_(32).bitwise_or_(f)


def _triangle_setup(clip: torch.Tensor, tris: _Triangles, height: int, width: int) -> dict:
    """Per-triangle screen-space setup of the B*F triangles g = b * F + f.

    Returns a dict of (B*F,) tensors: 'x', 'y', 'z' (lists of 3: centre coordinates and z_ndc of the
    corners), 'area2' (twice the signed area, y down: negative = counter-clockwise in NDC; non-finite
    for triangles with a vertex at w <= 0), 'x0', 'y0', 'x1', 'y1' (first and last pixel centre of the
    bounding box, clipped to the image; empty when x1 < x0 or y1 < y0; NaN for culled triangles).
    """
    b, nv = clip.shape[:2]
    dtype = torch.float64 if clip.dtype == torch.float64 else torch.float32
    u, v, zn = _vertex_screen(clip, height, width, dtype)
    gv = _corner_indices(tris, b, nv)
    x = [u.index_select(0, g) for g in gv]
    y = [v.index_select(0, g) for g in gv]
    z = [zn.index_select(0, g) for g in gv]
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    x0 = torch.ceil(torch.minimum(torch.minimum(x[0], x[1]), x[2])).clamp_(0, width - 1)
    y0 = torch.ceil(torch.minimum(torch.minimum(y[0], y[1]), y[2])).clamp_(0, height - 1)
    x1 = torch.floor(torch.maximum(torch.maximum(x[0], x[1]), x[2])).clamp_(-1, width - 1)
    y1 = torch.floor(torch.maximum(torch.maximum(y[0], y[1]), y[2])).clamp_(-1, height - 1)
    return {"x": x, "y": y, "z": z, "area2": area2, "x0": x0, "y0": y0, "x1": x1, "y1": y1}


def _facing_from_area(area2: torch.Tensor) -> torch.Tensor:
    """(N,) pixel-space doubled area -> (N,) int8: +1 counter-clockwise in NDC, -1 clockwise, 0 not drawn."""
    return torch.nan_to_num(-torch.sign(area2), nan=0.0).to(torch.int8)


def _local_index(g: torch.Tensor, n_f: int, hw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global triangle index g = b * F + f (int64) -> f and the first flat pixel b * H * W of its image."""
    bi = torch.div(g, n_f, rounding_mode="floor")
    return g - bi * n_f, bi * hw


def _first_pixel_keys(tri: dict, start: int, n_f: int, height: int, width: int, cull_backfaces: bool):
    """Keys of triangles at the first pixel centre (x0, y0) of their bounding box, densely.

    This rasterizes every triangle whose box holds one centre; for larger boxes it is one of the
    candidates that `_grid_keys` evaluates again (same triangle, same key, so harmless). Clipping
    (x0, y0) to the image is safe: a triangle that misses the clipped centre fails the edge test there.
    tri: per-triangle arrays of the triangles g = start, start + 1, ... (g = b * F + f).
    Returns pid, key: (N,) int64 flat pixel index and depth key.
    """
    px, py = tri["x0"], tri["y0"]
    xs = [x - px for x in tri["x"]]
    ys = [y - py for y in tri["y"]]
    e = _edge_values(xs, ys)
    z = _depth(e, tri["z"])
    inside = _inside_measure(e, cull_backfaces)
    # Flat pixel index in floating point (exact below 2**24), one conversion to int64 (integer
    # arithmetic is several times slower on the CPU).
    ptype = torch.float32 if height * width < (1 << 24) else torch.float64
    pidf = torch.nan_to_num(py.to(ptype) * width + px.to(ptype), nan=0.0)
    g = torch.arange(start, start + px.numel(), device=px.device)
    if start + px.numel() <= n_f:  # all in the first image
        return pidf.long(), _pack_keys(z, inside, g)
    f, base = _local_index(g, n_f, height * width)
    return pidf.long() + base, _pack_keys(z, inside, f)


def _compact(tri: dict, rows: torch.Tensor) -> dict:
    """The per-triangle arrays of `_triangle_setup` restricted to `rows` (M,)."""
    out = {}
    for key, val in tri.items():
        if isinstance(val, list):
            out[key] = [t.index_select(0, rows) for t in val]
        else:
            out[key] = val.index_select(0, rows)
    return out


def _unit_classes(tri: dict, rows: torch.Tensor, tile: int) -> torch.Tensor:
    """(M,) int64 unit class of the boxes of triangles `rows` (boxes of 2+ centres):
    kx * (n + 1) + ky for a box of sides up to 2**kx x 2**ky (kx, ky <= n = log2(tile)), and
    (n + 1)**2 for boxes with a side over tile (split into tile blocks).
    """
    n1 = tile.bit_length()  # n + 1 sizes per side: 1, 2, 4, ..., tile
    bw = tri["x1"].index_select(0, rows) - tri["x0"].index_select(0, rows) + 1.0
    bh = tri["y1"].index_select(0, rows) - tri["y0"].index_select(0, rows) + 1.0
    big = torch.maximum(bw, bh) > tile
    code = torch.ceil(torch.log2(bw.clamp_(1, tile))) * n1 + torch.ceil(torch.log2(bh.clamp_(1, tile)))
    return (code * ~big + (n1 * n1) * big).long()


# A unit class costs about as much fixed work (gathers, launches) as evaluating this many extra
# candidates; classes whose separation saves less are merged into a larger unit shape.
_CLASS_OVERHEAD_CANDIDATES = 20000


def _merge_classes(counts: list[int], tile: int) -> dict[int, list[int]]:
    """Group unit classes: {target class: [member classes]}.

    counts: number of boxes per class of `_unit_classes` (index (n + 1)**2 = tile blocks). A rectangle
    class (kx, ky) joins the square (m, m), m = max(kx, ky), and a square joins the next larger one,
    when its boxes would cost fewer extra candidates than `_CLASS_OVERHEAD_CANDIDATES`.
    """
    n1 = tile.bit_length()
    target = {c: c for c, k in enumerate(counts) if k}
    load = list(counts)
    for c in sorted(target, key=lambda c: (max(c // n1, c % n1) if c < n1 * n1 else n1, c)):
        if c >= n1 * n1:
            continue
        kx, ky = c // n1, c % n1
        m = max(kx, ky)
        if kx != ky:
            parent = m * n1 + m
        elif m + 1 < n1:
            parent = (m + 1) * n1 + (m + 1)
        else:
            continue
        extra = load[c] * ((1 << (2 * (parent // n1))) - (1 << (kx + ky)))
        if extra < _CLASS_OVERHEAD_CANDIDATES:
            for k, t in target.items():
                if t == c:
                    target[k] = parent
            load[parent] += load[c]
            load[c] = 0
    groups: dict[int, list[int]] = {}
    for c, t in target.items():
        groups.setdefault(t, []).append(c)
    return groups


def _class_units(tri: dict, cls: int, rows: torch.Tensor, tile: int):
    """Units of the triangles `rows` (M,) whose boxes fit unit class `cls` (see `_unit_classes`).

    Returns (sw, sh, rows (n,), ox (n,), oy (n,), whole): unit shape, the triangle of each unit,
    integer top-left pixel of each unit, and whether the units are whole boxes (starting at the box
    origin, whose centre the first-pixel pass has already tested).
    """
    n1 = tile.bit_length()
    x0 = tri["x0"].index_select(0, rows).long()
    y0 = tri["y0"].index_select(0, rows).long()
    if cls < n1 * n1:
        return 1 << (cls // n1), 1 << (cls % n1), rows, x0, y0, True
    bw = tri["x1"].index_select(0, rows).long() - x0 + 1
    bh = tri["y1"].index_select(0, rows).long() - y0 + 1
    nbx = (bw + tile - 1) // tile
    cnt = nbx * ((bh + tile - 1) // tile)
    rep = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
    k_in = torch.arange(int(cnt.sum()), device=rows.device) - (torch.cumsum(cnt, 0) - cnt)[rep]
    nbr = nbx.index_select(0, rep)
    ox = x0.index_select(0, rep) + (k_in % nbr) * tile
    oy = y0.index_select(0, rep) + torch.div(k_in, nbr, rounding_mode="floor") * tile
    return tile, tile, rows.index_select(0, rep), ox, oy, False


def _grid_keys(tri: dict, ox: torch.Tensor, oy: torch.Tensor, sw: int, sh: int, skip_origin: bool, exact: bool,
               width: int, cull_backfaces: bool):
    """Depth keys of n units of sw x sh pixels, evaluated densely in an (S, n) layout.

    The candidates of a unit are rows and the units columns, so every element-wise op runs along the
    long, contiguous unit axis (an (n, sh, sw) layout has inner loops of sw elements: many times slower
    for small units). tri: per-unit triangle arrays (n,), with 'x1', 'y1' (last box centre) and 'f',
    'pid0' (int64 flat index of the unit origin); ox, oy: (n,) int64 top-left pixel of each unit;
    skip_origin: the units are whole boxes, leave out their first pixel (already tested); exact: every
    box is exactly sw x sh. Candidates beyond the box fail the inside test (the box test is only
    needed when the unit can overhang the box); their flat index may point past the image, into the
    padding of the key buffer.
    Returns pid, key: (S*n,) int64 flat pixel indices and depth keys.
    """
    dtype = tri["x"][0].dtype
    r = torch.arange(1 if skip_origin else 0, sw * sh, device=ox.device)
    cxi = (r % sw)[:, None]
    cyi = torch.div(r, sw, rounding_mode="floor")[:, None]
    # Sample positions are exact integers, so corner - sample is rounded once, exactly as in the
    # first-pixel pass and in every other triangle: shared edges stay exactly antisymmetric.
    px = ox.to(dtype) + cxi.to(dtype)  # (S, n)
    py = oy.to(dtype) + cyi.to(dtype)
    xs = [x - px for x in tri["x"]]  # corner minus sample, (S, n)
    ys = [y - py for y in tri["y"]]
    e = _edge_values(xs, ys)
    inside = _inside_measure(e, cull_backfaces)
    if not (exact and sw <= 2 and sh <= 2):  # boxes of 3, 5, ... pixels, merged shapes or tile blocks
        inside = torch.minimum(inside, tri["x1"].to(dtype) - px)
        inside = torch.minimum(inside, tri["y1"].to(dtype) - py)
    z = _depth(e, tri["z"])
    key = _pack_keys(z, inside, tri["f"])
    pid = tri["pid0"] + (cyi * width + cxi)
    return pid.reshape(-1), key.reshape(-1)


@torch.no_grad()
def _visibility(clip: torch.Tensor, tris: _Triangles, height: int, width: int, settings: TorchRasterSettings):
    """(B, V, 4), (F, 3) -> (B*H*W,) int64 visible triangle per pixel (-1 where empty), (B*F,) int8 facing."""
    b = clip.shape[0]
    n_f = tris.index.shape[0]
    size = b * height * width
    tile = settings.tile
    # padding: candidates of units that reach beyond the image (always with invalid keys) land here
    keybuf = torch.full((size + tile * (width + 1),), _KEY_EMPTY, dtype=torch.int64, device=clip.device)
    if n_f == 0:
        empty = torch.full((size,), -1, dtype=torch.int64, device=clip.device)
        return empty, torch.zeros(0, dtype=torch.int8, device=clip.device)
    tri = _triangle_setup(clip, tris, height, width)
    cull = settings.cull_backfaces
    step = max(1, settings.max_pairs)
    for start in range(0, b * n_f, step):
        part = {k: ([t[start : start + step] for t in v] if isinstance(v, list) else v[start : start + step])
                for k, v in tri.items()}
        pid, key = _first_pixel_keys(part, start, n_f, height, width, cull)
        keybuf.scatter_reduce_(0, pid, key, reduce="amin")
    # Boxes of two or more pixel centres (NaN boxes of culled triangles compare false), by unit shape.
    todo = (tri["x1"] > tri["x0"]) & (tri["y1"] >= tri["y0"]) | (tri["y1"] > tri["y0"]) & (tri["x1"] >= tri["x0"])
    if cull:
        todo &= tri["area2"] < 0
    todo = torch.nonzero(todo).squeeze(1)
    if todo.numel():
        cls = _unit_classes(tri, todo, tile)
        n1 = tile.bit_length()
        groups = _merge_classes(torch.bincount(cls, minlength=n1 * n1 + 1).tolist(), tile)
        per_tri = {k: tri[k] for k in ("x", "y", "z", "x1", "y1")}
        for c, members in sorted(groups.items()):
            sel = cls == members[0]
            for other in members[1:]:
                sel |= cls == other
            rows = todo.index_select(0, torch.nonzero(sel).squeeze(1))
            sw, sh, g, ox, oy, whole = _class_units(tri, c, rows, tile)
            exact = whole and members == [c]
            step = max(1, settings.max_pairs // (sw * sh))
            for start in range(0, g.numel(), step):
                sl = slice(start, start + step)
                unit = _compact(per_tri, g[sl])
                unit["f"], base = _local_index(g[sl], n_f, height * width)
                unit["pid0"] = base + oy[sl] * width + ox[sl]
                pid, key = _grid_keys(unit, ox[sl], oy[sl], sw, sh, whole, exact, width, cull)
                keybuf.scatter_reduce_(0, pid, key, reduce="amin")
    keybuf = keybuf[:size]
    valid = (keybuf >> 32) <= _KEY_LIMIT
    tid = (keybuf & _LOW32).add_(1).mul_(valid).sub_(1)
    return tid, _facing_from_area(tri["area2"])


# --------------------------------------------------------------------------------------------------
# pass 2: differentiable barycentrics

_NEXT = [1, 2, 0]


def _corner_components(clip_flat: torch.Tensor, gv: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """clip_flat (B*V, 4); gv: 3 tensors (N,) of vertex rows -> [[x, y, z, w] of corner k], each (N,)."""
    return [[clip_flat[:, m].index_select(0, g) for m in range(4)] for g in gv]


def _homogeneous_weights(c: list[list[torch.Tensor]], qx: torch.Tensor, qy: torch.Tensor) -> list[torch.Tensor]:
    """Unnormalised perspective-correct barycentrics b'_i = det[q, c_i+1, c_i+2], q = (qx, qy, 1).

    c: [[x, y, z, w]] * 3 clip corners, (N,) each; qx, qy: (N,). Returns [b'_0, b'_1, b'_2], (N,) each.
    """
    out = []
    for i in range(3):
        xj, yj, _, wj = c[(i + 1) % 3]
        xk, yk, _, wk = c[(i + 2) % 3]
        out.append(qx * (yj * wk - wj * yk) - qy * (xj * wk - wj * xk) + (xj * yk - yj * xk))
    return out


class _PixelBarycentrics(torch.autograd.Function):
    """Dense barycentrics and depth of covered pixels, differentiable in the clip-space vertices.

    forward(clip_flat (B*V, 4), gv0, gv1, gv2 (N,) corner vertex rows, pix (N,) flat pixels, qx, qy (N,)
    NDC centres, size = B*H*W) -> bary (size, 3) zeros on background, depth (size,) +inf on background.
    The backward is analytic: with S = sum b'_i, M = sum b'_i w_i, D = sum b'_i z_i / M and upstream
    gradients g (bary) and gD (depth): gb'_m = (g_m - sum_i g_i b_i) / S + gD (z_m - D w_m) / M,
    d/dc_i = q x (gb'_i+1 c_i+2 - gb'_i+2 c_i+1) for c = (x, y, w), q = (qx, qy, 1), plus
    dD/dz_i = gD b'_i / M and dD/dw_i = -gD D b'_i / M.
    """

    @staticmethod
    def forward(ctx, clip_flat, gv0, gv1, gv2, pix, qx, qy, size):  # noqa: D102
        gv = [gv0, gv1, gv2]
        c = _corner_components(clip_flat, gv)
        bp = _homogeneous_weights(c, qx, qy)
        inv_s = 1.0 / (bp[0] + bp[1] + bp[2])
        m = bp[0] * c[0][3] + bp[1] * c[1][3] + bp[2] * c[2][3]
        d = (bp[0] * c[0][2] + bp[1] * c[1][2] + bp[2] * c[2][2]) / m
        out_b = torch.zeros((size, 3), dtype=clip_flat.dtype, device=clip_flat.device)
        for k in range(3):  # 1-D copies into the columns: much faster than stacking (N, 3) rows
            out_b[:, k].index_copy_(0, pix, bp[k] * inv_s)
        out_d = torch.full((size,), float("inf"), dtype=clip_flat.dtype, device=clip_flat.device)
        out_d.index_copy_(0, pix, d)
        ctx.save_for_backward(gv0, gv1, gv2, pix, qx, qy, inv_s, m, d, *bp, *(x for corner in c for x in corner))
        ctx.num_rows = clip_flat.shape[0]
        return out_b, out_d

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_b, grad_d):  # noqa: D102
        gv0, gv1, gv2, pix, qx, qy, inv_s, m, d, *rest = ctx.saved_tensors
        bp, flat = rest[:3], rest[3:]
        c = [flat[4 * k : 4 * k + 4] for k in range(3)]
        # Component-major accumulator: 1-D index_add per component is several times faster than
        # adding (N, 4) rows; the (B*V, 4) gradient is returned as a transposed view.
        grad_t = torch.zeros((4, ctx.num_rows), dtype=d.dtype, device=d.device)
        none = (None,) * 7
        if pix.numel() == 0:
            return (grad_t.t(), *none)
        gv = [gv0, gv1, gv2]
        b = [x * inv_s for x in bp]
        zero = torch.zeros_like(d)
        g = [grad_b[:, k].index_select(0, pix) for k in range(3)] if grad_b is not None else [zero] * 3
        gd = grad_d.index_select(0, pix) if grad_d is not None else zero
        dot = g[0] * b[0] + g[1] * b[1] + g[2] * b[2]
        gdm = gd / m
        gbp = [(g[i] - dot) * inv_s + gdm * (c[i][2] - d * c[i][3]) for i in range(3)]
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            ux = gbp[j] * c[k][0] - gbp[k] * c[j][0]
            uy = gbp[j] * c[k][1] - gbp[k] * c[j][1]
            uw = gbp[j] * c[k][3] - gbp[k] * c[j][3]
            gz = gdm * bp[i]
            grad_t[0].index_add_(0, gv[i], qy * uw - uy)
            grad_t[1].index_add_(0, gv[i], ux - qx * uw)
            grad_t[2].index_add_(0, gv[i], gz)
            grad_t[3].index_add_(0, gv[i], qx * uy - qy * ux - gz * d)
        return (grad_t.t(), *none)


def perspective_barycentrics(corners: torch.Tensor, ndc_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics and depth of pixel rays through triangles (autograd).

    corners: (N, 3, 4) clip-space corners; ndc_xy: (N, 2) points in NDC (x right, y up).
    Returns bary (N, 3), the weights of the clip-space corners (summing to 1), and depth (N,) z_ndc.
    With q = (x, y, 1) and c_i = (x_i, y_i, w_i): b_i ~ det[q, c_i+1, c_i+2] (Olano & Greer 1997).
    """
    c = [list(corners[:, k].unbind(-1)) for k in range(3)]
    bp = _homogeneous_weights(c, ndc_xy[:, 0], ndc_xy[:, 1])
    depth = sum(bp[i] * c[i][2] for i in range(3)) / sum(bp[i] * c[i][3] for i in range(3))
    bary = torch.stack(bp, 1)
    return bary / bary.sum(1, keepdim=True), depth


def _pixel_ndc(pix: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) flat pixel index (b*H*W + i*W + j) -> NDC centre x (right), y (up): (N,) each.

    Float64 division is exact enough here (the fraction j/W is at least 1/W away from an integer).
    """
    p = pix.to(torch.float64)
    p = p - torch.floor(p / (height * width)) * (height * width)
    i = torch.floor(p / width)
    j = p - i * width
    x = (2.0 / width) * j + (1.0 / width - 1.0)
    y = (-2.0 / height) * i + (1.0 - 1.0 / height)
    return x.to(dtype), y.to(dtype)


class _Interpolate(torch.autograd.Function):
    """Barycentric blend of per-vertex attributes at covered pixels.

    forward(attributes (Ba*V, C), bary (size, 3), vid0, vid1, vid2 (N,) attribute rows of the corners,
    pix (N,) flat pixels, size) -> (size, C), zeros on background. Works per channel with 1-D gathers
    and scatters (several times faster on the CPU than (N, C) rows for the few channels of colours,
    normals or uv); many channels go by rows.
    """

    @staticmethod
    def forward(ctx, attributes, bary, vid0, vid1, vid2, pix, size):  # noqa: D102
        vid = [vid0, vid1, vid2]
        n_c = attributes.shape[1]
        b = [bary[:, k].index_select(0, pix) for k in range(3)]
        out = torch.zeros((size, n_c), dtype=attributes.dtype, device=attributes.device)
        if n_c <= 8:
            for ch in range(n_c):
                a = attributes[:, ch]
                val = a.index_select(0, vid[0]) * b[0]
                val = val + a.index_select(0, vid[1]) * b[1] + a.index_select(0, vid[2]) * b[2]
                out[:, ch].index_copy_(0, pix, val)
        else:
            val = sum(attributes.index_select(0, vid[k]) * b[k][:, None] for k in range(3))
            out.index_copy_(0, pix, val)
        ctx.save_for_backward(attributes, bary, vid0, vid1, vid2, pix)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        attributes, bary, vid0, vid1, vid2, pix = ctx.saved_tensors
        vid = [vid0, vid1, vid2]
        n_c = attributes.shape[1]
        need_attr, need_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_attr = grad_bary = None
        if n_c <= 8:
            g = [grad_out[:, ch].index_select(0, pix) for ch in range(n_c)]
        else:
            g_rows = grad_out.index_select(0, pix)
        if need_attr:
            b = [bary[:, k].index_select(0, pix) for k in range(3)]
            if n_c <= 8:
                grad_t = torch.zeros((n_c, attributes.shape[0]), dtype=attributes.dtype, device=attributes.device)
                for ch in range(n_c):
                    for k in range(3):
                        grad_t[ch].index_add_(0, vid[k], g[ch] * b[k])
                grad_attr = grad_t.t()
            else:
                grad_attr = torch.zeros_like(attributes)
                for k in range(3):
                    grad_attr.index_add_(0, vid[k], g_rows * b[k][:, None])
        if need_bary:
            grad_bary = torch.zeros_like(bary)
            for k in range(3):
                if n_c <= 8:
                    gk = sum(g[ch] * attributes[:, ch].index_select(0, vid[k]) for ch in range(n_c))
                else:
                    gk = (g_rows * attributes.index_select(0, vid[k])).sum(1)
                grad_bary[:, k].index_copy_(0, pix, gk)
        return grad_attr, grad_bary, None, None, None, None, None


# --------------------------------------------------------------------------------------------------
# topology for antialiasing


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
# texture helpers


def mip_pyramid(texture: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, Ht, Wt) -> [level 0 = texture, level 1 (2x2 box filtered), ..., 1 x 1]."""
    levels = [texture]
    while levels[-1].shape[-1] > 1 or levels[-1].shape[-2] > 1:
        t = levels[-1]
        kh, kw = min(2, t.shape[-2]), min(2, t.shape[-1])
        levels.append(F.avg_pool2d(t, (kh, kw), stride=(kh, kw), ceil_mode=True))
    return levels


@torch.no_grad()
def _texture_lod(uv: torch.Tensor, tex_h: int, tex_w: int) -> torch.Tensor:
    """uv (B, H, W, 2) -> (B, H, W) level of detail >= 0 (log2 of the texel footprint in level-0 texels).

    Pixels whose uv is exactly (0, 0) are background (`interpolate` writes zeros there): differences to
    them are ignored, so a one-pixel-wide sliver of surface next to the background does not get a
    huge footprint (which would also make every mip level be sampled)."""
    raw = uv.detach()
    background = (raw == 0).all(-1, keepdim=True)
    t = torch.where(background, torch.full_like(raw, float("nan")), raw * torch.tensor([tex_w, tex_h], dtype=uv.dtype, device=uv.device))
    inf = float("inf")

    def smaller_side(d: torch.Tensor, dim: int) -> torch.Tensor:
        """Differences (B, H', W', 2) along `dim` -> (B, H, W) length of the smaller of the two sides."""
        length = torch.nan_to_num(d.norm(dim=-1), nan=inf)
        after = [0, 1] if dim == 2 else [0, 0, 0, 1]
        before = [1, 0] if dim == 2 else [0, 0, 1, 0]
        return torch.minimum(F.pad(length, after, value=inf), F.pad(length, before, value=inf))

    along_x = smaller_side(t[:, :, 1:] - t[:, :, :-1], 2)
    along_y = smaller_side(t[:, 1:] - t[:, :-1], 1)
    # an axis with no surface neighbour on either side carries no information: use the other one
    known = lambda f: torch.where(torch.isfinite(f), f, torch.zeros_like(f))  # noqa: E731
    foot = torch.maximum(known(along_x), known(along_y))
    foot = torch.where(foot > 0, foot, torch.ones_like(foot))  # isolated pixels, 1-pixel images
    return torch.log2(foot.clamp_min(1.0))


def _sample(texture: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, Ht, Wt), (B, H, W, 2) grid in [-1, 1] -> (B, H, W, C) bilinear, border-clamped."""
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


# --------------------------------------------------------------------------------------------------
# antialiasing helpers


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


# --------------------------------------------------------------------------------------------------
# the backend


class TorchRasterizer:
    """Pure-PyTorch rasterizer backend (see the module docstring for the method).

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

        filter: "bilinear", or "mipmap"/"area" (trilinear mip-mapping, see the module docstring).
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
        """color: (B, H, W, C) -> (B, H, W, C) with analytic silhouette antialiasing (module docstring).

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
