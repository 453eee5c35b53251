"""Tests of ganfit.render.renderer (Renderer, make_rasterizer) on the CPU torch backend."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganfit.errors import ConfigError, FitError, GanfitError
from ganfit.fitting.params import FitParams
from ganfit.model.morphable import MorphableModel
from ganfit.render.camera import project_points
from ganfit.render.renderer import Renderer, RenderInputError, RenderOutput, make_rasterizer
from ganfit.render.shading import PhongLight, default_sh, sh_directional, sh_shading

pytestmark = pytest.mark.usefixtures("one_thread")

RADIUS = 80.0
DISTANCE = 600.0
FOCAL = 170.0


def sphere_model(n_lat: int = 20, n_lon: int = 40, radius: float = RADIUS) -> MorphableModel:
    """A UV sphere as a face model: triangles counter-clockwise from outside, the UV seam at the back
    (-z), regions "front" (z > 0) and "left" (x < 0), zero shape/expression bases."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), -np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]])
    uv = np.concatenate([[[0.5, 1.0]], np.stack([p / (2 * np.pi), 1 - t / np.pi], -1).reshape(-1, 2), [[0.5, 0.0]]])
    # Rotate by 90 degrees about y so that the seam (phi = 0, +x) moves to the back (-z).
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    verts = verts @ rot.T * radius
    bottom = len(verts) - 1

    def rid(i, j):
        return 1 + i * n_lon + (j % n_lon)

    tris = []
    for j in range(n_lon):
        tris.append((0, rid(0, j), rid(0, j + 1)))
        tris.append((bottom, rid(n_lat - 2, j + 1), rid(n_lat - 2, j)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = rid(i, j), rid(i, j + 1), rid(i + 1, j), rid(i + 1, j + 1)
            tris += [(a, c, d), (a, d, b)]
    v = len(verts)
    front = np.flatnonzero(verts[:, 2] > 0.3 * radius)
    return MorphableModel(
        name="sphere", mean=verts, shape_basis=np.zeros((v, 3, 1)), shape_std=np.ones(1),
        expression_basis=np.zeros((v, 3, 1)), expression_std=np.ones(1), triangles=np.array(tris),
        landmark_indices=front[np.linspace(0, len(front) - 1, 68).astype(int)], uv=uv,
        regions={"front": verts[:, 2] > 0, "left": verts[:, 0] < 0}, meta={"source": "tests"},
    )


def make_params(b: int = 1, *, size: int = 64, rotation=None, translation=None, n_shape: int = 1, n_expr: int = 1) -> FitParams:
    return FitParams(
        shape=torch.zeros(b, n_shape),
        expression=torch.zeros(b, n_expr),
        rotation=torch.zeros(b, 3) if rotation is None else rotation,
        translation=torch.tensor([[0.0, 0.0, -DISTANCE]]).repeat(b, 1) if translation is None else translation,
        focal=torch.full((b,), FOCAL),
        principal=torch.full((b, 2), size / 2.0),
    )


def smooth_texture(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack(
        [
            0.5 + 0.3 * torch.sin(12 * xx) * torch.cos(9 * yy),
            0.5 + 0.3 * torch.cos(7 * xx + 3 * yy),
            0.5 + 0.2 * torch.sin(15 * yy + 4 * xx),
        ]
    )[None]


def interior(mask: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Erode a (B, H, W) bool mask by `steps` pixels (4-neighbourhood)."""
    m = mask.clone()
    for _ in range(steps):
        e = m.clone()
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[:, :, 1:] &= m[:, :, :-1]
        e[:, :, :-1] &= m[:, :, 1:]
        e[:, 0] = e[:, -1] = False
        e[:, :, 0] = e[:, :, -1] = False
        m = e
    return m



@pytest.fixture(scope="module")
def rasterizer():
    return make_rasterizer("torch", "cpu")


@pytest.fixture(scope="module")
def sphere():
    return sphere_model()


@pytest.fixture(scope="module")
def sphere_render(sphere, rasterizer):
    renderer = Renderer(sphere, rasterizer, image_size=(64, 64))
    white = torch.ones(1, sphere.num_vertices, 3)
    light = torch.tensor([0.4, 0.3, 1.0])
    out = renderer.render(make_params(), vertex_colors=white, lighting=sh_directional(light))
    return out, light


# ----------------------------------------------------------------------------- backends
def test_make_rasterizer_choices():
    assert make_rasterizer("torch", "cpu").name == "torch"
    assert make_rasterizer("auto", "cpu").name == "torch"
    with pytest.raises(ConfigError, match="backend"):
        make_rasterizer("opengl")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_nvdiffrast_backend_without_cuda_says_what_to_install():
    from ganfit.render.nvdiffrast_backend import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match=r"pip install ganfit\[gpu\]") as info:
        make_rasterizer("nvdiffrast", "cpu")
    assert isinstance(info.value, GanfitError)


# ----------------------------------------------------------------------------- geometry
def test_sphere_coverage_matches_analytic_disc(sphere_render):
    out, _ = sphere_render
    assert isinstance(out, RenderOutput)
    assert out.image.shape == (1, 64, 64, 3) and out.alpha.shape == (1, 64, 64)
    assert out.depth.shape == (1, 64, 64) and out.normals.shape == (1, 64, 64, 3)
    # The outline of a sphere at distance D is a circle of radius f R / sqrt(D^2 - R^2) px.
    r_px = FOCAL * RADIUS / math.sqrt(DISTANCE**2 - RADIUS**2)
    # The polygon is inscribed in the sphere: the 40-gon outline has a little less area than the circle.
    inscribed = 40 / (2 * math.pi) * math.sin(2 * math.pi / 40)
    expected = math.pi * r_px**2 * inscribed
    assert float(out.alpha.sum()) == pytest.approx(expected, rel=0.02)
    assert float(out.mask.sum()) == pytest.approx(expected, rel=0.03)
    ys, xs = torch.nonzero(out.mask[0], as_tuple=True)
    assert float(xs.float().mean() + 0.5) == pytest.approx(32.0, abs=0.3)
    assert float(ys.float().mean() + 0.5) == pytest.approx(32.0, abs=0.3)
    assert ((out.alpha >= 0) & (out.alpha <= 1 + 1e-6)).all()


def test_sphere_depth_normals_and_landmarks(sphere, sphere_render):
    out, _ = sphere_render
    centre_depth = out.depth[0, 31:33, 31:33]
    assert torch.allclose(centre_depth, torch.full_like(centre_depth, DISTANCE - RADIUS), atol=1.0)
    assert torch.isinf(out.depth[0, 0, 0]) and torch.all(out.normals[0, 0, 0] == 0)
    # Interior normals are unit and match the analytic sphere normal of the pixel ray's hit point.
    m = interior(out.mask)
    n = out.normals[m]
    assert torch.allclose(n.norm(dim=-1), torch.ones(len(n)), atol=1e-5)
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    ray = torch.stack([(xs + 0.5 - 32) / FOCAL, -(ys + 0.5 - 32) / FOCAL, -torch.ones_like(xs, dtype=torch.float32)], -1)
    hit = ray * out.depth[0][m[0]][:, None]
    analytic = (hit - torch.tensor([0.0, 0.0, -DISTANCE])) / RADIUS
    assert (analytic * n).sum(-1).min() > 0.99
    # Landmarks are the projected landmark vertices.
    verts = torch.as_tensor(sphere.mean)[sphere.landmark_indices][None] + torch.tensor([0.0, 0.0, -DISTANCE])
    expected = project_points(verts, torch.tensor([FOCAL]), torch.tensor([[32.0, 32.0]]))
    assert torch.allclose(out.landmarks, expected, atol=1e-4)


def test_sphere_sh_directional_light_matches_lambert(sphere_render):
    out, light = sphere_render
    l = torch.nn.functional.normalize(light, dim=0)
    m = interior(out.mask, 2)
    cos = out.normals[m] @ l
    shade = out.image[m][:, 0]
    # Exactly the band-limited clamped cosine ...
    band_limited = 0.25 + 0.5 * cos + 5.0 / 32.0 * (3 * cos**2 - 1)
    assert torch.allclose(shade, band_limited, atol=1e-4)
    # ... which is max(0, n.l) within the known band-2 approximation error.
    assert (shade - cos.clamp_min(0)).abs().max() < 0.1
    # The brightest pixel faces the light.
    i = int(torch.argmax(shade))
    assert float(cos[i]) > 0.98


def test_regions_are_rendered_vertex_indicators(sphere_render, sphere, rasterizer):
    out, _ = sphere_render
    assert set(out.regions) == {"front", "left"}
    m = interior(out.mask, 2)
    assert torch.allclose(out.regions["front"][m], torch.ones(int(m.sum())), atol=1e-5)
    left = out.regions["left"][0]
    assert float(left[:, :28][m[0, :, :28]].min()) > 0.99  # left of the image = model -x
    assert float(left[:, 36:][m[0, :, 36:]].max()) < 0.01
    assert torch.all(left[~out.mask[0]] == 0)
    renderer = Renderer(sphere, rasterizer, image_size=(16, 16))
    assert renderer.render(make_params(size=16), regions=False).regions == {}
    assert set(renderer.render(make_params(size=16), regions=["left"]).regions) == {"left"}
    with pytest.raises(RenderInputError, match="unknown regions"):
        renderer.render(make_params(size=16), regions=["nose"])


def test_phong_lighting_on_sphere(sphere, rasterizer):
    renderer = Renderer(sphere, rasterizer, image_size=(48, 48))
    light = PhongLight(direction=(0.0, 0.0, 1.0), color=0.8, ambient=0.2)
    out = renderer.render(make_params(size=48), vertex_colors=torch.full((sphere.num_vertices, 3), 0.5), lighting=light)
    m = interior(out.mask, 2)
    expected = 0.5 * (0.2 + 0.8 * out.normals[m][:, 2].clamp_min(0))
    assert torch.allclose(out.image[m][:, 1], expected, atol=1e-5)
    point = PhongLight(position=(0.0, 0.0, 0.0), ambient=0.0, specular=0.5, shininess=30.0)
    out = renderer.render(make_params(size=48), lighting=point)
    centre = out.image[0, 23:25, 23:25]
    assert float(centre.min()) > 1.3  # white albedo: diffuse ~1 plus the specular highlight
    assert float(out.image[m].min()) >= 0


# ----------------------------------------------------------------------------- texture
def test_texture_and_vertex_colour_paths_agree(tiny_model, rasterizer):
    """A texture linear in (u, v) sampled bilinearly equals per-vertex colours (u, v, 0.5) interpolated."""
    renderer = Renderer(tiny_model, rasterizer, image_size=(48, 48), texture_filter="bilinear")
    size = 64
    centres = (torch.arange(size) + 0.5) / size
    tex = torch.stack(
        [centres[None, :].expand(size, size), centres.flip(0)[:, None].expand(size, size), torch.full((size, size), 0.5)]
    )[None]  # row 0 is the top of the texture image: v = 1
    uv = torch.as_tensor(tiny_model.uv)
    inside = (uv > 0.5 / size) & (uv < 1 - 0.5 / size)
    colors = torch.cat([uv, torch.full((uv.shape[0], 1), 0.5)], -1)
    params = make_params(n_shape=6, n_expr=4, size=48)
    a = renderer.render(params, texture=tex)
    b = renderer.render(params, vertex_colors=colors)
    m = interior(a.mask, 1)
    assert m.sum() > 300
    assert inside.all(-1).sum() > 0.7 * uv.shape[0]
    diff = (a.image - b.image).abs()[m]
    assert diff.mean() < 2e-3
    # The default mipmap filter agrees away from the minified borders too.
    c = Renderer(tiny_model, rasterizer, image_size=(48, 48)).render(params, texture=tex)
    assert (c.image - b.image).abs()[m].mean() < 2e-2


def test_per_corner_uvs_match_per_vertex_uvs(tiny_model, rasterizer):
    corner = MorphableModel(
        name="tiny-corner", mean=tiny_model.mean, shape_basis=tiny_model.shape_basis, shape_std=tiny_model.shape_std,
        expression_basis=tiny_model.expression_basis, expression_std=tiny_model.expression_std,
        triangles=tiny_model.triangles, landmark_indices=tiny_model.landmark_indices,
        uv=tiny_model.uv[tiny_model.triangles.reshape(-1)], uv_triangles=np.arange(tiny_model.triangles.size).reshape(-1, 3),
        regions=tiny_model.regions,
    )
    params = make_params(n_shape=6, n_expr=4, size=32)
    tex = smooth_texture(32)
    a = Renderer(tiny_model, rasterizer, image_size=(32, 32), texture_filter="bilinear").render(params, texture=tex)
    b = Renderer(corner, rasterizer, image_size=(32, 32), texture_filter="bilinear").render(params, texture=tex)
    assert torch.allclose(a.image, b.image, atol=1e-5)


def test_batch_renders_equal_single_renders(tiny_model, rasterizer):
    renderer = Renderer(tiny_model, rasterizer, image_size=(32, 32))
    g = torch.Generator().manual_seed(3)
    params = make_params(2, n_shape=6, n_expr=4, size=32)
    params.shape = torch.randn(2, 6, generator=g)
    params.rotation = 0.1 * torch.randn(2, 3, generator=g)
    light = default_sh(2, ambient=0.8, frontal=0.3)
    light[1] += sh_directional(torch.tensor([1.0, 0.0, 1.0]))[0] * 0.3
    tex = torch.cat([smooth_texture(32), smooth_texture(32).flip(-1)])
    both = renderer.render(params, texture=tex, lighting=light)
    for i in range(2):
        single = FitParams(*(t[i : i + 1] for t in params._tensors()))
        one = renderer.render(single, texture=tex[i : i + 1], lighting=light[i : i + 1])
        assert torch.allclose(both.image[i], one.image[0], atol=1e-5)
        assert torch.equal(both.fragments.triangle_id[i], one.fragments.triangle_id[0])


# ----------------------------------------------------------------------------- gradients and fitting
def test_gradients_reach_all_parameters(tiny_model, rasterizer):
    renderer = Renderer(tiny_model, rasterizer, image_size=(32, 32))
    params = make_params(n_shape=6, n_expr=4, size=32)
    for t in params._tensors()[:4]:
        t.requires_grad_(True)
    tex = smooth_texture(32).requires_grad_(True)
    light = default_sh(frontal=0.3).requires_grad_(True)
    out = renderer.render(params, texture=tex, lighting=light)
    (out.image.square().sum() + out.alpha.sum() + out.landmarks.sum()).backward()
    for t in (params.shape, params.expression, params.rotation, params.translation, tex, light):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_recover_pose_and_sh_lighting_from_a_synthetic_render(tiny_model, rasterizer):
    """Render a textured face mesh with a known small pose offset and known SH lighting c*, then fit pose
    and lighting back from the defaults with Adam on the photometric (L1) loss.

    From one view only normals facing the camera are seen: over a hemisphere the 9 SH functions have a
    Gram matrix of condition number ~1.5e3, so the coefficients themselves are weakly determined
    (single-view fits recover c* only up to that near-null space). What an image determines, and what is
    checked, is the irradiance on the visible normals: it must match to a few percent.
    """
    size = 48
    renderer = Renderer(tiny_model, rasterizer, image_size=(size, size), texture_filter="bilinear")
    tex = smooth_texture(48)
    c_true = default_sh(ambient=0.7) + sh_directional(torch.tensor([0.4, 0.3, 1.0]), torch.tensor([0.5, 0.45, 0.4]))
    rot_true = torch.tensor([[0.05, -0.06, 0.04]])
    tr_true = torch.tensor([[3.0, -2.0, -DISTANCE + 8.0]])

    def params(rot, tr):
        return make_params(rotation=rot, translation=tr, size=size, n_shape=6, n_expr=4)

    with torch.no_grad():
        target = renderer.render(params(rot_true, tr_true), texture=tex, lighting=c_true)
    rot = torch.zeros(1, 3, requires_grad=True)
    tr = torch.tensor([[0.0, 0.0, -DISTANCE]], requires_grad=True)
    coeffs = default_sh().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [rot], "lr": 0.01}, {"params": [tr], "lr": 0.5}, {"params": [coeffs], "lr": 0.03}])
    steps = 100
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        out = renderer.render(params(rot, tr), texture=tex, lighting=coeffs)
        loss = (out.image - target.image).abs().mean()
        loss.backward()
        first = loss.item() if first is None else first
        opt.step()
        sched.step()
    assert loss.item() < 0.05 * first
    assert torch.allclose(rot.detach(), rot_true, atol=0.006)
    assert torch.allclose(tr.detach(), tr_true, atol=0.3)
    normals = target.normals[target.mask][None]
    e_true = sh_shading(normals, c_true)
    e_fit = sh_shading(normals, coeffs.detach())
    assert float((e_fit - e_true).square().mean().sqrt() / e_true.square().mean().sqrt()) < 0.02
    assert float((e_fit - e_true).abs().max()) < 0.05


# ----------------------------------------------------------------------------- input checks
def test_texture_with_wrong_channels_or_rank_is_a_clear_error(tiny_model, rasterizer):
    renderer = Renderer(tiny_model, rasterizer, image_size=(16, 16))
    params = make_params(n_shape=6, n_expr=4, size=16)
    with pytest.raises(RenderInputError, match=r"\(B, 3, Hu, Wu\).*4 channels"):
        renderer.render(params, texture=torch.rand(1, 4, 8, 8))
    with pytest.raises(RenderInputError, match=r"channels last"):
        renderer.render(params, texture=torch.rand(1, 8, 8, 3))
    with pytest.raises(RenderInputError, match=r"\(B, 3, Hu, Wu\)"):
        renderer.render(params, texture=torch.rand(8, 8))
    with pytest.raises(RenderInputError, match="batch"):
        renderer.render(make_params(2, n_shape=6, n_expr=4, size=16), texture=torch.rand(3, 3, 8, 8))
    with pytest.raises(RenderInputError, match=r"\(B, 9, 3\)"):
        renderer.render(params, lighting=torch.zeros(1, 4, 3))
    with pytest.raises(RenderInputError, match="vertex_colors"):
        renderer.render(params, vertex_colors=torch.rand(1, 5, 3))
    assert issubclass(RenderInputError, GanfitError)


def test_nan_vertices_raise_fit_error(tiny_model, rasterizer):
    renderer = Renderer(tiny_model, rasterizer, image_size=(16, 16))
    params = make_params(n_shape=6, n_expr=4, size=16)
    params.shape = torch.full((1, 6), float("nan"))
    with pytest.raises(FitError, match="NaN"):
        renderer.render(params)
    params = make_params(n_shape=6, n_expr=4, size=16)
    params.translation = torch.tensor([[0.0, float("inf"), -600.0]])
    with pytest.raises(FitError):
        renderer.render(params)


@pytest.mark.parametrize("translation", [(0.0, 0.0, 600.0), (5000.0, 0.0, -600.0), (0.0, 0.0, -20000.0)])
def test_face_behind_camera_or_outside_view_gives_empty_alpha(tiny_model, rasterizer, translation):
    renderer = Renderer(tiny_model, rasterizer, image_size=(16, 16))
    out = renderer.render(make_params(n_shape=6, n_expr=4, size=16, translation=torch.tensor([translation])))
    assert torch.all(out.alpha == 0) and torch.all(out.image == 0)
    assert torch.isinf(out.depth).all()
    assert torch.isfinite(out.landmarks).all()


def test_renderer_on_the_default_face_model(bfm, rasterizer):
    renderer = Renderer(bfm, rasterizer, image_size=(64, 64))
    params = FitParams(
        shape=torch.zeros(1, 10), expression=torch.zeros(1, 5), rotation=torch.zeros(1, 3),
        translation=torch.tensor([[0.0, 0.0, -700.0]]), focal=torch.tensor([100.0]), principal=torch.tensor([[32.0, 32.0]]),
    )
    out = renderer.render(params, lighting=default_sh(frontal=0.3))
    assert 0.1 < float(out.alpha.mean()) < 0.6
    assert ((out.landmarks > 0) & (out.landmarks < 64)).all()
    assert torch.isfinite(out.image).all()
