"""Tests of ganfit.model.texture.pggan: layers (equalized lr, pixel norm, minibatch stddev), the
progressive generator/discriminator (shapes, fade-in), TexturePGGAN (TextureModel, files) and gradients
from a rendered image into the latent."""
from __future__ import annotations

import math

import pytest
import torch

from ganfit.errors import ConfigError, ModelFormatError
from ganfit.model.texture.base import TextureModel, model_uv_layout_id
from ganfit.model.texture.pggan import (
    Discriminator,
    EqualizedConv2d,
    EqualizedLinear,
    Generator,
    GeneratorConfig,
    MinibatchStdDev,
    PixelNorm,
    TexturePGGAN,
    downsample2x,
    upsample2x,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(fmap_base=64, fmap_max=32)


@pytest.fixture(scope="module")
def gen32() -> Generator:
    torch.manual_seed(0)
    return Generator(16, 32, **TINY).eval()


# ----------------------------------------------------------------------------- layers
def test_equalized_lr_scale_is_he_constant_and_weights_are_standard_normal():
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 48, 3)
    assert conv.scale == pytest.approx(math.sqrt(2.0 / (64 * 9)))
    lin = EqualizedLinear(300, 200)
    assert lin.scale == pytest.approx(math.sqrt(2.0 / 300))
    assert EqualizedConv2d(32, 3, 1, gain=1.0).scale == pytest.approx(1.0 / math.sqrt(32))
    for w in (conv.weight.detach(), lin.weight.detach()):
        assert abs(float(w.mean())) < 0.02 and abs(float(w.std()) - 1.0) < 0.02
    assert float(conv.bias.detach().abs().max()) == 0.0
    # The scale is applied at run time: the layer equals a plain conv with the scaled weight.
    x = torch.randn(2, 64, 5, 5)
    ref = torch.nn.functional.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    assert torch.allclose(conv(x), ref)
    # He's constant: a layer fed unit-variance inputs gives outputs of mean square 2 (which the
    # following leaky ReLU roughly halves again).
    with torch.no_grad():
        y = EqualizedLinear(512, 512)(torch.randn(4096, 512))
    assert abs(float(y.square().mean()) - 2.0) < 0.15


