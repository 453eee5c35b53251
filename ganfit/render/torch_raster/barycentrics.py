"""Pass 2 of the torch rasterizer: perspective-correct barycentrics and depth, differentiable.

For covered pixels only, the winner's three clip-space vertices are gathered and the perspective-correct
barycentrics computed in 2D homogeneous coordinates (Olano & Greer 1997): for the pixel ray
q = (x_ndc, y_ndc, 1) and c_i = (x_i, y_i, w_i), b_i ~ det[q, c_j, c_k], normalised to sum 1 (equal to
screen-space barycentrics weighted by 1/w); depth = sum(b_i z_i) / sum(b_i w_i) = z_ndc of the surface
point. `_PixelBarycentrics` is one autograd function with an analytic backward (the gradient with
respect to the clip-space vertices); `perspective_barycentrics` is the same formula for given points,
differentiated by autograd. `_pixel_ndc` gives the NDC centre of a flat pixel index.
"""
from __future__ import annotations

import torch


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
