"""Sample grids: many small images tiled into one picture (training samples, dataset contact sheets);
write them with `ganfit.io.images.save_png`."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["make_grid"]


def make_grid(images: torch.Tensor, columns: int | None = None, min_tile: int = 64) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (rows*H', columns*W', 3) float array; tiles upscaled (nearest) to at
    least `min_tile` px, 1 px black gaps."""
    n = images.shape[0]
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    f = max(1, int(math.ceil(min_tile / images.shape[-1])))
    imgs = images.detach().float().cpu().clamp(0, 1)
    if f > 1:
        imgs = F.interpolate(imgs, scale_factor=f, mode="nearest")
    h, w = imgs.shape[-2:]
    grid = torch.zeros(3, rows * (h + 1) - 1, columns * (w + 1) - 1)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[:, r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = imgs[i]
    return grid.permute(1, 2, 0).numpy()

