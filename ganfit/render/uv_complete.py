"""Complete a photo's UV texture: fill the chart texels the photo did not see (not differentiable).

`complete` fills them by Poisson image editing (Perez et al., SIGGRAPH 2003): one sparse solve over the
texels whose (feathered) mask is below one half, with the seen colours as boundary values and, where
the mirror texel was seen, the mirrored texture's gradients as the guidance field (elsewhere zero: a
Laplace fill). So a mirrored region takes its detail from the other half of the face but its overall
level from the seen colours around it (no seam where the lighting differs between the two sides), and
holes neither side shows are filled smoothly. The result is blended with the photo by the feathered
mask, ``out = m * seen + (1 - m) * filled``. Outside the chart the colours are extended a few texels
(edge padding) so bilinear and mip-mapped sampling at the chart's border does not pick up the background.

Two solvers for the same equations. ``solver="fast"`` (default, `ganfit.render.uv_fill`) solves them
in a reduced subspace: one unknown per texel next to the seen ones and wherever the guidance weight
changes, elsewhere the correction to the guide is interpolated bilinearly from nodes 4 texels apart
(at 512 a side and up; 2 below), found by Galerkin projection (gradient-domain compositing on a
quadtree, Agarwala, SIGGRAPH 2007). At 768 x 768 it is ~3x faster than the exact solve and its colours
differ from it by ~0.001 on average and ~0.01 at the 99th percentile over the unseen texels (0.03 at
most, in mirrored detail), with no seam next to the seen texels (`benchmarks/texture_completion.py`).
``solver="exact"`` (`_poisson_fill`) eliminates every unknown texel in a nested-dissection order of the
chart (`UVLayout.fill_rank`, or computed here), factorised in single precision (colours within ~2e-4 of
the double-precision solution).

Everything per texel runs on the chart's crop (`ganfit.render.uv_fill.CoarseSpace`, kept by the
`UVLayout`), a box a little larger than the chart's, not the whole texture.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from .uv_fill import CoarseSpace, coarse_space, fill_crop, put_rows, take_rows
from .uv_layout import UVLayout, UVTexture, nested_dissection_rank

__all__ = ["complete", "SEEN", "MIRRORED", "INPAINTED", "OUTSIDE"]

log = logging.getLogger(__name__)

#: `complete`'s ``filled_from`` labels: where a texel's colour (mostly) came from.
SEEN, MIRRORED, INPAINTED, OUTSIDE = 0, 1, 2, 3

_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def _sample_texels(values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear (N, C) samples of (H, W, C) at texture pixel coordinates (N, 2); zero outside."""
    h, w = values.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    g = torch.from_numpy(np.asarray(xy, dtype=np.float32))
    grid = torch.stack([g[:, 0] / w * 2 - 1, g[:, 1] / h * 2 - 1], 1).view(1, 1, -1, 2)
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0, :, 0].T.numpy()


def _feathered(mask: np.ndarray, coverage: np.ndarray, feather: float) -> np.ndarray:
    """`mask` times a ramp from 0 at the chart texels it does not see to 1 `feather` texels away."""
    unseen = coverage & (mask <= 0)
    if feather <= 0 or not unseen.any():
        return mask.copy()
    # The ramp is 1 from feather + 1/2 texels away: distances are needed up to there only.
    dist = _distance_within(unseen, int(np.ceil(feather + 0.5)))
    ramp = np.clip(dist / feather - 0.5 / feather, 0.0, 1.0)
    return (mask * ramp).astype(np.float32)


def _distance_within(seeds: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) float64 Euclidean distance from each texel to the nearest of `seeds` (H, W) bool where
    that is below `radius`, else `radius`: the exact distance transform (as
    `scipy.ndimage.distance_transform_edt` of ``~seeds``) cut off at `radius`, computed as the minimum
    over rows ``dy`` within the radius of ``dy^2 + (distance along row y + dy)^2`` in small integers."""
    h, w = seeds.shape
    small = np.uint8 if 2 * radius * radius < 256 else np.int32
    idx = np.int16 if 2 * (w + radius) < 1 << 15 else np.int32
    col = np.arange(w, dtype=idx)
    left = np.maximum.accumulate(np.where(seeds, col, idx(-w - radius)), axis=1)
    right = np.minimum.accumulate(np.where(seeds, col, idx(2 * w + radius))[:, ::-1], axis=1)[:, ::-1]
    along = np.minimum(np.minimum(col - left, right - col), radius).astype(small)
    along *= along
    d2 = along.copy()
    for dy in range(1, radius):
        step = small(dy * dy)
        np.minimum(d2[dy:], along[:-dy] + step, out=d2[dy:])
        np.minimum(d2[:-dy], along[dy:] + step, out=d2[:-dy])
    return np.sqrt(np.minimum(d2, small(radius * radius)), dtype=np.float64)


def _floating(unknown: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(H, W) bool: unknown texels whose 4-connected component touches no known texel."""
    from scipy import ndimage

    labels, n_lab = ndimage.label(unknown)
    touches = np.zeros(n_lab + 1, bool)
    grown = ndimage.binary_dilation(known, structure=ndimage.generate_binary_structure(2, 1)) & unknown
    touches[np.unique(labels[grown])] = True
    touches[0] = True
    return ~touches[labels]


