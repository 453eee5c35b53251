"""Photos of one person in the joint stage (`stages.joint_tie`): shape and texture latent shared by the
photos, summed gradients, kept or reverted together; a synthetic person seen from two
sides is recovered better together than photo by photo."""
from __future__ import annotations

import math

import pytest
import torch

from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointStage, JointStageConfig, JointWeights
from ganfit.fitting.stages.joint_terms import composite
from ganfit.fitting.stages.joint_tie import SubjectTie
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional
from texture_models import smooth_pca_texture

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 128


def test_tied_gradients_are_the_gradient_of_one_shared_variable():
    """For f(x_0, x_1, x_2) with rows 0 and 2 one subject, the tied gradient of each of those rows is
    d/dz f(z, x_1, z), the gradient of the one variable they stand for."""
    tie = SubjectTie(torch.tensor([0, 1, 0]))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=g, dtype=torch.float64)
    z = torch.randn(1, 4, dtype=torch.float64, generator=g)
    x1 = torch.randn(1, 4, dtype=torch.float64, generator=g)
    f = lambda x: (a * x.sin()).sum() + (x[0] * x[2]).sum()  # noqa: E731
    leaf = torch.cat([z, x1, z]).requires_grad_(True)
    f(leaf).backward()
    leaves = {"shape": leaf}
    tie.tie_gradients(leaves)
    zz = z.clone().requires_grad_(True)
    f(torch.cat([zz, x1, zz])).backward()
    torch.testing.assert_close(leaf.grad[0], zz.grad[0])
    torch.testing.assert_close(leaf.grad[2], zz.grad[0])
    assert tie.all_of_subject(torch.tensor([True, True, False])).tolist() == [False, True, False]
    assert torch.equal(tie.share(torch.tensor([[1.0], [2.0], [3.0]])), torch.tensor([[1.0], [2.0], [1.0]]))


@pytest.mark.assets
def test_one_person_seen_from_three_sides_is_fitted_as_one(bfm):
    tex = smooth_pca_texture(bfm)
    renderer = Renderer(bfm, make_rasterizer("torch", "cpu"), image_size=(SIZE, SIZE))
    g = torch.Generator().manual_seed(0)
    shape = 0.5 * torch.randn(1, bfm.num_shape, generator=g)
    truth = FitParams(shape=shape.expand(3, -1).clone(), expression=0.3 * torch.randn(3, bfm.num_expression, generator=g),
                      rotation=torch.tensor([[0.05, -0.45, 0.0], [0.0, 0.45, 0.05], [0.1, 0.0, 0.0]]),
                      translation=torch.tensor([[0.0, 0.0, -700.0], [10.0, -5.0, -900.0], [0.0, 5.0, -800.0]]),  # three face sizes
                      focal=torch.full((3,), 450.0), principal=torch.full((3, 2), SIZE / 2))
    latent = torch.tensor([[1.0, -0.8, 0.6, 0.0, -0.5, 0.7]])
    light = torch.cat([default_sh(1) * 0.7 + sh_directional(torch.tensor([0.5, 0.4, 1.0]), 0.4),
                       default_sh(1) * 0.8 + sh_directional(torch.tensor([-0.6, 0.2, 1.0]), 0.3),
                       default_sh(1) * 0.9])
    with torch.no_grad():
        out = renderer.render(truth, texture=tex.decode(latent).expand(3, -1, -1, -1), lighting=light)
        photos = composite(out.image.permute(0, 3, 1, 2), out.alpha, torch.tensor([0.3, 0.35, 0.4])[None, :, None, None]).clamp(0, 1)
    ids = torch.as_tensor(bfm.landmark_indices)[None].expand(3, -1)
    start = FitParams(shape=torch.zeros(3, bfm.num_shape), expression=truth.expression.clone(),
                      rotation=truth.rotation.clone(), translation=truth.translation.clone(),
                      focal=truth.focal.clone(), principal=truth.principal.clone())
    cfg = JointStageConfig(resolution=64, iterations=40, warmup_iterations=15, latent_candidates=1, init_lighting=False,
                           plateau_patience=0, pixel_keep=1.0, weights=JointWeights(lighting_prior=0.05))
    stage = JointStage(bfm, renderer, None, tex, cfg)
    z0 = torch.zeros(3, 6)
    run = lambda **kw: stage.run(photos, out.landmarks, start, ids, generator=torch.Generator().manual_seed(0),  # noqa: E731
                                 latent=z0, **kw)
    alone, together = run(), run(frame_subject=torch.tensor([0, 0, 0]))
    assert torch.equal(together.latent[0], together.latent[1]) and torch.equal(together.params.shape[0], together.params.shape[1])
    assert not torch.equal(together.lighting[0], together.lighting[1])
    assert not torch.equal(alone.latent[0], alone.latent[1])
    err = lambda z: float((tex.decode(z) - tex.decode(latent)).abs().mean())  # noqa: E731
    e_alone = sum(err(alone.latent[k:k + 1]) for k in range(3)) / 3
    e_together = err(together.latent[:1])
    assert e_together < e_alone, (e_together, e_alone)
    assert all(math.isfinite(x) for h in together.history for x in h["total"])
    # each photo's own crop camera (the faces differ in size): the renders line up with the photos
    assert max(together.history[-1]["pixel"]) < 0.5 * max(together.history[0]["pixel"])
    print("texture error alone / together", e_alone, e_together)
