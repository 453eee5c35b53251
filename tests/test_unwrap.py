"""Photo -> UV texture (`ganfit.render.unwrap`): round trips through a tiny renderer, visibility,
occlusion, symmetric completion and inpainting."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganfit.model.geometry import rasterize_screen
from ganfit.model.topology import mirror_vertices
from ganfit.render.unwrap import (
    INPAINTED,
    MIRRORED,
    OUTSIDE,
    SEEN,
    UVTexture,
    complete,
    mirror_uv_map,
    unwrap,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- helpers
def texture_fn(uv: np.ndarray) -> np.ndarray:
    """A smooth colour pattern defined in UV space; (N, 2) -> (N, 3). Red outside [0, 1]^2."""
    u, v = uv[:, 0], uv[:, 1]
    rgb = np.stack([
        0.5 + 0.3 * np.sin(2 * np.pi * 1.2 * u),
        0.5 + 0.3 * np.cos(2 * np.pi * 1.0 * v),
        0.3 + 0.4 * u * v,
    ], 1)
    outside = (u > 1.2) | (v > 1.2)
    rgb[outside] = [1.0, 0.0, 0.0]
    return rgb


def yaw(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def camera(points: np.ndarray, rotation=np.eye(3), distance=450.0, focal=300.0, size=(200, 200)):
    """Model points -> (camera-space vertices, pixel projections) for a pinhole camera."""
    cam = points @ rotation.T + np.array([0.0, 0.0, -distance])
    h, w = size
    proj = np.stack([w / 2 + focal * cam[:, 0] / -cam[:, 2], h / 2 - focal * cam[:, 1] / -cam[:, 2]], 1)
    return cam, proj


def render(vertices_cam, projected, triangles, uv, size, background=(0.0, 0.6, 0.0)):
    """A tiny renderer: z-buffer + perspective-correct UVs + the analytic texture."""
    h, w = size
    depth = -vertices_cam[:, 2]
    face, bary, _ = rasterize_screen(torch.as_tensor(projected), torch.as_tensor(depth), torch.as_tensor(triangles), h, w)
    face, bary = face.numpy().reshape(-1), bary.numpy().reshape(-1, 3)
    img = np.tile(np.asarray(background, np.float64), (h * w, 1))
    hit = face >= 0
    corners = triangles[face[hit]]
    wts = bary[hit] / depth[corners]
    wts /= wts.sum(1, keepdims=True)
    img[hit] = texture_fn((wts[:, :, None] * uv[corners]).sum(1))
    return img.reshape(h, w, 3).astype(np.float32)


def interior(coverage: np.ndarray, texels: int = 2) -> np.ndarray:
    """The chart without its outer `texels` rows: those sample the photo at the mesh's silhouette,
    where bilinear sampling mixes in the background."""
    from scipy import ndimage

    return ndimage.binary_erosion(coverage, iterations=texels)


def texel_uv(resolution) -> np.ndarray:
    """(H, W, 2) UV of each texel centre."""
    h, w = resolution
    x, y = np.meshgrid((np.arange(w) + 0.5) / w, 1.0 - (np.arange(h) + 0.5) / h)
    return np.stack([x, y], -1)



@pytest.fixture(scope="module")
def tiny(tiny_model):
    return (np.asarray(tiny_model.mean, np.float64), np.asarray(tiny_model.triangles, np.int64),
            np.asarray(tiny_model.uv, np.float64))


def quad_in_front(mean, triangles, uv):
    """The tiny face plus a square in front of its upper left part (UVs outside the texture)."""
    quad = np.array([[-60.0, 10, 100], [0, 10, 100], [0, 80, 100], [-60, 80, 100]])
    v = np.concatenate([mean, quad])
    n = len(mean)
    t = np.concatenate([triangles, [[n, n + 1, n + 2], [n, n + 2, n + 3]]])  # counter-clockwise seen from +z
    q = np.concatenate([uv, [[2.0, 2.0], [2.5, 2.0], [2.5, 2.5], [2.0, 2.5]]])
    return v, t, q


# ---------------------------------------------------------------------------------------------- unwrap
def test_round_trip_recovers_texture(tiny):
    mean, tris, uv = tiny
    cam, proj = camera(mean, yaw(15))
    photo = render(cam, proj, tris, uv, (200, 200))
    res = (64, 64)
    out = unwrap(photo, proj, cam, tris, uv, resolution=res)
    assert isinstance(out, UVTexture)
    assert out.texture.shape == (64, 64, 3) and out.texture.dtype == np.float32
    assert out.mask.shape == (64, 64) and out.mask.dtype == np.float32
    assert out.coverage.dtype == bool and out.coverage.mean() > 0.9  # the tiny UVs fill the square
    assert 0.0 <= out.mask.min() and out.mask.max() <= 1.0
    good = (out.mask > 0.5) & interior(out.coverage)
    assert good.mean() > 0.4
    truth = texture_fn(texel_uv(res).reshape(-1, 2)).reshape(64, 64, 3)
    err = np.abs(out.texture - truth)[good]
    assert err.mean() < 0.02, err.mean()
    assert np.quantile(err, 0.99) < 0.1
    assert np.all(out.texture[out.mask == 0] == 0)


def test_round_trip_large_photo_is_antialiased(tiny):
    """A face far larger than the texture: the photo is resized before sampling, at the right place."""
    mean, tris, uv = tiny
    size = (800, 800)
    cam, proj = camera(mean, yaw(-10), focal=1500.0, size=size)
    photo = render(cam, proj, tris, uv, size)
    res = (32, 32)
    out = unwrap((photo * 255).round().astype(np.uint8), proj, cam, tris, uv, resolution=res)
    good = (out.mask > 0.5) & interior(out.coverage, 1)
    truth = texture_fn(texel_uv(res).reshape(-1, 2)).reshape(32, 32, 3)
    assert good.mean() > 0.4
    assert np.abs(out.texture - truth)[good].mean() < 0.02


def test_uv_triangles_and_torch_inputs_match(tiny):
    mean, tris, uv = tiny
    cam, proj = camera(mean, yaw(5))
    photo = render(cam, proj, tris, uv, (200, 200))
    a = unwrap(photo, proj, cam, tris, uv, resolution=(32, 48))
    b = unwrap(torch.as_tensor(photo), torch.as_tensor(proj, dtype=torch.float32), torch.as_tensor(cam, dtype=torch.float32),
               torch.as_tensor(tris), torch.as_tensor(uv), uv_triangles=torch.as_tensor(tris), resolution=(32, 48))
    assert a.texture.shape == (32, 48, 3)
    np.testing.assert_array_equal(a.coverage, b.coverage)
    assert np.abs(a.mask - b.mask).max() < 1e-3
    assert np.abs(a.texture - b.texture).max() < 1e-3


def test_side_turned_away_is_unseen(tiny):
    mean, tris, uv = tiny
    cam, proj = camera(mean, yaw(60))  # the subject's left side (+x) turns away
    photo = render(cam, proj, tris, uv, (200, 200))
    out = unwrap(photo, proj, cam, tris, uv, resolution=(48, 48))
    u = texel_uv((48, 48))[..., 0]
    angle = u * 2.4 - 1.2  # the tiny model's unwrap angle
    away = angle + math.radians(60) > math.radians(100)
    assert away.any() and np.all(out.mask[away & out.coverage] == 0)
    toward = np.abs(angle + math.radians(60)) < math.radians(40)
    assert (out.mask[toward & out.coverage] > 0).mean() > 0.95


def test_occluded_region_is_unseen(tiny):
    mean, tris, uv = tiny
    v, t, q = quad_in_front(mean, tris, uv)
    cam, proj = camera(v)
    photo = render(cam, proj, t, q, (200, 200))
    assert (np.abs(photo - [1.0, 0.0, 0.0]).sum(-1) < 1e-6).mean() > 0.05  # the square is in the photo
    res = (48, 48)
    occluded = unwrap(photo, proj, cam, t, q, resolution=res)
    cam0, proj0 = camera(mean)
    free = unwrap(render(cam0, proj0, tris, uv, (200, 200)), proj0, cam0, tris, uv, resolution=res)
    tuv = texel_uv(res)
    behind = (tuv[..., 0] > 0.25) & (tuv[..., 0] < 0.45) & (tuv[..., 1] > 0.65) & (tuv[..., 1] < 0.8)
    assert np.all(free.mask[behind] > 0)
    assert np.all(occluded.mask[behind] == 0)
    # where nothing is in front, both agree (the square's own UVs lie outside the texture)
    clear = (tuv[..., 0] > 0.55) | (tuv[..., 1] < 0.45)
    assert np.abs(occluded.mask - free.mask)[clear].max() < 0.01
    assert not np.any(np.abs(occluded.texture - [1.0, 0.0, 0.0]).sum(-1)[occluded.mask > 0] < 0.3)


def test_mask_fades_at_contours(tiny):
    """Texels near the face's outline in the photo (where a fitted outline would be off) are weighted
    down, so background colours that bilinear sampling mixes in there carry little weight."""
    mean, tris, uv = tiny
    cam, proj = camera(mean, yaw(35))
    photo = render(cam, proj, tris, uv, (200, 200), background=(1.0, 0.0, 1.0))
    res = (64, 64)
    truth = texture_fn(texel_uv(res).reshape(-1, 2)).reshape(64, 64, 3)
    angle = texel_uv(res)[..., 0] * 2.4 - 1.2 + math.radians(35)  # from the view direction
    near_contour = (angle > math.radians(50)) & interior(np.ones(res, bool))  # the outline is at ~90 deg
    errors = {}
    for margin in (0.0, 0.03):
        out = unwrap(photo, proj, cam, tris, uv, resolution=res, contour_margin=margin)
        err = np.abs(out.texture - truth).max(-1)
        w = out.mask * near_contour
        errors[margin] = float((w * err).sum() / w.sum())
        assert out.mask[out.mask > 0].min() < 0.05  # fades to zero, no hard edge
    assert errors[0.03] < 0.7 * errors[0.0], errors


def test_face_outside_photo_gives_empty_mask(tiny):
    mean, tris, uv = tiny
    cam, proj = camera(mean)
    photo = np.zeros((100, 120, 3), np.float32)
    out = unwrap(photo, proj + 10_000.0, cam, tris, uv, resolution=(32, 32))
    assert out.mask.max() == 0 and out.texture.max() == 0 and out.coverage.any()
    behind = unwrap(photo, proj, cam * [1, 1, -1], tris, uv, resolution=(32, 32))  # behind the camera
    assert behind.mask.max() == 0
    tex, lab = complete(out, None)
    assert np.isfinite(tex).all() and set(np.unique(lab)) <= {INPAINTED, OUTSIDE}


def test_unwrap_rejects_bad_shapes(tiny):
    mean, tris, uv = tiny
    cam, proj = camera(mean)
    photo = np.zeros((50, 50, 3), np.float32)
    with pytest.raises(ValueError):
        unwrap(photo[..., :2], proj, cam, tris, uv)
    with pytest.raises(ValueError):
        unwrap(photo, proj[:-1], cam, tris, uv)
    with pytest.raises(ValueError):
        unwrap(photo, proj, cam, tris, uv[:-1])
    with pytest.raises(ValueError):
        unwrap(photo, proj, cam, tris, uv, resolution=(0, 10))


# ---------------------------------------------------------------------------------------------- mirror
def test_mirror_uv_map_of_symmetric_layout(tiny):
    mean, tris, uv = tiny
    mirror = mirror_vertices(mean)
    assert (mirror >= 0).all()
    res = (40, 60)
    m = mirror_uv_map(uv, tris, mirror, res)
    assert m.shape == (40, 60, 2) and m.dtype == np.float32
    x, y = np.meshgrid(np.arange(60) + 0.5, np.arange(40) + 0.5)
    ok = np.isfinite(m).all(-1)
    assert ok.mean() > 0.9
    assert np.abs(m[..., 0] - (60 - x))[ok].max() < 1e-3
    assert np.abs(m[..., 1] - y)[ok].max() < 1e-3
    none = mirror_uv_map(uv, tris, np.full(len(uv), -1), res)
    assert np.isnan(none).all()


# ---------------------------------------------------------------------------------------------- complete
def _symmetric_case(size=64):
    x, y = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    dx = np.abs(x - size / 2)
    tex = np.stack([0.5 + 0.3 * np.cos(0.35 * dx), 0.4 + 0.2 * np.sin(0.2 * y + 0.05 * dx**1.5 / 4), 0.2 + 0.5 * dx * y / (32 * 64)], -1)
    mirror = np.stack([size - x, y], -1).astype(np.float32)
    return tex.astype(np.float32), mirror


@pytest.mark.parametrize("method", ["poisson", "blend"])
def test_complete_restores_hidden_half_by_symmetry(method):
    tex, mirror = _symmetric_case()
    x = np.arange(64)[None, :].repeat(64, 0) + 0.5
    seen = x < 40
    uvt = UVTexture(np.where(seen[..., None], tex, 0).astype(np.float32), seen.astype(np.float32), np.ones((64, 64), bool))
    out, lab = complete(uvt, mirror, method=method)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32 and lab.dtype == np.uint8
    assert np.isfinite(out).all()
    hidden = ~seen
    err = np.abs(out - tex)[hidden]
    assert err.max() < 0.01, err.max()
    assert np.abs(out - tex)[seen].max() < 0.01
    assert np.all(lab[x < 30] == SEEN)
    assert np.all(lab[x > 44] == MIRRORED)
    # without symmetry the same hole is only inpainted: smooth, so the cosine detail is lost
    plain, lab2 = complete(uvt, None, method=method)
    assert np.abs(plain - tex)[hidden].max() > 0.1
    assert np.all(lab2[x > 44] == INPAINTED)


def test_complete_poisson_removes_brightness_seam():
    """The part of the face that mirrors onto the hidden side is lit more brightly (x < 30) than the
    seen texels next to the hidden side. Blending mirrored colours leaves a step at the visibility
    boundary; the Poisson fill takes only the mirror's gradients (here none) and stays continuous."""
    x, y = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    mirror = np.stack([64 - x, y], -1).astype(np.float32)
    seen = x < 40
    photo = np.repeat(np.where(x < 30, 0.75, 0.5)[..., None], 3, -1)
    uvt = UVTexture(np.where(seen[..., None], photo, 0).astype(np.float32), seen.astype(np.float32), np.ones((64, 64), bool))
    poisson, lab = complete(uvt, mirror, method="poisson")
    blend, _ = complete(uvt, mirror, method="blend")
    np.testing.assert_allclose(poisson[x >= 30], 0.5, atol=1e-3)
    np.testing.assert_allclose(poisson[x < 30], 0.75, atol=1e-3)
    assert np.all(lab[x > 44] == MIRRORED)
    assert np.abs(blend[:, 45] - blend[:, 31]).min() > 0.2  # the seam a plain blend leaves


