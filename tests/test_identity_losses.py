"""Identity and content losses (GANFit eqs. 3 and 4): values, residual forms, and gradients through an
ArcFace iresnet (random r18 weights) down to the input pixels, checked against finite differences."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ganfit.fitting.losses import content_loss, content_residuals, identity_loss, identity_residuals
from ganfit.perception.identity import ArcFace, IdentityNet
from ganfit.perception.identity.arcface import ARCFACE_TEMPLATE_112, iresnet


def test_identity_loss_values():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    expect = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    assert torch.allclose(identity_loss(a, b), expect, atol=1e-6)
    assert torch.allclose(identity_loss(a, 2.5 * a), torch.zeros(3), atol=1e-6)
    assert torch.allclose(identity_loss(a, -a), torch.full((3,), 2.0), atol=1e-6)
    assert torch.allclose(0.5 * identity_residuals(a, b).pow(2).sum(-1), identity_loss(a, b), atol=1e-6)
    with pytest.raises(ValueError):
        identity_loss(a, b[:, :4])


def test_content_loss_values():
    g = torch.Generator().manual_seed(0)
    fa = [torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 8, 3, 3, generator=g)]
    fb = [torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 8, 3, 3, generator=g)]
    per = [((a - b) ** 2).sum((1, 2, 3)) / a[0].numel() for a, b in zip(fa, fb)]
    assert torch.allclose(content_loss(fa, fb), per[0] + per[1])
    assert torch.allclose(content_loss(fa, fb, layers=[1]), per[1])
    assert torch.allclose(content_loss(fa, fa), torch.zeros(2))
    assert torch.allclose(0.5 * content_residuals(fa, fb).pow(2).sum(-1), content_loss(fa, fb), atol=1e-5)
    with pytest.raises(ValueError):
        content_loss(fa, fb[:1])
    with pytest.raises(ValueError):
        content_loss(fa, [fb[0], fb[0]])


def _random_arcface(seed: int = 0) -> ArcFace:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = iresnet("r18")
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.1 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(mod, nn.PReLU):
                mod.weight.copy_(0.5 * torch.rand(mod.weight.shape, generator=g))
    return ArcFace(net)


def _identity_landmarks(dtype=torch.float64) -> torch.Tensor:
    t = torch.tensor(ARCFACE_TEMPLATE_112, dtype=dtype)
    lm = torch.full((1, 68, 2), 56.0, dtype=dtype)
    lm[0, 36:42], lm[0, 42:48], lm[0, 30], lm[0, 48], lm[0, 54] = t[0], t[1], t[2], t[3], t[4]
    return lm


def test_gradients_reach_the_pixels_and_match_finite_differences():
    """float64 r18 on a 112x112 image with identity landmarks (the crop is the image itself):
    d(loss)/d(pixels) by autograd equals a central finite difference along a random direction,
    for the identity loss and for the content loss."""
    net = _random_arcface().double()
    assert isinstance(net, IdentityNet)
    g = torch.Generator().manual_seed(1)
    lm = _identity_landmarks()
    target = torch.rand(1, 3, 112, 112, generator=g, dtype=torch.float64)
    image = torch.rand(1, 3, 112, 112, generator=g, dtype=torch.float64)
    with torch.no_grad():
        t_emb, t_feats = net.embed_and_features(target, lm)

    def losses(img):
        emb, feats = net.embed_and_features(img, lm)
        return identity_loss(emb, t_emb).sum(), content_loss(feats, t_feats).sum(), emb, feats

    x = image.clone().requires_grad_(True)
    l_id, l_content, emb, feats = losses(x)
    assert l_id > 1e-3 and l_content > 1e-6
    # identical inputs give zero loss (and the embedding path matches embed / features)
    assert identity_loss(emb, emb.detach()).abs().max() < 1e-12
    assert content_loss(feats, [f.detach() for f in feats]).abs().max() == 0
    (g_id,) = torch.autograd.grad(l_id, x, retain_graph=True)
    (g_content,) = torch.autograd.grad(l_content, x)
    for grad in (g_id, g_content):
        assert torch.isfinite(grad).all() and grad.abs().max() > 0
        # the embedding depends on every pixel of the 112x112 crop
        assert (grad.abs().sum(1) > 0).float().mean() > 0.99

    v = torch.randn(image.shape, generator=g, dtype=torch.float64)
    v /= v.norm()
    eps = 1e-5  # small: a larger step can cross a PReLU kink somewhere among ~1e6 units
    with torch.no_grad():
        lp_id, lp_c, _, _ = losses(image + eps * v)
        lm_id, lm_c, _, _ = losses(image - eps * v)
    fd_id, fd_c = (lp_id - lm_id) / (2 * eps), (lp_c - lm_c) / (2 * eps)
    an_id, an_c = (g_id * v).sum(), (g_content * v).sum()
    assert torch.isclose(an_id, fd_id, rtol=1e-4, atol=1e-9), (an_id.item(), fd_id.item())
    assert torch.isclose(an_c, fd_c, rtol=1e-4, atol=1e-9), (an_c.item(), fd_c.item())


def test_embed_and_features_float32_match():
    net = _random_arcface(seed=2)
    img = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    lm = _identity_landmarks(torch.float32) + 4.0
    emb, feats = net.embed_and_features(img, lm)
    assert torch.allclose(net.embed(img, lm), emb, atol=1e-6)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    loss = identity_loss(emb, torch.ones_like(emb)).sum() + content_loss(feats, [torch.zeros_like(f) for f in feats]).sum()
    (grad,) = torch.autograd.grad(loss, img)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    assert grad[..., :3, :].abs().max() == 0  # rows the crop never samples get no gradient
