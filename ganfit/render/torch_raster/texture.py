"""Texture sampling for the torch rasterizer (`TorchRasterizer.texture`).

"bilinear": `torch.nn.functional.grid_sample` (align_corners=False, border clamping; v up in the UV map,
so v = 1 is the top row of the texture image): `_sample`. "mipmap" and "area" (the same here): trilinear
mip-mapping. A pyramid is built by 2x2 average pooling (`mip_pyramid`); the level of detail per pixel is
log2 of the texel footprint, the longer of the x and y screen derivatives of uv (in level-0 texels),
each derivative being the finite difference to the neighbouring pixel (the smaller of the forward and
backward differences, so that jumps at silhouettes or UV seams do not blur): `_texture_lod`. The LOD is
not differentiated; the two nearest levels are sampled bilinearly and blended (the filter choice and
that blend are in `TorchRasterizer.texture`). No anisotropic filtering.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
