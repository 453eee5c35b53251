"""Supervised losses of DF-MVR on synthetic data: coefficients in standard-deviation units, pose, lighting and the
reprojection of the model's 68 landmarks (the paper's landmark loss, Zhao et al. 2022, with exact targets)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ganfit.render.camera import project_points, rotation_matrix, transform_points

from .network import DFMVROutput
from .synthetic import MultiViewBatch

__all__ = ["LossWeights", "landmark_points", "supervised_losses", "total_loss"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the named terms of `supervised_losses`."""

    shape: float = 1.0
    expression: float = 1.0
    pose: float = 1.0
    lighting: float = 1.0
    landmark: float = 10.0

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def landmark_points(model, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
    """The model's 68 landmark vertices without building the whole mesh.

    shape: (N, Ks), expression: (N, Ke) in standard deviations -> (N, 68, 3) millimetres, model space.
    """
    t = model.tensors(shape.device, shape.dtype)
    rows = (t["landmarks"][:, None] * 3 + torch.arange(3, device=shape.device)).reshape(-1)  # (68*3,)
    flat = t["mean"][rows] + shape @ t["shape"][rows, : shape.shape[1]].T + expression @ t["expression"][rows, : expression.shape[1]].T
    return flat.reshape(shape.shape[0], -1, 3)


def supervised_losses(out: DFMVROutput, batch: MultiViewBatch, model, *, translation_scale_mm: float = 100.0) -> dict[str, torch.Tensor]:
    """Scalar loss terms (each a mean over samples and views).

    shape, expression: mean squared error in standard deviations; pose: squared Frobenius distance of the
    rotation matrices plus the squared translation error in units of `translation_scale_mm`; lighting: mean squared
    SH coefficient error; landmark: mean distance of the projected landmarks, in units of the image size.
    """
    b, v = batch.batch_size, batch.num_views
    size = float(batch.images.shape[-1])
    r_pred = rotation_matrix(out.rotation).reshape(b * v, 3, 3)
    r_true = rotation_matrix(batch.rotation).reshape(b * v, 3, 3)
    trans = out.translation.reshape(b * v, 3)
    pose = (r_pred - r_true).pow(2).sum(dim=(-1, -2)).mean() + ((trans - batch.translation.reshape(b * v, 3)) / translation_scale_mm).pow(2).sum(-1).mean()
    pts = landmark_points(model, out.per_view_shape(), out.expression.reshape(b * v, -1))
    proj = project_points(transform_points(pts, r_pred, trans), batch.focal.reshape(-1), batch.principal.reshape(-1, 2))
    landmark = ((proj - batch.landmarks.reshape(b * v, -1, 2)) / size).norm(dim=-1).mean()
    return {
        "shape": (out.shape - batch.shape).pow(2).mean(),
        "expression": (out.expression - batch.expression).pow(2).mean(),
        "pose": pose,
        "lighting": (out.lighting - batch.lighting).pow(2).mean(),
        "landmark": landmark,
    }


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """The weighted sum of the terms named in `weights`."""
    w = weights.as_dict()
    return sum(w[name] * value for name, value in terms.items() if w.get(name, 0.0))
