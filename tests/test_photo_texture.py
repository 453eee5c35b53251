"""`PhotoTexture` (colours, UV texture and renders of fitted faces) and the per-model data it keeps:
the cached path gives what the separate functions give, the per-step timings reach face.json, and the
pieces it is built from (UV layout, shared z-buffer, single-precision Poisson fill) are right."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ganfit.fitting.colors import fill_unseen_colors, sample_vertex_colors
from ganfit.fitting.params import FitParams
from ganfit.fitting.photo_texture import PhotoTexture
from ganfit.model.topology import mirror_vertices
from ganfit.render.camera import project_points, transform_points
from ganfit.render.unwrap import complete, mirror_uv_map, unwrap, uv_layout
from ganfit.render.uv_complete import SEEN, OUTSIDE, _poisson_fill
from ganfit.render.uv_fill import coarse_space, poisson_fill_fast
from ganfit.render.uv_layout import nested_dissection_rank
from ganfit.render.zbuffer import _fill_cracks, screen_zbuffer

pytestmark = pytest.mark.usefixtures("one_thread")

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "astronaut.png"



def _params(yaw_deg: float, size: int = 160) -> FitParams:
    a = math.radians(yaw_deg)
    return FitParams(
        shape=torch.zeros(1, 6), expression=torch.zeros(1, 4), rotation=torch.tensor([[0.0, a, 0.0]]),
        translation=torch.tensor([[0.0, 0.0, -600.0]]), focal=torch.tensor([500.0]),
        principal=torch.tensor([[size / 2.0, size / 2.0]]),
    )


def _photo(size: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    return np.stack([0.5 + 0.4 * np.sin(9 * x), 0.5 + 0.4 * np.cos(7 * y), 0.3 + 0.5 * x * y], -1).astype(np.float32)


def _camera(model, params):
    verts = model.vertices(params.shape, params.expression)
    cam = transform_points(verts, params.rotation_matrix(), params.translation)
    return cam[0], project_points(cam, params.focal, params.principal)[0]


@pytest.mark.parametrize("yaw", [0.0, 40.0])
def test_cached_path_equals_the_separate_functions(tiny_model, yaw):
    m, photo, params = tiny_model, _photo(), _params(yaw)
    pt = PhotoTexture(m, texture_size=64)
    ids = torch.as_tensor(m.landmark_indices)[None]
    timings: dict[str, float] = {}
    meshes, fitted = pt.meshes(params, ids, [photo], timings)
    mesh = meshes[0]
    assert {"geometry", "colors", "texture_unwrap", "texture_complete", "texture"} <= set(timings)
    cam, proj = _camera(m, params)
    assert torch.allclose(mesh.projected, proj) and torch.allclose(fitted[0], proj[ids[0]])
    normals = mesh.normals_camera.numpy()
    colors, visible = sample_vertex_colors(photo, proj.numpy(), normals, cam.numpy(), triangles=m.triangles)
    mirror = mirror_vertices(m.mean)
    np.testing.assert_array_equal(mesh.visible.numpy(), visible)
    np.testing.assert_allclose(mesh.colors.numpy(), fill_unseen_colors(colors, visible, m.triangles, mirror), atol=1e-6)
    raw = unwrap(photo, proj, cam, m.triangles, m.uv, resolution=64)
    texture, _ = complete(raw, mirror_uv_map(m.uv, m.triangles, mirror, 64))
    np.testing.assert_array_equal(mesh.texture_mask, raw.mask)
    np.testing.assert_allclose(mesh.texture, texture, atol=1e-5)
    assert raw.mask.max() > 0.9 and (raw.mask > 0).mean() > 0.2
    # a second photo reuses the per-model data and gives the same result
    layout = pt.layout
    again, _ = pt.meshes(params, ids, [photo])
    assert pt.layout is layout
    np.testing.assert_array_equal(again[0].texture, mesh.texture)


def test_render_of_the_face_box_equals_a_full_render(tiny_model):
    from ganfit.render.renderer import Renderer
    from ganfit.render.shading import default_sh, sh_directional

    m, photo, params = tiny_model, _photo(300), _params(25.0, 300)
    params = FitParams(**{**params.__dict__, "principal": torch.tensor([[150.0, 150.0]])})
    pt = PhotoTexture(m, texture_size=64)
    meshes, _ = pt.meshes(params, torch.as_tensor(m.landmark_indices)[None], [photo])
    rgba = pt.renders(params, meshes, torch.tensor([[300.0, 300.0]]))[0]
    assert rgba.shape == (300, 300, 4) and 0.05 < rgba[..., 3].mean() < 0.9
    light = default_sh(1, ambient=0.6) + sh_directional(torch.tensor([[-0.35, 0.45, 1.0]]), 0.55)
    tex = torch.as_tensor(meshes[0].texture).permute(2, 0, 1)[None]
    full = Renderer(m, pt._rasterizer, image_size=(300, 300)).render(params, texture=tex, lighting=light, regions=False)
    expected = torch.cat([full.image[0], full.alpha[0][..., None]], -1).clamp(0, 1).numpy()
    np.testing.assert_allclose(rgba, expected, atol=1e-4)  # float32 rounding in the clip-space shift


def test_layout_and_zbuffer_given_or_built_give_the_same_unwrap(tiny_model):
    m, photo = tiny_model, _photo()
    cam, proj = _camera(m, _params(30.0))
    layout = uv_layout(m.uv, m.triangles, (48, 40), mirror=mirror_vertices(m.mean))
    zbuffer = screen_zbuffer(proj, -cam[:, 2], m.triangles, (160, 160))
    built = unwrap(photo, proj, cam, m.triangles, m.uv, resolution=(48, 40))
    given = unwrap(photo, proj, cam, m.triangles, layout=layout, zbuffer=zbuffer)
    np.testing.assert_array_equal(built.texture, given.texture)
    np.testing.assert_array_equal(built.mask, given.mask)
    mirror = mirror_uv_map(m.uv, m.triangles, mirror_vertices(m.mean), (48, 40))
    np.testing.assert_array_equal(layout.mirror, mirror)
    a, la = complete(built, mirror)
    b, lb = complete(given, layout.mirror, layout=layout)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(la, lb)
    with pytest.raises(ValueError):
        unwrap(photo, proj, cam, m.triangles, layout=layout, resolution=64)
    with pytest.raises(ValueError):
        complete(built, None, layout=uv_layout(m.uv, m.triangles, (40, 48)))


def test_zbuffer_closes_one_pixel_cracks_only():
    face = torch.zeros(7, 9, dtype=torch.long)
    depth = torch.full((7, 9), 5.0)
    face[3, 4], depth[3, 4] = -1, float("inf")  # a crack inside the mesh
    face[:, 0], depth[:, 0] = -1, float("inf")  # background beside it
    depth[3, 3] = 4.0
    f, z = _fill_cracks(face, depth)
    assert f[3, 4] == 0 and z[3, 4] == 4.0  # the nearer neighbour
    assert (f[:, 0] == -1).all() and torch.isinf(z[:, 0]).all()  # the silhouette does not grow


def _residual(x, values, known, domain, guide, gw):
    """The discrete Poisson equation at every unknown texel, evaluated on the grid."""
    h, w, _ = values.shape
    unknown = domain & ~known
    out = np.zeros_like(values, dtype=np.float64)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ys, xs = np.nonzero(unknown)
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ys, xs, ny, nx = ys[ok], xs[ok], ny[ok], nx[ok]
        inside = domain[ny, nx]
        ys, xs, ny, nx = ys[inside], xs[inside], ny[inside], nx[inside]
        g = np.minimum(gw[ys, xs], gw[ny, nx])[:, None] * (guide[ys, xs] - guide[ny, nx])
        out[ys, xs] += x[ys, xs] - x[ny, nx] - g
    return out[unknown]


def test_single_precision_poisson_fill_solves_the_equations():
    rng = np.random.default_rng(3)
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w]
    domain = ((yy - 45) / 44.0) ** 2 + ((xx - 60) / 58.0) ** 2 < 1
    known = domain & (xx < 50) | (domain & (rng.random((h, w)) < 0.01))
    values = rng.random((h, w, 3)).astype(np.float32)
    guide = (0.5 + 0.3 * np.sin(xx / 5.0)[..., None] * np.ones(3)).astype(np.float32)
    gw = np.clip((xx - 40) / 40.0, 0, 1).astype(np.float32)
    out = _poisson_fill(values, known, domain, guide, gw)
    assert np.abs(_residual(out, values, known, domain, guide, gw)).max() < 1e-4
    np.testing.assert_array_equal(out[known], values[known])
    # any elimination order gives the same solution
    rank = nested_dissection_rank(domain)
    assert np.array_equal(np.sort(rank[domain]), np.arange(domain.sum())) and (rank[~domain] == -1).all()
    np.testing.assert_allclose(_poisson_fill(values, known, domain, guide, gw, rank=rank), out)
    shuffled = np.where(domain, rng.permutation(h * w).reshape(h, w), -1)
    np.testing.assert_allclose(_poisson_fill(values, known, domain, guide, gw, rank=shuffled), out, atol=2e-4)


def test_fast_fill_on_scattered_known_texels_stays_close_to_exact():
    """The problem above (random values, 1% of the unknowns known at random): the field around each
    isolated known texel is log-singular, the hardest case for the fast fill's coarse nodes (2 texels
    apart at this size; 4 apart, the default from 512 a side, roughly quadruples these errors). Real
    charts have no isolated known texels: the feathered mask keeps only seen patches several texels
    across."""
    rng = np.random.default_rng(3)
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w]
    domain = ((yy - 45) / 44.0) ** 2 + ((xx - 60) / 58.0) ** 2 < 1
    known = domain & (xx < 50) | (domain & (rng.random((h, w)) < 0.01))
    values = rng.random((h, w, 3)).astype(np.float32)
    guide = (0.5 + 0.3 * np.sin(xx / 5.0)[..., None] * np.ones(3)).astype(np.float32)
    gw = np.clip((xx - 40) / 40.0, 0, 1).astype(np.float32)
    exact = _poisson_fill(values, known, domain, guide, gw)
    fast = poisson_fill_fast(values, known, domain, guide, gw, space=coarse_space(domain))
    np.testing.assert_array_equal(fast[known], values[known])
    err = np.abs(fast - exact).max(-1)[domain & ~known]
    assert err.mean() < 0.003 and np.percentile(err, 99) < 0.015 and err.max() < 0.03


@pytest.mark.assets
def test_fast_completion_of_the_example_photo_matches_the_exact_one(bfm):
    """A real fit, 768 x 768: the fast fill (the default) against the exact solve, with the thresholds
    of `benchmarks/texture_completion.py` (colours in [0, 1], per texel the largest channel
    difference, over the unseen chart texels); seen texels identical."""
    from ganfit import FitConfig, Fitter
    from ganfit.io.images import load_image

    mesh = Fitter(FitConfig(device="cpu", quiet=True, texture_size=0), model=bfm).fit(str(PHOTO)).meshes[0]
    layout = PhotoTexture(bfm, texture_size=768).layout
    raw = unwrap(load_image(PHOTO).pixels, mesh.projected, mesh.vertices_camera, bfm.triangles, layout=layout,
                 normals=mesh.normals_camera)
    exact, label = complete(raw, layout.mirror, layout=layout, solver="exact")
    fast, label_fast = complete(raw, layout.mirror, layout=layout)
    np.testing.assert_array_equal(label, label_fast)
    np.testing.assert_array_equal(fast[label == SEEN], exact[label == SEEN])
    unseen = (label != SEEN) & (label != OUTSIDE)
    assert unseen.sum() > 100_000
    d = np.abs(fast - exact).max(-1)
    next_to_seen = unseen & (np.roll(label == SEEN, 1, 0) | np.roll(label == SEEN, -1, 0)
                             | np.roll(label == SEEN, 1, 1) | np.roll(label == SEEN, -1, 1))
    assert d[unseen].mean() < 0.003 and np.percentile(d[unseen], 99) < 0.02 and d[unseen].max() < 0.06
    assert d[next_to_seen].max() < 0.01  # no seam
    # outside the chart: copies of chart colours (and their mean), so no larger differences
    assert np.abs(fast - exact)[label == OUTSIDE].max() <= d[unseen].max() + 1e-6


def test_detection_copy_of_a_large_photo_is_close_to_the_filtered_one():
    from ganfit.perception.detect import _resized_uint8

    y, x = np.mgrid[0:3000, 0:4000] / 4000.0
    smooth = np.stack([0.5 + 0.4 * np.sin(20 * x), 0.5 + 0.4 * np.cos(15 * y), x * y], -1).astype(np.float32)
    fast = _resized_uint8(smooth, (1024, 768), antialias=False).astype(int)
    fine = _resized_uint8(smooth, (1024, 768)).astype(int)
    assert fast.shape == fine.shape == (768, 1024, 3)
    assert np.abs(fast - fine).mean() < 1.0 and np.abs(fast - fine).max() <= 6


@pytest.mark.assets
def test_face_json_has_the_time_of_every_step(bfm, tmp_path):
    from ganfit import FitConfig, Fitter

    result = Fitter(FitConfig(device="cpu", quiet=True), model=bfm).fit(str(PHOTO))
    result.save(tmp_path / "face.obj")
    timings = json.loads((tmp_path / "face.json").read_text())["timings_s"]
    steps = ["load", "detect", "landmark_stage", "geometry", "colors", "texture", "render"]
    assert set(steps + ["texture_unwrap", "texture_complete", "total"]) <= set(timings)
    assert all(timings[k] >= 0 for k in timings)
    assert sum(timings[k] for k in steps) <= timings["total"] + 1e-6
    assert timings["texture_unwrap"] + timings["texture_complete"] <= timings["texture"] + 1e-6
    # saving is timed in the result (the JSON files hold the fit's timings as save found them)
    saves = ["save_png", "save_mtl", "save_obj", "save_overlay", "save_json", "save_write"]
    assert set(saves + ["save"]) <= set(result.timings)
    assert all(result.timings[k] > 0 for k in saves)
    assert sum(result.timings[k] for k in saves) <= result.timings["save"] + 1e-6
