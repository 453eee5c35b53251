"""The batched Levenberg-Marquardt solver: rejected steps never end a solve, the energy never increases,
each image stops by its own criterion and says why, and its result does not depend on the batch."""
import torch

from ganfit.fitting.solvers import STOP_REASONS, LMSettings, levenberg_marquardt


class Rosenbrock:
    """Per image r = (a - x0, 10 (x1 - x0^2)): a curved valley that LM must follow with rejected steps."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a
        self.calls = 0

    def residuals(self, x, rows):
        return torch.stack([self.a[rows] - x[:, 0], 10.0 * (x[:, 1] - x[:, 0] ** 2)], -1)

    def linearize(self, x, rows):
        self.calls += 1
        r = self.residuals(x, rows)
        j = torch.zeros(x.shape[0], 2, 2, dtype=x.dtype)
        j[:, 0, 0] = -1.0
        j[:, 1, 0] = -20.0 * x[:, 0]
        j[:, 1, 1] = 10.0
        return r, j


def _run(a, x0, settings, free=None):
    history = []
    x, report = levenberg_marquardt(Rosenbrock(a), x0, torch.ones(2, dtype=torch.bool) if free is None else free,
                                    settings, lambda x_, info: history.append((x_.clone(), {k: v.clone() for k, v in info.items()})))
    return x, report, history


def _energy(a, x):
    return 0.5 * Rosenbrock(a).residuals(x, torch.arange(len(a))).pow(2).sum(-1)


def test_rejected_steps_do_not_end_the_solve_and_energy_never_increases():
    a = torch.tensor([1.0, 2.0, -1.5], dtype=torch.float64)
    x0 = torch.tensor([[-1.2, 1.0], [3.0, -2.0], [0.5, 4.0]], dtype=torch.float64)
    # a tiny initial damping makes the first Gauss-Newton steps overshoot the valley: they are rejected
    x, report, history = _run(a, x0, LMSettings(max_iterations=200, ftol=1e-10, gtol=0.0, damping_init=1e-9))
    accepted = torch.stack([h["accepted"] for _, h in history])  # (iterations, B)
    assert (accepted == 0).any(), "the test needs rejected steps"
    assert report.stop_reason == ["converged"] * 3
    assert torch.allclose(x, torch.stack([a, a**2], -1), atol=1e-6)  # the minimum of each image
    energies = torch.stack([_energy(a, xi) for xi, _ in history])
    assert (energies.diff(dim=0) <= 0).all()
    for b in range(3):  # each image ended on an accepted step, after its own number of iterations
        last = report.iterations[b] - 1
        assert accepted[last, b] == 1 or energies[last, b] == 0.0  # or exactly at the minimum (zero gradient)
        assert report.accepted_steps[b] == int(accepted[: last + 1, b].sum())
    assert len(set(report.iterations)) > 1


def test_each_image_stops_by_its_own_criterion_and_batch_equals_single():
    a = torch.tensor([1.0, 2.0, -1.5, 0.3], dtype=torch.float64)
    x0 = torch.tensor([[-1.2, 1.0], [3.0, -2.0], [0.5, 4.0], [0.3, 0.09]], dtype=torch.float64)  # the last starts at its minimum
    settings = LMSettings(max_iterations=60, ftol=1e-12)
    xb, rb, _ = _run(a, x0, settings)
    for i in range(4):
        xs, rs, _ = _run(a[i : i + 1], x0[i : i + 1], settings)
        assert torch.equal(xs[0], xb[i])
        assert rs.stop_reason[0] == rb.stop_reason[i] and rs.iterations[0] == rb.iterations[i]
    assert rb.iterations[3] < rb.iterations[0]  # an image at its minimum stops at once, the others go on
    assert rb.stop_reason[3] in ("converged", "damping_bound")


def test_stop_reasons():
    a = torch.tensor([1.0], dtype=torch.float64)
    x0 = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)
    _, report, _ = _run(a, x0, LMSettings(max_iterations=3, ftol=0.0, gtol=0.0))
    assert report.stop_reason == ["iteration_limit"] and report.iterations == [3]
    # a problem whose energy cannot be lowered (a residual that does not depend on x, a wrong Jacobian
    # direction): every step is rejected until the damping bound ends the solve
    class Stuck(Rosenbrock):
        def linearize(self, x, rows):
            r, j = super().linearize(x, rows)
            return r, -j  # steps go uphill

    x, rep = levenberg_marquardt(Stuck(a), x0, torch.ones(2, dtype=torch.bool), LMSettings(max_iterations=500, gtol=0.0))
    assert rep.stop_reason == ["damping_bound"] and rep.accepted_steps == [0]
    assert torch.equal(x, x0)
    assert set(STOP_REASONS) == {"converged", "damping_bound", "iteration_limit"}


def test_only_free_unknowns_move():
    a = torch.tensor([2.0], dtype=torch.float64)
    x0 = torch.tensor([[0.5, 7.0]], dtype=torch.float64)
    x, _, _ = _run(a, x0, LMSettings(max_iterations=50), free=torch.tensor([True, False]))
    assert x[0, 1] == 7.0
    u = x[0, 0].clone().requires_grad_(True)  # the energy's derivative along the free unknown vanishes
    e = 0.5 * ((2.0 - u) ** 2 + 100.0 * (7.0 - u**2) ** 2)
    (g,) = torch.autograd.grad(e, u)
    assert abs(g.item()) < 1e-6 and abs(u.item() - 7.0**0.5) < 0.01
