"""Synthetic faces with known parameters: for tests and benchmarks of the fitter.

Faces are drawn from the model's priors, posed and projected through a pinhole camera; their 68 landmarks
are placed as a detector would place them, the jaw line on the image outline (see `contour`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.morphable import MorphableModel
from ..render.camera import matrix_from_euler, project_points, transform_points
from .contour import build_contour_candidates, select_contour


@dataclass
class SyntheticFaces:
    """shape (B, Ks), expression (B, Ke), rotation (B, 3, 3), yaw_pitch_roll (B, 3) degrees,
    translation (B, 3) mm, focal (B,), image_size (W, H), vertices (B, V, 3) model space,
    landmarks_clean (B, 68, 2) and landmarks (B, 68, 2) with noise, pixels."""

    shape: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    yaw_pitch_roll: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    image_size: tuple[int, int]
    vertices: torch.Tensor
    landmarks_clean: torch.Tensor
    landmarks: torch.Tensor


def outline_landmark_ids(model: MorphableModel, rotation: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """Vertex ids of the 68 landmarks as a 2D-convention detector sees them: fixed vertices, the jaw line
    on the outline.

    Args:
        rotation: (B, 3, 3); projected: (B, V, 2) all vertices projected.
    Returns:
        (B, 68) vertex ids.
    """
    cands = build_contour_candidates(model)
    ci = torch.as_tensor(cands.indices, device=projected.device)
    choice = select_contour(projected[:, ci], rotation, torch.as_tensor(cands.sides, device=projected.device))
    ids = torch.as_tensor(model.landmark_indices, device=projected.device)[None].repeat(projected.shape[0], 1)
    ids[:, list(cands.points)] = ci[None].expand(projected.shape[0], -1, -1).gather(2, choice[..., None])[..., 0]
    return ids


def make_synthetic_faces(
    model: MorphableModel,
    n: int,
    generator: torch.Generator,
    *,
    yaw_deg: float = 60.0,
    pitch_deg: float = 20.0,
    roll_deg: float = 10.0,
    noise_px: float = 1.0,
    image_size: tuple[int, int] = (512, 512),
    focal_ratio: float = 1.6,
    focal_spread: float = 0.0,
    depth_mm: tuple[float, float] = (500.0, 900.0),
    dtype: torch.dtype = torch.float64,
    convention: str = "2d",
    landmark_offsets: torch.Tensor | None = None,
    yaw_min_deg: float = 0.0,
    shape: torch.Tensor | None = None,
    expression: torch.Tensor | None = None,
    yaw_pitch_roll: torch.Tensor | None = None,
) -> SyntheticFaces:
    """`n` random faces: coefficients ~ N(0, 1) (the priors), yaw/pitch/roll uniform in +-range (|yaw| at
    least `yaw_min_deg`), depth uniform, the face centred in the image, focal = focal_ratio * max(W, H) *
    exp(focal_spread * N(0, 1)).

    Landmarks follow `convention`: "2d" puts the jaw line on the image outline (as dlib), "3d" projects
    the model's fixed landmark vertices, hidden or not (as AFLW2000-3D). `landmark_offsets` (68, 3) mm, in
    the model frame, moves each landmark's 3D point before projection (a detector whose points are not
    the model's landmark vertices; see `benchmarks/landmark_offsets.py`). Then i.i.d. Gaussian noise of
    `noise_px` pixels per coordinate. `shape` (Ks,): one person for all n faces (several photos of one
    subject: their expressions, poses and cameras still differ); None: each face its own random shape.
    `expression` (n, Ke) and `yaw_pitch_roll` (n, 3) degrees replace the random ones (a video's smooth motion)."""
    if convention not in ("2d", "3d"):
        raise ValueError(f"convention must be 2d or 3d, got {convention!r}")
    g = generator
    drawn = torch.randn(n, model.num_shape, generator=g, dtype=dtype)
    shape = drawn if shape is None else torch.as_tensor(shape, dtype=dtype).reshape(1, -1).expand(n, -1).clone()
    expr = torch.randn(n, model.num_expression, generator=g, dtype=dtype)
    if expression is not None:
        expr = torch.as_tensor(expression, dtype=dtype).clone()
    u = lambda r: (torch.rand(n, generator=g, dtype=dtype) * 2 - 1) * r  # noqa: E731
    yaw = u(1.0)
    yaw = torch.sign(yaw) * (yaw_min_deg + yaw.abs() * (yaw_deg - yaw_min_deg))
    ypr = torch.stack([yaw, u(pitch_deg), u(roll_deg)], -1)
    if yaw_pitch_roll is not None:
        ypr = torch.as_tensor(yaw_pitch_roll, dtype=dtype).clone()
    rot = matrix_from_euler(ypr)
    depth = depth_mm[0] + torch.rand(n, generator=g, dtype=dtype) * (depth_mm[1] - depth_mm[0])
    w, h = image_size
    focal = focal_ratio * max(w, h) * torch.exp(focal_spread * torch.randn(n, generator=g, dtype=dtype))
    verts = model.vertices(shape, expr)
    centre = verts.mean(1)  # put the face's centroid on the optical axis
    trans = torch.stack([torch.zeros_like(depth), torch.zeros_like(depth), -depth], -1) - (centre[:, None] @ rot.transpose(1, 2))[:, 0]
    cam = transform_points(verts, rot, trans)
    principal = torch.tensor([[w / 2.0, h / 2.0]], dtype=dtype).expand(n, -1)
    proj = project_points(cam, focal, principal)
    ids = outline_landmark_ids(model, rot, proj) if convention == "2d" else \
        torch.as_tensor(model.landmark_indices)[None].repeat(n, 1)
    points = verts.gather(1, ids[..., None].expand(-1, -1, 3))
    if landmark_offsets is not None:
        points = points + landmark_offsets.to(dtype)[None]
    clean = project_points(transform_points(points, rot, trans), focal, principal)
    noisy = clean + noise_px * torch.randn(clean.shape, generator=g, dtype=dtype)
    return SyntheticFaces(shape, expr, rot, ypr, trans, focal, (w, h), verts, clean, noisy)