def test_complete_inpaints_linear_gradient_exactly():
    h, w = 48, 64
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    tex = np.stack([0.1 + 0.8 * x / w, 0.2 + 0.5 * y / h, 0.9 - 0.4 * x / w - 0.3 * y / h], -1).astype(np.float32)
    hole = (x - 30) ** 2 + (y - 22) ** 2 < 12**2
    uvt = UVTexture(np.where(hole[..., None], 0, tex).astype(np.float32), (~hole).astype(np.float32), np.ones((h, w), bool))
    for method in ("poisson", "blend"):
        out, lab = complete(uvt, None, method=method)
        assert np.abs(out - tex).max() < 1e-3
        assert np.all(lab[hole] == INPAINTED)
        far = (x - 30) ** 2 + (y - 22) ** 2 > 22**2
        assert np.all(lab[far] == SEEN)


def test_complete_pads_outside_chart_and_never_nans():
    h = w = 48
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    chart = (x - 24) ** 2 + (y - 24) ** 2 < 16**2
    tex = np.stack([x / w, y / h, np.full_like(x, 0.5)], -1).astype(np.float32)
    mask = (chart & (x < 30)).astype(np.float32)
    mask[0, 0] = 1.0  # outside the chart: ignored
    texture = np.where(mask[..., None] > 0, tex, np.nan).astype(np.float32)  # garbage where unseen
    out, lab = complete(UVTexture(texture, mask, chart), None, pad=4)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert np.all(lab[~chart] == OUTSIDE) and np.all(lab[chart] != OUTSIDE)
    from scipy import ndimage

    dist, (iy, ix) = ndimage.distance_transform_edt(~chart, return_indices=True)
    near = ~chart & (dist <= 4)
    np.testing.assert_allclose(out[near], out[iy[near], ix[near]])
    far = ~chart & (dist > 4)
    np.testing.assert_allclose(out[far], np.broadcast_to(out[chart].mean(0), out[far].shape), atol=1e-5)
    # nothing seen at all: grey, no NaN
    empty = UVTexture(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.float32), np.ones((8, 8), bool))
    grey, lab = complete(empty, np.full((8, 8, 2), np.nan, np.float32))
    np.testing.assert_allclose(grey, 0.5)
    assert np.all(lab == INPAINTED)
    with pytest.raises(ValueError):
        complete(empty, np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError):
        complete(empty, None, method="nope")


