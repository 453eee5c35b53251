"""Batched Levenberg-Marquardt where every image of the batch is its own problem.

Each image b has unknowns x_b (P,) and residuals r_b(x_b) with energy E_b = 0.5 ||r_b||^2. One iteration
solves (J^T J + lambda_b D_b) h = -J^T r with Marquardt's scaling D_b = diag(J^T J) and accepts the step
only if it lowers E_b; the damping follows the gain ratio rho = actual / predicted decrease (Nielsen,
"Damping parameter in Marquardt's method", IMM-REP-1999-05; Madsen, Nielsen & Tingleff, "Methods for
non-linear least squares problems", 2004, sec. 3.2):

    accepted: lambda *= max(1/3, 1 - (2 rho - 1)^3), nu = 2;   rejected: lambda *= nu, nu *= 2.

Stopping is decided per image, never over the batch, so an image's result does not depend on which other
images share the call:
- ``converged``: an *accepted* step lowered the energy by less than ``ftol`` of itself or by less than
  ``atol`` (absolute: for a negative log-likelihood, a change that no longer matters), or the gradient
  vanished (``gtol``). A rejected step never counts as convergence (it only raises the damping);
- ``damping_bound``: the damping grew past ``damping_max`` (no step lowers the energy any more: the
  energy is at a minimum to machine precision, or it is not smooth there);
- ``iteration_limit``: ``max_iterations`` iterations were spent.
An image that has stopped is frozen; the solve ends when every image has stopped. Only images still
running are evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

#: Why an image's solve ended, in the order of `LMReport.stop_reason`'s values.
STOP_REASONS = ("converged", "damping_bound", "iteration_limit")


class LeastSquaresProblem(Protocol):
    """A batch of independent least-squares problems, evaluated for a subset of its images."""

    def linearize(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals r (b, R) and Jacobian J (b, R, P) at unknowns x (b, P) of images `rows` (b,); the
        energy is 0.5 ||r||^2. A problem may instead (or also) define ``normal_equations(x, rows, free)``
        returning energy (b,), J^T J (b, F, F) and J^T r (b, F) over the `free` (P,) unknowns."""
        ...


@dataclass(frozen=True)
class LMSettings:
    """max_iterations: per image; ftol / atol: relative / absolute energy decrease of an accepted step below
    which the image has converged; gtol: max |J^T r| (over free unknowns) below which it has converged;
    damping_init: initial lambda (relative to diag(J^T J)); damping_max: lambda above which the image stops."""

    max_iterations: int = 50
    ftol: float = 1e-9
    atol: float = 0.0
    gtol: float = 1e-12
    damping_init: float = 1e-3
    damping_max: float = 1e8


@dataclass
class LMReport:
    """Per image (lists of length B): why it stopped (one of `STOP_REASONS`), after how many iterations,
    how many steps were accepted, and its final damping."""

    stop_reason: list[str] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    accepted_steps: list[int] = field(default_factory=list)
    damping: list[float] = field(default_factory=list)


def levenberg_marquardt(
    problem: LeastSquaresProblem,
    x0: torch.Tensor,
    free: torch.Tensor,
    settings: LMSettings,
    on_iteration: Callable[[torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
) -> tuple[torch.Tensor, LMReport]:
    """Minimise every image's energy over its `free` unknowns.

    Args:
        problem: residuals and Jacobians (see `LeastSquaresProblem`).
        x0: (B, P) starting unknowns.
        free: (P,) bool, the unknowns this solve may change (the others stay as in x0).
        settings: tolerances and limits.
        on_iteration: called after every iteration with the (B, P) unknowns and a dict of (B,) tensors:
            ``accepted`` (1 where a step was taken this iteration), ``damping``, ``running`` (1 while the
            image had not stopped before this iteration).
    Returns:
        x (B, P) and the `LMReport`.
    """
    b = x0.shape[0]
    dev, dt = x0.device, x0.dtype
    x = x0.clone()
    lam = torch.full((b,), settings.damping_init, dtype=dt, device=dev)
    nu = torch.full((b,), 2.0, dtype=dt, device=dev)
    running = torch.ones(b, dtype=torch.bool, device=dev)
    reason = [""] * b
    iters = [0] * b
    accepted_steps = [0] * b
    def normal_equations(x_, rows_):
        if hasattr(problem, "normal_equations"):  # a problem that exploits its structure
            return problem.normal_equations(x_, rows_, free)
        r, jac = problem.linearize(x_, rows_)
        jac = jac[:, :, free]
        return 0.5 * r.pow(2).sum(-1), jac.transpose(1, 2) @ jac, (jac.transpose(1, 2) @ r[..., None])[..., 0]

    # Every trial step is linearised when it is evaluated, so an accepted step's normal equations are ready
    # for the next iteration (one evaluation per iteration instead of two).
    energy, jtj_all, grad_all = normal_equations(x, torch.arange(b, device=dev))
    for it in range(settings.max_iterations):
        rows = running.nonzero()[:, 0]
        if rows.numel() == 0:
            break
        xr, jtj, grad, e0 = x[rows], jtj_all[rows], grad_all[rows], energy[rows]
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(1e-12)
        damp = lam[rows, None] * diag
        step = -torch.linalg.solve(jtj + torch.diag_embed(damp), grad)
        trial = xr.clone()
        trial[:, free] = xr[:, free] + step
        e1, jtj1, grad1 = normal_equations(trial, rows)
        predicted = 0.5 * (step * (damp * step - grad)).sum(-1)
        ok = torch.isfinite(e1) & (e1 < e0)
        rho = (e0 - e1) / predicted.clamp_min(1e-300)
        gain = torch.where(ok, (e0 - e1) / e0.clamp_min(1e-300), torch.zeros_like(e0))
        factor = torch.clamp(1.0 - (2.0 * rho - 1.0).pow(3), min=1.0 / 3.0)
        lam_rows = torch.where(ok, lam[rows] * factor, lam[rows] * nu[rows])
        nu[rows] = torch.where(ok, torch.full_like(nu[rows], 2.0), nu[rows] * 2.0)
        lam[rows] = lam_rows.clamp_min(1e-15)
        x[rows] = torch.where(ok[:, None], trial, xr)
        energy[rows] = torch.where(ok, e1, e0)
        jtj_all[rows] = torch.where(ok[:, None, None], jtj1, jtj)
        grad_all[rows] = torch.where(ok[:, None], grad1, grad)
        flat = grad.abs().amax(-1) <= settings.gtol
        converged = (ok & ((gain <= settings.ftol) | (e0 - e1 <= settings.atol))) | flat
        bound = lam[rows] > settings.damping_max
        accepted = torch.zeros(b, dtype=torch.bool, device=dev)
        accepted[rows] = ok
        was_running = running.clone()
        last = it + 1 >= settings.max_iterations
        for row, took, conv, bnd in zip(rows.tolist(), ok.tolist(), converged.tolist(), bound.tolist()):
            iters[row] = it + 1
            accepted_steps[row] += int(took)
            reason[row] = "converged" if conv else "damping_bound" if bnd else "iteration_limit" if last else ""
            if reason[row]:
                running[row] = False
        if on_iteration is not None:
            on_iteration(x, {"accepted": accepted.to(dt), "damping": lam.clone(), "running": was_running.to(dt)})
    for row in range(b):  # max_iterations == 0
        reason[row] = reason[row] or "iteration_limit"
    return x, LMReport(stop_reason=reason, iterations=iters, accepted_steps=accepted_steps, damping=lam.tolist())
