"""The joint stage's composite of the render over the photo: the face mesh's holes (bfm-3ddfa leaves the mouth
open between the lips, and the nostrils and ear canals) are painted a cavity colour, so no photo pixel shows
through the face into the identity, content and id-hat terms (`joint_terms.fill_holes`, `JointEnergy.over`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial import Delaunay

from ganfit.fitting.params import FitParams
from ganfit.fitting.stages import JointEnergy, JointStage, JointStageConfig
from ganfit.fitting.stages.joint_terms import CAVITY_COLOUR, composite, enclosed_holes, fill_holes
from ganfit.model.texture.base import model_uv_layout_id
from ganfit.model.texture.linear import LinearTextureModel
from ganfit.render.renderer import Renderer, make_rasterizer
from ganfit.render.shading import default_sh, sh_directional

pytestmark = pytest.mark.usefixtures("one_thread")

R = 160  # the joint stage's crop
GREEN = torch.tensor([0.0, 1.0, 0.0])[None, :, None, None].expand(1, 3, R, R)
MAGENTA = torch.tensor([1.0, 0.0, 1.0])[None, :, None, None].expand(1, 3, R, R)


def test_enclosed_holes_and_fill():
    """A hole inside the coverage is found (and grown by a pixel into the rim); a gap open to the border is not."""
    cov = torch.zeros(1, 20, 20, dtype=torch.bool)
    cov[0, 4:16, 4:16] = True
    cov[0, 8:11, 8:11] = False  # enclosed
    cov[0, 13:20, 6] = False  # a notch reaching the border
    holes = enclosed_holes(cov, grow=0)
    assert holes[0, 8:11, 8:11].all() and int(holes.sum()) == 9
    assert int(enclosed_holes(cov).sum()) == 25  # grown into the 1-px rim
    bg = fill_holes(0.5, cov, (0.1, 0.2, 0.3))
    assert bg.shape == (1, 3, 20, 20)
    assert torch.allclose(bg[0, :, 9, 9], torch.tensor([0.1, 0.2, 0.3])) and float(bg[0, 0, 17, 6]) == 0.5
    assert not enclosed_holes(torch.zeros(2, 5, 5, dtype=torch.bool)).any()


def _opening_component(model) -> tuple[int, float]:
    """The expression component that opens the mouth most (inner-lip landmarks 62 and 66 apart), and its sign."""
    ids = torch.as_tensor(model.landmark_indices)
    zero_s, zero_e = torch.zeros(1, model.num_shape), torch.zeros(1, model.num_expression)
    gap = lambda v: float(v[0, ids[62], 1] - v[0, ids[66], 1])  # noqa: E731  (upper lip above the lower, y up)
    g0 = gap(model.vertices(zero_s, zero_e))
    eye = torch.eye(model.num_expression)
    gains = [gap(model.vertices(zero_s, eye[k : k + 1])) - g0 for k in range(model.num_expression)]
    k = int(np.argmax(np.abs(gains)))
    return k, float(np.sign(gains[k]))


@pytest.fixture(scope="module")
def open_mouth(bfm):
    """The mean face with an open mouth, frontal, at the joint stage's crop size, and its render."""
    k, sign = _opening_component(bfm)
    expr = torch.zeros(1, bfm.num_expression)
    expr[0, k] = 2.5 * sign
    params = FitParams(torch.zeros(1, bfm.num_shape), expr, torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -700.0]]),
                       torch.tensor([500.0]), torch.tensor([[R / 2, R / 2]]))
    renderer = Renderer(bfm, make_rasterizer("torch", "cpu"), image_size=(R, R))
    with torch.no_grad():
        out = renderer.render(params, regions=False)
    return dict(params=params, renderer=renderer, out=out, energy=JointEnergy(bfm, renderer, None, None))


