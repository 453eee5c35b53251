"""The landmark stage: shape, expression, pose and focal length from 68 landmarks.

Energy per image (GANFit, Gecer et al. CVPR 2019, eq. 5-7, landmark and prior terms):

    E = w_lan * L_lan(P(R (mean + S a + X e) + t; f), l) + w_a/2 ||a||^2 + w_e/2 ||e||^2 + w_f/2 ((log f - log f0)/s)^2

It is a small non-linear least-squares problem (~57 unknowns, ~140 residuals per image), solved with
Levenberg-Marquardt (Marquardt's diagonal scaling, one damping factor per image) on Jacobians from
the analytic Jacobian (chain rule, tested against autodiff); images of a batch are independent and solved together. A few rigid iterations
(pose only) after a closed-form weak-perspective initialisation come first. `optimizer="adam"` runs the
same energy with Adam for comparison (see benchmarks/landmark_fit.py).

Unknowns per image, in this order: shape (Ks), expression (Ke), rotation (3 or 6), translation as
(tx/d, ty/d, log d) with depth d in mm, and log(f / f0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.func import jacfwd, vmap

from ..errors import FitError
from ..model.morphable import MorphableModel
from ..render.camera import axis_angle_jacobian, matrix_to_axis_angle, matrix_to_rotation_6d, project_points, rotation_matrix
from .contour import ContourCandidates, build_contour_candidates, select_contour
from .losses import face_size, landmark_residuals, reprojection_error
from .params import FitParams

#: iBUG-68 points used for the closed-form pose initialisation (everything but the jaw line).
INNER = list(range(17, 68))


@dataclass(frozen=True)
class LandmarkProblem:
    """Everything the solver needs, as tensors on one device in float64.

    targets: (B, 68, 2) pixels; principal: (B, 2); focal0: (B,) prior focal in px; scale: (B,) face size;
    weights: (68,) landmark weights; lm_vertices: (68,) vertex ids of the model; contour: candidates or None
    (None = static correspondence); w_shape, w_expr, w_focal, focal_log_sigma: prior weights.
    """

    targets: torch.Tensor
    principal: torch.Tensor
    focal0: torch.Tensor
    scale: torch.Tensor
    weights: torch.Tensor
    w_landmark: float
    w_shape: float
    w_expr: float
    w_focal: float
    focal_log_sigma: float


@dataclass
class LandmarkStageResult:
    """Solver output: parameters, per-iteration history (each entry: name -> (B,) list), timings."""

    params: FitParams
    vertex_ids: torch.Tensor  # (B, 68) model vertex used for each landmark at the end (contour resolved)
    history: list[dict[str, list[float]]] = field(default_factory=list)
    iterations: int = 0


class _Layout:
    """Slices of the flat unknown vector."""

    def __init__(self, ks: int, ke: int, rot_dim: int) -> None:
        self.ks, self.ke, self.rot_dim = ks, ke, rot_dim
        self.shape = slice(0, ks)
        self.expr = slice(ks, ks + ke)
        self.rot = slice(ks + ke, ks + ke + rot_dim)
        self.trans = slice(ks + ke + rot_dim, ks + ke + rot_dim + 3)
        self.focal = ks + ke + rot_dim + 3
        self.size = self.focal + 1

    def mask(self, *, shape: bool, expr: bool, pose: bool, focal: bool, device) -> torch.Tensor:
        m = torch.zeros(self.size, dtype=torch.bool, device=device)
        m[self.shape] = shape
        m[self.expr] = expr
        m[self.rot] = pose
        m[self.trans] = pose
        m[self.focal] = focal
        return m


class _Basis:
    """Mean and std-scaled bases of the vertices the landmark stage touches, as (N, 3[, K]) float64."""

    def __init__(self, model: MorphableModel, vertex_ids: np.ndarray, ks: int, ke: int, device) -> None:
        self.ids = torch.as_tensor(vertex_ids, device=device)
        lookup = -np.ones(model.num_vertices, dtype=np.int64)
        lookup[vertex_ids] = np.arange(len(vertex_ids))
        self.lookup = torch.as_tensor(lookup, device=device)
        dt = torch.float64
        self.mean = torch.as_tensor(model.mean[vertex_ids], device=device, dtype=dt)
        self.shape = torch.as_tensor(model.shape_basis[vertex_ids, :, :ks] * model.shape_std[:ks], device=device, dtype=dt)
        self.expr = torch.as_tensor(
            model.expression_basis[vertex_ids, :, :ke] * model.expression_std[:ke], device=device, dtype=dt
        )
        self.ks = ks
        self.packed = torch.cat([self.mean[..., None], self.shape, self.expr], dim=-1)  # (N, 3, 1 + Ks + Ke)

    def gather(self, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N) local ids -> mean (B, N, 3), shape basis (B, N, 3, Ks), expression basis (B, N, 3, Ke)."""
        g = self.packed[local]
        return g[..., 0], g[..., 1 : 1 + self.ks], g[..., 1 + self.ks :]


