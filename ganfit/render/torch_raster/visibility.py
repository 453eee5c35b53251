"""Pass 1 of the torch rasterizer: visibility, a z-buffer of packed depth keys (no autograd).

`_visibility` gives the visible triangle of every pixel and the orientation of every triangle. It is
vectorised: no Python loop over triangles or pixels. Vertices go to pixel coordinates (x/w, y/w); each
triangle gets its pixel-centre bounding box (`_triangle_setup`). Every triangle is tested at the first
centre of its box in one dense pass over all triangles (`_first_pixel_keys`): in a dense mesh most boxes
hold at most one centre, so this pass alone rasterizes most triangles (all of a 100k-triangle face at
224 px). Boxes of two or more centres are sorted by size into classes of unit shape (2**kx x 2**ky
pixels up to ``tile`` x ``tile``; larger boxes are cut into tile x tile blocks; classes too small to pay
for their own pass are merged into a larger shape: `ganfit.render.torch_raster.binning`). The units of a
class are evaluated densely in an (S, n) layout (S candidate pixels per unit, n units: `_grid_keys`), in
chunks of at most ``max_pairs`` candidates, so the working set is bounded whatever the triangle and
image sizes (2048^2 included) and no (pixels x triangles) array is ever formed.

A pixel is covered when its centre is inside the triangle, edges inclusive. Edge values are
cross(a - p, b - p) with a, b the edge's corners and p the pixel centre, each difference rounded once:
exactly antisymmetric in floating point, so the two triangles of a shared edge agree on every centre (no
cracks in closed meshes). The depth test uses z_ndc (affine in screen space, computed from the same edge
values in every pass): each covered candidate packs ``(float32 bits of z_ndc + 2) << 32 | triangle``
into an int64 and ``scatter_reduce(amin)`` keeps the nearest fragment per pixel (ties: lowest triangle
index), independently of the evaluation order, so ``tile`` and ``max_pairs`` never change the image.
Inside/outside and depth-range tests are arithmetic penalties on the key rather than boolean masks
(several times faster on the CPU). Per-triangle data is kept one component per contiguous 1-D tensor
(see `ganfit.render.torch_raster.triangles`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ganfit.render.torch_raster.binning import _class_units, _merge_classes, _unit_classes
from ganfit.render.torch_raster.triangles import _Triangles, _corner_indices

if TYPE_CHECKING:
    from ganfit.render.torch_backend import TorchRasterSettings


_KEY_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
# Bit pattern of 3.0f: keys above (_KEY_LIMIT << 32) are not fragments (see `_pack_keys`).
_KEY_LIMIT = 0x40400000


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
