"""One named-term energy: the landmark stage's residuals, Jacobian and history terms read their priors from
`prior_terms`, and each named term equals the shared loss of the same name that the joint stage uses
(`losses.landmark_loss`, `losses.gaussian_prior`)."""
from __future__ import annotations

import math

import pytest
import torch

from ganfit.fitting.landmark_energy import (
    ENERGY_TERMS, EnergyWeights, LandmarkProblem, Layout, energy_terms, jacobian, model_points, pose, prior_terms,
    residuals,
)
from ganfit.fitting.losses import gaussian_prior, landmark_loss


def _problem(ks: int, ke: int, energy: EnergyWeights, b: int = 3, n: int = 12):
    g = torch.Generator().manual_seed(1)
    lay = Layout(ks, ke, 3)
    mean = torch.randn(b, n, 3, generator=g, dtype=torch.float64) * 50
    sb = torch.randn(b, n, 3, ks, generator=g, dtype=torch.float64)
    eb = torch.randn(b, n, 3, ke, generator=g, dtype=torch.float64)
    x = torch.randn(b, lay.size, generator=g, dtype=torch.float64) * 0.3
    x[:, lay.trans] = torch.tensor([0.01, -0.02, math.log(600.0)], dtype=torch.float64)
    p = LandmarkProblem(targets=torch.rand(b, n, 2, generator=g, dtype=torch.float64) * 40 + 236,
                        principal=torch.full((b, 2), 256.0, dtype=torch.float64),
                        focal0=torch.full((b,), 800.0, dtype=torch.float64),
                        scale=torch.full((b,), 120.0, dtype=torch.float64),
                        weights=torch.rand(n, generator=g, dtype=torch.float64) + 0.5, energy=energy)
    return x, mean, sb, eb, lay, p


@pytest.mark.parametrize("ks, ke, focal_sigma", [(5, 4, 0.5), (0, 4, 0.5), (5, 0, 0.0)])
def test_each_named_term_is_the_shared_loss_of_that_name(ks, ke, focal_sigma):
    e = EnergyWeights(landmark_sigma=0.03, w_landmark=1.0, w_shape=2.0, w_expr=0.5, w_focal=3.0, focal_log_sigma=focal_sigma)
    x, mean, sb, eb, lay, p = _problem(ks, ke, e)
    terms = energy_terms(x, mean, sb, eb, lay, p)
    assert list(terms)[:4] == list(ENERGY_TERMS)
    posed = pose(x, model_points(mean, sb, eb, x[:, lay.shape], x[:, lay.expr]), lay, p)
    lm = landmark_loss(posed.proj, p.targets, p.weights, e.landmark_sigma * p.scale)
    torch.testing.assert_close(terms["landmark"], lm)
    torch.testing.assert_close(terms["shape_prior"], e.w_shape * gaussian_prior(x[:, lay.shape]))
    torch.testing.assert_close(terms["expression_prior"], e.w_expr * gaussian_prior(x[:, lay.expr]))
    focal = 0.5 * e.w_focal * (x[:, lay.focal] / focal_sigma) ** 2 if focal_sigma > 0 else torch.zeros(3, dtype=x.dtype)
    torch.testing.assert_close(terms["focal_prior"], focal)
    r = residuals(x, mean, sb, eb, lay, p)
    torch.testing.assert_close(terms["total"], 0.5 * r.pow(2).sum(-1))
    torch.testing.assert_close(terms["total"], sum(terms[k] for k in ENERGY_TERMS))
    assert r.shape[1] == 2 * p.targets.shape[1] + sum(t.size for t in prior_terms(lay, e))


def test_the_jacobian_of_the_priors_comes_from_the_same_terms():
    """The analytic Jacobian (landmark rows and the prior rows built from `prior_terms`) matches autograd."""
    e = EnergyWeights(w_shape=2.0, w_expr=0.5, w_focal=3.0)
    x, mean, sb, eb, lay, p = _problem(4, 3, e)
    _, jac = jacobian(x, mean, sb, eb, lay, p)
    auto = torch.autograd.functional.jacobian(lambda y: residuals(y, mean, sb, eb, lay, p), x)  # (B, R, B, P)
    auto = torch.stack([auto[i, :, i] for i in range(x.shape[0])])
    torch.testing.assert_close(jac, auto, rtol=1e-6, atol=1e-8)
    names = [t.name for t in prior_terms(lay, e)]
    assert names == ["shape_prior", "expression_prior", "focal_prior"]
    assert [t.name for t in prior_terms(lay, EnergyWeights(focal_log_sigma=0.0))] == ["shape_prior", "expression_prior"]