def _inside(points: np.ndarray, shape) -> np.ndarray:
    """(H, W) bool: pixel centres inside the convex hull of points (N, 2) pixels."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    return (Delaunay(points).find_simplex(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1)) >= 0).reshape(shape)


def _is_green(img: torch.Tensor) -> np.ndarray:
    c = img[0].numpy()
    return (c[1] > 0.3) & (c[1] > c[0] + 0.2) & (c[1] > c[2] + 0.2)


@pytest.mark.assets
def test_no_photo_pixel_inside_the_face(open_mouth, bfm):
    """Over a pure green photo: with the fix, no green inside the inner lips' hull or anywhere inside the face
    outline (the render's coverage with its holes filled, less the antialiased outer silhouette), and the
    composite there does not depend on the photo at all; with hole_colour=None (the old behaviour) the photo
    shows through the open mouth."""
    s = open_mouth
    out = s["out"]
    img = out.image.permute(0, 3, 1, 2)
    old = JointEnergy(bfm, s["renderer"], None, None, hole_colour=None)
    before = old.over(img, out, GREEN)
    assert torch.equal(before, composite(img, out.alpha, GREEN))
    after = s["energy"].over(img, out, GREEN)

    mouth = _inside(out.landmarks[0, 60:68].numpy(), (R, R))
    assert mouth.sum() > 100  # the mouth is open
    assert _is_green(before)[mouth].sum() > 50
    assert _is_green(after)[mouth].sum() == 0

    covered = out.mask[0].numpy()
    face = ndimage.binary_erosion(ndimage.binary_fill_holes(covered), iterations=2)
    leaks = (~covered & face).sum()
    assert leaks > 100  # the mouth, nostrils, ear canals
    assert _is_green(before)[face].sum() >= leaks * 0.8
    assert _is_green(after)[face].sum() == 0
    other = s["energy"].over(img, out, MAGENTA)
    f = torch.from_numpy(face)
    assert torch.equal(after[0][:, f], other[0][:, f])
    cavity = torch.tensor(CAVITY_COLOUR)
    bare = torch.from_numpy(mouth) & (out.alpha[0] == 0)  # no lip edge blended in
    assert bare.sum() > 50 and torch.allclose(after[0][:, bare], cavity[:, None])


@pytest.mark.assets
def test_gradients_still_reach_texture_lighting_and_expression(open_mouth, bfm):
    """Through the filled composite the texture latent, the light and the expression (the lips' inner edge
    against the cavity) get gradients; the photo gets none inside the face."""
    s = open_mouth
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 3, 16, 16, generator=g)
    tex = LinearTextureModel(torch.full((3, 16, 16), 0.6), basis / basis.flatten(1).norm(dim=1)[:, None, None, None],
                             torch.full((4,), 1.0), uv_layout=model_uv_layout_id(bfm))
    latent = torch.zeros(1, 4, requires_grad=True)
    light = (default_sh(1) * 0.8 + sh_directional(torch.tensor([0.3, 0.4, 1.0]), 0.3)).requires_grad_(True)
    expr = s["params"].expression.clone().requires_grad_(True)
    photo = GREEN.clone().requires_grad_(True)
    p = s["params"]
    params = FitParams(p.shape, expr, p.rotation, p.translation, p.focal, p.principal)
    out = s["renderer"].render(params, texture=tex.decode(latent), lighting=light, regions=False)
    comp = s["energy"].over(out.image.permute(0, 3, 1, 2), out, photo)
    target = torch.rand(comp.shape, generator=g)
    loss = (comp - target).pow(2).sum()
    g_latent, g_light, g_expr, g_photo = torch.autograd.grad(loss, [latent, light, expr, photo])
    for grad in (g_latent, g_light, g_expr):
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    face = ndimage.binary_erosion(ndimage.binary_fill_holes(out.mask[0].numpy()), iterations=2)
    assert float(g_photo[0][:, torch.from_numpy(face)].abs().max()) == 0.0
    assert float(g_photo.abs().sum()) > 0  # outside the face the photo is still the background


def test_stage_config_switch(tiny_model):
    """JointStageConfig.hole_colour reaches the energy; None restores the photo behind the holes."""
    from ganfit.model.texture.base import model_uv_layout_id as layout

    tex = LinearTextureModel(torch.full((3, 4, 4), 0.5), torch.zeros(1, 3, 4, 4), torch.ones(1),
                             uv_layout=layout(tiny_model)) if tiny_model.uv is not None else None
    renderer = Renderer(tiny_model, make_rasterizer("torch", "cpu"), image_size=(32, 32))
    assert JointStage(tiny_model, renderer, None, tex, JointStageConfig(resolution=32)).energy.hole_colour == CAVITY_COLOUR
    assert JointStage(tiny_model, renderer, None, tex, JointStageConfig(resolution=32, hole_colour=None)).energy.hole_colour is None
