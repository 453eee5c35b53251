"""One joint-stage evaluation (every term of the energy, and the gradient of its weighted total with respect to
every variable) with the nvdiffrast rasterizer agrees with the torch rasterizer on the same inputs (CUDA and
nvdiffrast; skipped otherwise). The same comparison runs on the CPU with two torch rasterizers, so the body of
the CUDA test is exercised everywhere.

Inputs: the tiny synthetic face model, a small PCA texture in its UV layout, a random ArcFace r18 (so the
identity, id-hat and content terms run through the renders too), a photo rendered once on the CPU with the
torch rasterizer and moved to the device: both backends see the same photo, landmarks, start and seed.

Tolerances (justified by `test_nvdiffrast_parity.py`'s measured agreement of the renders themselves: interior
pixels within 1e-2 on average, silhouettes within one pixel, >98 % of interior pixels on the same triangle):
- terms that never touch the rasterizer (landmark, priors, ``reprojection_px``) agree to float32 rounding;
- image terms (pixel, identity, id-hat, content) agree within 5 % relative + 2e-3 absolute: a one-pixel band
  round a face ~40 px across in the 64 px crop is ~10 % of its pixels, and the band's colours differ by the
  antialiasing only partly (the render is composited over the photo, whose colours the band's pixels share);
  the random r18's identity terms are ~1e-6 (a random network barely tells two images apart), so for them
  the check is only that they run and stay finite with either backend: pixel is the image term compared;
- the gradient of the weighted total (all variables concatenated) has cosine > 0.99 between the backends:
  it is dominated by the rasterizer-free landmark term's rotation gradient, so each group's gradient is checked too, > 0.9: the bound
  the renderer parity test sets for vertex gradients (geometry gradients of image terms live on silhouettes).
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointStage, JointStageConfig, JointVariables
from ganfit.fitting.stages.joint_terms import composite
from ganfit.model.texture.base import model_uv_layout_id
from ganfit.model.texture.linear import LinearTextureModel
from ganfit.perception.identity import ArcFace, iresnet
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional

_HAVE_NVDIFFRAST = importlib.util.find_spec("nvdiffrast") is not None
SIZE = 96        # photo side
RESOLUTION = 64  # the stage's crop
RASTER_FREE = ("landmark", "shape_prior", "expression_prior", "lighting_prior", "latent_prior", "reprojection_px")
IMAGE_TERMS = ("pixel", "identity", "identity_hat", "content")


def _texture_model(model, k: int = 4, res: int = 16) -> LinearTextureModel:
    g = torch.Generator().manual_seed(3)
    v, u = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    mean = torch.tensor([0.7, 0.5, 0.4])[:, None, None].expand(3, res, res).clone()
    basis = []
    for i in range(k):
        b = torch.randn(3, generator=g)[:, None, None] * torch.cos(math.pi * (2 * u + (i + 1) * v) + i)[None]
        basis.append(b / b.norm())
    return LinearTextureModel(mean, torch.stack(basis), torch.full((k,), 2.0), uv_layout=model_uv_layout_id(model))


def _problem(model) -> dict:
    """A photo of the tiny face (known geometry, light, latent) and a perturbed start, on the CPU."""
    tex = _texture_model(model)
    params = FitParams(shape=torch.full((1, model.num_shape), 0.3), expression=torch.full((1, model.num_expression), -0.2),
                       rotation=torch.tensor([[0.1, -0.25, 0.05]]), translation=torch.tensor([[0.0, 0.0, -600.0]]),
                       focal=torch.tensor([250.0]), principal=torch.tensor([[SIZE / 2, SIZE / 2]]))
    light = default_sh(1, ambient=0.7) + sh_directional(torch.tensor([0.5, 0.4, 1.0]), 0.4)
    latent = torch.tensor([[1.0, -0.5, 0.8, 0.3]])
    with torch.no_grad():
        out = Renderer(model, make_rasterizer("torch", "cpu"), image_size=(SIZE, SIZE)).render(
            params, texture=tex.decode(latent), lighting=light)
        photo = composite(out.image.permute(0, 3, 1, 2), out.alpha, torch.tensor([0.3, 0.35, 0.4])[None, :, None, None])
    start = JointVariables(latent=torch.zeros(1, 4), lighting=default_sh(1), gain=torch.ones(1, 3),
                           offset=torch.zeros(1, 3), shape=params.shape + 0.2, expression=params.expression.clone(),
                           rotation=params.rotation + 0.02, translation=params.translation + torch.tensor([[2.0, -1.0, 4.0]]))
    torch.manual_seed(0)
    net = iresnet("r18").eval()
    return dict(model=model, tex=tex, params=params, photo=photo.clamp(0, 1).contiguous(), landmarks=out.landmarks,
                ids=torch.as_tensor(model.landmark_indices)[None], start=start, net=net)


def joint_evaluation(problem: dict, rasterizer, device: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every term of the joint energy at the start, and the gradient of its weighted total (as one Adam step of
    the stage would take it) with respect to each variable, rendering with `rasterizer` on `device`."""
    dev = torch.device(device)
    p = problem
    cfg = JointStageConfig(resolution=RESOLUTION, latent_candidates=1, init_lighting=False)
    renderer = Renderer(p["model"], rasterizer, image_size=(RESOLUTION, RESOLUTION))
    stage = JointStage(p["model"], renderer, ArcFace(p["net"], device=dev), p["tex"].to(dev), cfg, device=dev)
    params = p["params"].to(dev)
    targets = stage.energy.prepare(p["photo"].to(dev), p["landmarks"].to(dev), params, p["ids"].to(dev),
                                   torch.ones(68, device=dev), cfg.landmark_sigma, default_sh(1, device=dev),
                                   cfg.crop_margin, True)
    leaves = JointVariables(**{k: x.detach().to(dev).clone().requires_grad_(True) for k, x in p["start"].items()})
    weights = stage.weights
    terms = stage.energy.terms(leaves, targets, torch.Generator().manual_seed(4), weights)
    total = sum(weights[k] * terms[k] for k in weights).sum()
    names = [k for k, _ in leaves.items()]
    grads = torch.autograd.grad(total, [x for _, x in leaves.items()], allow_unused=True)
    return ({k: float(v.detach().sum()) for k, v in terms.items()},
            {k: (torch.zeros_like(x) if g is None else g).detach().cpu().double()
             for k, (_, x), g in zip(names, leaves.items(), grads)})


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0, eps=1e-30))


