"""The landmark stage's energy as pure tensor functions: residuals, their analytic Jacobian, named terms.

Energy per image, a maximum-a-posteriori estimate (GANFit, Gecer et al. CVPR 2019, eq. 5-7, landmark and
prior terms, written with the noise model explicit so every weight is in standard units):

    E = w_lan/2 sum_i w_i ||P(R (mean + S a + X e)_i + t; f) - l_i||^2 / (sigma s)^2
        + w_a/2 ||a||^2 + w_e/2 ||e||^2 + w_f/2 ((log f - log f0) / sigma_f)^2

- l_i: detected landmarks (px); s: the face size (`losses.face_size`, px); sigma: the landmark error's
  standard deviation per coordinate as a fraction of the face size (detector noise plus the difference
  between the detector's points and the model's landmark vertices); w_i: per-landmark weights (1 =
  that sigma; 0.5 = twice its variance).
- a, e: shape and expression coefficients in standard deviations, so w_a = w_e = 1 is the model's own
  Gaussian prior; the balance does not change with the image size (errors are in face sizes) and adding
  landmarks adds evidence, as it should.

Unknowns per image, in this order: shape (Ks), expression (Ke), rotation (3 axis-angle or 6 for 6D),
translation as (tx/d, ty/d, log d) with depth d in mm, and log(f / f0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import jacfwd, vmap

from ..render.camera import axis_angle_jacobian, project_points, rotation_matrix
from .losses import landmark_residuals, reprojection_error


@dataclass(frozen=True)
class EnergyWeights:
    """Scalar weights of the landmark-stage energy (see the module docstring).

    landmark_sigma: landmark error std per coordinate, in face sizes; w_landmark, w_shape, w_expr,
    w_focal: multipliers of the terms (1 = the probabilistic weight); focal_log_sigma: std of log f
    (0 = focal fixed, the focal unknown is then not optimised).
    """

    landmark_sigma: float = 0.02
    w_landmark: float = 1.0
    w_shape: float = 1.0
    w_expr: float = 1.0
    w_focal: float = 1.0
    focal_log_sigma: float = 0.5


@dataclass(frozen=True)
class LandmarkProblem:
    """The per-image data of one solve, float64 on one device.

    targets: (B, N, 2) pixels; principal: (B, 2); focal0: (B,) prior focal in px; scale: (B,) face size;
    weights: (N,) or (B, N) landmark weights; energy: the scalar weights.
    """

    targets: torch.Tensor
    principal: torch.Tensor
    focal0: torch.Tensor
    scale: torch.Tensor
    weights: torch.Tensor
    energy: EnergyWeights

    def rows(self, rows: torch.Tensor) -> "LandmarkProblem":
        """The same problem restricted to images `rows` (b,) (ascending, as a solver's running images)."""
        if rows.numel() == self.targets.shape[0]:
            return self
        w = self.weights[rows] if self.weights.ndim == 2 else self.weights
        return LandmarkProblem(self.targets[rows], self.principal[rows], self.focal0[rows], self.scale[rows], w, self.energy)


class Layout:
    """Slices of the flat unknown vector (Ks shape, Ke expression, rotation, translation, log focal)."""

    def __init__(self, ks: int, ke: int, rot_dim: int) -> None:
        self.ks, self.ke, self.rot_dim = ks, ke, rot_dim
        self.shape = slice(0, ks)
        self.expr = slice(ks, ks + ke)
        self.rot = slice(ks + ke, ks + ke + rot_dim)
        self.trans = slice(ks + ke + rot_dim, ks + ke + rot_dim + 3)
        self.focal = ks + ke + rot_dim + 3
        self.size = self.focal + 1

    def mask(self, *, shape: bool, expr: bool, pose: bool, focal: bool, device) -> torch.Tensor:
        """(P,) bool: which unknowns are free."""
        m = torch.zeros(self.size, dtype=torch.bool, device=device)
        m[self.shape] = shape
        m[self.expr] = expr
        m[self.rot] = pose
        m[self.trans] = pose
        m[self.focal] = focal
        return m


def decode(x: torch.Tensor, lay: Layout, focal0: torch.Tensor):
    """(B, P) unknowns -> shape (B, Ks), expression (B, Ke), R (B, 3, 3), t (B, 3) mm, focal (B,) px."""
    shape, expr = x[..., lay.shape], x[..., lay.expr]
    rot = rotation_matrix(x[..., lay.rot])
    tr = x[..., lay.trans]
    depth = torch.exp(tr[..., 2])
    t = torch.stack([tr[..., 0] * depth, tr[..., 1] * depth, -depth], dim=-1)
    return shape, expr, rot, t, focal0 * torch.exp(x[..., lay.focal])


def model_points(mean, sb, eb, shape, expr):
    """mean (B, N, 3) + sb (B, N, 3, Ks) @ shape (B, Ks) + eb (B, N, 3, Ke) @ expr (B, Ke) -> (B, N, 3)."""
    return mean + torch.einsum("bnck,bk->bnc", sb, shape) + torch.einsum("bnck,bk->bnc", eb, expr)


def _landmark_scale(p: LandmarkProblem) -> torch.Tensor:
    """(B,) pixels per unit residual: sigma * face size / sqrt(w_landmark)."""
    return p.scale * p.energy.landmark_sigma / math.sqrt(max(p.energy.w_landmark, 1e-300))


@dataclass
class Posed:
    """The unknowns decoded and the landmark points posed: shape (B, Ks), expr (B, Ke), rot (B, 3, 3),
    focal (B,), pts (B, N, 3) model space, cam (B, N, 3) camera space, proj (B, N, 2) pixels."""

    shape: torch.Tensor
    expr: torch.Tensor
    rot: torch.Tensor
    focal: torch.Tensor
    pts: torch.Tensor
    cam: torch.Tensor
    proj: torch.Tensor


def pose(x: torch.Tensor, pts: torch.Tensor, lay: Layout, p: LandmarkProblem, decoded=None) -> Posed:
    """Pose model-space points pts (B, N, 3) (already deformed by x's shape and expression) with x's camera
    (`decoded`: `decode(x, lay, p.focal0)` when the caller has it)."""
    shape, expr, rot, t, focal = decode(x, lay, p.focal0) if decoded is None else decoded
    cam = pts @ rot.transpose(-1, -2) + t[:, None, :]
    return Posed(shape, expr, rot, focal, pts, cam, project_points(cam, focal, p.principal))


#: the named terms of the landmark stage's energy (and its history), in residual order
ENERGY_TERMS = ("landmark", "shape_prior", "expression_prior", "focal_prior")


@dataclass(frozen=True)
class PriorTerm:
    """One Gaussian prior of the energy: 0.5 ||scale * x[index]||^2 under `name` (a key of `ENERGY_TERMS`, the
    same name and formula as the joint stage's term, `losses.gaussian_prior`, times its weight)."""

    name: str
    index: slice
    scale: float

    @property
    def size(self) -> int:
        return self.index.stop - self.index.start


def prior_terms(lay: Layout, e: EnergyWeights) -> list[PriorTerm]:
    """The priors of the energy, in residual order; the one place their weights are written: shape and
    expression 0.5 w ||c||^2 in std units (GANFit eq. 6), focal 0.5 w ((log f - log f0) / sigma_f)^2. The
    residuals, their Jacobian, the normal equations and the history's named terms all read them from here."""
    out = []
    if lay.ks:
        out.append(PriorTerm("shape_prior", lay.shape, math.sqrt(e.w_shape)))
    if lay.ke:
        out.append(PriorTerm("expression_prior", lay.expr, math.sqrt(e.w_expr)))
    if e.focal_log_sigma > 0:
        out.append(PriorTerm("focal_prior", slice(lay.focal, lay.focal + 1), math.sqrt(e.w_focal) / e.focal_log_sigma))
    return out


def _prior_residuals(x, lay: Layout, p: LandmarkProblem) -> list[torch.Tensor]:
    return [t.scale * x[:, t.index] for t in prior_terms(lay, p.energy)]


def residual_vector(x: torch.Tensor, posed: Posed, lay: Layout, p: LandmarkProblem) -> torch.Tensor:
    """(B, R) residuals [landmarks (2N), shape (Ks), expression (Ke), focal (0 or 1)], E = 0.5 ||r||^2."""
    r_lm = landmark_residuals(posed.proj, p.targets, p.weights, _landmark_scale(p))
    return torch.cat([r_lm, *_prior_residuals(x, lay, p)], dim=-1)


def terms_from_residuals(r: torch.Tensor, posed: Posed, lay: Layout, p: LandmarkProblem) -> dict[str, torch.Tensor]:
    """Named (B,) terms for the history from a residual vector of `residual_vector`: landmark,
    shape_prior, expression_prior, focal_prior, total, and reprojection_px (mean landmark distance in
    pixels, unweighted; not part of the energy)."""
    priors = prior_terms(lay, p.energy)
    names = ["landmark"] + [t.name for t in priors]
    sizes = [p.targets.shape[1] * 2] + [t.size for t in priors]
    group = torch.zeros(r.shape[1], len(names), dtype=r.dtype, device=r.device)  # residual -> term indicator
    start = 0
    for k, size in enumerate(sizes):
        group[start : start + size, k] = 0.5
        start += size
    terms = (r * r) @ group  # (B, terms)
    zero = r.new_zeros(r.shape[0])
    found = dict(zip(names, terms.unbind(-1)))
    out = {name: found.get(name, zero) for name in ENERGY_TERMS}
    out["total"] = terms.sum(-1)
    out["reprojection_px"] = reprojection_error(posed.proj, p.targets)
    return out


def landmark_jacobian(x: torch.Tensor, posed: Posed, coef_basis: torch.Tensor, lay: Layout,
                      p: LandmarkProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmark residuals and their analytic Jacobian (chain rule through projection, rigid motion and the
    bases) at posed points whose shape and expression bases are coef_basis (B, N, 3, Ks + Ke).

    Returns:
        r (B, 2N), J (B, 2N, P): the landmark rows of `residual_vector` and of the full Jacobian.
    """
    b, n = posed.pts.shape[:2]
    cam, rot = posed.cam, posed.rot
    inv = 1.0 / (-cam[..., 2]).clamp_min(1e-6)
    f = posed.focal[:, None]
    # d proj / d cam (B, N, 2, 3), then through the rotation: d proj / d (model point) (B, N, 2, 3)
    fi = f * inv
    zero = torch.zeros_like(fi)
    dpc = torch.stack([fi, zero, fi * cam[..., 0] * inv, zero, -fi, -fi * cam[..., 1] * inv], -1).view(b, n, 2, 3)
    k = lay.ks + lay.ke
    jac = torch.empty(b, n, 2, lay.size, dtype=x.dtype, device=x.device)
    jac[..., :k] = (dpc @ rot[:, None]) @ coef_basis
    if lay.rot_dim == 3:  # d(R X)/dv = -[R X]x J_l(v), J_l the left Jacobian of SO(3)
        rx = posed.pts @ rot.transpose(-1, -2)
        jac[..., lay.rot] = -(dpc @ _skew(rx)) @ _left_jacobian(x[:, lay.rot])[:, None]
    else:
        d_rot = torch.einsum("bijr,bnj->bnir", _rotation_jacobian(x[:, lay.rot], rot), posed.pts)  # (B, N, 3, r)
        jac[..., lay.rot] = dpc @ d_rot
    tr = x[:, lay.trans]
    dep = torch.exp(tr[:, 2])
    z = torch.zeros_like(dep)
    dt = torch.stack([dep, z, tr[:, 0] * dep, z, dep, tr[:, 1] * dep, z, z, -dep], -1).view(b, 3, 3)
    jac[..., lay.trans] = dpc @ dt[:, None]  # dt: columns d t / d (alpha, beta, log d)
    jac[..., lay.focal] = posed.proj - p.principal[:, None, :]  # f = f0 exp(phi)
    w = p.weights if p.weights.ndim == 2 else p.weights[None].expand(b, -1)
    norm = (w.sqrt() / _landmark_scale(p)[:, None])[..., None]  # (B, N, 1)
    r = ((posed.proj - p.targets) * norm).flatten(1)
    return r, (jac * norm[..., None]).flatten(1, 2)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices [v]x."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).view(*v.shape, 3)


def _left_jacobian(v: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle -> (B, 3, 3) left Jacobian of SO(3), I + (1 - cos t)/t^2 [v]x + (t - sin t)/t^3 [v]x^2,
    so that exp([v + d]x) = exp([J_l(v) d]x) exp([v]x) to first order (Barfoot, "State Estimation for
    Robotics", 2017, eq. 7.77)."""
    t2 = (v * v).sum(-1)[:, None, None]
    small = t2 < 1e-8
    t2s = torch.where(small, torch.ones_like(t2), t2)
    t = t2s.sqrt()
    a = torch.where(small, 0.5 - t2 / 24.0, (1.0 - torch.cos(t)) / t2s)
    c = torch.where(small, 1.0 / 6.0 - t2 / 120.0, (t - torch.sin(t)) / (t2s * t))
    k = _skew(v)
    return torch.eye(3, dtype=v.dtype, device=v.device) + a * k + c * (k @ k)


def prior_scales(lay: Layout, e: EnergyWeights, dtype, device) -> torch.Tensor:
    """(P,) d with prior residuals d * x (0 for the pose unknowns, which have no prior)."""
    d = torch.zeros(lay.size, dtype=dtype, device=device)
    for t in prior_terms(lay, e):
        d[t.index] = t.scale
    return d


def normal_equations(x: torch.Tensor, posed: Posed, coef_basis: torch.Tensor, lay: Layout, p: LandmarkProblem,
                     free: torch.Tensor, scales: torch.Tensor | None = None):
    """Gauss-Newton normal equations over the `free` (P,) unknowns without forming the prior rows (their
    Jacobian is diagonal; `scales`: `prior_scales`, when the caller keeps them): energy (B,),
    J^T J (B, F, F), J^T r (B, F)."""
    r, jac = landmark_jacobian(x, posed, coef_basis, lay, p)
    jf = jac[:, :, free]
    d = prior_scales(lay, p.energy, x.dtype, x.device) if scales is None else scales
    prior_r = d * x
    jtj = jf.transpose(1, 2) @ jf
    jtj = jtj + torch.diag_embed((d * d)[free].expand(x.shape[0], -1))
    grad = (jf.transpose(1, 2) @ r[..., None])[..., 0] + (d * prior_r)[:, free]
    energy = 0.5 * (r.pow(2).sum(-1) + prior_r.pow(2).sum(-1))
    return energy, jtj, grad


def jacobian_from(x: torch.Tensor, posed: Posed, sb: torch.Tensor, eb: torch.Tensor, lay: Layout,
                  p: LandmarkProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals and their full analytic Jacobian at posed points with bases sb (B, N, 3, Ks), eb (B, N, 3, Ke).

    Returns:
        r (B, R) as `residual_vector`, J (B, R, P).
    """
    r_lm, j_lm = landmark_jacobian(x, posed, torch.cat([sb, eb], dim=-1), lay, p)
    r = torch.cat([r_lm, *_prior_residuals(x, lay, p)], -1)
    return r, torch.cat([j_lm, prior_jacobian(lay, p.energy, x.dtype, x.device).expand(x.shape[0], -1, -1)], 1)


def prior_jacobian(lay: Layout, e: EnergyWeights, dtype, device) -> torch.Tensor:
    """(R_prior, P) constant Jacobian of the prior residuals (shape, expression, focal)."""
    eye = torch.eye(lay.size, dtype=dtype, device=device)
    rows = [t.scale * eye[t.index] for t in prior_terms(lay, e)]
    return torch.cat(rows, 0) if rows else eye[:0]


def residuals(x, mean, sb, eb, lay: Layout, p: LandmarkProblem) -> torch.Tensor:
    """Residuals (B, R) with E = 0.5 ||r||^2, for unknowns x (B, P) and the bases of the vertices that
    correspond to the N landmarks: mean (B, N, 3), sb (B, N, 3, Ks), eb (B, N, 3, Ke)."""
    posed = pose(x, model_points(mean, sb, eb, x[:, lay.shape], x[:, lay.expr]), lay, p)
    return residual_vector(x, posed, lay, p)


def energy_terms(x, mean, sb, eb, lay: Layout, p: LandmarkProblem) -> dict[str, torch.Tensor]:
    """Named (B,) terms (see `terms_from_residuals`); arguments as `residuals`."""
    posed = pose(x, model_points(mean, sb, eb, x[:, lay.shape], x[:, lay.expr]), lay, p)
    return terms_from_residuals(residual_vector(x, posed, lay, p), posed, lay, p)


def jacobian(x: torch.Tensor, mean, sb, eb, lay: Layout, p: LandmarkProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals and their analytic Jacobian; arguments as `residuals`. Returns r (B, R), J (B, R, P)."""
    posed = pose(x, model_points(mean, sb, eb, x[:, lay.shape], x[:, lay.expr]), lay, p)
    return jacobian_from(x, posed, sb, eb, lay, p)


def _rotation_jacobian(rot_params: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """(B, r) rotation unknowns and their matrices (B, 3, 3) -> (B, 3, 3, r) derivative of the rotation
    matrix (closed form for axis-angle, Gallego & Yezzi 2015; forward-mode autodiff for 6D)."""
    if rot_params.shape[-1] == 3:
        return axis_angle_jacobian(rot_params, rot)
    return vmap(jacfwd(rotation_matrix))(rot_params)


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