def test_every_layer_of_the_networks_uses_the_he_constant(gen32):
    disc = Discriminator(gen32.config)
    for net in (gen32, disc):
        for name, m in net.named_modules():
            if isinstance(m, EqualizedConv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
            elif isinstance(m, EqualizedLinear):
                fan_in = m.weight.shape[1]
            else:
                continue
            linear_out = "to_rgb" in name or name.endswith("dense1")
            gain = 1.0 if linear_out else math.sqrt(2.0)
            assert m.scale == pytest.approx(gain / math.sqrt(fan_in)), name


def test_pixel_norm_gives_unit_mean_square():
    x = torch.randn(3, 17, 5, 4) * (0.1 + torch.rand(3, 1, 5, 4)) * 10
    y = PixelNorm()(x)
    assert torch.allclose(y.square().mean(dim=1), torch.ones(3, 5, 4), atol=1e-5)
    assert torch.allclose(PixelNorm()(torch.randn(6, 32)).square().mean(1), torch.ones(6), atol=1e-5)


def test_minibatch_stddev_on_a_constructed_batch():
    # One group of 4: sample i is constant i, so the std over the group is sqrt(var([0, 1, 2, 3])).
    x = torch.arange(4.0)[:, None, None, None].expand(4, 3, 2, 2).contiguous()
    y = MinibatchStdDev(group_size=4)(x)
    assert y.shape == (4, 4, 2, 2)
    assert torch.equal(y[:, :3], x)
    assert torch.allclose(y[:, 3], torch.full((4, 2, 2), math.sqrt(1.25)), atol=1e-6)
    # Two groups (sample i in group i % 2): the even samples vary by 2s, the odd ones not at all.
    x = torch.tensor([0.0, 5.0, 2.0, 5.0, 4.0, 5.0, 6.0, 5.0])[:, None, None, None].expand(8, 2, 3, 3).contiguous()
    y = MinibatchStdDev(group_size=4)(x)[:, 2]
    even = math.sqrt(torch.tensor([0.0, 2.0, 4.0, 6.0]).var(unbiased=False).item())
    assert torch.allclose(y[0::2], torch.full((4, 3, 3), even), atol=1e-6)
    assert torch.allclose(y[1::2], torch.full((4, 3, 3), 1e-4), atol=1e-6)  # sqrt(0 + 1e-8)
    # The feature and pixel average: per-pixel stds 0 and 2 average to 1.
    x = torch.zeros(2, 1, 1, 2)
    x[1, 0, 0, 1] = 4.0  # group of 2: std at pixel 1 = 2, at pixel 0 = 0
    assert torch.allclose(MinibatchStdDev(2)(x)[:, 1], torch.ones(2, 1, 2), atol=1e-4)


# ----------------------------------------------------------------------------- networks
def test_shapes_and_channels_at_every_level(gen32):
    cfg = gen32.config
    assert cfg.num_levels == 4 and cfg.base == (4, 4)
    assert [cfg.channels_at(k) for k in range(4)] == [32, 16, 8, 4]
    disc = Discriminator(cfg)
    z = torch.randn(4, 16)
    for level in range(4):
        side = 4 << level
        for alpha in (0.0, 0.5, 1.0):
            img = gen32(z, level, alpha)
            assert img.shape == (4, 3, side, side)
            assert disc(img, level, alpha).shape == (4,)
    assert gen32(z).shape == (4, 3, 32, 32)  # default: the highest level
    full = GeneratorConfig()
    assert [full.channels_at(k) for k in range(full.num_levels)] == [512, 512, 512, 512, 256, 128, 64]
    assert GeneratorConfig(resolution=512).channels_at(7) == 32


def test_non_square_base_block():
    g = Generator(8, (16, 32), **TINY)
    assert g.config.base == (4, 8)
    assert g(torch.randn(2, 8), 0).shape == (2, 3, 4, 8)
    assert g(torch.randn(2, 8), 2, 0.3).shape == (2, 3, 16, 32)
    assert Discriminator(g.config)(torch.randn(2, 3, 16, 32), 2, 0.3).shape == (2,)


def test_bad_configs_raise():
    for bad in (dict(max_resolution=24), dict(max_resolution=1024), dict(max_resolution=2), dict(latent_dim=0)):
        with pytest.raises(ConfigError):
            Generator(**{"latent_dim": 8, "max_resolution": 16, **bad})
    with pytest.raises(ConfigError):
        Generator(8, 16, **TINY)(torch.randn(1, 8), 3)
    with pytest.raises(ValueError):
        Generator(8, 16, **TINY)(torch.randn(1, 9), 1)


def test_fade_in_is_continuous(gen32):
    z = torch.randn(3, 16)
    disc = Discriminator(gen32.config)
    for level in range(1, 4):
        with torch.no_grad():
            lower = gen32(z, level - 1, 1.0)
            start = gen32(z, level, 0.0)
            end = gen32(z, level, 1.0)
            new_block = gen32.to_rgb[level](gen32.blocks[level - 1](gen32.features(z, level - 1)))
            mid = gen32(z, level, 0.25)
            # alpha = 0: exactly the upsampled output of the level below; alpha = 1: the new block's.
            assert torch.equal(start, upsample2x(lower))
            assert torch.equal(end, new_block)
            assert torch.allclose(mid, 0.75 * upsample2x(lower) + 0.25 * new_block, atol=1e-6)
            # The discriminator fades the same way: alpha = 0 sees the downsampled image at the level below.
            img = torch.randn(4, 3, 4 << level, 4 << level)
            assert torch.equal(disc(img, level, 0.0), disc(downsample2x(img), level - 1, 1.0))


# ----------------------------------------------------------------------------- texture model
def make_texture_model(res: int = 16, layout: str = "layout-a", latent: int = 16, seed: int = 0) -> TexturePGGAN:
    torch.manual_seed(seed)
    return TexturePGGAN(Generator(latent, res, **TINY), layout, name="tiny").eval()


@torch.no_grad()
def test_texture_model_interface():
    model = make_texture_model()
    assert isinstance(model, TextureModel)
    assert model.latent_dim == 16 and model.resolution == (16, 16) and model.uv_layout == "layout-a"
    z = model.sample(5, torch.Generator().manual_seed(3))
    assert z.shape == (5, 16)
    assert torch.equal(z, model.sample(5, torch.Generator().manual_seed(3)))
    tex = model.decode(z)
    assert tex.shape == (5, 3, 16, 16) and float(tex.min()) >= 0 and float(tex.max()) <= 1
    raw = model.generator(z, model.level, 1.0)
    assert torch.allclose(tex, ((raw + 1) / 2).clamp(0, 1))
    # The norm prior: zero on the sqrt(D) shell, growing off it, blind to the direction.
    unit = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    assert torch.allclose(model.latent_prior(unit * 4.0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(model.latent_prior(unit * 6.0), torch.full((3,), 2.0), atol=1e-5)
    assert model.latent_prior(z).shape == (5,)
    # The generator sees only the direction (pixel-normalised latent).
    assert torch.allclose(model.decode(z), model.decode(3.0 * z), atol=1e-5)
    lower = TexturePGGAN(model.generator, "layout-a", level=1)
    assert lower.resolution == (8, 8) and lower.decode(z).shape == (5, 3, 8, 8)


def test_save_load_round_trip(tmp_path):
    model = make_texture_model()
    model.meta = {"trained_on": "tests", "kimg": 1.5}
    path = tmp_path / "tex.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)  # no pickled code needed
    assert raw["uv_layout"] == "layout-a" and raw["resolution"] == [16, 16] and raw["level"] == 2
    loaded = TexturePGGAN.load(path, resolution=16, uv_layout="layout-a")
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
    assert loaded.meta == model.meta and loaded.name == "tiny"
    other = make_texture_model(seed=1)
    with torch.no_grad():
        assert not torch.equal(other.decode(z), model.decode(z))
        other.load_weights(path)
        assert torch.equal(other.decode(z), model.decode(z))


def test_loading_another_resolution_or_layout_raises(tmp_path):
    path = tmp_path / "tex.pt"
    make_texture_model(16).save(path)
    with pytest.raises(ModelFormatError, match=r"16x16.*32x32"):
        TexturePGGAN.load(path, resolution=32)
    with pytest.raises(ModelFormatError, match=r"layout-a.*layout-b"):
        TexturePGGAN.load(path, uv_layout="layout-b")
    with pytest.raises(ModelFormatError, match=r"16x16.*32x32"):
        make_texture_model(32).load_weights(path)
    with pytest.raises(ModelFormatError, match=r"layout-a.*layout-b"):
        make_texture_model(16, layout="layout-b").load_weights(path)
    with pytest.raises(ModelFormatError, match="architecture"):
        make_texture_model(16, latent=8).load_weights(path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelFormatError):
        TexturePGGAN.load(bad)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="not a ganfit texture-GAN"):
        TexturePGGAN.load(tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="not found"):
        TexturePGGAN.load(tmp_path / "missing.pt")


def test_gradient_flows_from_a_render_into_the_latent(tiny_model):
    from ganfit.fitting.params import FitParams
    from ganfit.model.texture.base import check_layout
    from ganfit.render.renderer import Renderer, make_rasterizer

    model = make_texture_model(16, layout=model_uv_layout_id(tiny_model))
    check_layout(model, tiny_model)
    renderer = Renderer(tiny_model, make_rasterizer("torch", "cpu"), image_size=(32, 32))
    params = FitParams(
        shape=torch.zeros(1, 6), expression=torch.zeros(1, 4), rotation=torch.zeros(1, 3),
        translation=torch.tensor([[0.0, 0.0, -600.0]]), focal=torch.full((1,), 100.0),
        principal=torch.full((1, 2), 16.0),
    )
    z = model.sample(1, torch.Generator().manual_seed(0)).requires_grad_(True)
    out = renderer.render(params, texture=model.decode(z))
    assert out.alpha.sum() > 50
    target = torch.full_like(out.image, 0.5)
    loss = ((out.image - target * out.alpha[..., None]) ** 2).mean() + 1e-3 * model.latent_prior(z).sum()
    loss.backward()
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    assert float(z.grad.abs().max()) > 0
