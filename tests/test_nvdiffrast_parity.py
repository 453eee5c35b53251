"""The nvdiffrast backend agrees with the torch backend (needs CUDA and nvdiffrast; skipped otherwise).

Both backends render on the same CUDA device: images must agree on interior pixels, silhouettes may
differ by one pixel, and gradients with respect to vertex positions and SH coefficients must point the
same way.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from ganfit.fitting.params import FitParams
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional

_HAVE_NVDIFFRAST = importlib.util.find_spec("nvdiffrast") is not None

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not _HAVE_NVDIFFRAST, reason="needs nvdiffrast (pip install ganfit[gpu])"),
]

SIZE = 96


@pytest.fixture(scope="module")
def backends():
    nv = make_rasterizer("nvdiffrast", "cuda")  # raises BackendUnavailableError if the plugin cannot build
    return {"torch": make_rasterizer("torch", "cuda"), "nvdiffrast": nv}


def _params(model, device, *, x=0.0, y=0.0) -> FitParams:
    return FitParams(
        shape=torch.zeros(1, min(6, model.num_shape), device=device),
        expression=torch.zeros(1, min(4, model.num_expression), device=device),
        rotation=torch.tensor([[0.1, -0.25, 0.05]], device=device),
        translation=torch.tensor([[x, y, -600.0]], device=device),
        focal=torch.tensor([200.0], device=device),
        principal=torch.tensor([[SIZE / 2, SIZE / 2]], device=device),
    )


def _lighting(device):
    return (default_sh(ambient=0.6, device=device) + sh_directional(torch.tensor([0.5, 0.4, 1.0]), 0.6).to(device)).contiguous()


def _erode(mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()[:, None]
    return (-torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1))[:, 0] > 0.5


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(mask.float()[:, None], 3, stride=1, padding=1)[:, 0] > 0.5


def _render(model, rasterizer, *, texture=None, colors=None, vertices=None, lighting=None, x=0.0, y=0.0):
    device = torch.device("cuda")
    renderer = Renderer(model, rasterizer, image_size=(SIZE, SIZE), texture_filter="bilinear")
    return renderer.render(
        _params(model, device, x=x, y=y), texture=texture, vertex_colors=colors, vertices=vertices,
        lighting=_lighting(device) if lighting is None else lighting,
    )


def _face_models(tiny_model, request):
    models = [tiny_model]
    try:
        models.append(request.getfixturevalue("bfm"))
    except pytest.skip.Exception:
        pass
    return models


def _check_images(a, b):
    ma, mb = a.mask, b.mask
    # Silhouettes agree up to one pixel.
    assert not (ma & ~_dilate(mb)).any() and not (mb & ~_dilate(ma)).any()
    inner = _erode(ma) & _erode(mb)
    assert inner.sum() > 200
    assert (a.image - b.image).abs()[inner].mean() < 1e-2
    assert (a.depth - b.depth).abs()[inner].max() < 0.5  # millimetres
    assert (a.normals - b.normals).abs()[inner].mean() < 1e-3
    agree = (a.fragments.triangle_id == b.fragments.triangle_id)[inner].float().mean()
    assert agree > 0.98


def test_images_agree_with_vertex_colours(backends, tiny_model, request):
    for model in _face_models(tiny_model, request):
        colors = torch.rand(1, model.num_vertices, 3, generator=torch.Generator().manual_seed(0)).cuda()
        colors = 0.3 + 0.4 * colors
        for x, y in ((0.0, 0.0), (40.0, 30.0)):  # off-centre: catches a flipped image axis
            a = _render(model, backends["torch"], colors=colors, x=x, y=y)
            b = _render(model, backends["nvdiffrast"], colors=colors, x=x, y=y)
            _check_images(a, b)
            assert (a.alpha - b.alpha).abs().mean() < 1e-2


def test_images_agree_with_a_uv_texture(backends, tiny_model):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    tex = torch.stack([0.5 + 0.3 * torch.sin(8 * xx), 0.5 + 0.3 * torch.cos(6 * yy), xx * yy])[None].cuda()
    a = _render(tiny_model, backends["torch"], texture=tex, x=20.0)
    b = _render(tiny_model, backends["nvdiffrast"], texture=tex, x=20.0)
    _check_images(a, b)


def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(u.flatten(), v.flatten(), dim=0))


def test_gradients_point_the_same_way(backends, tiny_model, request):
    for model in _face_models(tiny_model, request):
        device = torch.device("cuda")
        base = model.vertices(torch.zeros(1, 1, device=device)).detach()
        colors = (0.3 + 0.4 * torch.rand(1, model.num_vertices, 3, generator=torch.Generator().manual_seed(1))).cuda()
        weight = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2)).cuda()
        grads = {}
        for name, rasterizer in backends.items():
            verts = base.clone().requires_grad_(True)
            light = _lighting(device).requires_grad_(True)
            out = _render(model, rasterizer, colors=colors, vertices=verts, lighting=light)
            ((out.image * weight).sum() + out.alpha.sum()).backward()
            grads[name] = (verts.grad, light.grad)
        assert _cosine(grads["torch"][0], grads["nvdiffrast"][0]) > 0.9
        assert _cosine(grads["torch"][1], grads["nvdiffrast"][1]) > 0.9


def test_auto_backend_picks_nvdiffrast_on_cuda():
    assert make_rasterizer("auto", "cuda").name == "nvdiffrast"
