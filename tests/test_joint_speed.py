"""Speed options of the joint stage (`JointStageConfig.id_hat_every`, `id_hat_resolution`) and the cached scaled
weights of the PGGAN's equalized layers: same numbers where they promise them, the id-hat rendered when and at the
size asked, the same seed giving the same result. Small synthetic problem, a stand-in identity network."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointStage, JointStageConfig, JointWeights
from ganfit.fitting.stages.joint_terms import composite
from ganfit.model.texture.pggan import Generator
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh

from test_joint_stage import SIZE
from texture_models import smooth_pca_texture

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingNet:
    """A differentiable stand-in identity network: pooled colours as the embedding; records each call's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        self.sizes.append(images.shape[-1])
        return F.adaptive_avg_pool2d(images, 4).flatten(1) + 0.01 * landmarks.mean(1).sum(-1, keepdim=True) / images.shape[-1]


@pytest.fixture(scope="module")
def problem(bfm):
    tex = smooth_pca_texture(bfm)
    g = torch.Generator().manual_seed(0)
    params = FitParams(shape=0.5 * torch.randn(1, bfm.num_shape, generator=g), expression=torch.zeros(1, bfm.num_expression),
                       rotation=torch.tensor([[0.05, 0.25, 0.0]]), translation=torch.tensor([[0.0, 0.0, -700.0]]),
                       focal=torch.tensor([450.0]), principal=torch.tensor([[SIZE / 2, SIZE / 2]]))
    renderer = Renderer(bfm, make_rasterizer("torch", "cpu"), image_size=(SIZE, SIZE))
    with torch.no_grad():
        out = renderer.render(params, texture=tex.decode(torch.tensor([[1.0, -0.8, 0.6, 0.0, -0.5, 0.7]])), lighting=default_sh(1))
        photo = composite(out.image.permute(0, 3, 1, 2), out.alpha, torch.full((1, 3, 1, 1), 0.4)).clamp(0, 1)
    return dict(model=bfm, tex=tex, renderer=renderer, params=params, photo=photo, landmarks=out.landmarks,
                ids=torch.as_tensor(bfm.landmark_indices)[None])


def _fit(p, net, seed=0, **cfg):
    base = dict(resolution=64, iterations=6, warmup_iterations=2, latent_candidates=2, init_lighting=False,
                plateau_patience=0, weights=JointWeights(content=0.0))
    base.update(cfg)
    stage = JointStage(p["model"], p["renderer"], net, p["tex"], JointStageConfig(**base))
    return stage, stage.run(p["photo"], p["landmarks"], p["params"], p["ids"], generator=torch.Generator().manual_seed(seed))


def test_id_hat_every_and_resolution(problem):
    net = CountingNet()
    stage, res = _fit(problem, net, id_hat_every=3, id_hat_resolution=48)
    # prepare (photo), then per iteration the photo's render; the id-hat at 48 px on iterations 0 and 3 only
    assert net.sizes.count(48) == 2
    assert stage.energy.id_hat_renderer.image_size == (48, 48) and stage.renderer.image_size == (64, 64)
    hat = res.term("identity_hat")
    assert hat[1] == hat[0] and hat[2] == hat[0] and hat[4] == hat[3]  # the last value stands in between renders
    assert all(abs(h["total"][0]) < float("inf") for h in res.history)


def test_id_hat_every_1_is_the_old_loop(problem):
    """id_hat_every 1, id_hat_resolution 0: the id-hat rendered at every iteration, at the crop's resolution."""
    net = CountingNet()
    _, res = _fit(problem, net, resolution=64, id_hat_every=1, id_hat_resolution=0)
    assert net.sizes.count(64) >= 1 + 6 + 6  # photo embedding, then photo render and id-hat at every step
    assert len(set(res.term("identity_hat")[:-1])) > 1


def test_speed_options_keep_same_seed_same_result(problem):
    opts = dict(id_hat_every=2, id_hat_resolution=48)
    _, a = _fit(problem, CountingNet(), seed=1, **opts)
    _, b = _fit(problem, CountingNet(), seed=1, **opts)
    _, c = _fit(problem, CountingNet(), seed=2, **opts)
    assert torch.equal(a.latent, b.latent) and torch.equal(a.params.shape, b.params.shape) and a.history == b.history
    assert not torch.equal(a.latent, c.latent)


def test_bad_speed_options():
    from ganfit.errors import ConfigError

    with pytest.raises(ConfigError):
        JointStageConfig(id_hat_every=0)
    with pytest.raises(ConfigError):
        JointStageConfig(id_hat_resolution=16)


def test_pggan_scaled_weight_cache_is_exact_and_follows_the_weights():
    torch.manual_seed(0)
    g = Generator(latent_dim=16, max_resolution=8, fmap_base=64, fmap_max=32)
    z = torch.randn(2, 16)
    trained = g(z)  # weights require grad: no cache
    g.requires_grad_(False)
    assert torch.equal(g(z), trained) and torch.equal(g(z), trained)  # cached: the same numbers
    assert "_scaled_cache" in g.base.dense.__dict__ and "_scaled_cache" in g.to_rgb[-1].__dict__
    with torch.no_grad():
        g.to_rgb[-1].weight.mul_(2.0)  # an in-place change bumps the version: recomputed
    g.requires_grad_(True)
    fresh = g(z)
    g.requires_grad_(False)
    assert torch.equal(g(z), fresh) and not torch.equal(fresh, trained)
    zz = z.clone().requires_grad_(True)
    g(zz).sum().backward()  # gradients to the input still flow through the cached weights
    assert zz.grad is not None and zz.grad.abs().sum() > 0
