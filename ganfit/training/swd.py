"""Sliced Wasserstein distance (SWD) between two image sets on Laplacian pyramids — the multi-scale
statistical similarity of Karras et al. (ICLR 2018, section 5; after Burt & Adelson 1987 and Rabin et
al. 2011).

For every level of a Laplacian pyramid (from the full resolution down to `min_resolution`, 16x16 by
default; the last level is the low-pass residual):

1. pick ``descriptors_per_image * max(N_real, N_fake)`` random 7x7 neighbourhoods (3 x 7 x 7 = 147 numbers
   each) from each set (random image, random position; a seeded `torch.Generator` makes it repeatable;
   when both sets have as many images, the same image indices and positions are used in both — each set
   is still sampled uniformly, the shared draw only removes sampling noise, so swd(a, a) is exactly 0);
2. normalise per colour channel: subtract the mean and divide by the standard deviation of that level's
   descriptors, channel by channel;
3. project both sets onto ``repeats * dirs_per_repeat`` random unit directions, sort the projections
   of each set, and average the absolute difference of the sorted values (the 1-D Wasserstein-1
   distance per direction), averaged over directions.

Normalisation: the reference implementation normalises each set with its own statistics, which makes
the distance blind to a global change of a channel's mean or contrast (the whole set redder, the skin
darker). For face textures skin tone matters, so here both sets are normalised with the *pooled*
statistics (real and fake descriptors together), which keeps the levels comparable while a colour shift
still shows, and keeps swd(a, b) == swd(b, a). ``normalize="separate"`` gives the reference behaviour.

Values are raw distances (the paper's tables print them x 10^3). Lower is better; two samples of the
same distribution give a small positive value that shrinks with more descriptors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["laplacian_pyramid", "swd", "extract_descriptors", "random_neighbourhoods"]

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial blur with reflected borders, per channel. (B, C, H, W) -> same."""
    c = x.shape[1]
    k1 = _BINOMIAL.to(device=x.device, dtype=x.dtype)
    k = (k1[:, None] * k1[None, :]).expand(c, 1, 5, 5)
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), k, groups=c)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = torch.zeros(*x.shape[:2], *size, device=x.device, dtype=x.dtype)
    up[..., ::2, ::2] = x
    return _blur(up) * 4.0


def laplacian_pyramid(images: torch.Tensor, min_resolution: int = 16) -> list[torch.Tensor]:
    """Laplacian pyramid, finest level first, down to the level whose short side is `min_resolution`
    (the last entry is the Gaussian low-pass at that size). images: (N, C, H, W) with short side >=
    `min_resolution`; each level halves H and W."""
    if min(images.shape[-2:]) < min_resolution:
        raise ValueError(f"images of {tuple(images.shape[-2:])} are smaller than the pyramid's {min_resolution} px")
    levels = []
    g = images
    while min(g.shape[-2:]) >= 2 * min_resolution and g.shape[-2] % 2 == 0 and g.shape[-1] % 2 == 0:
        down = _pyr_down(g)
        levels.append(g - _pyr_up(down, tuple(g.shape[-2:])))
        g = down
    levels.append(g)
    return levels


def random_neighbourhoods(
    n: int, h: int, w: int, count: int, generator: torch.Generator, patch: int = 7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image index, top row, left column) of `count` random patch x patch neighbourhoods, each (count,)."""
    if h < patch or w < patch:
        raise ValueError(f"pyramid level {h}x{w} is smaller than the {patch}x{patch} neighbourhood")
    idx = torch.randint(n, (count,), generator=generator)
    ys = torch.randint(h - patch + 1, (count,), generator=generator)
    xs = torch.randint(w - patch + 1, (count,), generator=generator)
    return idx, ys, xs


def extract_descriptors(
    level: torch.Tensor, count: int, generator: torch.Generator, patch: int = 7,
    where: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`count` random patch x patch neighbourhoods of random images of `level` (N, C, H, W) ->
    (count, C, patch, patch). The indices are drawn on the CPU with `generator`, or given as `where`
    (from `random_neighbourhoods`)."""
    n, c, h, w = level.shape
    idx, ys, xs = where if where is not None else random_neighbourhoods(n, h, w, count, generator, patch)
    count = idx.shape[0]
    d = torch.arange(patch)
    rows = (ys[:, None] + d[None, :])[:, :, None].expand(count, patch, patch)
    cols = (xs[:, None] + d[None, :])[:, None, :].expand(count, patch, patch)
    dev = level.device
    out = level[idx.to(dev)[:, None, None], :, rows.to(dev), cols.to(dev)]  # (count, p, p, C)
    return out.permute(0, 3, 1, 2)