def _poisson_fill(
    values: np.ndarray,  # (H, W, C) boundary values where `known`
    known: np.ndarray,  # (H, W) bool
    domain: np.ndarray,  # (H, W) bool, the chart; unknowns are domain & ~known
    guide: np.ndarray | None = None,  # (H, W, C) guidance texture
    guide_weight: np.ndarray | None = None,  # (H, W) in [0, 1]: where the guidance holds
    rank: np.ndarray | None = None,  # (H, W) elimination rank of the domain's texels (nested dissection)
) -> np.ndarray:
    """Solve the 4-neighbour Poisson equation over ``domain & ~known`` with Dirichlet values at the known
    texels and Neumann conditions at the domain's border. The guidance gradient across an edge is
    ``min(weight_i, weight_j) * (guide_i - guide_j)`` (zero without a guide: a Laplace fill).
    Unknown components that touch no known texel get the mean known value (0.5 if none).
    Returns (H, W, C) float64: `values` with the unknown texels replaced."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    h, w, c = values.shape
    out = values.astype(np.float64, copy=True)
    unknown = domain & ~known
    if not unknown.any():
        return out
    known = known & domain
    fallback = out[known].mean(0) if known.any() else np.full(c, 0.5)
    floating = _floating(unknown, known)
    out[floating] = fallback
    flat = np.flatnonzero(unknown & ~floating)
    if flat.size == 0:
        return out
    if rank is None:
        rank = nested_dissection_rank(domain)
    flat = flat[np.argsort(rank.reshape(-1)[flat], kind="stable")]
    n_u = flat.size
    index = np.full(h * w, -1, np.int64)
    index[flat] = np.arange(n_u)
    uy, ux = np.divmod(flat, w)
    # (n_u, 4) neighbours right, left, down, up; those off the grid or off the domain are dropped
    nb = flat[:, None] + np.array([1, -1, w, -w])
    on_grid = np.stack([ux < w - 1, ux > 0, uy < h - 1, uy > 0], 1)
    nb = np.where(on_grid, nb, flat[:, None])
    edge = on_grid & domain.reshape(-1)[nb]
    j = np.where(edge, index[nb], -1)
    vals = out.reshape(-1, c)
    kn = edge & (j < 0)  # known neighbours: their values go to the right-hand side
    rhs = np.zeros((n_u, c))
    if guide is not None:
        g = np.asarray(guide).reshape(-1, c)
        gw = np.asarray(guide_weight).reshape(-1)
        guided = edge & (gw[flat] > 0)[:, None]  # edges with a zero weight at either end add nothing
        guided[guided] = gw[nb[guided]] > 0
    for k in range(4):
        rows = np.flatnonzero(kn[:, k])
        rhs[rows] += vals[nb[rows, k]]
        if guide is not None:
            rows = np.flatnonzero(guided[:, k])
            me, n_k = flat[rows], nb[rows, k]
            rhs[rows] += np.minimum(gw[me], gw[n_k])[:, None] * (g[me] - g[n_k])
    # The matrix (degree on the diagonal, -1 per unknown neighbour) is symmetric: its rows are its
    # columns, so the CSC arrays are built row by row.
    off = j >= 0
    cols = np.concatenate([np.where(off, j, -1), np.arange(n_u)[:, None]], 1)
    data = np.concatenate([np.where(off, -1.0, 0.0), edge.sum(1, keepdims=True)], 1).astype(np.float32)
    keep = cols >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))])
    lap = sp.csc_matrix((data[keep], cols[keep], indptr), shape=(n_u, n_u))
    lap.sort_indices()
    # The rank order is a good elimination order already, and the matrix is a diagonally dominant
    # M-matrix, so no pivoting is needed. Single precision: the solution is within ~2e-4 of the
    # double-precision one (measured on photos), a twentieth of an 8-bit step.
    lu = spla.splu(lap, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    sol = lu.solve(rhs.astype(np.float32))
    vals[flat] = sol
    return out


def complete(
    uv: UVTexture,
    mirror_uv: np.ndarray | None = None,
    *,
    feather: float | None = None,
    method: str = "poisson",
    solver: str = "fast",
    known_weight: float = 0.5,
    pad: int = 8,
    background=None,
    layout: UVLayout | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the chart texels a photo did not see: by symmetry, then by smooth interpolation.

    1. The mask is feathered: multiplied by a ramp from 0 at the unseen chart texels to 1 `feather`
       texels away (default: 1% of the texture's longer side, at least 2), so nothing changes
       abruptly at an occlusion or photo border.
    2. Texels with feathered weight below `known_weight` are solved for; the others are boundary values.
       ``method="poisson"`` (default): a Poisson equation whose guidance field is the gradient of the
       mirrored texture where the mirror texel was seen (Laplace elsewhere), so mirrored detail joins
       the seen colours without a seam even when the two sides are lit differently.
       ``method="blend"``: the mirrored colour itself is blended in (``m * seen + (1 - m) *
       mirrored``), and only what neither side shows is filled by a Laplace equation.
       ``solver="fast"`` (default) solves the equations in a reduced subspace (`uv_fill`: one unknown
       per texel near the seen texels, a bilinear grid 4 texels apart elsewhere; ~3x faster at 768 x
       768, filled colours within ~0.01 of the exact solution at the 99th percentile);
       ``solver="exact"`` solves them texel by texel (`_poisson_fill`).
    3. The result is ``m * seen + (1 - m) * filled``.
    4. Outside the chart the nearest chart colour is extended `pad` texels (edge padding); beyond,
       `background` (default: the mean chart colour).

    Args:
        uv: from `unwrap`.
        mirror_uv: (H_uv, W_uv, 2) texel -> mirror texel coordinates (`mirror_uv_map`, or
            `UVLayout.mirror`), NaN for none; None: no symmetry.
        layout: the `UVLayout` `uv` was unwrapped with, if any: its padding map, mirror sampler,
            elimination order and coarse grid are reused (the result is the same as without it).
    Returns:
        texture: (H_uv, W_uv, 3) float32 in [0, 1], no NaN.
        filled_from: (H_uv, W_uv) uint8, where each texel's colour mostly came from: `SEEN` (0, the
            photo), `MIRRORED` (1), `INPAINTED` (2), `OUTSIDE` (3, outside the chart: padding/background).
    """
    if method not in ("poisson", "blend"):
        raise ValueError(f"method must be 'poisson' or 'blend', got {method!r}")
    if solver not in ("fast", "exact"):
        raise ValueError(f"solver must be 'fast' or 'exact', got {solver!r}")
    tex_in = np.asarray(uv.texture, dtype=np.float32)
    mask_in = np.asarray(uv.mask, dtype=np.float32)
    coverage = np.asarray(uv.coverage, dtype=bool)
    h, w = mask_in.shape
    if tex_in.shape != (h, w, 3) or coverage.shape != (h, w):
        raise ValueError(f"texture {tex_in.shape}, mask {mask_in.shape} and coverage {coverage.shape} disagree")
    if layout is not None and not (layout.coverage is uv.coverage or np.array_equal(layout.coverage, coverage)):
        raise ValueError("layout does not match the unwrapped texture's chart (another model or resolution?)")
    if mirror_uv is not None and np.shape(mirror_uv) != (h, w, 2):
        raise ValueError(f"mirror_uv must be (H_uv={h}, W_uv={w}, 2), got {np.shape(mirror_uv)}")
    if feather is None:
        feather = max(2.0, 0.01 * max(h, w))

    # Everything per texel works on the chart's crop (`CoarseSpace`, a box with sides a multiple of
    # its node spacing), as (Y, X, ...) arrays.
    space = layout.coarse if layout is not None and layout.coarse is not None else coarse_space(coverage)
    cov = space.domain
    tex = np.ascontiguousarray(space.crop(tex_in))
    if not np.isfinite(tex).all():
        tex = np.nan_to_num(tex)
    mask = np.nan_to_num(np.clip(space.crop(mask_in), 0.0, 1.0)) * cov
    m = _feathered(mask, cov, float(feather))

    # Mirror: weighted bilinear sampling of the seen texture at the mirror texels.
    yc, xc = cov.shape
    m_mir = np.zeros((yc, xc), np.float32)
    t_mir = np.zeros((yc, xc, 3), np.float32)
    if mirror_uv is not None:
        weighted = tex * m[..., None]
        if layout is not None and mirror_uv is layout.mirror and layout.crop_sampler is not None:
            sampler = layout.crop_sampler
            s_m = (sampler @ m.reshape(-1)).reshape(yc, xc)
            np.clip(s_m, 0.0, 1.0, out=m_mir)
            # the mirrored colour where the mirror was seen (weight > 1e-3), else 0
            inv = np.divide(1.0, s_m, out=np.zeros_like(s_m), where=m_mir > 1e-3)
            np.multiply((sampler @ weighted.reshape(-1, 3)).reshape(yc, xc, 3), inv[..., None], out=t_mir)
        else:
            stacked = np.concatenate([weighted, m[..., None]], -1)
            xy = space.crop(np.asarray(mirror_uv, dtype=np.float32))
            valid = cov & np.isfinite(xy).all(-1)
            if valid.any():
                s = _sample_texels(stacked, xy[valid] - np.array(space.origin[::-1], np.float32))
                m_mir[valid] = np.clip(s[:, 3], 0.0, 1.0)
                t_mir[valid] = s[:, :3] / np.maximum(s[:, 3:], 1e-6)
                t_mir *= (m_mir > 1e-3)[..., None]

    def fill(values, known, guide=None, guide_weight=None):
        if solver == "fast":
            try:
                return fill_crop(space, values, known, guide, guide_weight)
            except RuntimeError as exc:  # a singular reduced system (not seen so far): solve exactly
                log.warning("fast Poisson fill failed (%s); using the exact solve", exc)
        rank = None if layout is None else space.crop(layout.fill_rank)
        return _poisson_fill(values, known, cov, guide, guide_weight, rank=rank).astype(np.float32)

    if method == "blend":
        w1 = m + (1.0 - m) * m_mir
        t1 = (m[..., None] * tex + ((1.0 - m) * m_mir)[..., None] * t_mir) / np.maximum(w1, 1e-6)[..., None]
        known = cov & (w1 >= known_weight)
        filled = fill(t1, known)
        out = w1[..., None] * t1 + (1.0 - w1)[..., None] * filled
        mirrored_share = (1.0 - m) * m_mir
        label = np.where(w1 < known_weight, INPAINTED, np.where(m >= mirrored_share, SEEN, MIRRORED))
    else:
        known = cov & (m >= known_weight)
        out = fill(tex, known, t_mir, m_mir)
        # m * seen + (1 - m) * filled: the seen colour where it is known (the fill keeps it there)
        unknown = np.flatnonzero(cov & ~known)
        flat, filled = out.reshape(-1, 3), take_rows(out.reshape(-1, 3), unknown)
        seen = take_rows(tex.reshape(-1, 3), unknown)
        put_rows(flat, unknown, filled + np.take(m.reshape(-1), unknown)[:, None] * (seen - filled))
        # mirrored where the fill had mirror guidance, inpainted where it had none
        label = np.where(known, SEEN, np.where(m_mir >= 0.5, MIRRORED, INPAINTED))
    return _assemble(out, label, space, pad, background, layout)


