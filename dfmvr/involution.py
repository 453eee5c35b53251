"""Involution (Li et al., "Involution: Inverting the Inherence of Convolution for Visual Recognition",
CVPR 2021) in plain PyTorch: an unfold-based implementation that runs on any device.

An involution kernel is spatial-specific and channel-agnostic: at each output pixel a K x K kernel is
generated from the input feature at that pixel (a reduction 1x1 conv, normalisation, ReLU and a span 1x1
conv to K*K*G values) and shared by the C/G channels of each of the G groups.

``out[b, c, i, j] = sum_{u,v} W[b, g(c), u*K+v, i, j] * x_pad[b, c, i*s + u*d, j*s + v*d]``

with g(c) = c // (C/G), s the stride, d the dilation and x_pad the input zero-padded by d*(K-1)//2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["involution2d", "Involution2d"]


def involution2d(x: torch.Tensor, kernel: torch.Tensor, kernel_size: int, *, stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """Apply per-pixel involution kernels.

    Args:
        x: (B, C, H, W) input.
        kernel: (B, G, K*K, H', W') kernels, G dividing C, (H', W') the output size.
        kernel_size: K (odd).
        stride, dilation: as for a convolution; padding is dilation*(K-1)//2 ("same" at stride 1).
    Returns:
        (B, C, H', W'), H' = (H - 1) // stride + 1 (likewise W').
    """
    if x.ndim != 4 or kernel.ndim != 5:
        raise ValueError(f"involution2d needs x (B, C, H, W) and kernel (B, G, K*K, H', W'), got {tuple(x.shape)} and {tuple(kernel.shape)}")
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    b, c, h, w = x.shape
    g, kk = kernel.shape[1], kernel.shape[2]
    if kk != kernel_size * kernel_size or c % g:
        raise ValueError(f"kernel {tuple(kernel.shape)} does not fit K={kernel_size} and C={c} (G must divide C)")
    pad = dilation * (kernel_size - 1) // 2
    ho, wo = (h + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1, (w + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1
    if kernel.shape[0] != b or kernel.shape[3:] != (ho, wo):
        raise ValueError(f"kernel must be (B={b}, G, K*K, {ho}, {wo}) for input {tuple(x.shape)}, got {tuple(kernel.shape)}")
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad, stride=stride)  # (B, C*K*K, H'*W')
    cols = cols.view(b, g, c // g, kk, ho, wo)
    return (cols * kernel.unsqueeze(2)).sum(dim=3).reshape(b, c, ho, wo)


class Involution2d(nn.Module):
    """Involution layer with its kernel-generation function (Li et al. 2021, Sec. 3 and Fig. 2).

    Args:
        channels: C, input and output channels.
        kernel_size: K (odd), default 7 as in RedNet.
        stride: output stride; the kernel is generated from the average-pooled input when > 1.
        groups: G kernels per pixel, each shared by C/G channels (RedNet: channels // 16).
        reduction: r, the reduction conv maps C -> max(C // r, 4) channels.
    Shapes: (B, C, H, W) -> (B, C, H', W').
    """

    def __init__(self, channels: int, kernel_size: int = 7, *, stride: int = 1, groups: int = 1, reduction: int = 4) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"groups={groups} must divide channels={channels}")
        self.channels, self.kernel_size, self.stride, self.groups = channels, kernel_size, stride, groups
        mid = max(channels // reduction, 4)
        self.reduce = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.span = nn.Conv2d(mid, kernel_size * kernel_size * groups, 1)
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The generated kernels: (B, C, H, W) -> (B, G, K*K, H', W')."""
        k = self.span(self.reduce(self.pool(x)))
        b, _, ho, wo = k.shape
        return k.view(b, self.groups, self.kernel_size * self.kernel_size, ho, wo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return involution2d(x, self.kernel(x), self.kernel_size, stride=self.stride)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, groups={self.groups}"
