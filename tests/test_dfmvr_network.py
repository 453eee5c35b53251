"""dfmvr.network: output shapes for 1-5 views, order invariance of the fused identity, gradients to every
parameter, the parsing channel, config round trip, and the small preset's CPU forward time.

Measured here (this 2-core CPU shared with other jobs, torch's 2 threads, eval, no grad): the small preset's
forward for 3 views at 224 x 224 takes about 0.15-0.35 s warm (0.75 s for the first call), under the
issue's 1 s target; the test only checks it stays under 5 s."""
from __future__ import annotations

import time

import pytest
import torch

from dfmvr.network import DFMVRConfig, DFMVRNet, DFMVROutput

KS, KE = 40, 10


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return DFMVRNet(DFMVRConfig.tiny(num_shape=KS, num_expression=KE)).eval()


@pytest.mark.parametrize("views", [1, 2, 3, 5])
def test_output_shapes(tiny_net, views):
    x = torch.rand(2, views, 3, 48, 48)
    with torch.no_grad():
        out = tiny_net(x)
    assert isinstance(out, DFMVROutput)
    assert out.shape.shape == (2, KS) and out.texture.shape == (2, 16)
    assert out.expression.shape == (2, views, KE)
    assert out.rotation.shape == (2, views, 6) and out.translation.shape == (2, views, 3)
    assert out.lighting.shape == (2, views, 9, 3)
    assert out.per_view_shape().shape == (2 * views, KS)
    assert all(torch.isfinite(t).all() for t in vars(out).values())


def test_axis_angle_option():
    net = DFMVRNet(DFMVRConfig.tiny(num_shape=KS, num_expression=KE, rotation="axis_angle")).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, 3, 32, 32)).rotation.shape == (1, 2, 3)


def test_permuting_views_permutes_outputs_and_keeps_identity(tiny_net):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 3, 48, 48, generator=g)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a, b = tiny_net(x), tiny_net(x[:, perm])
    torch.testing.assert_close(b.shape, a.shape, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.texture, a.texture, rtol=1e-4, atol=1e-5)
    for name in ("expression", "rotation", "translation", "lighting"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name)[:, perm], rtol=1e-4, atol=1e-4)
    # and the views do matter: a different view set gives a different identity
    with torch.no_grad():
        c = tiny_net(x.flip(-1))
    assert (c.shape - a.shape).abs().max() > 1e-6


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    net = DFMVRNet(DFMVRConfig.tiny(num_shape=KS, num_expression=KE, parsing_channels=2)).train()
    x, parsing = torch.rand(2, 3, 3, 40, 40), torch.rand(2, 3, 2, 40, 40)
    out = net(x, parsing)
    loss = sum((t - t.detach().mean()).pow(2).mean() * (i + 1) for i, t in enumerate(vars(out).values()))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not missing


def test_parsing_channel_is_checked(tiny_net):
    with pytest.raises(ValueError, match="without a parsing channel"):
        tiny_net(torch.rand(1, 2, 3, 32, 32), torch.rand(1, 2, 1, 32, 32))
    net = DFMVRNet(DFMVRConfig.tiny(parsing_channels=3))
    with pytest.raises(ValueError, match="parsing maps"):
        net(torch.rand(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, V, 3, H, W\)"):
        net(torch.rand(2, 3, 32, 32))


def test_config_presets_and_round_trip(bfm):
    cfg = DFMVRConfig.for_model(bfm, "paper")
    assert (cfg.num_shape, cfg.num_expression) == (bfm.num_shape, bfm.num_expression)
    assert cfg.encoder_widths[0] == 64 and cfg.head_blocks == (3, 4, 6, 3) and cfg.input_size == 224
    assert DFMVRConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DF-MVR config keys"):
        DFMVRConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="preset"):
        DFMVRConfig.for_model(bfm, "huge")
    with pytest.raises(ValueError, match="rotation"):
        DFMVRConfig(rotation="euler")


def test_small_preset_forward_time_3_views_224():
    """Small preset, 3 views at 224 x 224, CPU: ~0.15-0.35 s warm on this machine (see the module doc)."""
    torch.manual_seed(0)
    net = DFMVRNet(DFMVRConfig.small(num_shape=KS, num_expression=KE)).eval()
    x = torch.rand(1, 3, 3, 224, 224)
    with torch.no_grad():
        net(x)  # warm-up
        start = time.perf_counter()
        out = net(x)
        elapsed = time.perf_counter() - start
    print(f"small preset, 3 views 224x224, CPU forward: {elapsed:.3f} s")
    assert out.expression.shape == (1, 3, KE)
    assert elapsed < 5.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu():
    torch.manual_seed(2)
    net = DFMVRNet(DFMVRConfig.tiny(num_shape=KS, num_expression=KE)).eval()
    x = torch.rand(2, 3, 3, 48, 48)
    with torch.no_grad():
        cpu = net(x)
        gpu = net.to("cuda")(x.to("cuda"))
    for name, value in vars(cpu).items():
        torch.testing.assert_close(getattr(gpu, name).cpu(), value, rtol=1e-3, atol=1e-3)