def _sliced_distance(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, repeats: int, dirs: int) -> float:
    """Mean over random unit directions of the 1-D W1 distance between the projections. a, b: (M, K)."""
    total = 0.0
    for _ in range(repeats):
        directions = torch.randn(a.shape[1], dirs, generator=generator).to(device=a.device, dtype=a.dtype)
        directions = directions / torch.linalg.vector_norm(directions, dim=0, keepdim=True)
        pa = torch.sort(a @ directions, dim=0).values
        pb = torch.sort(b @ directions, dim=0).values
        total += float((pa - pb).abs().mean())
    return total / repeats


@torch.no_grad()
def swd(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    descriptors_per_image: int = 128,
    repeats: int = 4,
    dirs_per_repeat: int = 128,
    min_resolution: int = 16,
    normalize: str = "pooled",
) -> dict[str, float]:
    """Sliced Wasserstein distance between two image sets per Laplacian-pyramid level.

    Args:
        real, fake: (N, 3, H, W) and (M, 3, H, W) images (any consistent range, e.g. [0, 1]); same H, W.
        generator: CPU `torch.Generator` for the neighbourhoods and directions (default: seeded with 0,
            so two calls with the same inputs give the same result).
        descriptors_per_image: neighbourhoods per image per level (the paper: 128).
        repeats, dirs_per_repeat: random directions, in batches (the paper: 4 x 128 = 512 directions).
        min_resolution: the coarsest level's short side (the paper: 16).
        normalize: "pooled" (both sets with their joint per-channel statistics; default) or "separate"
            (each set with its own, as the reference code).
    Returns:
        ``{"<resolution>": distance, ..., "mean": mean over levels}``, resolution = the level's short
        side, finest first (e.g. {"64": .., "32": .., "16": .., "mean": ..}).
    """
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"swd needs two (N, C, H, W) sets of the same C, H, W; got {tuple(real.shape)} and {tuple(fake.shape)}")
    if normalize not in ("pooled", "separate"):
        raise ValueError(f"normalize must be 'pooled' or 'separate', got {normalize!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    real = real.float()
    fake = fake.to(device=real.device, dtype=torch.float32)
    count = descriptors_per_image * max(real.shape[0], fake.shape[0])
    out: dict[str, float] = {}
    for lr, lf in zip(laplacian_pyramid(real, min_resolution), laplacian_pyramid(fake, min_resolution)):
        if lr.shape[0] == lf.shape[0]:  # same neighbourhoods in both (common random numbers): swd(a, a) == 0
            where = random_neighbourhoods(lr.shape[0], lr.shape[-2], lr.shape[-1], count, generator)
            da, db = extract_descriptors(lr, count, generator, where=where), extract_descriptors(lf, count, generator, where=where)
        else:
            da, db = extract_descriptors(lr, count, generator), extract_descriptors(lf, count, generator)
        if normalize == "pooled":
            both = torch.cat([da, db])
            mean = both.mean(dim=(0, 2, 3), keepdim=True)
            std = both.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
            da, db = (da - mean) / std, (db - mean) / std
        else:
            da = (da - da.mean(dim=(0, 2, 3), keepdim=True)) / da.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
            db = (db - db.mean(dim=(0, 2, 3), keepdim=True)) / db.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        out[str(min(lr.shape[-2:]))] = _sliced_distance(da.flatten(1), db.flatten(1), generator, repeats, dirs_per_repeat)
    out["mean"] = sum(out.values()) / len(out)
    return out