def test_end_to_end_tiny_turned_face(tiny):
    """A face turned 50 degrees: the hidden side comes back by mirroring, close to the truth."""
    mean, tris, uv = tiny
    cam, proj = camera(mean, yaw(50))
    photo = render(cam, proj, tris, uv, (200, 200))
    res = (48, 48)
    uvt = unwrap(photo, proj, cam, tris, uv, resolution=res)
    mirror = mirror_uv_map(uv, tris, mirror_vertices(mean), res)
    out, lab = complete(uvt, mirror)
    assert np.isfinite(out).all()
    assert (lab == MIRRORED).mean() > 0.15
    # the texture is not symmetric, so compare with the mirrored truth where the mirror was used
    tuv = texel_uv(res)
    mirrored_truth = texture_fn(np.stack([1 - tuv[..., 0], tuv[..., 1]], -1).reshape(-1, 2)).reshape(48, 48, 3)
    sel = (lab == MIRRORED) & (uvt.mask == 0)
    # far from the seen region the fill is the mirrored texture plus a smooth correction
    assert np.abs(out - mirrored_truth)[sel].mean() < 0.15


# ---------------------------------------------------------------------------------------------- real model
def test_bfm_round_trip_and_mirror(bfm):
    mean = np.asarray(bfm.mean, np.float64)
    tris = np.asarray(bfm.triangles, np.int64)
    uv = np.asarray(bfm.uv, np.float64)
    size = (240, 240)
    cam, proj = camera(mean, yaw(20), distance=700.0, focal=550.0, size=size)
    photo = render(cam, proj, tris, uv, size)
    res = (128, 128)
    out = unwrap(photo, proj, cam, tris, uv, resolution=res)
    good = out.mask > 0.5
    assert good.sum() > 2000
    truth = texture_fn(texel_uv(res).reshape(-1, 2)).reshape(128, 128, 3)
    assert np.abs(out.texture - truth)[good].mean() < 0.03
    mirror = mirror_uv_map(uv, tris, mirror_vertices(mean), res)
    ok = np.isfinite(mirror).all(-1)
    assert ok.sum() > 0.9 * out.coverage.sum()
    # the cylindrical unwrap is close to symmetric in u
    x = np.arange(128)[None, :] + 0.5
    assert np.median(np.abs(mirror[..., 0] - (128 - x))[ok]) < 1.5
    tex, lab = complete(out, mirror)
    assert np.isfinite(tex).all()
    assert {SEEN, MIRRORED, INPAINTED, OUTSIDE} <= set(np.unique(lab).tolist())


