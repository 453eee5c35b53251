"""Building blocks of the DF-MVR network: U-Net conv blocks, the attention gate of Attention U-Net
(Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018), view fusion and
RedNet's involution bottleneck (Li et al., CVPR 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .involution import Involution2d

__all__ = ["ConvBlock", "AttentionGate", "ViewFusion", "InvolutionBottleneck", "fuse_views"]


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU layers, the first with `stride`: (N, Cin, H, W) -> (N, Cout, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018, Fig. 2): ``x * sigmoid(psi(relu(Wx x + Wg g)))``.

    x: (N, Cx, H, W) skip features; g: (N, Cg, h, w) gating signal (resized to H x W).
    Returns (N, Cx, H, W): the skip features weighted by the attention map (N, 1, H, W) in [0, 1].
    """

    def __init__(self, cx: int, cg: int, cmid: int | None = None) -> None:
        super().__init__()
        cmid = cmid or max(cx // 2, 4)
        self.wx = nn.Conv2d(cx, cmid, 1, bias=False)
        self.wg = nn.Conv2d(cg, cmid, 1)
        self.psi = nn.Sequential(nn.Conv2d(cmid, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if g.shape[-2:] != x.shape[-2:]:
            g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = self.psi(F.relu(self.wx(x) + self.wg(g)))
        return x * alpha


def fuse_views(features: torch.Tensor, mode: str) -> torch.Tensor:
    """Order-invariant pooling over views: (B, V, C, ...) -> (B, C', ...), C' = 2C for "mean_max", else C."""
    if mode == "mean":
        return features.mean(dim=1)
    if mode == "max":
        return features.amax(dim=1)
    if mode == "mean_max":
        return torch.cat([features.mean(dim=1), features.amax(dim=1)], dim=1)
    raise ValueError(f"unknown view fusion {mode!r} (use 'mean', 'max' or 'mean_max')")


class ViewFusion(nn.Module):
    """`fuse_views` then a 1x1 conv + BatchNorm + ReLU back to C channels: (B, V, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        fuse_views(torch.zeros(1, 1, 1), mode)  # validate the mode now
        self.mode = mode
        cin = 2 * channels if mode == "mean_max" else channels
        self.proj = nn.Sequential(nn.Conv2d(cin, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(fuse_views(features, self.mode))


class InvolutionBottleneck(nn.Module):
    """RedNet bottleneck (Li et al. 2021, Sec. 4): 1x1 conv -> involution (K x K, stride) -> 1x1 conv, each with
    BatchNorm, plus a (strided 1x1 conv) shortcut, then ReLU. (N, Cin, H, W) -> (N, Cout, H/s, W/s).

    mid = Cout // expansion channels in the involution, in groups of `group_channels` channels.
    """

    def __init__(self, cin: int, cout: int, *, stride: int = 1, expansion: int = 4, kernel_size: int = 7,
                 group_channels: int = 16, reduction: int = 4) -> None:
        super().__init__()
        mid = max(cout // expansion, 1)
        groups = max(mid // group_channels, 1)
        while mid % groups:
            groups -= 1
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            Involution2d(mid, kernel_size, stride=stride, groups=groups, reduction=reduction), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))
