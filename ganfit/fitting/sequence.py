"""Video frames with one identity (issue 13): each frame's expression and pose from its landmarks, with the
person's shape and the camera's focal length fixed, warm-started from the frame before and held to it by a
temporal smoothness term.

Per frame t, the landmark stage's energy (`landmark_energy`) over expression and pose only, plus

    E_temporal = w/2 sum_k ((x_t,k - x_{t-1},k) / sigma_k)^2

over the same unknowns: a Gaussian prior centred on the previous frame (sigma per unknown in
`TemporalSmoothing`, per 1/30 s and scaled by the square root of the time between the frames, as a random
walk's). Frames without a face are skipped and the next one with a face starts from the last fitted frame.
The solve is the landmark stage's Levenberg-Marquardt (`solvers.lm`), one frame at a time (~10 iterations
of ~2.5 ms on a CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import FitError
from .landmark_energy import EnergyWeights, LandmarkProblem, decode, normal_equations, prior_scales, terms_from_residuals
from .landmark_shared import encode_unknowns
from .landmark_stage import ENERGY_ATOL, LandmarkStage
from .losses import face_size
from .params import FitParams
from .solvers.lm import LMSettings, levenberg_marquardt

__all__ = ["SequenceFit", "TemporalSmoothing", "fit_sequence", "unknowns_to_params"]


@dataclass(frozen=True)
class TemporalSmoothing:
    """The temporal term's standard deviations of the change between two frames 1/30 s apart.

    weight: multiplier of the term (0: frames fitted on their own, warm-started only).
    expression: std units of the expression coefficients. rotation: radians (axis-angle).
    position: fraction of the depth sideways (x/d, y/d); depth: change of log depth.
    """

    weight: float = 1.0
    expression: float = 0.3
    rotation: float = 0.03
    position: float = 0.005
    depth: float = 0.01

    def __post_init__(self) -> None:
        if self.weight < 0 or min(self.expression, self.rotation, self.position, self.depth) <= 0:
            raise ValueError("temporal smoothing needs weight >= 0 and standard deviations > 0")

    def scales(self, stage: LandmarkStage, dt: float, dtype, device) -> torch.Tensor:
        """(P,) residual scales d of the term, d * (x_t - x_{t-1}), for frames `dt` seconds apart."""
        lay = stage.layout
        walk = math.sqrt(max(dt, 1e-3) * 30.0)
        d = torch.zeros(lay.size, dtype=dtype, device=device)
        d[lay.expr] = 1.0 / self.expression
        d[lay.rot] = 1.0 / self.rotation
        d[lay.trans.start : lay.trans.start + 2] = 1.0 / self.position
        d[lay.trans.start + 2] = 1.0 / self.depth
        return math.sqrt(self.weight) * d / walk


@dataclass
class _TemporalProblem:
    """`solvers.lm.LeastSquaresProblem` of one frame: the landmark energy plus the temporal term."""

    stage: LandmarkStage
    p: LandmarkProblem
    previous: torch.Tensor  # (1, P)
    temporal: torch.Tensor  # (P,)

    def __post_init__(self) -> None:
        self.scales = prior_scales(self.stage.layout, self.p.energy, self.p.targets.dtype, self.p.targets.device)

    def normal_equations(self, x: torch.Tensor, rows: torch.Tensor, free: torch.Tensor):
        r, _, ids, posed = self.stage.evaluate(x, self.p)
        e, jtj, grad = normal_equations(x, posed, self.stage.basis.coefficient_basis(ids), self.stage.layout, self.p,
                                        free, self.scales)
        d = self.temporal
        step = d * (x - self.previous)
        jtj = jtj + torch.diag_embed((d * d)[free].expand(x.shape[0], -1))
        return e + 0.5 * step.pow(2).sum(-1), jtj, grad + (d * step)[:, free]


@dataclass
class SequenceFit:
    """Per frame (N) results of `fit_sequence`; rows of frames without a face are NaN.

    params: `FitParams` (N) with the fixed shape and focal length. fitted: (N,) bool, frames fitted.
    landmarks: (N, 68, 2) fitted landmarks, pixels. reprojection_px: (N,) mean landmark error.
    iterations: (N,) LM iterations. unknowns: (N, P) float64 unknowns (`landmark_energy` layout): the
    warm start of a resumed run is the last fitted row.
    """

    params: FitParams
    fitted: np.ndarray
    landmarks: np.ndarray
    reprojection_px: np.ndarray
    iterations: np.ndarray
    unknowns: np.ndarray = field(repr=False)


def fit_sequence(stage: LandmarkStage, identity: FitParams, landmarks: np.ndarray, times: np.ndarray,
                 image_size: tuple[float, float], *, has_face: np.ndarray | None = None,
                 weights: torch.Tensor | None = None, energy: EnergyWeights = EnergyWeights(),
                 smoothing: TemporalSmoothing = TemporalSmoothing(), iterations: int = 20, ftol: float = 1e-6,
                 start: torch.Tensor | None = None, start_time: float | None = None,
                 progress: Callable[[int], None] | None = None) -> SequenceFit:
    """Fit N frames of one person, in order.

    Args:
        stage: the `LandmarkStage` of the frames' landmark convention.
        identity: one `FitParams` row: the person's shape and the camera's focal length (kept), and the pose
            and expression the first frame starts from (e.g. the nearest keyframe's fit).
        landmarks: (N, 68, 2) per-frame landmarks, pixels (rows of frames without a face are ignored).
        times: (N,) frame times, seconds. image_size: (W, H) of the frames.
        has_face: (N,) bool, frames to fit (default: rows with finite landmarks).
        weights / energy: the landmark term's weights and the energy's (`LandmarkStage.solve`).
        smoothing: the temporal term. iterations / ftol: LM limits per frame.
        start / start_time: the unknowns (1, P) and time of the frame before the first (a resumed run);
            default: `identity`'s pose and expression, no temporal term on the first frame.
        progress: called with the frame's position after each frame.
    Raises:
        FitError: a frame's solve ends with non-finite parameters.
    """
    n = len(landmarks)
    targets = torch.as_tensor(np.asarray(landmarks, np.float64), dtype=torch.float64, device=stage.device)
    faces = np.isfinite(landmarks).all(axis=(1, 2)) if has_face is None else np.asarray(has_face, bool)
    sizes = torch.tensor([list(image_size)], dtype=torch.float64, device=stage.device)
    lay = stage.layout
    free = lay.mask(shape=False, expr=True, pose=True, focal=False, device=stage.device)
    base = stage.problem(torch.zeros(1, stage.scheme.num_points, 2, dtype=torch.float64), sizes, weights, energy, 1.0)
    p0 = LandmarkProblem(base.targets, base.principal, identity.focal.to(stage.device, torch.float64).reshape(1),
                         base.scale, base.weights, energy)
    x_prev = encode_unknowns(stage, identity.to("cpu"), p0) if start is None else start.to(stage.device, torch.float64)
    t_prev = start_time
    unknowns = np.full((n, lay.size), np.nan)
    fitted_lm = np.full((n, 68, 2), np.nan)
    err = np.full(n, np.nan)
    iters = np.zeros(n, np.int64)
    settings = LMSettings(max_iterations=iterations, ftol=ftol, atol=ENERGY_ATOL)
    for i in range(n):
        if faces[i]:
            tgt = targets[i : i + 1]
            p = LandmarkProblem(tgt, base.principal, p0.focal0, face_size(tgt), base.weights, energy)
            dt = 1.0 / 30.0 if t_prev is None else float(times[i]) - t_prev
            temporal = smoothing.scales(stage, dt, torch.float64, stage.device)
            if t_prev is None:
                temporal = torch.zeros_like(temporal)
            problem = _TemporalProblem(stage, p, x_prev, temporal)
            with torch.no_grad():
                x, report = levenberg_marquardt(problem, x_prev.clone(), free, settings)
                if not torch.isfinite(x).all():
                    raise FitError(f"the fit of frame {i} diverged (non-finite parameters)")
                r, _, _, posed = stage.evaluate(x, p)
                terms = terms_from_residuals(r, posed, lay, p)
            unknowns[i] = x[0].cpu().numpy()
            fitted_lm[i] = posed.proj[0].cpu().numpy()
            err[i] = float(terms["reprojection_px"][0])
            iters[i] = report.iterations[0]
            x_prev, t_prev = x, float(times[i])
        if progress is not None:
            progress(i)
    return SequenceFit(params=unknowns_to_params(stage, unknowns, identity), fitted=faces.copy(), landmarks=fitted_lm,
                       reprojection_px=err, iterations=iters, unknowns=unknowns)


def unknowns_to_params(stage: LandmarkStage, unknowns: np.ndarray, identity: FitParams) -> FitParams:
    """`FitParams` (N) of per-frame unknowns (N, P) fitted from `identity` (its focal length is the prior
    the unknowns' log-focal entry is relative to; the principal point is the frames' centre). NaN rows stay
    NaN."""
    x = torch.as_tensor(np.asarray(unknowns), dtype=torch.float64)
    n = x.shape[0]
    focal0 = identity.focal.detach().cpu().double().reshape(1).expand(n)
    shape, expr, _, t, focal = decode(x, stage.layout, focal0)
    principal = identity.principal.detach().cpu().reshape(1, 2).expand(n, -1)
    return FitParams(shape=shape.float(), expression=expr.float(), rotation=x[:, stage.layout.rot].float(),
                     translation=t.float(), focal=focal.float(), principal=principal.float())
