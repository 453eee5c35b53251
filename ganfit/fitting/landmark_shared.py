"""Several photos of one person in the landmark stage: one shape for all of them (issue 13).

GANFit (Gecer et al., CVPR 2019, sec. 4, "multi-image fitting") averages the identity parameters over images
known to show one person; eos and MICA's tracker share one shape over images or keyframes. Two modes, both
starting from independent per-photo fits (`LandmarkStage.solve`):

- "shared": one shape is optimised against every photo of the subject together with each photo's
  expression, pose and focal length, minimising the sum of the photos' own energies,

      E = sum_f [E_landmark,f(shape, frame_f) + E_shape(shape) + E_expression,f + E_focal,f],

  so the balance of landmarks and shape prior is that of one photo (the prior tuned for it, `FitConfig.
  landmark_sigma`). The maximum a posteriori estimate of one face seen F times would count the prior once;
  that is better on synthetic faces with independent landmark noise (1.68 vs 2.57 mm from the truth for 5
  views) but worse on real photos (benchmarks/same_person.py, 9 people: same/different-person shape ratio
  0.632 against 0.580 for this energy and 0.624 for single photos), whose landmark errors are not independent:
  the detector's systematic offsets from the model's points repeat in every photo of a person;
- "average": GANFit's recipe: the mean of the per-photo shapes (in standard deviations), then each photo's
  expression, pose and focal length refitted with that shape fixed.

Both are Levenberg-Marquardt (`solvers.lm`) on the stacked unknowns [shape (Ks), frame_1 (Po), ...,
frame_F (Po)] of one subject, whose normal equations are assembled from each photo's own (the shape block
summed over photos, one arrow-shaped matrix), so a subject with F photos costs F photo evaluations and one
(Ks + F Po)^2 solve per iteration.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .history import merge_histories
from .landmark_energy import (
    EnergyWeights, LandmarkProblem, decode, normal_equations, prior_scales, terms_from_residuals,
)
from .landmark_stage import ENERGY_ATOL, LandmarkStage, LandmarkStageResult
from .params import FitParams
from .solvers.lm import LMSettings, levenberg_marquardt

__all__ = ["IDENTITY_MODES", "SharedShapeProblem", "encode_unknowns", "fit_shared_identity"]

#: how photos of one subject share their identity in the landmark stage
IDENTITY_MODES = ("shared", "average")


def encode_unknowns(stage: LandmarkStage, params: FitParams, p: LandmarkProblem) -> torch.Tensor:
    """(B, P) float64 unknowns of `stage`'s layout for fitted `params`: the inverse of `landmark_energy.decode`
    (translation as (tx/d, ty/d, log d), focal as log(f / f0))."""
    lay = stage.layout
    dt, dev = torch.float64, stage.device
    x = torch.zeros(params.batch_size, lay.size, dtype=dt, device=dev)
    x[:, lay.shape] = params.shape.to(dev, dt)[:, : lay.ks]
    x[:, lay.expr] = params.expression.to(dev, dt)[:, : lay.ke]
    x[:, lay.rot] = params.rotation.to(dev, dt)
    t = params.translation.to(dev, dt)
    depth = (-t[:, 2]).clamp_min(1e-6)
    x[:, lay.trans] = torch.stack([t[:, 0] / depth, t[:, 1] / depth, depth.log()], -1)
    x[:, lay.focal] = torch.log(params.focal.to(dev, dt) / p.focal0)
    return x


@dataclass
class SharedShapeProblem:
    """`solvers.lm.LeastSquaresProblem` of one subject's F photos sharing one shape: batch size 1, unknowns
    (1, Ks + F Po) = [shape, frame_1, ..., frame_F], Po = P - Ks per photo (expression, rotation,
    translation, focal)."""

    stage: LandmarkStage
    p: LandmarkProblem

    def __post_init__(self) -> None:
        lay = self.stage.layout
        self.ks, self.po, self.frames = lay.ks, lay.size - lay.ks, self.p.targets.shape[0]
        self.scales = prior_scales(lay, self.p.energy, self.p.targets.dtype, self.p.targets.device)

    @property
    def size(self) -> int:
        return self.ks + self.frames * self.po

    def join(self, x: torch.Tensor) -> torch.Tensor:
        """(F, P) per-photo unknowns -> (1, Ks + F Po), the shape the mean of the photos' shapes."""
        return torch.cat([x[:, : self.ks].mean(0), x[:, self.ks :].reshape(-1)])[None]

    def split(self, xs: torch.Tensor) -> torch.Tensor:
        """(1, Ks + F Po) -> (F, P): every photo with the shared shape."""
        shape = xs[0, : self.ks].expand(self.frames, -1)
        return torch.cat([shape, xs[0, self.ks :].view(self.frames, self.po)], -1)

    def normal_equations(self, xs: torch.Tensor, rows: torch.Tensor, free: torch.Tensor):
        """Energy (1,), J^T J (1, n, n) and J^T r (1, n) over the `free` (Ks + F Po,) unknowns: the sum of the
        photos' own normal equations (each with its shape prior), the shape's blocks summed."""
        x = self.split(xs)
        lay, ks, po, f = self.stage.layout, self.ks, self.po, self.frames
        r, _, ids, posed = self.stage.evaluate(x, self.p)
        every = torch.ones(lay.size, dtype=torch.bool, device=x.device)
        e_f, jtj_f, g_f = normal_equations(x, posed, self.stage.basis.coefficient_basis(ids), lay, self.p, every,
                                           self.scales)
        n = self.size
        jtj = x.new_zeros(n, n)
        grad = x.new_zeros(n)
        jtj[:ks, :ks] = jtj_f[:, :ks, :ks].sum(0)
        grad[:ks] = g_f[:, :ks].sum(0)
        energy = e_f.sum()
        for k in range(f):
            o = slice(ks + k * po, ks + (k + 1) * po)
            jtj[:ks, o] = jtj_f[k, :ks, ks:]
            jtj[o, :ks] = jtj_f[k, ks:, :ks]
            jtj[o, o] = jtj_f[k, ks:, ks:]
            grad[o] = g_f[k, ks:]
        self.last = (r, posed)
        return energy[None], jtj[free][:, free][None], grad[free][None]

    def terms(self, xs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-photo named terms (F,) at `xs` (each photo's own energy, its shape prior included)."""
        x = self.split(xs)
        r, _, _, posed = self.stage.evaluate(x, self.p)
        return terms_from_residuals(r, posed, self.stage.layout, self.p)


def fit_shared_identity(stage: LandmarkStage, independent: LandmarkStageResult, targets: torch.Tensor,
                        image_sizes: torch.Tensor, frame_subject: torch.Tensor, *, mode: str = "shared",
                        weights: torch.Tensor | None = None, energy=None, focal_ratio: float = 1.6,
                        iterations: int = 50, ftol: float = 1e-6) -> LandmarkStageResult:
    """Refit B photos so that the photos of each subject share one shape.

    Args:
        stage: the `LandmarkStage` (one landmark convention) that fitted `independent`.
        independent: its per-photo result for these B photos (the starting point).
        targets: (B, 68, 2) landmarks; image_sizes: (B, 2); weights: (68,) or (B, 68) as `LandmarkStage.solve`.
        frame_subject: (B,) long, each photo's subject.
        mode: "shared" (shape optimised with every photo) or "average" (mean shape, fixed; frames refitted).
        energy / focal_ratio / iterations / ftol: as `LandmarkStage.solve` (energy None: its default).
    Returns:
        A `LandmarkStageResult` for the B photos in their order: a subject's photos have identical shapes;
        a subject with one photo keeps its independent fit. Its history holds the per-photo terms of the
        refit (one entry per iteration of the longest subject's solve), its iterations the independent
        solve's plus the refit's.
    """
    if mode not in IDENTITY_MODES:
        raise ConfigError(f"identity mode must be one of {', '.join(IDENTITY_MODES)}; got {mode!r}")
    fs = torch.as_tensor(frame_subject, dtype=torch.long)
    energy = energy or EnergyWeights()
    p_all = stage.problem(targets, image_sizes, weights, energy, focal_ratio)
    x_all = encode_unknowns(stage, independent.params, p_all)
    lay = stage.layout
    reasons, iters = list(independent.stop_reason), list(independent.iterations)
    histories: list[tuple[list[int], list[dict[str, list[float]]]]] = []
    for subject in torch.unique(fs).tolist():
        rows = (fs == subject).nonzero()[:, 0].to(stage.device)
        if rows.numel() < 2:
            continue
        problem = SharedShapeProblem(stage, p_all.rows(rows))
        xs = problem.join(x_all[rows])
        free = torch.ones(problem.size, dtype=torch.bool, device=xs.device)
        if lay.ks:
            free[: lay.ks] = mode == "shared"
        if energy.focal_log_sigma == 0:  # a fixed focal length stays fixed, as in the photos' own solves
            for k in range(problem.frames):
                free[lay.ks + k * problem.po + (lay.focal - lay.ks)] = False
        history: list[dict[str, list[float]]] = []

        def record(x_now, info, problem=problem, history=history):
            with torch.no_grad():
                entry = {k: v.tolist() for k, v in problem.terms(x_now).items()}
            history.append(entry | {k: [float(info[k][0])] * problem.frames for k in ("accepted", "damping")})

        with torch.no_grad():
            xs, report = levenberg_marquardt(problem, xs, free, LMSettings(max_iterations=iterations, ftol=ftol,
                                                                          atol=ENERGY_ATOL), record)
        if not torch.isfinite(xs).all():
            raise ConfigError("the shared-identity landmark fit diverged (non-finite parameters)")
        x_all[rows] = problem.split(xs)
        for r in rows.tolist():
            reasons[r] = report.stop_reason[0]
            iters[r] += report.iterations[0]
        histories.append((rows.tolist(), history))
    shape, expr, rot, t, focal = decode(x_all, lay, p_all.focal0)
    params = FitParams(shape=shape.float(), expression=expr.float(), rotation=x_all[:, lay.rot].float(),
                       translation=t.float(), focal=focal.float(), principal=p_all.principal.float())
    with torch.no_grad():
        ids = stage.basis.ids[stage.correspondence(x_all, p_all)]
    history = merge_histories(histories, fs.numel(), fill=float("nan")) if histories else []
    return LandmarkStageResult(params=params, vertex_ids=ids, history=independent.history + history,
                               stop_reason=reasons, iterations=iters)