def _decode(x: torch.Tensor, lay: _Layout, focal0: torch.Tensor):
    """(..., P) unknowns -> shape, expression, R (..., 3, 3), t (..., 3), focal (...,)."""
    shape, expr = x[..., lay.shape], x[..., lay.expr]
    rot = rotation_matrix(x[..., lay.rot])
    tr = x[..., lay.trans]
    depth = torch.exp(tr[..., 2])
    t = torch.stack([tr[..., 0] * depth, tr[..., 1] * depth, -depth], dim=-1)
    focal = focal0 * torch.exp(x[..., lay.focal])
    return shape, expr, rot, t, focal


def _points(mean, sb, eb, shape, expr):
    """Per-image vertices: mean (B, N, 3) + sb (B, N, 3, Ks) @ shape (B, Ks) + eb (B, N, 3, Ke) @ expr (B, Ke).

    Returns (B, N, 3). (einsum lowers to one batched GEMM; broadcasting matmul would copy the bases.)
    """
    return mean + torch.einsum("bnck,bk->bnc", sb, shape) + torch.einsum("bnck,bk->bnc", eb, expr)


def _shared_points(mean, sb, eb, shape, expr):
    """Vertices of B images from one shared basis: mean (N, 3), sb (N, 3, Ks), eb (N, 3, Ke) -> (B, N, 3)."""
    n = mean.shape[0]
    flat = mean.reshape(1, -1) + shape @ sb.reshape(n * 3, -1).T + expr @ eb.reshape(n * 3, -1).T
    return flat.reshape(-1, n, 3)


def _residuals(x, mean, sb, eb, target, principal, focal0, scale, weights, lay: _Layout, p: LandmarkProblem):
    """Residuals (B, R) for unknowns x (B, P) and the landmark vertices' bases (B, 68, 3[, K])."""
    shape, expr, rot, t, focal = _decode(x, lay, focal0)
    pts = _points(mean, sb, eb, shape, expr)
    cam = pts @ rot.transpose(-1, -2) + t[:, None, :]
    proj = project_points(cam, focal, principal)
    parts = [math.sqrt(p.w_landmark) * landmark_residuals(proj, target, weights, scale)]
    if lay.ks:
        parts.append(math.sqrt(p.w_shape) * shape)
    if lay.ke:
        parts.append(math.sqrt(p.w_expr) * expr)
    if p.focal_log_sigma > 0:
        parts.append(math.sqrt(p.w_focal) * x[:, lay.focal : lay.focal + 1] / p.focal_log_sigma)
    return torch.cat(parts, dim=-1)


