"""Attribute interpolation for the torch rasterizer: per-vertex values blended by barycentrics.

`_Interpolate` is the autograd function behind `TorchRasterizer.interpolate`: it writes the barycentric
blend of the three corner attributes at the covered pixels (zeros on background), with an analytic
backward to the attributes and to the barycentrics (which carry the gradient on to the clip-space
vertices through `ganfit.render.torch_raster.barycentrics`).
"""
from __future__ import annotations

import torch


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
