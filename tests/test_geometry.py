"""Tests of ganfit.model.geometry: normals, areas, and the screen-space z-buffer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganfit.model.geometry import face_normals, rasterize_screen, triangle_areas, vertex_normals


def uv_sphere(n_lat: int = 32, n_lon: int = 64, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere: poles on the y axis, triangles counter-clockwise seen from outside."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # polar angle from +y, rings only
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), -np.sin(t) * np.sin(p)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius
    top, bottom = 0, len(verts) - 1

    def rid(i, j):
        return 1 + i * n_lon + (j % n_lon)

    tris = []
    for j in range(n_lon):
        tris.append((top, rid(0, j), rid(0, j + 1)))
        tris.append((bottom, rid(n_lat - 2, j + 1), rid(n_lat - 2, j)))
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = rid(i, j), rid(i, j + 1), rid(i + 1, j), rid(i + 1, j + 1)
            tris += [(a, c, d), (a, d, b)]
    return verts, np.array(tris, dtype=np.int64)


def icosphere(subdivisions: int = 3, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """An icosphere: an icosahedron whose triangles are split in four `subdivisions` times."""
    g = (1 + 5**0.5) / 2
    verts = [(-1, g, 0), (1, g, 0), (-1, -g, 0), (1, -g, 0), (0, -1, g), (0, 1, g),
             (0, -1, -g), (0, 1, -g), (g, 0, -1), (g, 0, 1), (-g, 0, -1), (-g, 0, 1)]
    tris = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
            (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
            (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in verts]
    for _ in range(subdivisions):
        midpoint: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in midpoint:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                midpoint[key] = len(verts) - 1
            return midpoint[key]

        new = []
        for a, b, c in tris:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        tris = new
    return np.array(verts) * radius, np.array(tris, dtype=np.int64)


def signed_volume(verts: np.ndarray, tris: np.ndarray) -> float:
    v0, v1, v2 = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    return float(np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() / 6.0)


def grid(n: int = 5, spacing: float = 1.0):
    """An n x n vertex grid in the z=0 plane, triangles counter-clockwise seen from +z."""
    xs, ys = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing)
    verts = np.stack([xs, ys, np.zeros_like(xs)], -1).reshape(-1, 3)
    i = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    tris = np.concatenate([np.stack([i, i + 1, i + n + 1], 1), np.stack([i, i + n + 1, i + n], 1)])
    return verts, tris


@pytest.mark.parametrize("make", [uv_sphere, icosphere])
def test_sphere_construction_is_outward(make):
    verts, tris = make()
    assert signed_volume(verts, tris) > 0
    assert abs(signed_volume(verts, tris) - 4 / 3 * math.pi) < 0.05


def test_sphere_vertex_normals_are_radial():
    verts, tris = icosphere(4)
    v = torch.tensor(verts * 37.0, dtype=torch.float32).unsqueeze(0) + torch.tensor([1.0, -2.0, 3.0])
    n = vertex_normals(v, torch.from_numpy(tris))
    assert n.shape == (1, len(verts), 3)
    radial = torch.tensor(verts, dtype=torch.float32)
    assert (n[0] - radial).norm(dim=-1).max() < 1e-2
    assert torch.allclose(n.norm(dim=-1), torch.ones(1, len(verts)), atol=1e-5)


@pytest.mark.parametrize("make", [uv_sphere, icosphere])
def test_sphere_face_normals_point_outward(make):
    verts, tris = make()
    fn = face_normals(torch.tensor(verts), torch.from_numpy(tris))
    centroids = torch.tensor(verts[tris].mean(axis=1))
    assert fn.shape == (len(tris), 3)
    cos = (fn * centroids / centroids.norm(dim=-1, keepdim=True)).sum(-1)
    assert cos.min() > 0.99


def test_flat_plane_normals_are_exactly_z():
    verts, tris = grid()
    v = torch.tensor(verts, dtype=torch.float32) + torch.tensor([0.0, 0.0, -5.0])
    expected = torch.zeros(len(verts), 3)
    expected[:, 2] = 1.0
    assert torch.equal(vertex_normals(v, tris), expected)
    assert torch.equal(face_normals(v, tris), torch.tensor([[0.0, 0.0, 1.0]]).expand(len(tris), 3))
    flipped = tris[:, ::-1].copy()
    assert torch.equal(vertex_normals(v, flipped), -expected)


def test_triangle_areas_known_values():
    v = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [1.0, 2.0, 7.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2], [0, 0, 4]])
    areas = triangle_areas(v, tris)
    a, b, c = (v[3] - v[1]).norm(), (v[2] - v[3]).norm(), (v[1] - v[2]).norm()
    s = (a + b + c) / 2
    heron = torch.sqrt(s * (s - a) * (s - b) * (s - c))
    assert areas.shape == (3,)
    assert areas[0] == 6.0
    assert torch.isclose(areas[1], heron, rtol=1e-12)
    assert areas[2] == 0.0
    # Batched: a second, scaled copy has 4x the area.
    batched = triangle_areas(torch.stack([v, 2 * v]), tris)
    assert batched.shape == (2, 3)
    assert torch.allclose(batched[1], 4 * areas)


def _tetra() -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor(
        [[[0.1, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.2, 0.1, 1.0]]], dtype=torch.float64
    )
    tris = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, tris


def test_gradcheck_vertex_normals():
    v, tris = _tetra()
    v = torch.cat([v, v * 1.3 + 0.1])  # batch of 2
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, tris), (v,), eps=1e-6, atol=1e-6)


def test_gradcheck_face_normals_and_areas():
    v, tris = _tetra()
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: face_normals(x, tris), (v,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda x: triangle_areas(x, tris), (v,), eps=1e-6, atol=1e-6)


def test_unreferenced_vertex_gets_zero_normal_and_finite_gradient():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    tris = torch.tensor([[0, 1, 2], [0, 0, 1]])  # the second triangle is degenerate
    n = vertex_normals(v, tris)
    assert torch.equal(n[3], torch.zeros(3))
    assert torch.equal(n[0], torch.tensor([0.0, 0.0, 1.0]))
    n.sum().backward()
    assert torch.isfinite(v.grad).all()
    assert torch.equal(face_normals(v, tris)[1], torch.zeros(3))


def test_batched_equals_unbatched_and_dtype_device_kept():
    verts, tris = uv_sphere(8, 12)
    v = torch.tensor(verts, dtype=torch.float64)
    batched = vertex_normals(torch.stack([v, v * 2.0]), tris)
    assert batched.dtype == torch.float64
    assert torch.allclose(batched[0], vertex_normals(v, tris))
    assert torch.allclose(batched[1], batched[0])


def test_input_checks():
    v, tris = _tetra()
    with pytest.raises(ValueError):
        vertex_normals(v[..., :2], tris)
    with pytest.raises(ValueError):
        vertex_normals(v, tris[:, :2])
    with pytest.raises(ValueError):
        vertex_normals(v, tris + 10)
    with pytest.raises(TypeError):
        vertex_normals(v, tris.double())
    with pytest.raises(TypeError):
        vertex_normals(v.numpy(), tris)


# ---------------------------------------------------------------------------- rasteriser
def test_rasterize_square_pixel_exact():
    # A square with corners on pixel boundaries, split in two clockwise-on-screen (front) triangles.
    proj = torch.tensor([[2.0, 3.0], [9.0, 3.0], [9.0, 8.0], [2.0, 8.0]])
    depth = torch.tensor([1.0, 1.0, 2.0, 2.0])
    tris = torch.tensor([[0, 2, 1], [0, 3, 2]])
    face, bary, zbuf = rasterize_screen(proj, depth, tris, 12, 16)
    expected = torch.zeros(12, 16, dtype=torch.bool)
    expected[3:8, 2:9] = True
    assert torch.equal(face >= 0, expected)
    assert torch.allclose(bary[expected].sum(-1), torch.ones(int(expected.sum())))
    # Depth interpolates linearly in y: row j has centre j + 0.5, depth 1 + (j + 0.5 - 3) / 5.
    rows = torch.arange(3, 8, dtype=torch.float32) + 0.5
    assert torch.allclose(zbuf[3:8, 5], 1.0 + (rows - 3.0) / 5.0)
    assert torch.isinf(zbuf[~expected]).all()
    # Back faces are culled unless asked not to; small chunks give the same result.
    face_back, _, _ = rasterize_screen(proj, depth, tris.flip(1), 12, 16)
    assert (face_back < 0).all()
    face_all, _, _ = rasterize_screen(proj, depth, tris.flip(1), 12, 16, cull_backfaces=False)
    assert torch.equal(face_all >= 0, expected)
    face_chunked, _, zb2 = rasterize_screen(proj, depth, tris, 12, 16, max_pairs=7)
    assert torch.equal(face_chunked, face) and torch.equal(zb2, zbuf)
