"""The landmark stage: shape, expression, pose and focal length from 68 landmarks.

The energy (`landmark_energy`) is a small non-linear least-squares problem per image (~57 unknowns,
~190 residuals), solved by Levenberg-Marquardt (`solvers.lm`) on the analytic Jacobian, every image of a
batch on its own (its own damping and its own stopping rule). A closed-form weak-perspective pose and a
rigid phase (pose only) come first. `optimizer="adam"` runs the same energy with Adam for comparison.

Landmark conventions (which model point a detected landmark is):
- "2d" (dlib, 300-W, 2D-FAN): the 17 jaw-line points lie on the face's visible outline, which slides over
  the surface as the head turns; their vertices are re-chosen along horizontal bands every iteration
  (`contour`, Zhu et al. CVPR 2015);
- "3d" (AFLW2000-3D, 3D-FAN): every point, the jaw included, is the projection of a fixed point of the
  face, also where it is hidden; the jaw uses the model's fixed landmark vertices.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from .._threads import torch_threads
from ..errors import FitError
from ..model.morphable import MorphableModel
from ..render.camera import matrix_to_axis_angle, matrix_to_rotation_6d, project_points
from ..model.landmark_scheme import IBUG68, LandmarkScheme
from .contour import build_contour_candidates, select_contour
from .landmark_energy import (
    ENERGY_TERMS, EnergyWeights, LandmarkProblem, Layout, Posed, decode, jacobian_from, normal_equations, prior_scales,
    residual_vector, terms_from_residuals,
    weak_perspective_pose,
)
from .history import merge_histories
from .losses import face_size
from .params import FitParams
from .solvers.lm import LMSettings, levenberg_marquardt

CONVENTIONS = ("2d", "3d")
#: An accepted step that lowers the energy (a negative log-likelihood) by less than this has converged: the
#: parameters then move by a small fraction of their uncertainty. Without it, the sliding jaw line (whose
#: vertices change between steps, so the energy is not smooth) can creep on with gains of 1e-5 for dozens
#: of iterations.
ENERGY_ATOL = 1e-3


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run a CPU solve on one thread. Its tensors are tiny (~10^4 elements): torch's intra-op threads only
    add synchronisation, and on a busy machine waiting for a second thread made the stage 7x slower
    (86 ms on one thread, 660 ms on two, measured 2026-12-03 on this project's 2-core CPU)."""
    with torch_threads(1 if device.type == "cpu" else None):
        yield


@dataclass
class LandmarkStageResult:
    """Solver output.

    params: fitted parameters (float32); vertex_ids: (B, 68) model vertex of each landmark at the end
    (contour resolved); history: one dict per iteration, name -> B values (energy terms, reprojection_px,
    and the solver's ``accepted`` and ``damping``); stop_reason: per image why the solve ended
    ("converged", "damping_bound", "iteration_limit"); iterations: per image, rigid and full phases.
    """

    params: FitParams
    vertex_ids: torch.Tensor
    history: list[dict[str, list[float]]] = field(default_factory=list)
    stop_reason: list[str] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)

    @staticmethod
    def merge(parts: list[tuple[list[int], "LandmarkStageResult"]], batch: int) -> "LandmarkStageResult":
        """One result for `batch` images from results of disjoint groups (image indices, result). A group's
        shorter history is extended with its last entry (its images had stopped)."""
        if len(parts) == 1 and parts[0][0] == list(range(batch)):
            return parts[0][1]
        order = torch.as_tensor([i for idx, _ in parts for i in idx])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch)
        cat = lambda name: torch.cat([getattr(r.params, name) for _, r in parts])[inverse.to(parts[0][1].params.shape.device)]  # noqa: E731
        params = FitParams(**{k: cat(k) for k in ("shape", "expression", "rotation", "translation", "focal", "principal")})
        ids = torch.cat([r.vertex_ids for _, r in parts])[inverse.to(parts[0][1].vertex_ids.device)]
        history = merge_histories([(idx, r.history) for idx, r in parts], batch)
        reasons, iters = [""] * batch, [0] * batch
        for idx, r in parts:
            for j, i in enumerate(idx):
                reasons[i], iters[i] = r.stop_reason[j], r.iterations[j]
        return LandmarkStageResult(params=params, vertex_ids=ids, history=history, stop_reason=reasons, iterations=iters)


