"""Small texture models for the joint-stage tests (imported by them; not a test module)."""
from __future__ import annotations

import math

import torch

from ganfit.model.texture.base import model_uv_layout_id
from ganfit.model.texture.linear import LinearTextureModel


def smooth_pca_texture(model, k: int = 6, res: int = 16, seed: int = 3) -> LinearTextureModel:
    """A PCA texture model of `k` smooth colour patterns in UV space around a skin tone."""
    g = torch.Generator().manual_seed(seed)
    v, u = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    mean = torch.tensor([0.7, 0.5, 0.4])[:, None, None].expand(3, res, res).clone()
    basis = []
    for i in range(k):
        fx, fy = torch.rand(2, generator=g) * 4 + 0.5
        colour = torch.randn(3, generator=g)
        b = colour[:, None, None] * torch.cos(math.pi * (fx * u + fy * v) + i)[None]
        basis.append(b / b.norm())
    return LinearTextureModel(mean, torch.stack(basis), torch.full((k,), 2.0), uv_layout=model_uv_layout_id(model))