# ---------------------------------------------------------------------------------------------- fast fill
# `complete(..., solver="fast")` (the default) solves the Poisson fill in a reduced subspace
# (`ganfit.render.uv_fill`): one unknown per texel near the seen ones, bilinear nodes elsewhere.
from ganfit.render.uv_complete import _poisson_fill  # noqa: E402
from ganfit.render.uv_fill import coarse_space, poisson_fill_fast  # noqa: E402

#: fast vs exact, colours in [0, 1] (see benchmarks/texture_completion.py for the reasons)
FAST_MEAN, FAST_P99, FAST_MAX, FAST_EDGE = 0.003, 0.02, 0.06, 0.01


def _grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y, x


@pytest.mark.parametrize("factor", [2, 4])
def test_fast_fill_reproduces_linear_and_quadratic_harmonic_functions(factor):
    """A hole enclosed by known texels, boundary values from a harmonic function: the discrete solution
    is the function itself (x^2 - y^2 and x y are discretely harmonic too). A linear function lies in
    the fast fill's subspace, so it is exact; a quadratic one is within the bilinear interpolation error."""
    h, w = 112, 136
    y, x = _grid(h, w)
    chart = np.ones((h, w), bool)
    hole = ((x - 70) / 55) ** 2 + ((y - 54) / 45) ** 2 < 1
    space = coarse_space(chart, factor)
    linear = np.stack([0.2 + 0.004 * x, 0.7 - 0.003 * y, 0.3 + 0.002 * x + 0.002 * y], -1)
    quad = 0.5 + 1.5e-4 * np.stack([(x - 70) ** 2 - (y - 54) ** 2, 2 * (x - 70) * (y - 54), (y - 54) ** 2 - (x - 70) ** 2], -1)
    for truth, tol in ((linear, 1e-4), (quad, 2e-3)):
        values = np.where(hole[..., None], 0.0, truth).astype(np.float32)
        exact = _poisson_fill(values, ~hole, chart)
        fast = poisson_fill_fast(values, ~hole, chart, space=space)
        assert np.abs(exact - truth)[hole].max() < 1e-4
        assert np.abs(fast - truth)[hole].max() < tol
        np.testing.assert_array_equal(fast[~hole], values[~hole])  # seen texels untouched