class _Basis:
    """Mean and std-scaled bases of the vertices the landmark stage touches, as (N, 3, 1 + Ks + Ke) float64."""

    def __init__(self, model: MorphableModel, vertex_ids: np.ndarray, ks: int, ke: int, device) -> None:
        self.ids = torch.as_tensor(vertex_ids, device=device)
        lookup = -np.ones(model.num_vertices, dtype=np.int64)
        lookup[vertex_ids] = np.arange(len(vertex_ids))
        self.lookup = torch.as_tensor(lookup, device=device)
        dt = torch.float64
        mean = torch.as_tensor(model.mean[vertex_ids], device=device, dtype=dt)
        shape = torch.as_tensor(model.shape_basis[vertex_ids, :, :ks] * model.shape_std[:ks], device=device, dtype=dt)
        expr = torch.as_tensor(model.expression_basis[vertex_ids, :, :ke] * model.expression_std[:ke], device=device, dtype=dt)
        self.ks = ks
        self.packed = torch.cat([mean[..., None], shape, expr], dim=-1)
        self.coef_packed = torch.cat([shape, expr], dim=-1)  # (N, 3, Ks + Ke)
        n = len(vertex_ids)
        self.mean_flat = mean.reshape(1, n * 3)  # (1, 3N)
        self.coef_flat_t = torch.cat([shape, expr], dim=-1).reshape(n * 3, ks + ke).T.contiguous()  # (Ks + Ke, 3N)

    def points(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(B, Ks + Ke) shape and expression coefficients -> (B, N, 3) every basis vertex, model space."""
        return (self.mean_flat + coefficients @ self.coef_flat_t).reshape(coefficients.shape[0], -1, 3)

    def gather(self, local: torch.Tensor):
        """(...) local ids -> mean (..., 3), shape basis (..., 3, Ks), expression basis (..., 3, Ke)."""
        g = self.packed[local]
        return g[..., 0], g[..., 1 : 1 + self.ks], g[..., 1 + self.ks :]

    def coefficient_basis(self, local: torch.Tensor) -> torch.Tensor:
        """(...) local ids -> (..., 3, Ks + Ke) shape and expression bases."""
        return self.coef_packed[local]


class LandmarkStage:
    """The landmark stage for one face model, with everything derived from the model computed once.

    Args:
        model: the face model.
        num_shape / num_expression: components to fit (None = all the model has).
        rotation: "axis_angle" or "6d".
        convention: "2d" or "3d" (see the module docstring).
        contour: jaw-line correspondence; None = the convention's ("dynamic" for 2d, "static" for 3d);
            "off" ignores the jaw line.
        landmark_vertices: (N,) vertex ids replacing the model's landmark vertices (a calibrated table).
        scheme: the landmark scheme (`ganfit.model.landmark_scheme`): how many points, which are the contour
            and which of it stays fixed; the iBUG-68 default is the only one with detectors and tables today.
        device: where to solve.
    """

    def __init__(self, model: MorphableModel, *, num_shape: int | None = None, num_expression: int | None = None,
                 rotation: str = "axis_angle", convention: str = "2d", contour: str | None = None,
                 landmark_vertices: np.ndarray | None = None, device: str | torch.device = "cpu",
                 scheme: LandmarkScheme = IBUG68) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"landmark convention must be one of {CONVENTIONS}, got {convention!r}")
        contour = contour or ("dynamic" if convention == "2d" else "static")
        if contour not in ("dynamic", "static", "off"):
            raise ValueError(f"contour must be dynamic, static or off, got {contour!r}")
        if convention == "3d" and contour == "dynamic":
            raise ValueError("the 3d landmark convention puts the jaw on fixed vertices: use contour static or off")
        if rotation not in ("axis_angle", "6d"):
            raise ValueError(f"rotation must be axis_angle or 6d, got {rotation!r}")
        self.model, self.convention, self.contour, self.scheme = model, convention, contour, scheme
        self.device = torch.device(device)
        ks = model.num_shape if num_shape is None else min(num_shape, model.num_shape)
        ke = model.num_expression if num_expression is None else min(num_expression, model.num_expression)
        self.layout = Layout(ks, ke, 3 if rotation == "axis_angle" else 6)
        lm = np.asarray(model.landmark_indices if landmark_vertices is None else landmark_vertices, dtype=np.int64)
        n = scheme.num_points
        if lm.shape != (n,) or lm.min() < 0 or lm.max() >= model.num_vertices:
            raise ValueError(f"landmark_vertices must be {n} vertex ids of the model ({scheme.name}), got shape {lm.shape}")
        cands = build_contour_candidates(model, scheme=self.scheme) if contour == "dynamic" else None
        self._contour_points = None if cands is None else list(cands.points)
        all_ids = np.unique(np.concatenate([lm, cands.vertex_ids])) if cands is not None else np.unique(lm)
        self.basis = _Basis(model, all_ids, ks, ke, self.device)
        self.lm_local = self.basis.lookup[torch.as_tensor(lm, device=self.device)]
        self._cand_local = None if cands is None else self.basis.lookup[torch.as_tensor(cands.indices, device=self.device)]
        self._sides = None if cands is None else torch.as_tensor(cands.sides, device=self.device)
        self._init_points = list(self.scheme.inner) if convention == "2d" else list(range(self.scheme.num_points))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, x: torch.Tensor, p: LandmarkProblem, with_jacobian: bool = False):
        """Residuals at unknowns x (b, P) with the correspondence of x (jaw points on the outline when
        dynamic), and optionally their Jacobian.

        Returns:
            r (b, R), J (b, R, P) or None, local vertex ids (b, 68), `Posed` landmark points.
        """
        lay, b = self.layout, x.shape[0]
        shape, expr, rot, t, focal = decode(x, lay, p.focal0)
        every = self.basis.points(x[:, : lay.ks + lay.ke])  # (b, N, 3): all landmark and contour vertices
        cam_every = every @ rot.transpose(-1, -2) + t[:, None, :]
        proj_every = project_points(cam_every, focal, p.principal)
        ids = self.lm_local[None].expand(b, -1)
        if self._cand_local is not None:
            proj = proj_every[:, self._cand_local.reshape(-1)].reshape(b, *self._cand_local.shape, 2)
            choice = select_contour(proj, rot, self._sides)  # (b, 17)
            ids = ids.clone()
            ids[:, self._contour_points] = self._cand_local[None].expand(b, -1, -1).gather(2, choice[..., None])[..., 0]
        take = lambda a: a.gather(1, ids[..., None].expand(-1, -1, a.shape[-1]))  # noqa: E731
        posed = Posed(shape, expr, rot, focal, take(every), take(cam_every), take(proj_every))
        if not with_jacobian:
            return residual_vector(x, posed, lay, p), None, ids, posed
        _, sb, eb = self.basis.gather(ids)
        r, jac = jacobian_from(x, posed, sb, eb, lay, p)
        return r, jac, ids, posed

    def correspondence(self, x: torch.Tensor, p: LandmarkProblem) -> torch.Tensor:
        """(b, 68) local vertex ids for unknowns x (b, P)."""
        with torch.no_grad():
            return self.evaluate(x, p)[2]

    # ------------------------------------------------------------------ solve
    def problem(self, targets: torch.Tensor, image_sizes: torch.Tensor, weights: torch.Tensor | None,
                energy: EnergyWeights, focal_ratio: float) -> LandmarkProblem:
        """The per-image tensors of a solve (float64 on the stage's device)."""
        dev, dt = self.device, torch.float64
        targets = targets.to(device=dev, dtype=dt)
        sizes = image_sizes.to(device=dev, dtype=dt)
        w = torch.ones(68, dtype=dt, device=dev) if weights is None else weights.to(device=dev, dtype=dt).clone()
        if w.shape[-1] != 68 or (w < 0).any():
            raise ValueError(f"landmark weights must be (68,) or (B, 68) and >= 0, got {tuple(w.shape)}")
        if self.contour == "off":
            w[..., list(self.scheme.contour)] = 0.0
        return LandmarkProblem(targets=targets, principal=sizes / 2.0, focal0=focal_ratio * sizes.max(dim=-1).values,
                               scale=face_size(targets), weights=w, energy=energy)

    def initial_unknowns(self, p: LandmarkProblem) -> torch.Tensor:
        """(B, P): mean face, weak-perspective pose from the fixed landmark points, prior focal."""
        lay, b = self.layout, p.targets.shape[0]
        x = torch.zeros(b, lay.size, dtype=torch.float64, device=self.device)
        pts = self.basis.gather(self.lm_local[self._init_points])[0][None].expand(b, -1, -1)
        rot0, trans0 = weak_perspective_pose(pts, p.targets[:, self._init_points], p.principal, p.focal0)
        x[:, lay.rot] = matrix_to_axis_angle(rot0) if lay.rot_dim == 3 else matrix_to_rotation_6d(rot0)
        x[:, lay.trans] = trans0
        return x

    def solve(self, targets: torch.Tensor, image_sizes: torch.Tensor, *, weights: torch.Tensor | None = None,
              energy: EnergyWeights = EnergyWeights(), focal_ratio: float = 1.6, iterations: int = 50,
              rigid_iterations: int = 2, ftol: float = 1e-6, optimizer: str = "lm", adam_lr: float = 0.02,
              adam_iterations: int = 400, progress: Callable[[int, dict], None] | None = None) -> LandmarkStageResult:
        """Fit B images to their landmarks.

        Args:
            targets: (B, 68, 2) landmark pixels (x right, y down).
            image_sizes: (B, 2) image (W, H) in pixels; the principal point is the image centre.
            weights: (68,) or (B, 68) landmark weights (0 hides a landmark; default ones).
            energy: the energy's weights; focal_ratio: prior focal / longer image side.
            iterations / rigid_iterations: the most LM iterations of the full and of the rigid phase
                (each image stops earlier by its own criterion, see `solvers.lm`); ftol: relative decrease
                below which an accepted step ends the solve.
            progress: called after every iteration with (iteration, {term: (B,) tensor}) (the energy terms and
                reprojection_px; the full history, with the solver's state, is in the result).
        On the CPU the solve runs on one thread (see `_one_thread`).
        """
        with _one_thread(self.device):
            return self._solve(targets, image_sizes, weights, energy, focal_ratio, iterations, rigid_iterations, ftol,
                               optimizer, adam_lr, adam_iterations, progress)

    def _solve(self, targets, image_sizes, weights, energy, focal_ratio, iterations, rigid_iterations, ftol,
               optimizer, adam_lr, adam_iterations, progress) -> LandmarkStageResult:
        if targets.ndim != 3 or targets.shape[1:] != (68, 2):
            raise ValueError(f"targets must be (B, 68, 2), got {tuple(targets.shape)}")
        if not torch.isfinite(targets).all():
            raise FitError("landmarks contain NaN or infinite values")
        p = self.problem(targets, image_sizes, weights, energy, focal_ratio)
        lay, dev = self.layout, self.device
        x = self.initial_unknowns(p)
        recorder = _Recorder(self, p, progress)
        recorder(x, None)
        if optimizer == "lm":
            problem = _LMProblem(self, p)
            recorder.problem = problem
            rigid = lay.mask(shape=False, expr=False, pose=True, focal=False, device=dev)
            full = lay.mask(shape=True, expr=True, pose=True, focal=energy.focal_log_sigma > 0, device=dev)
            x, rep_rigid = levenberg_marquardt(problem, x, rigid, LMSettings(max_iterations=rigid_iterations, ftol=1e-6, atol=ENERGY_ATOL),
                                               recorder) if rigid_iterations else (x, None)
            x, report = levenberg_marquardt(problem, x, full, LMSettings(max_iterations=iterations, ftol=ftol, atol=ENERGY_ATOL),
                                           recorder)
            reasons = report.stop_reason
            iters = [a + b for a, b in zip(rep_rigid.iterations if rep_rigid else [0] * len(reasons), report.iterations)]
        elif optimizer == "adam":
            x = self._adam(x, p, adam_iterations, adam_lr, recorder)
            reasons, iters = ["iteration_limit"] * x.shape[0], [adam_iterations] * x.shape[0]
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        if not torch.isfinite(x).all():
            raise FitError("the landmark fit diverged (non-finite parameters); check the landmarks")
        shape, expr, rot, t, focal = decode(x, lay, p.focal0)
        params = FitParams(shape=shape.float(), expression=expr.float(), rotation=x[:, lay.rot].float(),
                           translation=t.float(), focal=focal.float(), principal=p.principal.float())
        ids = self.basis.ids[self.correspondence(x, p)]
        return LandmarkStageResult(params=params, vertex_ids=ids, history=recorder.history(), stop_reason=reasons, iterations=iters)

    def _adam(self, x, p: LandmarkProblem, its: int, lr: float, record) -> torch.Tensor:
        """First-order baseline: Adam on the same energy (correspondence refreshed every iteration)."""
        x = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(its):
            loss = 0.5 * self.evaluate(x, p)[0].pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            record(x.detach(), None)
        return x.detach()


class _LMProblem:
    """`solvers.lm.LeastSquaresProblem` of a landmark stage: the energy with the correspondence of x.
    Keeps the named terms of its last `linearize` call (the trial step), so the history needs no extra
    evaluation."""

    def __init__(self, stage: LandmarkStage, p: LandmarkProblem) -> None:
        self.stage, self.p = stage, p
        self.trial: tuple[torch.Tensor, torch.Tensor] | None = None
        self.scales = prior_scales(stage.layout, p.energy, p.targets.dtype, p.targets.device)

    def linearize(self, x, rows):
        p = self.p.rows(rows)
        r, jac, _, posed = self.stage.evaluate(x, p, with_jacobian=True)
        self.trial = (rows, _stacked_terms(r, posed, self.stage.layout, p))
        return r, jac

    def normal_equations(self, x, rows, free):
        """As `linearize`, but straight to J^T J and J^T r (the prior rows are diagonal and never formed)."""
        p = self.p.rows(rows)
        r, _, ids, posed = self.stage.evaluate(x, p)
        self.trial = (rows, _stacked_terms(r, posed, self.stage.layout, p))
        return normal_equations(x, posed, self.stage.basis.coefficient_basis(ids), self.stage.layout, p, free, self.scales)


TERMS = (*ENERGY_TERMS, "total", "reprojection_px")


def _stacked_terms(r, posed, lay, p) -> torch.Tensor:
    """(b, len(TERMS)) history terms of residuals r."""
    terms = terms_from_residuals(r, posed, lay, p)
    return torch.stack([terms[k] for k in TERMS], -1)


class _Recorder:
    """One history entry per iteration: the energy terms of every image and the solver's state, kept as
    tensors and turned into lists once, at the end (`history`)."""

    def __init__(self, stage: LandmarkStage, p: LandmarkProblem, progress) -> None:
        self.stage, self.p, self.progress = stage, p, progress
        self.rows: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None  # (B, len(TERMS))
        self.problem: _LMProblem | None = None

    def __call__(self, x: torch.Tensor, info: dict[str, torch.Tensor] | None) -> None:
        trial = self.problem.trial if self.problem is not None else None
        if self.last is None or info is None or trial is None:
            r, _, _, posed = self.stage.evaluate(x, self.p)
            self.last = _stacked_terms(r, posed, self.stage.layout, self.p)
        else:  # the terms at the accepted trial steps; the others are unchanged
            rows, terms = trial
            ok = info["accepted"][rows] > 0
            self.last = self.last.clone()
            self.last[rows] = torch.where(ok[:, None], terms, self.last[rows])
        zeros = torch.zeros_like(self.last[:, :1])
        state = torch.cat([info["accepted"][:, None], info["damping"][:, None]], -1) if info is not None else zeros.expand(-1, 2)
        self.rows.append(torch.cat([self.last, state], -1))
        if self.progress is not None:
            self.progress(len(self.rows) - 1, dict(zip(TERMS, self.last.detach().cpu().unbind(-1))))

    def history(self) -> list[dict[str, list[float]]]:
        names = (*TERMS, "accepted", "damping")
        table = torch.stack(self.rows).detach().cpu().transpose(1, 2).tolist()  # (T, names, B)
        return [dict(zip(names, entry)) for entry in table]


def solve_landmarks(model: MorphableModel, targets: torch.Tensor, image_sizes: torch.Tensor, *,
                    num_shape: int | None = None, num_expression: int | None = None, rotation: str = "axis_angle",
                    convention: str = "2d", contour: str | None = None, landmark_vertices: np.ndarray | None = None,
                    landmark_sigma: float = EnergyWeights.landmark_sigma, focal_log_sigma: float = 0.5,
                    w_landmark: float = 1.0, w_shape: float = 1.0, w_expr: float = 1.0, w_focal: float = 1.0,
                    **solve_options) -> LandmarkStageResult:
    """One-call landmark stage: `LandmarkStage(model, ...)` on the targets' device, then `solve`.

    Args:
        model, num_shape, num_expression, rotation, convention, contour, landmark_vertices: as `LandmarkStage`.
        targets: (B, 68, 2) pixels; image_sizes: (B, 2) (W, H).
        landmark_sigma, focal_log_sigma, w_*: the energy's weights (`EnergyWeights`).
        solve_options: weights, focal_ratio, iterations, rigid_iterations, ftol, optimizer, adam_lr,
            adam_iterations, progress (see `LandmarkStage.solve`).
    Returns:
        `LandmarkStageResult` with float32 parameters on the targets' device.
    """
    stage = LandmarkStage(model, num_shape=num_shape, num_expression=num_expression, rotation=rotation,
                          convention=convention, contour=contour, landmark_vertices=landmark_vertices, device=targets.device)
    energy = EnergyWeights(landmark_sigma=landmark_sigma, w_landmark=w_landmark, w_shape=w_shape, w_expr=w_expr,
                           w_focal=w_focal, focal_log_sigma=focal_log_sigma)
    return stage.solve(targets, image_sizes, energy=energy, **solve_options)
