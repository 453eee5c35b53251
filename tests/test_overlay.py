"""Tests of ganfit.io.overlay (mesh and landmark drawing) and ganfit.fitting.colors (vertex colours)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from ganfit.fitting.colors import sample_vertex_colors
from ganfit.io.overlay import (
    AMBIENT,
    LANDMARK_CONNECTIONS_68,
    MESH_GREY,
    draw_landmarks,
    draw_mesh_overlay,
    make_fit_overlay,
    save_png,
)
from ganfit.model.geometry import vertex_normals

BG = 0.2


def background(h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), BG, dtype=np.float32)


def square(x0, y0, x1, y1):
    """Two triangles covering [x0, x1] x [y0, y1] in pixels, front-facing (clockwise on screen)."""
    proj = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    tris = np.array([[0, 2, 1], [0, 3, 2]])
    return proj, tris


# ---------------------------------------------------------------------------- mesh overlay
def test_square_paints_exactly_its_pixels():
    img = background()
    proj, tris = square(10, 5, 30, 25)
    out = draw_mesh_overlay(img, proj, np.ones(4), tris, None, alpha=1.0)
    assert out.shape == img.shape and out.dtype == np.float32
    painted = np.abs(out - BG).max(axis=2) > 1e-6
    expected = np.zeros(img.shape[:2], dtype=bool)
    expected[5:25, 10:30] = True
    np.testing.assert_array_equal(painted, expected)
    np.testing.assert_allclose(out[expected], MESH_GREY, atol=1e-6)
    # Half-transparent: a 50/50 mix.
    half = draw_mesh_overlay(img, proj, np.ones(4), tris, None, alpha=0.5)
    np.testing.assert_allclose(half[expected], 0.5 * BG + 0.5 * MESH_GREY, atol=1e-6)
    np.testing.assert_array_equal(half[~expected], img[~expected])
    assert np.array_equal(img, background())  # input untouched


def test_back_faces_are_culled():
    img = background()
    proj, tris = square(10, 5, 30, 25)
    out = draw_mesh_overlay(img, proj, np.ones(4), tris[:, ::-1], None, alpha=1.0)
    np.testing.assert_array_equal(out, img)


def test_lambert_shading_from_normals():
    img = background()
    proj, tris = square(10, 5, 30, 25)
    tilted = np.tile([0.0, np.sin(np.pi / 3), np.cos(np.pi / 3)], (4, 1))  # 60 degrees from the camera
    out = draw_mesh_overlay(img, proj, np.ones(4), tris, tilted, alpha=1.0)
    np.testing.assert_allclose(out[15, 20], MESH_GREY * (AMBIENT + (1 - AMBIENT) * 0.5), atol=1e-5)
    away = np.tile([0.0, 0.0, -1.0], (4, 1))
    out = draw_mesh_overlay(img, proj, np.ones(4), tris, away, alpha=1.0)
    np.testing.assert_allclose(out[15, 20], MESH_GREY * AMBIENT, atol=1e-5)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_occluded_triangle_is_hidden(order):
    img = background()
    # Triangle A (near, facing the camera) and triangle B (far, lit at grazing angle) overlap.
    proj = np.array([[10, 10], [40, 10], [10, 40], [20, 5], [50, 5], [20, 35]], dtype=np.float64)
    depth = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    normals = np.array([[0, 0, 1.0]] * 3 + [[1.0, 0, 0]] * 3)
    tris = np.array([[0, 2, 1], [3, 5, 4]])[list(order)]
    out = draw_mesh_overlay(img, proj, depth, tris, normals, alpha=1.0)
    near, far = MESH_GREY, MESH_GREY * AMBIENT
    np.testing.assert_allclose(out[15, 22], near, atol=1e-5)  # inside both: the near one wins
    np.testing.assert_allclose(out[8, 40], far, atol=1e-5)  # only inside the far one
    np.testing.assert_allclose(out[35, 12], near, atol=1e-5)  # only inside the near one


def test_wireframe_darkens_edges_only():
    img = background()
    proj, tris = square(10, 5, 30, 25)
    out = draw_mesh_overlay(img, proj, np.ones(4), tris, None, alpha=1.0, wireframe=True)
    assert out[5, 20, 0] < MESH_GREY - 0.1  # on the top edge
    assert out[14, 19, 0] < MESH_GREY - 0.1  # on the diagonal x = y + 5 (pixel centre 19.5, 14.5)
    np.testing.assert_allclose(out[10, 25], MESH_GREY, atol=1e-6)  # interior


def test_off_image_empty_and_bad_input():
    img = background()
    proj, tris = square(-100, -100, 500, 500)  # covers everything, corners far outside
    out = draw_mesh_overlay(img, proj, np.ones(4), tris, None, alpha=1.0)
    np.testing.assert_allclose(out, MESH_GREY, atol=1e-6)
    out = draw_mesh_overlay(img, proj + 1000, np.ones(4), tris, None)
    np.testing.assert_array_equal(out, img)
    out = draw_mesh_overlay(img, np.zeros((0, 2)), np.zeros(0), np.zeros((0, 3), dtype=np.int64))
    np.testing.assert_array_equal(out, img)
    small_proj, small_tris = square(1, 1, 5, 5)
    out = draw_mesh_overlay((img * 255).astype(np.uint8), small_proj, np.ones(4), small_tris)
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        draw_mesh_overlay(img, proj, np.ones(3), tris)
    with pytest.raises(ValueError):
        draw_mesh_overlay(img, proj, np.ones(4), tris + 4)
    with pytest.raises(ValueError):
        draw_mesh_overlay(img[..., 0], proj, np.ones(4), tris)


# ---------------------------------------------------------------------------- landmarks
def test_connections_cover_the_standard_chains():
    pairs = set(LANDMARK_CONNECTIONS_68)
    assert len(pairs) == 16 + 4 + 4 + 3 + 4 + 6 + 6 + 12 + 8
    assert (16, 17) not in pairs and (41, 36) in pairs and (67, 60) in pairs and (59, 48) in pairs
    assert (30, 31) not in pairs and (26, 27) not in pairs


def test_draw_landmarks_dots_and_lines():
    img = background(100, 100)
    pts = np.full((68, 2), np.nan)
    pts[0], pts[1] = [20.0, 20.0], [80.0, 20.0]  # jaw segment 0-1
    pts[36] = [50.0, 70.0]  # isolated (its neighbours are NaN)
    out = draw_landmarks(img, pts, color=(1.0, 0.0, 0.0), radius=3)
    np.testing.assert_allclose(out[20, 20], [1, 0, 0], atol=1e-6)  # dot centre
    np.testing.assert_allclose(out[70, 50], [1, 0, 0], atol=1e-6)
    assert out[20, 50, 0] > 0.6 and out[20, 50, 1] < BG  # on the line
    np.testing.assert_allclose(out[50, 50], BG)  # untouched far away
    np.testing.assert_allclose(out[70, 20], BG)  # no line to NaN points
    no_lines = draw_landmarks(img, pts, color=(1.0, 0.0, 0.0), radius=3, lines=False)
    np.testing.assert_allclose(no_lines[20, 50], BG)
    assert np.array_equal(draw_landmarks(img, np.full((68, 2), np.nan)), img)
    with pytest.raises(ValueError):
        draw_landmarks(img, np.zeros((68, 3)))


def test_make_fit_overlay_scales_large_images():
    h, w = 1536, 2048
    img = np.full((h, w, 3), BG, dtype=np.float32)
    proj, tris = square(400, 400, 1200, 1000)
    detected = np.tile([[600.0, 700.0]], (68, 1))
    fitted = np.tile([[1600.0, 700.0]], (68, 1))
    panel = make_fit_overlay(img, proj, np.ones(4), tris, detected, fitted, None)
    assert panel.shape == (768, 2048, 3)  # each panel 768 x 1024
    left, right = panel[:, :1024], panel[:, 1024:]
    np.testing.assert_allclose(left[350, 300], [0, 1, 0], atol=1e-6)  # detected: green, scaled by 1/2
    np.testing.assert_allclose(left[350, 800], [1, 0, 0], atol=1e-6)  # fitted: red
    assert right[350, 300, 0] > 0.5 and abs(right[100, 100, 0] - BG) < 1e-6  # mesh at (200..600, 200..500)
    assert abs(right[350, 650, 0] - BG) < 1e-6
    small_proj, small_tris = square(10, 5, 30, 25)
    small = make_fit_overlay(background(), small_proj, np.ones(4), small_tris)
    assert small.shape == (48, 128, 3)  # never upscaled


def test_save_png_round_trip(tmp_path):
    img = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    save_png(tmp_path / "o.png", img)
    back = np.asarray(PILImage.open(tmp_path / "o.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(back, img, atol=0.5 / 255 + 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


# ---------------------------------------------------------------------------- vertex colours
F_PX = 100.0  # focal length: 1 mm at 100 mm distance = 1 px
SIZE = 64


def checkerboard(cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    red = ((xx // cell + yy // cell) % 2 == 0)[..., None]
    return np.where(red, np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])).astype(np.float32)


def plane(z: float, x0: float, x1: float, y0: float, y1: float, step: float, flip: bool = False):
    """A camera-space grid at depth -z facing the camera (+z), or away with `flip`."""
    xs, ys = np.meshgrid(np.arange(x0, x1 + 1e-9, step), np.arange(y0, y1 + 1e-9, step))
    n = xs.shape[1]
    verts = np.stack([xs, ys, np.full_like(xs, z)], -1).reshape(-1, 3)
    i = (np.arange(xs.shape[0] - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    tris = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i, i + n + 1, i + n], 1)])
    if flip:
        tris = tris[:, ::-1].copy()
    return verts, tris


def project(verts: np.ndarray) -> np.ndarray:
    return np.stack([SIZE / 2 + F_PX * verts[:, 0] / -verts[:, 2], SIZE / 2 - F_PX * verts[:, 1] / -verts[:, 2]], 1)


def normals_of(verts, tris) -> np.ndarray:
    return vertex_normals(torch.tensor(verts), torch.tensor(tris)).numpy()


def test_plane_facing_camera_gets_checkerboard_colours():
    img = checkerboard()
    # Vertices at the cell centres: pixel x = 32 + x_mm = 4, 12, ..., 60.
    verts, tris = plane(-100.0, -28, 28, -28, 28, 8)
    proj = project(verts)
    colors, visible = sample_vertex_colors(img, proj, normals_of(verts, tris), verts, triangles=tris)
    assert colors.shape == (len(verts), 3) and colors.dtype == np.float32 and visible.dtype == bool
    assert visible.all()
    cx, cy = (proj[:, 0] // 8).astype(int), (proj[:, 1] // 8).astype(int)
    expected = np.where(((cx + cy) % 2 == 0)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(colors, expected, atol=1e-6)
    # Without triangles (vertex splat) the same plane is just as visible.
    colors2, visible2 = sample_vertex_colors(img, proj, normals_of(verts, tris), verts)
    assert visible2.all()
    np.testing.assert_allclose(colors2, expected, atol=1e-6)


def test_bilinear_sampling_between_pixel_centres():
    img = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
    img[:, 10] = 1.0  # one bright column
    proj = np.array([[10.5, 20.5], [11.0, 20.5], [10.75, 20.5]])  # centre of column 10, halfway, quarter
    verts = np.array([[0.0, 0.0, -100.0]] * 3)
    normals = np.array([[0.0, 0.0, 1.0]] * 3)
    colors, visible = sample_vertex_colors(img, proj, normals, verts)
    assert visible.all()
    np.testing.assert_allclose(colors[:, 0], [1.0, 0.5, 0.75], atol=1e-6)


def test_plane_facing_away_is_invisible():
    img = checkerboard()
    verts, tris = plane(-100.0, -28, 28, -28, 28, 8, flip=True)
    colors, visible = sample_vertex_colors(img, project(verts), normals_of(verts, tris), verts, triangles=tris)
    assert not visible.any()
    np.testing.assert_allclose(colors, 0.5)  # nothing visible: mid-grey


@pytest.mark.parametrize("use_triangles", [True, False])
def test_occluded_vertices_are_invisible(use_triangles):
    img = checkerboard()
    back, back_tris = plane(-100.0, -28, 28, -28, 28, 2)
    # An occluder at half the distance covering x, y in [-8, 8] mm of the back plane's projection.
    front, front_tris = plane(-50.0, -4, 4, -4, 4, 1)
    verts = np.concatenate([back, front])
    tris = np.concatenate([back_tris, front_tris + len(back)])
    proj = project(verts)
    colors, visible = sample_vertex_colors(
        img, proj, normals_of(verts, tris), verts, triangles=tris if use_triangles else None
    )
    behind = (np.abs(back[:, 0]) < 7.5) & (np.abs(back[:, 1]) < 7.5)
    clear = (np.abs(back[:, 0]) > 10.5) | (np.abs(back[:, 1]) > 10.5)
    assert not visible[: len(back)][behind].any()
    assert visible[: len(back)][clear].all()
    assert visible[len(back):].all()
    # Invisible vertices get the mean visible colour.
    mean = colors[visible].mean(axis=0)
    np.testing.assert_allclose(colors[~visible], np.broadcast_to(mean, colors[~visible].shape), atol=1e-5)


def test_outside_image_and_behind_camera_are_invisible():
    img = checkerboard()
    verts = np.array([[0.0, 0.0, -100.0], [100.0, 0.0, -100.0], [0.0, 0.0, 100.0], [np.nan, 0.0, -100.0]])
    normals = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    proj = project(verts)
    _, visible = sample_vertex_colors(img, proj, normals, verts)
    np.testing.assert_array_equal(visible, [True, False, False, False])


def test_torch_input_gives_torch_output_and_uint8_accepted():
    img = torch.from_numpy((checkerboard() * 255).astype(np.uint8))
    verts, tris = plane(-100.0, -28, 28, -28, 28, 8)
    colors, visible = sample_vertex_colors(
        img, torch.tensor(project(verts)), torch.tensor(normals_of(verts, tris)), torch.tensor(verts),
        triangles=torch.tensor(tris),
    )
    assert isinstance(colors, torch.Tensor) and isinstance(visible, torch.Tensor)
    assert visible.all() and colors.max() == 1.0 and colors.min() == 0.0
    with pytest.raises(ValueError):
        sample_vertex_colors(img, torch.zeros(3, 2), torch.zeros(4, 3), torch.zeros(3, 3))


def test_png_bytes_decodes_to_the_image():
    import io

    from ganfit.io.overlay import png_bytes

    img = np.random.default_rng(1).random((12, 17, 3)).astype(np.float32)
    back = np.asarray(PILImage.open(io.BytesIO(png_bytes(img))), dtype=np.float32) / 255
    np.testing.assert_allclose(back, img, atol=0.5 / 255 + 1e-6)


def test_occlusion_with_downscaled_zbuffer():
    """A face far larger than the z-buffer's side is tested at reduced resolution, still correctly."""
    from ganfit.render.zbuffer import ZBUFFER_MAX_SIDE

    back, back_tris = plane(-100.0, -28, 28, -28, 28, 2)
    front, front_tris = plane(-50.0, -4, 4, -4, 4, 1)
    verts = np.concatenate([back, front])
    tris = np.concatenate([back_tris, front_tris + len(back)])
    scale = 40.0  # the scene spans ~2300 px: more than twice ZBUFFER_MAX_SIDE
    assert (project(verts).max() - project(verts).min()) * scale > 2 * ZBUFFER_MAX_SIDE
    proj = (project(verts) - SIZE / 2) * scale + 1500
    img = np.zeros((3000, 3000, 3), np.float32)
    _, visible = sample_vertex_colors(img, proj, normals_of(verts, tris), verts, triangles=tris)
    behind = (np.abs(back[:, 0]) < 7.5) & (np.abs(back[:, 1]) < 7.5)
    clear = (np.abs(back[:, 0]) > 10.5) | (np.abs(back[:, 1]) > 10.5)
    assert not visible[: len(back)][behind].any()
    assert visible[: len(back)][clear].all()
    assert visible[len(back):].all()