def test_fast_fill_with_full_guidance_is_guide_plus_harmonic_correction():
    """Guide weight 1 everywhere: the solution is the guide plus the harmonic extension of (seen - guide),
    here linear, which the fast fill represents exactly however detailed the guide is."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    y, x = _grid(h, w)
    chart = np.ones((h, w), bool)
    hole = ((x - 64) / 50) ** 2 + ((y - 48) / 38) ** 2 < 1
    guide = rng.random((h, w, 3)).astype(np.float32)
    offset = np.stack([0.1 + 0.002 * x, -0.05 + 0.003 * y, 0.01 * np.ones_like(x)], -1)
    values = np.where(hole[..., None], 0.0, guide + offset).astype(np.float32)
    ones = np.ones((h, w), np.float32)
    fast = poisson_fill_fast(values, ~hole, chart, guide, ones, space=coarse_space(chart, 4))
    np.testing.assert_allclose(fast[hole], (guide + offset)[hole], atol=2e-4)


def test_fast_fill_respects_a_slit_in_the_chart():
    """A slit (a line of texels off the chart) separates a dark left and a bright right side except near
    its ends: the exact fill goes round it, so coarse nodes must not join the two sides across it (if
    they did: mean error 0.1, max 0.29). What is left is the error near the slit's tips, where the
    solution has a square-root singularity."""
    h, w = 120, 120
    y, x = _grid(h, w)
    chart = ~((x == 60) & (y > 8) & (y < 112))
    known = (x < 3) | (x > 116)
    values = np.where(known[..., None], np.where(x[..., None] < 60, 0.1, 0.9), 0.0) * np.ones(3)
    values = values.astype(np.float32)
    exact = _poisson_fill(values, known, chart)
    fast = poisson_fill_fast(values, known, chart, space=coarse_space(chart, 4))
    unknown = chart & ~known
    assert np.abs(exact[:, 59] - exact[:, 61]).max() > 0.3  # the slit matters
    err = np.abs(fast - exact).max(-1)[unknown]
    assert err.mean() < 0.003 and err.max() < 0.03, (err.mean(), err.max())


def test_fast_fill_components_without_known_texels_get_the_mean():
    h, w = 48, 64
    y, x = _grid(h, w)
    chart = (x < 30) | (x > 34)  # two islands
    known = chart & (x < 10)
    values = np.where(known[..., None], 0.25, 0.0) * np.ones(3, np.float32)
    for solve in (_poisson_fill, lambda *a: poisson_fill_fast(*a, space=coarse_space(chart, 2))):
        out = solve(values.astype(np.float32), known, chart)
        np.testing.assert_allclose(out[chart], 0.25, atol=1e-5)


def test_fast_and_exact_complete_agree_on_the_symmetric_case():
    tex, mirror = _symmetric_case(96)
    x = np.arange(96)[None, :].repeat(96, 0) + 0.5
    seen = x < 60
    uvt = UVTexture(np.where(seen[..., None], tex, 0).astype(np.float32), seen.astype(np.float32), np.ones((96, 96), bool))
    for method in ("poisson", "blend"):
        exact, lab_e = complete(uvt, mirror, method=method, solver="exact")
        fast, lab_f = complete(uvt, mirror, method=method, solver="fast")
        np.testing.assert_array_equal(lab_e, lab_f)
        np.testing.assert_array_equal(fast[lab_e == SEEN], exact[lab_e == SEEN])
        assert np.abs(fast - exact).max() < 0.01
    with pytest.raises(ValueError):
        complete(uvt, mirror, solver="nope")
    with pytest.raises(ValueError):
        poisson_fill_fast(tex, seen, np.ones((96, 96), bool), space=coarse_space(np.ones((90, 96), bool)))


def test_fast_complete_falls_back_to_the_exact_solve(monkeypatch):
    import ganfit.render.uv_complete as uv_complete

    tex, mirror = _symmetric_case(48)
    seen = np.arange(48)[None, :].repeat(48, 0) < 30
    uvt = UVTexture(np.where(seen[..., None], tex, 0).astype(np.float32), seen.astype(np.float32), np.ones((48, 48), bool))
    exact, _ = complete(uvt, mirror, solver="exact")

    def singular(*args, **kwargs):
        raise RuntimeError("Factor is exactly singular")

    monkeypatch.setattr(uv_complete, "fill_crop", singular)
    np.testing.assert_array_equal(complete(uvt, mirror)[0], exact)


def test_coarse_space_order_and_slit_nodes():
    chart = np.ones((64, 80), bool)
    chart[20:44, 40] = False  # a slit
    chart[:5, :7] = False  # a corner cut off: no hole
    chart[50:52, 60:63] = False  # a hole
    space = coarse_space(chart, 4)
    ranks = np.concatenate([space.texel_rank[space.domain], space.node_rank.ravel()])
    assert np.array_equal(np.sort(ranks), np.arange(ranks.size))  # one order of texels and nodes
    assert (space.texel_rank[~space.domain] == -1).all()
    ky, kx = np.nonzero(space.nonconforming)
    y, x = 4 * ky + space.origin[0], 4 * kx + space.origin[1]
    on_slit = (np.abs(x - 40) < 4) & (y > 16) & (y < 48)
    at_hole = (np.abs(y - 50.5) < 5) & (np.abs(x - 61) < 5)
    assert on_slit.any() and at_hole.any() and np.all(on_slit | at_hole)  # nodes whose support crosses them
    rank = space.texture_rank()
    assert np.array_equal(np.sort(rank[chart]), np.sort(space.texel_rank[space.domain])) and (rank[~chart] == -1).all()


def _fast_vs_exact(fast, exact, label):
    """Largest-channel differences over the unseen chart texels: mean, p99, max, max next to a seen texel."""
    unseen = (label != SEEN) & (label != OUTSIDE)
    seen = label == SEEN
    near = np.zeros_like(seen)
    near[1:] |= seen[:-1]
    near[:-1] |= seen[1:]
    near[:, 1:] |= seen[:, :-1]
    near[:, :-1] |= seen[:, 1:]
    d = np.abs(fast - exact).max(-1)
    return d[unseen].mean(), np.percentile(d[unseen], 99), d[unseen].max(), d[unseen & near].max()


@pytest.mark.parametrize("deg", [15.0, 50.0])
def test_bfm_turned_face_fast_completion_matches_exact(bfm, deg):
    from ganfit.fitting.photo_texture import PhotoTexture

    mean = np.asarray(bfm.mean, np.float64)
    tris = np.asarray(bfm.triangles, np.int64)
    uv = np.asarray(bfm.uv, np.float64)
    size = (320, 320)
    cam, proj = camera(mean, yaw(deg), distance=700.0, focal=700.0, size=size)
    photo = render(cam, proj, tris, uv, size)
    layout = PhotoTexture(bfm, texture_size=512).layout
    raw = unwrap(photo, proj, cam, tris, layout=layout)
    exact, label = complete(raw, layout.mirror, layout=layout, solver="exact")
    fast, label_fast = complete(raw, layout.mirror, layout=layout)
    np.testing.assert_array_equal(label, label_fast)
    np.testing.assert_array_equal(fast[label == SEEN], exact[label == SEEN])
    assert (label == MIRRORED).sum() > 1000 and ((label != SEEN) & (label != OUTSIDE)).sum() > 30000
    mean_d, p99, mx, edge = _fast_vs_exact(fast, exact, label)
    assert mean_d < FAST_MEAN and p99 < FAST_P99 and mx < FAST_MAX and edge < FAST_EDGE, (mean_d, p99, mx, edge)