def assert_joint_agreement(a, b) -> None:
    (terms_a, grads_a), (terms_b, grads_b) = a, b
    assert set(terms_a) == set(terms_b)
    for k in RASTER_FREE:
        assert terms_a[k] == pytest.approx(terms_b[k], rel=1e-4, abs=1e-6), k
    for k in IMAGE_TERMS:
        assert math.isfinite(terms_a[k]) and terms_a[k] > 0, k  # the term ran
        assert terms_a[k] == pytest.approx(terms_b[k], rel=0.05, abs=2e-3), k
    flat_a = torch.cat([g.flatten() for g in grads_a.values()])
    flat_b = torch.cat([g.flatten() for g in grads_b.values()])
    assert torch.isfinite(flat_a).all() and torch.isfinite(flat_b).all()
    assert _cosine(flat_a, flat_b) > 0.99
    for k in grads_a:
        assert grads_a[k].abs().sum() > 0, k
        assert _cosine(grads_a[k], grads_b[k]) > 0.9, k


@pytest.fixture(scope="module")
def problem(tiny_model):
    return _problem(tiny_model)


def test_joint_evaluation_on_the_cpu_torch_rasterizer(problem):
    """The CUDA test's body on the CPU: two torch rasterizers, so the agreement must be (nearly) exact."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = joint_evaluation(problem, make_rasterizer("torch", "cpu"), "cpu")
        b = joint_evaluation(problem, make_rasterizer("torch", "cpu"), "cpu")
    finally:
        torch.set_num_threads(before)
    assert_joint_agreement(a, b)
    assert a[0] == b[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not _HAVE_NVDIFFRAST, reason="needs nvdiffrast (pip install ganfit[gpu])")
def test_joint_evaluation_nvdiffrast_matches_torch_on_cuda(problem):
    nv = make_rasterizer("nvdiffrast", "cuda")  # raises BackendUnavailableError if the plugin cannot build
    a = joint_evaluation(problem, make_rasterizer("torch", "cuda"), "cuda")
    b = joint_evaluation(problem, nv, "cuda")
    assert_joint_agreement(a, b)