def _energy_parts(x, mean, sb, eb, lay: _Layout, p: LandmarkProblem) -> dict[str, torch.Tensor]:
    """Per-image terms for the history: total, landmark, priors (all (B,)), reprojection error in px."""
    shape, expr, rot, t, focal = _decode(x, lay, p.focal0)
    cam = _points(mean, sb, eb, shape, expr) @ rot.transpose(-1, -2) + t[:, None, :]
    proj = project_points(cam, focal, p.principal)
    lan = 0.5 * landmark_residuals(proj, p.targets, p.weights, p.scale).pow(2).sum(-1)
    out = {
        "landmark": p.w_landmark * lan,
        "shape_prior": 0.5 * p.w_shape * shape.pow(2).sum(-1),
        "expression_prior": 0.5 * p.w_expr * expr.pow(2).sum(-1),
        "focal_prior": 0.5 * p.w_focal * (x[:, lay.focal] / max(p.focal_log_sigma, 1e-12)).pow(2)
        if p.focal_log_sigma > 0
        else torch.zeros_like(lan),
        "reprojection_px": reprojection_error(proj, p.targets),
    }
    out["total"] = out["landmark"] + out["shape_prior"] + out["expression_prior"] + out["focal_prior"]
    return out


def weak_perspective_pose(model_points: torch.Tensor, image_points: torch.Tensor, principal: torch.Tensor, focal: torch.Tensor):
    """Closed-form initial pose from a scaled-orthographic (weak perspective) camera.

    Solves [X 1] P^T = (u - cx, cy - v) by least squares for the 2x4 affine camera P, takes its first two
    rows as s * (r1, r2), and projects [r1; r2; r1 x r2] onto the rotations (SVD).

    Args:
        model_points: (B, N, 3) mm; image_points: (B, N, 2) px; principal: (B, 2); focal: (B,).
    Returns:
        R (B, 3, 3), translation unknowns (B, 3) as (tx/d, ty/d, log d).
    """
    b, n, _ = model_points.shape
    uv = torch.stack([image_points[..., 0] - principal[:, None, 0], principal[:, None, 1] - image_points[..., 1]], -1)
    a = torch.cat([model_points, torch.ones(b, n, 1, dtype=model_points.dtype, device=model_points.device)], -1)
    sol = torch.linalg.lstsq(a, uv).solution  # (B, 4, 2)
    r1, r2 = sol[:, :3, 0], sol[:, :3, 1]
    s = 0.5 * (r1.norm(dim=-1) + r2.norm(dim=-1))
    m = torch.stack([r1, r2, torch.cross(r1, r2, dim=-1) / s[:, None]], dim=1) / s[:, None, None]
    u_, _, vh = torch.linalg.svd(m)
    d = torch.ones(b, 3, dtype=m.dtype, device=m.device)
    d[:, 2] = torch.sign(torch.linalg.det(u_ @ vh))
    rot = u_ @ torch.diag_embed(d) @ vh
    depth = focal / s.clamp_min(1e-9)
    centre = sol[:, 3, :]  # projection of the model origin, relative to the principal point
    trans = torch.stack([centre[:, 0] / focal, centre[:, 1] / focal, torch.log(depth)], dim=-1)
    return rot, trans


