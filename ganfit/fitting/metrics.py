"""Accuracy measures for fitted geometry."""
from __future__ import annotations

import torch

from .losses import face_size


def similarity_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Align `source` to `target` by the best similarity transform (Umeyama, PAMI 1991).

    Args:
        source, target: (B, N, 3) corresponding points.
    Returns:
        (B, N, 3) `source` after scale, rotation and translation minimising the squared distance to `target`.
    """
    mu_s, mu_t = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    s0, t0 = source - mu_s, target - mu_t
    cov = t0.transpose(1, 2) @ s0 / source.shape[1]
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    rot = u @ torch.diag_embed(d) @ vh
    var = s0.pow(2).sum((1, 2)) / source.shape[1]
    scale = (sig * d).sum(-1) / var.clamp_min(1e-30)
    return scale[:, None, None] * s0 @ rot.transpose(1, 2) + mu_t


def aligned_vertex_error(fitted: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-vertex distance after similarity alignment over `mask` (the face region), in model units.

    Args:
        fitted, truth: (B, V, 3); mask: (V,) bool or None (all vertices).
    Returns:
        (B,) mean Euclidean distance over the masked vertices.
    """
    if mask is not None:
        fitted, truth = fitted[:, mask], truth[:, mask]
    return (similarity_align(fitted, truth) - truth).norm(dim=-1).mean(-1)


def landmark_nme(fitted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised mean landmark error: mean point-to-point distance over the face size, the square root
    of the target landmarks' bounding-box area (`face_size`; the "bounding-box" NME of Bulat &
    Tzimiropoulos, ICCV 2017).

    Args:
        fitted, target: (B, N, 2) pixels.
    Returns:
        (B,) unitless errors.
    """
    target = target.to(torch.float64)
    return (fitted.to(torch.float64) - target).norm(dim=-1).mean(-1) / face_size(target)
