"""The identity of several photos of one person (`Fitter.fit(..., subjects=...)`): the subject's neutral face
(its shared shape, no expression) with a texture blended from every photo that sees each texel."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .result import FaceMesh

__all__ = ["blend_textures", "identity_meshes"]


def blend_textures(textures: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> np.ndarray:
    """One UV texture from several photos' unwrapped textures.

    Args:
        textures: per photo an (H, W, 3) texture in [0, 1] (each already completed where its photo did not see).
        masks: per photo (H, W) how well it saw each texel (0 unseen .. 1 frontal), or None (counted as 0).
    Returns:
        (H, W, 3) float32: each texel the mean of the photos weighted by how well they saw it; where no photo
        saw it, the plain mean of the completed textures.
    """
    tex = np.stack([np.asarray(t, dtype=np.float32) for t in textures])
    w = np.stack([np.zeros(tex.shape[1:3], np.float32) if m is None else np.asarray(m, np.float32) for m in masks])
    total = w.sum(0)
    seen = total > 1e-6
    blended = (tex * w[..., None]).sum(0) / np.where(seen, total, 1.0)[..., None]
    return np.where(seen[..., None], blended, tex.mean(0)).astype(np.float32)


def identity_meshes(model, shape: torch.Tensor, frame_subject: torch.Tensor, meshes: Sequence[FaceMesh]) -> list[FaceMesh]:
    """The neutral face of each subject.

    Args:
        model: the face model. shape: (B, Ks) each photo's shape (equal within a subject).
        frame_subject: (B,) long, each photo's subject 0..S-1. meshes: the B photos' `FaceMesh`es.
    Returns:
        S `FaceMesh`es: vertices of the subject's shape with zero expression (model space, mm; camera-space
        vertices are the same and `projected` is zero: a neutral face is seen by no camera), the UV layout
        of the photos' meshes, vertex colours averaged over the photos that see each vertex, and the
        blended texture (`blend_textures`) with the photos' best mask.
    """
    fs = torch.as_tensor(frame_subject, dtype=torch.long).cpu()
    out = []
    for s in range(int(fs.max()) + 1):
        rows = (fs == s).nonzero()[:, 0].tolist()
        coeff = shape[rows[0]].detach().float().cpu()[None]
        with torch.no_grad():
            vertices = model.vertices(coeff, torch.zeros(1, model.num_expression))[0].float()
        own = [meshes[i] for i in rows]
        colors = None
        if all(m.colors is not None for m in own):
            c = torch.stack([m.colors for m in own])
            seen = torch.stack([m.visible if m.visible is not None else torch.ones(len(vertices), dtype=torch.bool)
                                for m in own]).float()
            weight = seen.sum(0, keepdim=True)
            colors = torch.where(weight[0, :, None] > 0, (c * seen[..., None]).sum(0) / weight[0].clamp_min(1)[:, None],
                                 c.mean(0))
        texture = mask = None
        if all(m.texture is not None for m in own):
            texture = blend_textures([m.texture for m in own], [m.texture_mask for m in own])
            masks = [m.texture_mask for m in own if m.texture_mask is not None]
            mask = np.maximum.reduce(masks) if masks else None
        first = own[0]
        out.append(FaceMesh(vertices=vertices, vertices_camera=vertices.clone(), projected=torch.zeros(len(vertices), 2),
                            triangles=first.triangles, uv=first.uv, uv_triangles=first.uv_triangles, colors=colors,
                            visible=None if colors is None else torch.ones(len(vertices), dtype=torch.bool),
                            texture=texture, texture_mask=mask))
    return out