def solve_landmarks(
    model: MorphableModel,
    targets: torch.Tensor,
    image_sizes: torch.Tensor,
    *,
    num_shape: int | None = None,
    num_expression: int | None = None,
    rotation: str = "axis_angle",
    weights: torch.Tensor | None = None,
    contour: str = "dynamic",
    focal_ratio: float = 1.6,
    focal_log_sigma: float = 0.5,
    w_landmark: float = 1.0,
    w_shape: float = 2e-6,
    w_expr: float = 2e-6,
    w_focal: float = 2e-6,
    iterations: int = 25,
    rigid_iterations: int = 6,
    optimizer: str = "lm",
    adam_lr: float = 0.02,
    adam_iterations: int = 400,
    progress: Callable[[int, dict], None] | None = None,
) -> LandmarkStageResult:
    """Fit shape, expression, pose and focal length of B images to their 68 landmarks.

    Args:
        model: the face model (its `landmark_indices` define the correspondence).
        targets: (B, 68, 2) landmark pixels (x right, y down).
        image_sizes: (B, 2) image (W, H) in pixels; the principal point is the image centre.
        weights: (68,) landmark weights (default: ones).
        contour: "dynamic", "static" or "off" (jaw points get zero weight).
        progress: called after every iteration with (iteration, history entry).
    Returns:
        `LandmarkStageResult` with float32 parameters on the targets' device.
    """
    device = targets.device
    if targets.ndim != 3 or targets.shape[1:] != (68, 2):
        raise ValueError(f"targets must be (B, 68, 2), got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all():
        raise FitError("landmarks contain NaN or infinite values")
    b = targets.shape[0]
    ks = model.num_shape if num_shape is None else min(num_shape, model.num_shape)
    ke = model.num_expression if num_expression is None else min(num_expression, model.num_expression)
    lay = _Layout(ks, ke, 3 if rotation == "axis_angle" else 6)
    dt = torch.float64
    targets = targets.to(dt)
    sizes = image_sizes.to(device=device, dtype=dt)
    principal = sizes / 2.0
    focal0 = focal_ratio * sizes.max(dim=-1).values
    w = torch.ones(68, dtype=dt, device=device) if weights is None else weights.to(device=device, dtype=dt).clone()
    if contour == "off":
        w[:17] = 0.0
    problem = LandmarkProblem(
        targets=targets, principal=principal, focal0=focal0, scale=face_size(targets), weights=w,
        w_landmark=w_landmark, w_shape=w_shape, w_expr=w_expr, w_focal=w_focal, focal_log_sigma=focal_log_sigma,
    )

    # Correspondence: fixed landmark vertices, plus candidate lines for the jaw when dynamic.
    lm = model.landmark_indices
    cands: ContourCandidates | None = build_contour_candidates(model) if contour == "dynamic" else None
    all_ids = np.unique(np.concatenate([lm, cands.vertex_ids])) if cands is not None else np.unique(lm)
    basis = _Basis(model, all_ids, ks, ke, device)
    lm_local = basis.lookup[torch.as_tensor(lm, device=device)]  # (68,)
    cand_local = basis.lookup[torch.as_tensor(cands.indices, device=device)] if cands is not None else None
    sides = torch.as_tensor(cands.sides, device=device) if cands is not None else None

    def correspondence(x: torch.Tensor) -> torch.Tensor:
        """(B, 68) local vertex ids for the current unknowns (jaw points on the outline)."""
        ids = lm_local[None].expand(b, -1).clone()
        if cand_local is None:
            return ids
        with torch.no_grad():
            shape, expr, rot, t, focal = _decode(x, lay, focal0)
            m, sb, eb = basis.gather(cand_local.reshape(-1))  # (17 C, 3[, K])
            pts = _shared_points(m, sb, eb, shape, expr)  # (B, 17 C, 3)
            cam = pts @ rot.transpose(-1, -2) + t[:, None, :]
            proj = project_points(cam, focal, principal).reshape(b, *cand_local.shape, 2)
            choice = select_contour(proj, rot, sides)  # (B, 17)
        ids[:, :17] = cand_local[None].expand(b, -1, -1).gather(2, choice[..., None])[..., 0]
        return ids

    # Initial unknowns: neutral face, weak-perspective pose from the inner landmarks, prior focal.
    x = torch.zeros(b, lay.size, dtype=dt, device=device)
    rot0, trans0 = weak_perspective_pose(
        basis.mean[lm_local[INNER]][None].expand(b, -1, -1), targets[:, INNER], principal, focal0
    )
    x[:, lay.rot] = matrix_to_axis_angle(rot0) if lay.rot_dim == 3 else matrix_to_rotation_6d(rot0)
    x[:, lay.trans] = trans0

    history: list[dict[str, list[float]]] = []

    def record(x_: torch.Tensor, ids: torch.Tensor, it: int) -> None:
        m, sb, eb = basis.gather(ids)
        parts = _energy_parts(x_, m, sb, eb, lay, problem)
        entry = {k: v.detach().cpu().tolist() for k, v in parts.items()}
        history.append(entry)
        if progress is not None:
            progress(it, entry)

    if optimizer == "lm":
        x, ids = _levenberg_marquardt(x, correspondence, basis, lay, problem, rigid_iterations, iterations, record)
    elif optimizer == "adam":
        x, ids = _adam(x, correspondence, basis, lay, problem, adam_iterations, adam_lr, record)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    if not torch.isfinite(x).all():
        raise FitError("the landmark fit diverged (non-finite parameters); check the landmarks")

    shape, expr, rot, t, focal = _decode(x, lay, focal0)
    params = FitParams(
        shape=shape.float(), expression=expr.float(), rotation=x[:, lay.rot].float(), translation=t.float(),
        focal=focal.float(), principal=principal.float(),
    )
    return LandmarkStageResult(params=params, vertex_ids=basis.ids[ids], history=history, iterations=len(history))


def _rotation_jacobian(rot_params: torch.Tensor) -> torch.Tensor:
    """(B, r) rotation unknowns -> (B, 3, 3, r) derivative of the rotation matrix (closed form for
    axis-angle, forward-mode autodiff for 6D)."""
    if rot_params.shape[-1] == 3:
        return axis_angle_jacobian(rot_params)
    return vmap(jacfwd(rotation_matrix))(rot_params)


def jacobian(x: torch.Tensor, mean, sb, eb, lay: _Layout, p: LandmarkProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals and their analytic Jacobian (chain rule through projection, rigid motion and the bases).

    Args:
        x: (B, P) unknowns; mean (B, 68, 3), sb (B, 68, 3, Ks), eb (B, 68, 3, Ke): bases of the vertices
            that correspond to the 68 landmarks.
    Returns:
        r (B, R) as `_residuals`, J (B, R, P).
    """
    b, n = mean.shape[:2]
    shape, expr, rot, t, focal = _decode(x, lay, p.focal0)
    pts = _points(mean, sb, eb, shape, expr)  # (B, N, 3)
    cam = pts @ rot.transpose(-1, -2) + t[:, None, :]
    depth = (-cam[..., 2]).clamp_min(1e-6)
    inv = 1.0 / depth
    f = focal[:, None]
    proj = project_points(cam, focal, p.principal)
    # d proj / d cam: (B, N, 2, 3)
    dpc = torch.zeros(b, n, 2, 3, dtype=x.dtype, device=x.device)
    dpc[..., 0, 0] = f * inv
    dpc[..., 0, 2] = f * cam[..., 0] * inv * inv
    dpc[..., 1, 1] = -f * inv
    dpc[..., 1, 2] = -f * cam[..., 1] * inv * inv
    # d cam / d unknowns (geometry): (B, N, 3, Ks + Ke + r + 3)
    d_shape = torch.einsum("bij,bnjk->bnik", rot, sb)
    d_expr = torch.einsum("bij,bnjk->bnik", rot, eb)
    d_rot = torch.einsum("bijr,bnj->bnir", _rotation_jacobian(x[:, lay.rot]), pts)
    tr = x[:, lay.trans]
    dep = torch.exp(tr[:, 2])
    zero = torch.zeros_like(dep)
    dt = torch.stack(
        [torch.stack([dep, zero, zero], -1), torch.stack([zero, dep, zero], -1), torch.stack([tr[:, 0] * dep, tr[:, 1] * dep, -dep], -1)],
        dim=-1,
    )  # (B, 3, 3): columns d t / d (alpha, beta, log d)
    d_trans = dt[:, None].expand(b, n, 3, 3)
    d_cam = torch.cat([d_shape, d_expr, d_rot, d_trans], dim=-1)
    d_proj = dpc @ d_cam  # (B, N, 2, P-1)
    d_focal = (proj - p.principal[:, None, :])[..., None]  # f = f0 exp(phi)
    d_proj = torch.cat([d_proj, d_focal], dim=-1)  # (B, N, 2, P)
    w = p.weights if p.weights.ndim == 2 else p.weights[None].expand(b, -1)
    norm = (2.0 * w / w.sum(-1, keepdim=True).clamp_min(1e-12)).sqrt() / p.scale[:, None] * math.sqrt(p.w_landmark)
    r_lm = ((proj - p.targets) * norm[..., None]).flatten(1)
    j_lm = (d_proj * norm[..., None, None]).flatten(1, 2)
    rs, js = [r_lm], [j_lm]
    eye = torch.eye(lay.size, dtype=x.dtype, device=x.device)
    if lay.ks:
        rs.append(math.sqrt(p.w_shape) * shape)
        js.append(math.sqrt(p.w_shape) * eye[lay.shape].expand(b, -1, -1))
    if lay.ke:
        rs.append(math.sqrt(p.w_expr) * expr)
        js.append(math.sqrt(p.w_expr) * eye[lay.expr].expand(b, -1, -1))
    if p.focal_log_sigma > 0:
        c = math.sqrt(p.w_focal) / p.focal_log_sigma
        rs.append(c * x[:, lay.focal : lay.focal + 1])
        js.append(c * eye[lay.focal : lay.focal + 1].expand(b, -1, -1))
    return torch.cat(rs, -1), torch.cat(js, 1)


def _levenberg_marquardt(x, correspondence, basis: _Basis, lay: _Layout, p: LandmarkProblem, rigid_its: int, its: int, record):
    """Batched LM: per-image damping lambda, Marquardt scaling diag(J^T J), one trial step per iteration.

    Stops early once no image improves its energy by more than a relative 1e-9 in an iteration.
    """
    b = x.shape[0]
    lam = torch.full((b,), 1e-3, dtype=x.dtype, device=x.device)
    rigid = lay.mask(shape=False, expr=False, pose=True, focal=False, device=x.device)
    full = lay.mask(shape=True, expr=True, pose=True, focal=p.focal_log_sigma > 0, device=x.device)
    ids = correspondence(x)
    record(x, ids, 0)
    for it in range(rigid_its + its):
        active = rigid if it < rigid_its else full
        ids = correspondence(x)
        m, sb, eb = basis.gather(ids)
        r, j = jacobian(x, m, sb, eb, lay, p)
        j = j[:, :, active]
        jtj = j.transpose(1, 2) @ j
        g = (j.transpose(1, 2) @ r[..., None])[..., 0]
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(1e-9)
        step = -torch.linalg.solve(jtj + torch.diag_embed(lam[:, None] * diag), g)
        trial = x.clone()
        trial[:, active] = x[:, active] + step
        cost = 0.5 * r.pow(2).sum(-1)
        args = (m, sb, eb, p.targets, p.principal, p.focal0, p.scale, p.weights, lay, p)
        cost_trial = 0.5 * _residuals(trial, *args).pow(2).sum(-1)
        accept = torch.isfinite(cost_trial) & (cost_trial < cost)
        x = torch.where(accept[:, None], trial, x)
        lam = torch.where(accept, lam / 3.0, lam * 4.0).clamp(1e-10, 1e10)
        record(x, ids, it + 1)
        gain = torch.where(accept, (cost - cost_trial) / cost.clamp_min(1e-30), torch.zeros_like(cost))
        if it >= rigid_its + 2 and bool((gain < 1e-9).all()) and bool((lam < 1e6).all()):
            break
    return x, correspondence(x)


def _adam(x, correspondence, basis: _Basis, lay: _Layout, p: LandmarkProblem, its: int, lr: float, record):
    """First-order baseline: Adam on the same energy (correspondence refreshed every iteration)."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    ids = correspondence(x.detach())
    record(x.detach(), ids, 0)
    for it in range(its):
        ids = correspondence(x.detach())
        m, sb, eb = basis.gather(ids)
        r = _residuals(x, m, sb, eb, p.targets, p.principal, p.focal0, p.scale, p.weights, lay, p)
        loss = 0.5 * r.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        record(x.detach(), ids, it + 1)
    return x.detach(), correspondence(x.detach())
