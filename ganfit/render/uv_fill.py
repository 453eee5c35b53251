"""Fast guided Poisson fill of a UV chart's unseen texels: a reduced Galerkin system (not differentiable).

`uv_complete._poisson_fill` solves the 4-neighbour Poisson equation of Poisson image editing (Perez et
al., SIGGRAPH 2003) over every unseen chart texel, ~130,000 of them at 768 x 768: one sparse
factorisation that dominates the texture completion. `poisson_fill_fast` solves the same discrete
equations in a much smaller subspace, as gradient-domain compositing on a quadtree does (Agarwala,
"Efficient gradient-domain compositing using quadtrees", SIGGRAPH 2007):

- Write the solution as the weighted guide plus a correction, ``x = p + c`` with ``p = w * G``. Then
  ``L c = r := b - L p`` with ``c = v - p`` on the seen texels. Where the guide weight w is locally
  constant, r = 0: c is harmonic there, so smooth away from the seen texels (the membrane of Farbman
  et al., "Coordinates for instant image cloning", SIGGRAPH 2009).
- Unseen texels near the seen ones (within `band` texels), near large residuals r (where the guide
  weight changes), and those a coarse basis function cannot represent (chart slits and thin parts,
  nodes with little support) keep one unknown each.
- Every other unseen texel is the bilinear interpolation of the nodes of a grid `factor` texels apart
  (nodes on texels: node (i, j) sits on crop texel (f i, f j)).
- Band texels and nodes (the columns of S, which maps them to texel values) are found by Galerkin
  projection of the fine equations, ``S^T A S y = S^T q``: the solution of least fine-grid energy in
  that subspace. Every band texel's own fine equation holds (with its neighbours' values from the
  solution), so next to the seen texels the fill obeys the exact fill's equations: no seam.

At 768 x 768 the reduced system has ~20-30k unknowns; it is factorised in single precision in a
nested-dissection order of chart texels and nodes computed once per chart (`CoarseSpace`).
`benchmarks/texture_completion.py` compares it with the exact solve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._threads import torch_threads

__all__ = ["CoarseSpace", "coarse_space", "fill_crop", "poisson_fill_fast", "default_factor"]

#: largest block of unknowns the nested-dissection order leaves unsplit
_ND_LEAF = 32


def default_factor(resolution) -> int:
    """Node spacing for a texture of `resolution` (H, W): 4 texels from 512 a side, 2 below."""
    return 4 if max(resolution) >= 512 else 2


@dataclass(frozen=True, eq=False)
class CoarseSpace:
    """What the fast fill needs of one chart at one resolution (read-only; do not modify the arrays).

    The fill works on a crop of the texture whose sides are multiples of `factor` (cells of f x f
    texels; texels past the texture's edge count as off the chart). `ganfit.render.uv_complete.complete`
    works on the same crop.

    factor: f, texels between nodes.
    shape: (H, W) of the texture.
    origin: (y0, x0), the crop's first texel in the texture (multiples of f).
    cells: (hc, wc); the crop is (Y, X) = (hc * f, wc * f) texels and the nodes (hc + 1, wc + 1).
    domain: (Y, X) bool, the chart.
    chart_index: (N,) int64 flat crop index of each chart texel (row-major); texture_index: (N,) int64
        the same texels' flat index in the texture.
    degree: (Y, X) float32, each texel's 4-neighbours on the chart.
    edge_right: (Y, X - 1) and edge_down: (Y - 1, X) float32, 1 where both ends of the edge are on the chart.
    component: (Y, X) int32, 4-connected chart component of each texel (1...), 0 off the chart.
    nonconforming: (hc + 1, wc + 1) bool, nodes whose support (texels within f - 1 in both axes) holds
        chart texels that are not 4-connected within it (slits, thin parts): never used.
    texel_rank: (Y, X) int64 and node_rank: (hc + 1, wc + 1) int64, one nested-dissection order of
        chart texels and nodes together (-1 for texels off the chart).
    """

    factor: int
    shape: tuple[int, int]
    origin: tuple[int, int]
    cells: tuple[int, int]
    domain: np.ndarray
    chart_index: np.ndarray
    texture_index: np.ndarray
    degree: np.ndarray
    edge_right: np.ndarray
    edge_down: np.ndarray
    component: np.ndarray
    nonconforming: np.ndarray
    texel_rank: np.ndarray
    node_rank: np.ndarray

    def crop(self, a: np.ndarray) -> np.ndarray:
        """(H, W, ...) -> (Y, X, ...): the crop of a texture-sized array (a view where it fits inside
        the texture, else a copy with zeros past its edge)."""
        return _crop(a, self.origin, self.cells, self.factor)

    def uncrop(self, out: np.ndarray, a: np.ndarray, where: np.ndarray) -> None:
        """Write the crop `a` (Y, X, ...) into the texture-sized `out` where `where` (Y, X) is set."""
        (y0, x0) = self.origin
        h, w = self.shape
        ny, nx = min(a.shape[0], h - y0), min(a.shape[1], w - x0)
        view = out[y0:y0 + ny, x0:x0 + nx]
        sel = where[:ny, :nx]
        view[sel] = a[:ny, :nx][sel]

    def texture_rank(self) -> np.ndarray:
        """(H, W) int64 `texel_rank` placed in the texture (-1 off the chart): a nested-dissection
        order of the chart's texels alone, for the exact fill (`uv_complete._poisson_fill`)."""
        out = np.full(self.shape, -1, np.int64)
        out.reshape(-1)[self.texture_index] = np.take(self.texel_rank.reshape(-1), self.chart_index)
        return out

    def crop_matrix(self, mat):
        """An (H W, H W) sparse matrix over texture texels -> (Y X, Y X) CSR over crop texels (entries
        whose row or column lies outside the crop dropped)."""
        import scipy.sparse as sp

        h, w = self.shape
        (y0, x0), (hc, wc), f = self.origin, self.cells, self.factor
        ys, xs = np.mgrid[y0:y0 + hc * f, x0:x0 + wc * f]
        inside = (ys < h) & (xs < w)
        inverse = np.full(h * w, -1, np.int64)
        inverse[(ys * w + xs)[inside]] = np.flatnonzero(inside)
        coo = mat.tocoo()
        r, c = inverse[coo.row], inverse[coo.col]
        keep = (r >= 0) & (c >= 0)
        n = hc * f * wc * f
        return sp.csr_matrix((coo.data[keep], (r[keep], c[keep])), shape=(n, n))


def _crop(a: np.ndarray, origin: tuple[int, int], cells: tuple[int, int], f: int) -> np.ndarray:
    """The (cells * f) crop of `a` (H, W, ...) from `origin`; a view where it fits, zeros past the edge."""
    (y0, x0), (hc, wc) = origin, cells
    h, w = a.shape[:2]
    y1, x1 = y0 + hc * f, x0 + wc * f
    if y1 <= h and x1 <= w:
        return a[y0:y1, x0:x1]
    out = np.zeros((hc * f, wc * f) + a.shape[2:], a.dtype)
    out[:min(y1, h) - y0, :min(x1, w) - x0] = a[y0:min(y1, h), x0:min(x1, w)]
    return out


def _local_weights(f: int) -> np.ndarray:
    """(f + 1, f + 1, 4) bilinear weights of the cell corners (00, 01, 10, 11) at each local texel
    position (row oy, column ox; f is the next cell's first row/column)."""
    t = np.arange(f + 1) / f
    wy = np.stack([1 - t, t], 1)  # (f + 1, 2)
    return np.einsum("ya,xb->yxab", wy, wy).reshape(f + 1, f + 1, 4)


def _cell_stiffness(f: int) -> np.ndarray:
    """(3 f^2, 16) per local feature, the 4 x 4 Galerkin matrix (corner x corner) it adds to its cell:
    features 0..f^2-1 a horizontal edge from local texel (oy, ox) to (oy, ox + 1) between two
    interpolated texels, f^2..2f^2-1 a vertical edge (oy, ox)-(oy + 1, ox), and 2f^2..3f^2-1 one edge
    from the interpolated texel (oy, ox) to a band texel (its end of the edge)."""
    wl = _local_weights(f)
    oy, ox = np.divmod(np.arange(f * f), f)
    dh = wl[oy, ox + 1] - wl[oy, ox]
    dv = wl[oy + 1, ox] - wl[oy, ox]
    s = wl[oy, ox]
    outer = lambda d: (d[:, :, None] * d[:, None, :]).reshape(-1, 16)  # noqa: E731
    return np.concatenate([outer(dh), outer(dv), outer(s)]).astype(np.float32)


def _dilate4(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` grown by `steps` 4-neighbour steps (taxicab distance <= steps)."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _neighbour_count(mask: np.ndarray) -> np.ndarray:
    """(Y, X) float32: how many 4-neighbours of each texel are set in `mask`."""
    m = mask.astype(np.float32)
    out = np.zeros_like(m)
    out[1:] += m[:-1]
    out[:-1] += m[1:]
    out[:, 1:] += m[:, :-1]
    out[:, :-1] += m[:, 1:]
    return out


def _blocks(a: np.ndarray, f: int) -> np.ndarray:
    """(hc f, wc f, ...) -> (hc, wc, f * f, ...): each cell's texels in row-major local order."""
    hc, wc = a.shape[0] // f, a.shape[1] // f
    rest = a.shape[2:]
    return a.reshape(hc, f, wc, f, *rest).swapaxes(1, 2).reshape(hc, wc, f * f, *rest)


def _nonconforming(domain: np.ndarray, f: int) -> np.ndarray:
    """(hc + 1, wc + 1) bool: nodes whose support window (texels f k - f + 1 ... f k + f - 1 on each
    axis) holds chart texels that are not 4-connected within the window, or a texel of a hole in the
    chart (off the chart, not connected to the outside: a nostril, an ear canal). Around both the
    solution bends in ways a bilinear basis function does not follow.

    Windows of nodes with the same parity (of row and of column index) are disjoint, separated by
    single lines of texels: with those lines cut, one labelling of the chart gives every window's
    components. Four labellings cover all nodes."""
    from scipy import ndimage

    ny, nx = domain.shape[0] // f + 1, domain.shape[1] // f + 1
    outside, _ = ndimage.label(~domain)
    border = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
    holes = (outside > 0) & ~np.isin(outside, border)
    near_hole = ndimage.binary_dilation(holes, np.ones((2 * f - 1, 2 * f - 1), bool)) if holes.any() else holes
    bad = np.zeros((ny, nx), bool)
    bad[:-1, :-1] = near_hole[::f, ::f]
    ys, xs = np.nonzero(domain)
    for py in (0, 1):
        for px in (0, 1):
            cut_y = ys % (2 * f) == (f * (py + 1)) % (2 * f)
            cut_x = xs % (2 * f) == (f * (px + 1)) % (2 * f)
            keep = ~(cut_y | cut_x)
            d = np.zeros_like(domain)
            d[ys[keep], xs[keep]] = True
            labels, _ = ndimage.label(d)
            ky = 2 * ((ys[keep] - f * (py - 1)) // (2 * f)) + py
            kx = 2 * ((xs[keep] - f * (px - 1)) // (2 * f)) + px
            window = ky * nx + kx
            lab = labels[ys[keep], xs[keep]].astype(np.int64)
            pairs = np.unique(window * (lab.max() + 1) + lab)
            win, count = np.unique(pairs // (lab.max() + 1), return_counts=True)
            bad.reshape(-1)[win[count > 1]] = True
    return bad


def dissection_order(py: np.ndarray, px: np.ndarray, leaf: int = 16, anchors: np.ndarray | None = None,
                     step: int = 1) -> np.ndarray:
    """A geometric nested-dissection order (George, SIAM J. Numer. Anal. 1973) of points (py, px) (N,).

    The points are split recursively by the middle row or column of their bounding box (the longer side):
    each half comes first and the dividing line last. With `anchors` (N,) bool, a piece that holds anchor
    points is split only along a line through them (coordinates that are multiples of `step`): the line
    nearest the middle. Returns the permutation (N,) of point indices.
    """
    pieces: list[np.ndarray] = []
    # explicit stack of (indices, emitted?) for a post-order walk: left, right, then separator
    stack: list[tuple[np.ndarray, np.ndarray | None]] = [(np.arange(py.size), None)]
    while stack:
        idx, sep = stack.pop()
        if sep is not None:
            pieces.append(sep)
            continue
        if idx.size <= leaf:
            pieces.append(idx)
            continue
        yy, xx = py[idx], px[idx]
        coord = yy if yy.max() - yy.min() >= xx.max() - xx.min() else xx
        lo, hi = int(coord.min()), int(coord.max())
        line = (lo + hi) // 2
        if anchors is not None and anchors[idx].any():
            k = np.unique(coord[anchors[idx]] // step)
            line = int(step * k[np.argmin(np.abs(step * k - (lo + hi) / 2))])
        stack.append((idx, idx[coord == line]))
        stack.append((idx[coord > line], None))
        stack.append((idx[coord < line], None))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _nested_dissection(domain: np.ndarray, f: int, leaf: int = _ND_LEAF) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of chart texels (Y, X) and nodes (Y / f + 1, X / f + 1) in one nested-dissection order
    (George, SIAM J. Numer. Anal. 1973) of the reduced systems `poisson_fill_fast` builds.

    A piece is split by a line of texels through a row (or column) of nodes near the middle of its
    longer side; the line's texels and nodes come after both halves. In a reduced system a node is
    coupled to nodes at most one step away and to texels less than f + 1 texels away, and a texel to
    its 4-neighbours, so nothing on one side of such a line is coupled to the other side."""
    ty, tx = np.nonzero(domain)
    ny, nx = domain.shape[0] // f + 1, domain.shape[1] // f + 1
    ky, kx = np.divmod(np.arange(ny * nx), nx)
    n_t = ty.size
    py = np.concatenate([ty, f * ky])
    px = np.concatenate([tx, f * kx])
    is_node = np.concatenate([np.zeros(n_t, bool), np.ones(ky.size, bool)])
    order = dissection_order(py, px, leaf, anchors=is_node, step=f)
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    texel_rank = np.full(domain.shape, -1, np.int64)
    texel_rank[ty, tx] = rank[:n_t]
    return texel_rank, rank[n_t:].reshape(ny, nx)


def coarse_space(coverage: np.ndarray, factor: int | None = None) -> CoarseSpace:
    """Precompute `CoarseSpace` for a chart `coverage` (H, W) bool; factor: node spacing (default
    `default_factor`)."""
    from scipy import ndimage

    coverage = np.asarray(coverage, dtype=bool)
    h, w = coverage.shape
    f = int(default_factor((h, w)) if factor is None else factor)
    if f < 1:
        raise ValueError(f"factor must be >= 1, got {f}")
    if coverage.any():
        rows, cols = np.flatnonzero(coverage.any(1)), np.flatnonzero(coverage.any(0))
        y0, x0 = rows[0] // f * f, cols[0] // f * f
        hc, wc = -(-(rows[-1] + 1 - y0) // f), -(-(cols[-1] + 1 - x0) // f)
    else:
        y0 = x0 = 0
        hc, wc = 1, 1
    origin, cells = (int(y0), int(x0)), (int(hc), int(wc))
    domain = np.array(_crop(coverage, origin, cells, f))
    component, _ = ndimage.label(domain)
    texel_rank, node_rank = _nested_dissection(domain, f)
    chart_index = np.flatnonzero(domain)
    cy, cx = np.divmod(chart_index, domain.shape[1])
    return CoarseSpace(
        factor=f, shape=(h, w), origin=origin, cells=cells, domain=domain, chart_index=chart_index,
        texture_index=(cy + origin[0]) * w + cx + origin[1],
        degree=_neighbour_count(domain) * domain, edge_right=(domain[:, :-1] & domain[:, 1:]).astype(np.float32),
        edge_down=(domain[:-1] & domain[1:]).astype(np.float32), component=component.astype(np.int32),
        nonconforming=_nonconforming(domain, f), texel_rank=texel_rank, node_rank=node_rank,
    )


def _one_thread():
    """torch on one intra-op thread for the small matrix products here (as the landmark stage)."""
    return torch_threads(1)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for float32 arrays with a short inner dimension, through torch. (numpy's OpenBLAS uses
    every core for these; on this project's shared 2-core CPU that made them 10-100x slower.)"""
    return (torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))).numpy()


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]`` for a 2-D array: `np.take` is several times faster than fancy indexing."""
    return np.take(a, idx, axis=0)


def put_rows(dst: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """``dst[idx] = rows`` for a C-contiguous (N, C) array, one row per element of a void view
    (several times faster than fancy-index assignment)."""
    row = np.dtype((np.void, dst.dtype.itemsize * dst.shape[1]))
    np.put(dst.view(row).reshape(-1), idx, np.ascontiguousarray(rows, dtype=dst.dtype).view(row).reshape(-1))


def _upsample(nodes: np.ndarray, f: int, weights: np.ndarray) -> np.ndarray:
    """(C, hc + 1, wc + 1) node values -> (C, hc f, wc f) by separable interpolation: at local offset
    o a cell's first node has weight ``weights[o, 0]``, its second ``weights[o, 1]``."""
    c, ny, nx = nodes.shape
    rows = _matmul(np.stack([nodes[:, :-1], nodes[:, 1:]], -1), weights.T)  # (C, hc, nx, f)
    rows = np.ascontiguousarray(rows.transpose(0, 1, 3, 2)).reshape(c, (ny - 1) * f, nx)
    out = _matmul(np.stack([rows[:, :, :-1], rows[:, :, 1:]], -1), weights.T)
    return out.reshape(c, (ny - 1) * f, (nx - 1) * f)


def _restrict(a: np.ndarray, f: int, weights: np.ndarray) -> np.ndarray:
    """The transpose of `_upsample`: (C, hc f, wc f) -> (C, hc + 1, wc + 1) weighted sums at the nodes."""
    c, y, x = a.shape
    hc, wc = y // f, x // f
    part = _matmul(np.ascontiguousarray(a).reshape(-1, f), weights).reshape(c, y, wc, 2)
    cols = np.zeros((c, y, wc + 1), a.dtype)
    cols[:, :, :-1] += part[..., 0]
    cols[:, :, 1:] += part[..., 1]
    cols = np.ascontiguousarray(cols.reshape(c, hc, f, wc + 1).transpose(0, 1, 3, 2))
    part = _matmul(cols.reshape(-1, f), weights).reshape(c, hc, wc + 1, 2)
    out = np.zeros((c, hc + 1, wc + 1), a.dtype)
    out[:, :-1] += part[..., 0]
    out[:, 1:] += part[..., 1]
    return out


def _guided_residual(guide: np.ndarray, wgt: np.ndarray, space: CoarseSpace) -> np.ndarray:
    """(C, Y, X) float32 r = b - L p for p = wgt * guide: b the guidance divergence (the edge from i to
    j adds ``min(w_i, w_j) (G_i - G_j)`` where both weights are positive), L the chart's 4-neighbour
    Laplacian. Per chart edge that is ``(g - w_i) G_i - (g - w_j) G_j`` at i (and its negative at j)
    with g the edge's guidance weight: zero where the weight is constant, and beyond one texel from
    the texels with a weight (so only their bounding box, grown by one, is computed)."""
    r = np.zeros_like(guide)
    pos = wgt > 0
    rows, cols = np.flatnonzero(pos.any(1)), np.flatnonzero(pos.any(0))
    if rows.size == 0:
        return r
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, wgt.shape[0])
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, wgt.shape[1])
    box = np.s_[y0:y1, x0:x1]
    g_box, w_box, p_box, r_box = guide[(slice(None),) + box], wgt[box], pos[box], r[(slice(None),) + box]
    buf = np.empty(g_box[0].size * len(guide), guide.dtype)
    right = ((slice(None), slice(None, -1)), (slice(None), slice(1, None)), space.edge_right[y0:y1, x0:x1 - 1])
    down = ((slice(None, -1), slice(None)), (slice(1, None), slice(None)), space.edge_down[y0:y1 - 1, x0:x1])
    for a, b, edge in (right, down):
        wa, wb = w_box[a], w_box[b]
        g = np.minimum(wa, wb)
        g *= p_box[a] & p_box[b]
        ua, ub = g - wa, g - wb
        ua *= edge
        ub *= edge
        ca, cb = (slice(None),) + a, (slice(None),) + b
        d = np.multiply(g_box[ca], ua, out=buf[:ua.size * len(guide)].reshape((len(guide),) + ua.shape))
        d -= g_box[cb] * ub
        r_box[ca] += d
        r_box[cb] -= d
    return r


def fill_crop(space: "CoarseSpace", values, known, guide=None, guide_weight=None, **options) -> np.ndarray:
    """`poisson_fill_fast` on the crop of `space` (arrays as `CoarseSpace.crop` gives them: values and
    guide (Y, X, C), known and guide_weight (Y, X)). Returns (Y, X, C) float32: `values` with the
    unknown texels replaced."""
    with _one_thread():
        return _fill_crop(space, values, known, guide, guide_weight, **options)


def _fill_crop(
    space: CoarseSpace,
    values: np.ndarray,  # (Y, X, C) float32 boundary values where `known`
    known: np.ndarray,  # (Y, X) bool; unknowns are space.domain & ~known
    guide: np.ndarray | None = None,  # (Y, X, C) guidance texture
    guide_weight: np.ndarray | None = None,  # (Y, X) in [0, 1]: where the guidance holds
    *,
    band: int = 1,
    residual_tol: float = 0.02,
    min_support: float = 0.25,
) -> np.ndarray:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    f, dom = space.factor, space.domain
    yc, xc = dom.shape
    n_ch = values.shape[-1]
    out = np.array(values, dtype=np.float32)
    flat_out = out.reshape(-1, n_ch)
    kn = known & dom
    any_known = np.zeros(int(space.component.max()) + 1, bool)
    any_known[space.component[kn]] = True
    any_known[0] = True
    floating = None
    if not any_known.all():  # chart components without a known texel: the mean known value
        floating = ~any_known[space.component]
        flat_out[floating.reshape(-1)] = out[kn].mean(0) if kn.any() else 0.5
    unk = dom & ~kn if floating is None else dom & ~kn & ~floating
    if not unk.any():
        return out

    r = g = wgt = None
    if guide is not None:
        wgt = np.asarray(guide_weight, np.float32) * dom
        g = np.ascontiguousarray(np.moveaxis(np.asarray(guide, np.float32), -1, 0))
        r = _guided_residual(g, wgt, space)

    # Band: unknowns within `band` of a seen texel's neighbour, and next to large residuals.
    bandm = unk & _dilate4(kn, band + 1)
    if r is not None and residual_tol is not None:
        bandm |= unk & _dilate4(unk & (np.abs(r).max(0) > residual_tol), 1)
    interior = unk & ~bandm

    # Nodes, with supports in units of 1 / f^2 (exact small integers): a weak node is dropped and the
    # texels that use it (its whole window) join the band, which can weaken other nodes.
    o = np.arange(f, dtype=np.float32)
    iweights = np.stack([f - o, o], 1)
    support = _restrict(interior[None].astype(np.float32), f, iweights)[0]
    offsets = np.arange(1 - f, f)
    nodes_x = space.cells[1] + 1
    while True:
        weak = (support > 0) & ((support < min_support * f ** 4) | space.nonconforming)
        if not weak.any():
            break
        ky, kx = np.nonzero(weak)
        ty = (f * ky)[:, None, None] + offsets[None, :, None]
        tx = (f * kx)[:, None, None] + offsets[None, None, :]
        ok = (ty >= 0) & (ty < yc) & (tx >= 0) & (tx < xc)
        t = np.broadcast_to(ty, ok.shape)[ok] * xc + np.broadcast_to(tx, ok.shape)[ok]
        t = np.unique(t[interior.reshape(-1)[t]])
        interior.reshape(-1)[t] = False
        bandm.reshape(-1)[t] = True
        node, wt = _taps(t, xc, f, nodes_x)
        lost = np.bincount(node.reshape(-1), (wt * f * f).reshape(-1), minlength=support.size)
        support -= lost.reshape(support.shape).astype(np.float32)
    used = support > 0

    # Reduced unknowns: band texels and used nodes, in the precomputed nested-dissection order.
    b_idx = np.flatnonzero(bandm)
    n_idx = np.flatnonzero(used)
    n_b = b_idx.size
    pos = np.empty(n_b + n_idx.size, np.int64)
    pos[np.argsort(np.concatenate([space.texel_rank.reshape(-1)[b_idx], space.node_rank.reshape(-1)[n_idx]]))] = \
        np.arange(pos.size)
    tpos = np.full(dom.size, -1, np.int64)
    tpos[b_idx] = pos[:n_b]
    npos = np.full(used.size, -1, np.int64)
    npos[n_idx] = pos[n_b:]

    def particular(idx):  # (C, n) p = w * G at flat crop texels idx
        if g is None:
            return np.zeros((n_ch, idx.size), np.float32)
        return np.take(g.reshape(n_ch, -1), idx, axis=1) * np.take(wgt.reshape(-1), idx)

    rows, cols, vals = [tpos[b_idx]], [tpos[b_idx]], [np.take(space.degree.reshape(-1), b_idx)]
    rhs = np.empty((pos.size, n_ch), np.float32)
    rhs_b = np.zeros((n_ch, n_b), np.float32) if r is None else np.take(r.reshape(n_ch, -1), b_idx, axis=1)
    kn_flat, band_flat, int_flat = kn.reshape(-1), bandm.reshape(-1), interior.reshape(-1)
    b_y, b_x = np.divmod(b_idx, xc)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ok = (b_y + dy >= 0) & (b_y + dy < yc) & (b_x + dx >= 0) & (b_x + dx < xc)
        nb = np.where(ok, b_idx + dy * xc + dx, 0)
        # seen neighbours: their correction v - p goes to the right-hand side
        sel = np.flatnonzero(ok & kn_flat[nb])
        rhs_b[:, sel] += take_rows(flat_out, nb[sel]).T - particular(nb[sel])
        # band neighbours: -1 (each edge once from each end)
        sel = np.flatnonzero(ok & band_flat[nb])
        rows.append(tpos[b_idx[sel]])
        cols.append(tpos[nb[sel]])
        vals.append(np.full(sel.size, -1.0, np.float32))
        # interpolated neighbours: minus their bilinear weights, both ways
        sel = np.flatnonzero(ok & int_flat[nb])
        node, wt = _taps(nb[sel], xc, f, nodes_x)
        nz = wt > 0
        rb = np.broadcast_to(tpos[b_idx[sel]][:, None], nz.shape)[nz]
        cn = npos[node[nz]]
        rows += [rb, cn]
        cols += [cn, rb]
        vals += [-wt[nz], -wt[nz]]
    rhs[pos[:n_b]] = rhs_b.T
    # interior-interior edges and the interior ends of band-interior edges: 4 x 4 blocks per cell
    hc, wc = space.cells
    edge_h = np.zeros_like(interior)
    edge_h[:, :-1] = interior[:, :-1] & interior[:, 1:]
    edge_v = np.zeros_like(interior)
    edge_v[:-1] = interior[:-1] & interior[1:]
    to_band = _neighbour_count(bandm) * interior
    live = np.flatnonzero(_blocks(interior, f).reshape(hc * wc, -1).any(1))
    stiff = _cell_stiffness(f)
    local = np.zeros((live.size, 16), np.float32)
    for k, feat in enumerate((edge_h, edge_v, to_band)):
        local += _matmul(_blocks(feat, f).reshape(hc * wc, -1)[live].astype(np.float32), stiff[k * f * f:(k + 1) * f * f])
    cy, cx = np.divmod(live, wc)
    base = cy * nodes_x + cx
    corner = np.stack([base, base + 1, base + nodes_x, base + nodes_x + 1], 1)
    nz = local != 0
    rows.append(npos[np.repeat(corner, 4, axis=1)[nz]])
    cols.append(npos[np.tile(corner, (1, 4))[nz]])
    vals.append(local[nz])
    if r is None:
        rhs[pos[n_b:]] = 0.0
    else:
        weights = iweights / f
        rhs[pos[n_b:]] = np.take(_restrict(r * interior, f, weights).reshape(n_ch, -1), n_idx, axis=1).T

    n = pos.size
    mat = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    # An SPD matrix in a nested-dissection order: no pivoting, no further ordering (as `_poisson_fill`).
    lu = spla.splu(mat, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    y = lu.solve(rhs)

    # x = p + c: c from its own unknown in the band, interpolated from the nodes elsewhere
    node_val = np.zeros((n_ch, used.size), np.float32)
    node_val[:, n_idx] = take_rows(y, pos[n_b:]).T
    i_idx = np.flatnonzero(interior)
    c_int = np.take(_upsample(node_val.reshape((n_ch,) + used.shape), f, iweights / f).reshape(n_ch, -1), i_idx, axis=1)
    c_int += particular(i_idx)
    put_rows(flat_out, b_idx, take_rows(y, pos[:n_b]) + particular(b_idx).T)
    put_rows(flat_out, i_idx, c_int.T)
    return out


def _taps(t: np.ndarray, width: int, f: int, nodes_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of flat crop texels t (n,): node indices (n, 4) and weights (n, 4) float32."""
    ty, tx = np.divmod(t, width)
    cy, cx = ty // f, tx // f
    fy = ((ty - cy * f) / f).astype(np.float32)[:, None]
    fx = ((tx - cx * f) / f).astype(np.float32)[:, None]
    base = cy * nodes_x + cx
    node = np.stack([base, base + 1, base + nodes_x, base + nodes_x + 1], 1)
    wt = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
    return node, wt


def poisson_fill_fast(
    values: np.ndarray,  # (H, W, C) boundary values where `known`
    known: np.ndarray,  # (H, W) bool
    domain: np.ndarray,  # (H, W) bool, the chart; unknowns are domain & ~known
    guide: np.ndarray | None = None,  # (H, W, C) guidance texture
    guide_weight: np.ndarray | None = None,  # (H, W) in [0, 1]: where the guidance holds
    *,
    space: CoarseSpace | None = None,
    band: int = 1,
    residual_tol: float = 0.02,
    min_support: float = 0.25,
) -> np.ndarray:
    """The solution of `uv_complete._poisson_fill`'s equations in the reduced subspace (module doc).

    Args:
        space: `coarse_space(domain)` (built here if None; a `UVLayout` keeps one).
        band: unseen texels within this many texels (taxicab) of a seen texel's neighbour keep their
            own unknown; so do those within one texel of a residual ``|b - L p| > residual_tol``.
        min_support: nodes whose interpolation weights over the interpolated texels sum to less than
            this fraction of a full cell's (f^2) are dropped; the texels that used them keep their own
            unknowns.
    Returns:
        (H, W, C) float32: `values` with the unknown texels replaced; unknown components that touch no
        known texel get the mean known value (0.5 if none), as `_poisson_fill`.
    """
    domain = np.asarray(domain, bool)
    if space is None:
        space = coarse_space(domain)
    elif space.shape != domain.shape or not np.array_equal(space.domain, space.crop(domain)):
        raise ValueError("the coarse space was built for another chart")
    out = np.array(values, dtype=np.float32)
    crop = lambda a: None if a is None else space.crop(np.asarray(a, np.float32))  # noqa: E731
    filled = fill_crop(space, crop(out), space.crop(np.asarray(known, bool)), crop(guide), crop(guide_weight),
                       band=band, residual_tol=residual_tol, min_support=min_support)
    space.uncrop(out, filled, space.domain)
    return out