def _assemble(out: np.ndarray, label: np.ndarray, space: CoarseSpace, pad: int, background,
              layout: UVLayout | None) -> tuple[np.ndarray, np.ndarray]:
    """The texture (H, W, 3) and labels (H, W) from the crop's chart values `out` (Y, X, 3) and
    `label` (Y, X): clipped to [0, 1]; outside the chart the nearest chart texel's colour within `pad`
    texels (edge padding), beyond `background` (default: the mean chart colour; 0.5 grey without a
    chart)."""
    from scipy import ndimage

    h, w = space.shape
    chart = np.clip(take_rows(out.reshape(-1, 3), space.chart_index), 0.0, 1.0)
    if background is not None:
        bg = np.broadcast_to(np.asarray(background, np.float64), (3,))
    else:
        bg = np.einsum("ij->j", chart, dtype=np.float64) / len(chart) if len(chart) else np.full(3, 0.5)
    texture = np.empty((h, w, 3), np.float32)
    texture[...] = bg
    flat = texture.reshape(-1, 3)
    put_rows(flat, space.texture_index, chart)
    labels = np.full(h * w, OUTSIDE, np.uint8)
    labels[space.texture_index] = np.take(label.reshape(-1), space.chart_index)
    if space.texture_index.size:
        if layout is not None:
            dist, nearest = layout.outside_distance.reshape(-1), layout.nearest_chart.reshape(-1)
        else:
            coverage = labels != OUTSIDE
            dist, (iy, ix) = ndimage.distance_transform_edt(~coverage.reshape(h, w), return_indices=True)
            dist, nearest = dist.reshape(-1), (iy * w + ix).reshape(-1)
        near = np.flatnonzero((dist > 0) & (dist <= pad))  # outside the chart (dist is 0 on it)
        put_rows(flat, near, take_rows(flat, np.take(nearest, near)))
    return texture, labels.reshape(h, w)
