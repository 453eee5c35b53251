"""Fitting losses: pure tensor functions, no configuration read here.

Each loss has a residual form r with loss = 0.5 * ||r||^2 (per image), so the same definitions drive the
Levenberg-Marquardt solver (which needs residuals) and first-order optimizers (which need the scalar).
"""
from __future__ import annotations

import torch

from ..model.landmark_scheme import IBUG68, LandmarkScheme

#: iBUG-68 index groups (`ganfit.model.landmark_scheme.IBUG68`).
JAW = IBUG68.group("jaw")
BROWS = IBUG68.group("left_brow", "right_brow")
NOSE = IBUG68.group("nose")
EYES = IBUG68.group("left_eye", "right_eye")
MOUTH = IBUG68.group("outer_lips", "inner_lips")


def landmark_weights(jaw_weight: float = 0.5, base: torch.Tensor | None = None,
                     scheme: LandmarkScheme = IBUG68) -> torch.Tensor:
    """(N,) per-landmark weights: `base` (default ones) with the scheme's contour (jaw-line) points scaled by
    `jaw_weight`.

    The jaw-line points are the least reliable: detectors place them on the visible silhouette, which
    moves over the face with the pose (down-weighting them is the usual remedy; see also `contour`).
    """
    n = scheme.num_points
    w = torch.ones(n, dtype=torch.float64) if base is None else base.detach().to(torch.float64).clone()
    if w.shape != (n,):
        raise ValueError(f"landmark weights must be ({n},), got {tuple(w.shape)}")
    w[list(scheme.contour)] *= jaw_weight
    return w


def face_size(landmarks: torch.Tensor) -> torch.Tensor:
    """Scale of a face in pixels: the square root of the area of the landmarks' bounding box.

    Args:
        landmarks: (B, 68, 2).
    Returns:
        (B,) size in pixels (the normaliser of the landmark error, as in NME).
    """
    extent = landmarks.amax(dim=1) - landmarks.amin(dim=1)
    return (extent[:, 0] * extent[:, 1]).clamp_min(1e-6).sqrt()


def landmark_residuals(
    projected: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Residuals of the landmark term (GANFit eq. 5 as a Gaussian likelihood): each coordinate's error
    over the error scale, times the square root of the landmark's weight.

    Args:
        projected: (B, N, 2) model landmarks projected to the image, pixels.
        target: (B, N, 2) detected landmarks, pixels.
        weights: (N,) or (B, N) non-negative weights (inverse variance multipliers: 1 = error `scale`).
        scale: (B,) the landmark error's standard deviation per coordinate, pixels (e.g. a fraction of
            `face_size`).
    Returns:
        (B, 2N) residuals r with 0.5 * ||r||^2 = `landmark_loss`.
    """
    w = weights if weights.ndim == 2 else weights[None].expand(projected.shape[0], -1)
    r = (projected - target) / scale[:, None, None] * w.sqrt()[..., None]
    return r.flatten(1)


def landmark_loss(projected: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the landmarks under isotropic Gaussian errors, up to a constant.

    Args: as `landmark_residuals`.
    Returns:
        (B,) 0.5 * sum_i w_i ||p_i - l_i||^2 / scale^2.
    """
    return 0.5 * landmark_residuals(projected, target, weights, scale).pow(2).sum(-1)


def gaussian_prior(coefficients: torch.Tensor) -> torch.Tensor:
    """Negative log of a standard normal prior on coefficients in std units (GANFit eq. 6), up to a constant.

    Args:
        coefficients: (B, K).
    Returns:
        (B,) 0.5 * ||c||^2.
    """
    return 0.5 * coefficients.pow(2).sum(-1)


def focal_prior_residual(log_focal: torch.Tensor, log_focal_mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B,) -> (B, 1) residual (log f - log f0) / sigma of a log-normal prior on the focal length."""
    return ((log_focal - log_focal_mean) / max(sigma, 1e-12))[:, None]


def reprojection_error(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) x2 -> (B,) mean Euclidean landmark distance in pixels (unweighted; for reporting)."""
    return (projected - target).norm(dim=-1).mean(-1)


def identity_residuals(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Residual form of `identity_loss`: the difference of the unit-normalised embeddings.

    For unit vectors 0.5 * ||a - b||^2 = 1 - cos(a, b), so 0.5 * ||r||^2 equals `identity_loss`.
    Args:
        emb_a, emb_b: (B, D).
    Returns:
        (B, D).
    """
    if emb_a.shape != emb_b.shape or emb_a.ndim != 2:
        raise ValueError(f"embeddings must both be (B, D), got {tuple(emb_a.shape)} and {tuple(emb_b.shape)}")
    return torch.nn.functional.normalize(emb_a, dim=-1) - torch.nn.functional.normalize(emb_b, dim=-1)


def identity_loss(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Identity loss of GANFit (Gecer et al., CVPR 2019, eq. 3): one minus the cosine similarity of the
    face-recognition embeddings of the rendered and the input image.

    Args:
        emb_a, emb_b: (B, D) embeddings (normalised or not).
    Returns:
        (B,) 1 - cos(emb_a, emb_b), in [0, 2]; 0 for identical embeddings.
    """
    if emb_a.shape != emb_b.shape or emb_a.ndim != 2:
        raise ValueError(f"embeddings must both be (B, D), got {tuple(emb_a.shape)} and {tuple(emb_b.shape)}")
    return 1.0 - torch.nn.functional.cosine_similarity(emb_a, emb_b, dim=-1, eps=1e-12)


def _chosen_layers(feats_a: list, feats_b: list, layers) -> list[int]:
    if len(feats_a) != len(feats_b):
        raise ValueError(f"{len(feats_a)} feature maps against {len(feats_b)}")
    chosen = list(range(len(feats_a))) if layers is None else [int(i) for i in layers]
    for i in chosen:
        if not -len(feats_a) <= i < len(feats_a):
            raise ValueError(f"layer {i} out of range for {len(feats_a)} feature maps")
        if feats_a[i].shape != feats_b[i].shape:
            raise ValueError(f"feature map {i}: shapes {tuple(feats_a[i].shape)} and {tuple(feats_b[i].shape)} differ")
    return chosen


def content_residuals(feats_a: list, feats_b: list, layers=None) -> torch.Tensor:
    """Residual form of `content_loss`: (B, sum_n C_n H_n W_n), each map's difference scaled by
    sqrt(2 / (C_n H_n W_n)), so 0.5 * ||r||^2 equals `content_loss` (large: for analysis, not for LM)."""
    chosen = _chosen_layers(feats_a, feats_b, layers)
    return torch.cat([((feats_a[i] - feats_b[i]) * (2.0 / feats_a[i][0].numel()) ** 0.5).flatten(1)
                      for i in chosen], dim=1)


def content_loss(feats_a: list, feats_b: list, layers=None) -> torch.Tensor:
    """Content loss of GANFit (Gecer et al., CVPR 2019, eq. 4): squared distance of intermediate
    feature maps of the identity network, each normalised by its size.

    Args:
        feats_a, feats_b: lists of (B, C_n, H_n, W_n) maps (shallow to deep), as
            ``IdentityNet.features`` returns.
        layers: indices of the maps to use (default: all).
    Returns:
        (B,) sum_n ||F_n(a) - F_n(b)||^2 / (H_n W_n C_n).
    """
    chosen = _chosen_layers(feats_a, feats_b, layers)
    if not chosen:
        return feats_a[0].new_zeros(feats_a[0].shape[0]) if feats_a else torch.zeros(0)
    return sum((feats_a[i] - feats_b[i]).pow(2).flatten(1).mean(1) for i in chosen)
