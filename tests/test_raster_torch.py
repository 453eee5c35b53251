"""The pure-PyTorch rasterizer backend: coverage, depth, perspective-correct interpolation, z-buffer,
clipping, gradients (attributes, texture, barycentrics, silhouette antialiasing), chunking, batches,
input checks and a small pose-recovery optimisation. Small images and meshes: the file runs in seconds."""
from __future__ import annotations

import math

import pytest
import torch

from ganfit.render.base import Fragments, Rasterizer
from ganfit.render.camera import axis_angle_to_matrix, clip_from_camera
from ganfit.render.torch_backend import (
    TorchRasterizer, TorchRasterSettings, edge_neighbours, mip_pyramid, perspective_barycentrics,
)

F64 = torch.float64
NEAR, FAR = 10.0, 10000.0


def pixels_to_clip(xy, width: int, height: int, z_ndc=0.0, w=1.0) -> torch.Tensor:
    """(N, 2) pixel coordinates (x right, y down) -> (1, N, 4) clip coordinates with the given w."""
    xy = torch.as_tensor(xy, dtype=F64)
    n = xy.shape[0]
    z_ndc = torch.as_tensor(z_ndc, dtype=F64).expand(n)
    w = torch.as_tensor(w, dtype=F64).expand(n)
    x = (2.0 * xy[:, 0] / width - 1.0) * w
    y = (1.0 - 2.0 * xy[:, 1] / height) * w
    return torch.stack([x, y, z_ndc * w, w], -1)[None]


def pixel_centres_ndc(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) NDC x and y of the pixel centres."""
    j = torch.arange(width, dtype=F64) + 0.5
    i = torch.arange(height, dtype=F64) + 0.5
    return (2.0 * j / width - 1.0).expand(height, width), (1.0 - 2.0 * i / height)[:, None].expand(height, width)


def z_ndc_of(z_cam: torch.Tensor) -> torch.Tensor:
    """z_ndc of camera-space depth z (< 0) for clip_from_camera's default near/far planes."""
    z_clip = -(FAR + NEAR) / (FAR - NEAR) * z_cam - 2.0 * FAR * NEAR / (FAR - NEAR)
    return z_clip / (-z_cam)


def camera_clip(points: torch.Tensor, focal: float, principal: tuple[float, float],
                size: tuple[int, int]) -> torch.Tensor:
    """(V, 3) camera-space points -> (1, V, 4) clip; size = (W, H)."""
    return clip_from_camera(points[None], torch.tensor([focal], dtype=points.dtype),
                            torch.tensor([principal], dtype=points.dtype), size)


def icosphere(subdivisions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit icosphere: (V, 3) float64 vertices, (F, 3) int64 triangles, counter-clockwise from outside."""
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0], [0, -1, phi], [0, 1, phi],
             [0, -1, -phi], [0, 1, -phi], [phi, 0, -1], [phi, 0, 1], [-phi, 0, -1], [-phi, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
             [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
             [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    verts = [list(map(float, v)) for v in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                verts.append([(verts[a][k] + verts[b][k]) / 2.0 for k in range(3)])
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new
    v = torch.tensor(verts, dtype=F64)
    return v / v.norm(dim=1, keepdim=True), torch.tensor(faces)


def grid_mesh(n: int, size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n*n, 2) grid points in [0, size]^2 and (2 (n-1)^2, 3) triangles."""
    t = torch.linspace(0.0, size, n, dtype=F64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    i, j = torch.meshgrid(torch.arange(n - 1), torch.arange(n - 1), indexing="ij")
    a = (i * n + j).reshape(-1)
    tris = torch.cat([torch.stack([a, a + 1, a + n + 1], 1), torch.stack([a, a + n + 1, a + n], 1)])
    return pts, tris


@pytest.fixture
def raster() -> TorchRasterizer:
    return TorchRasterizer()


def test_satisfies_protocol(raster):
    assert isinstance(raster, Rasterizer)
    assert raster.name == "torch"


# ---------------------------------------------------------------------------------------------- coverage


def test_square_exact_coverage_depth_and_barycentrics(raster):
    h, w = 16, 20
    corners = [[4, 3], [13, 3], [13, 11], [4, 11]]  # pixel-boundary coordinates
    # depth affine in NDC: z = 0.1 + 0.2 x - 0.3 y at the corners, w varying per corner (planar in NDC)
    xy = pixels_to_clip(corners, w, h)[0, :, :2]
    z = 0.1 + 0.2 * xy[:, 0] - 0.3 * xy[:, 1]
    ws = torch.tensor([1.0, 1.5, 2.0, 0.7], dtype=F64)
    clip = pixels_to_clip(corners, w, h, z_ndc=z, w=ws)
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = raster.rasterize(clip, tris, (h, w))
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[3:11, 4:13] = True
    assert torch.equal(frags.mask[0], expected)
    assert set(frags.triangle_id[0][expected].tolist()) == {0, 1}
    assert torch.all(frags.triangle_id[0][~expected] == -1)
    qx, qy = pixel_centres_ndc(h, w)
    assert torch.allclose(frags.depth[0][expected], (0.1 + 0.2 * qx - 0.3 * qy)[expected], atol=1e-12)
    assert torch.all(torch.isinf(frags.depth[0][~expected]))
    bary = frags.barycentric[0]
    assert torch.allclose(bary[expected].sum(-1), torch.ones(int(expected.sum()), dtype=F64), atol=1e-12)
    assert torch.all(bary[expected] >= -1e-12)
    assert torch.all(bary[~expected] == 0)


def test_sphere_disc_area_and_centre_depth(raster):
    verts, tris = icosphere(3)
    # rotate so that an icosahedron vertex looks straight at the camera (+z)
    v0 = verts[5] / verts[5].norm()
    axis = torch.linalg.cross(v0, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    angle = torch.asin(axis.norm())
    rot = axis_angle_to_matrix((axis / axis.norm() * angle)[None])[0]
    radius, dist, focal, size = 50.0, 400.0, 200.0, 64
    cam = verts @ rot.T * radius + torch.tensor([0.0, 0.0, -dist], dtype=F64)
    principal = (32.5, 32.5)  # pixel (32, 32) is centred on the optical axis
    frags = raster.rasterize(camera_clip(cam, focal, principal, (size, size)), tris, (size, size))
    r_img = focal * radius / math.sqrt(dist**2 - radius**2)  # image radius of the sphere's outline
    area = float(frags.mask.sum())
    assert abs(area - math.pi * r_img**2) < 0.02 * math.pi * r_img**2
    expected = z_ndc_of(torch.tensor(-(dist - radius), dtype=F64))
    assert abs(float(frags.depth[0, 32, 32]) - float(expected)) < 1e-9
    # closed mesh: no holes inside the outline (watertight edges)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    inner = (xx - principal[0]) ** 2 + (yy - principal[1]) ** 2 < (0.9 * r_img) ** 2
    assert bool(frags.mask[0][inner].all())


def test_perspective_correct_interpolation_on_tilted_plane(raster):
    # plane n.p = c in camera space, tilted; attribute = camera-space x (linear in 3D)
    focal, principal, size = 40.0, (16.0, 12.0), (32, 24)
    a, b, d = (torch.tensor(p, dtype=F64) for p in ([-60, -50, -150], [70, -45, -420], [-55, 50, -160]))
    quad = torch.stack([a, b, b + d - a, d])  # a parallelogram, so planar
    n = torch.linalg.cross(b - a, d - a)
    c = float(n @ a)
    clip = camera_clip(quad, focal, principal, size)
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = raster.rasterize(clip, tris, (size[1], size[0]))
    got = raster.interpolate(quad[:, 0:1], frags, tris)[0, ..., 0]
    mask = frags.mask[0]
    assert int(mask.sum()) > 100
    jj, ii = torch.meshgrid(torch.arange(size[0], dtype=F64) + 0.5, torch.arange(size[1], dtype=F64) + 0.5,
                            indexing="xy")
    d = torch.stack([(jj - principal[0]) / focal, -(ii - principal[1]) / focal, -torch.ones_like(jj)], -1)
    t = c / (d @ n)
    p = d * t[..., None]
    assert torch.allclose(got[mask], p[..., 0][mask], atol=1e-6)
    assert torch.allclose(frags.depth[0][mask], z_ndc_of(p[..., 2])[mask], atol=1e-9)
    assert torch.all(got[~mask] == 0)


@pytest.mark.parametrize("cells", [6, 13, 40])
def test_no_cracks_between_shared_edges(raster, cells):
    # a jittered planar grid over the whole image: every pixel centre is covered (float32, sizes from
    # sub-pixel to several pixels, so both the first-pixel pass and the unit grids meet at edges)
    gen = torch.Generator().manual_seed(cells)
    h, w = 40, 48
    pts, tris = grid_mesh(cells + 1)
    step = 1.0 / cells
    inner = (pts > 0) & (pts < 1)
    pts = pts + inner * (torch.rand(pts.shape, generator=gen, dtype=F64) - 0.5) * 0.8 * step
    xy = pts * torch.tensor([w + 4.0, h + 4.0], dtype=F64) - 2.0
    clip = pixels_to_clip(xy, w, h, z_ndc=0.1 * pts[:, 0], w=1.0 + pts[:, 1]).float()
    frags = raster.rasterize(clip, tris, (h, w))
    assert bool(frags.mask.all())


# ---------------------------------------------------------------------------------------------- z-buffer, clipping


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_nearer_triangle_wins_regardless_of_order(raster, order):
    h = w = 16
    near = pixels_to_clip([[2, 2], [14, 3], [4, 14]], w, h, z_ndc=-0.5)
    far = pixels_to_clip([[3, 1], [15, 12], [1, 13]], w, h, z_ndc=0.5)
    clip = torch.cat([near, far], 1)
    tris = torch.tensor([[0, 1, 2], [3, 4, 5]])[order]
    frags = raster.rasterize(clip, tris, (h, w))
    alone_near = raster.rasterize(near, torch.tensor([[0, 1, 2]]), (h, w)).mask[0]
    near_id = order.index(0)
    assert torch.all(frags.triangle_id[0][alone_near] == near_id)
    assert torch.allclose(frags.depth[0][alone_near], torch.full((int(alone_near.sum()),), -0.5, dtype=F64))
    assert bool((frags.triangle_id[0] == 1 - near_id).any())  # the far one shows where the near one is not


def test_clipping_behind_camera_outside_view_and_depth_range(raster):
    h = w = 16
    tris = torch.tensor([[0, 1, 2]])
    behind = pixels_to_clip([[2, 2], [14, 3], [4, 14]], w, h, w=torch.tensor([1.0, -1.0, 1.0]))
    assert not raster.rasterize(behind, tris, (h, w)).mask.any()
    zero_w = pixels_to_clip([[2, 2], [14, 3], [4, 14]], w, h, w=torch.tensor([1.0, 0.0, 1.0]))
    assert not raster.rasterize(zero_w, tris, (h, w)).mask.any()
    outside = pixels_to_clip([[20, 2], [30, 3], [25, 14]], w, h)  # entirely right of the image
    frags = raster.rasterize(outside, tris, (h, w))
    assert not frags.mask.any() and torch.all(torch.isinf(frags.depth))
    beyond_far = pixels_to_clip([[2, 2], [14, 3], [4, 14]], w, h, z_ndc=1.5)
    assert not raster.rasterize(beyond_far, tris, (h, w)).mask.any()
    # a triangle crossing the near plane keeps only its part with z_ndc >= -1
    crossing = pixels_to_clip([[0, 0], [16, 0], [0, 16]], w, h, z_ndc=torch.tensor([-2.0, 0.0, 0.0]))
    frags = raster.rasterize(crossing, tris, (h, w))
    assert frags.mask.any() and not frags.mask[0, 0, 0]
    assert float(frags.depth[frags.mask].min()) >= -1.0


def test_backface_culling_flag():
    h = w = 12
    ccw = pixels_to_clip([[2, 10], [10, 10], [6, 2]], w, h)  # counter-clockwise in NDC (y up)
    tris, flipped = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    culling = TorchRasterizer(TorchRasterSettings(cull_backfaces=True))
    assert culling.rasterize(ccw, tris, (h, w)).mask.any()
    assert not culling.rasterize(ccw, flipped, (h, w)).mask.any()
    assert TorchRasterizer().rasterize(ccw, flipped, (h, w)).mask.any()


def test_empty_mesh_and_batch_consistency(raster):
    h, w = 10, 14
    frags = raster.rasterize(torch.zeros(2, 0, 4, dtype=F64), torch.zeros(0, 3, dtype=torch.long), (h, w))
    assert frags.triangle_id.shape == (2, h, w) and not frags.mask.any()
    a = pixels_to_clip([[1, 1], [12, 2], [3, 9], [13, 9]], w, h, z_ndc=0.2)
    b = pixels_to_clip([[2, 8], [13, 1], [1, 2], [7, 9]], w, h, z_ndc=-0.1)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    both = raster.rasterize(torch.cat([a, b]), tris, (h, w))
    for k, single in enumerate([a, b]):
        one = raster.rasterize(single, tris, (h, w))
        assert torch.equal(both.triangle_id[k], one.triangle_id[0])
        assert torch.allclose(both.barycentric[k], one.barycentric[0])
    colors = torch.rand(2, 4, 3, dtype=F64)
    img = raster.interpolate(colors, both, tris)
    assert torch.allclose(img[1], raster.interpolate(colors[1], raster.rasterize(b, tris, (h, w)), tris)[0])


def test_chunking_and_tiles_match_default_exactly():
    # a fine grid (sub-pixel triangles) plus a few large triangles (split into tile blocks)
    pts, tris = grid_mesh(12, size=1.0)
    h, w = 40, 48
    xy = pts * torch.tensor([30.0, 26.0], dtype=F64) + torch.tensor([3.3, 5.1], dtype=F64)
    z = 0.3 * torch.sin(3 * pts[:, 0]) - 0.2 * pts[:, 1]
    big = torch.tensor([[-5.0, -3.0], [60.0, 10.0], [10.0, 50.0]], dtype=F64)
    clip = torch.cat([pixels_to_clip(xy, w, h, z_ndc=z), pixels_to_clip(big, w, h, z_ndc=0.05)], 1)
    tris = torch.cat([tris, torch.tensor([[144, 145, 146]])])
    ref = TorchRasterizer().rasterize(clip, tris, (h, w))
    assert ref.mask.sum() > 0.5 * h * w
    for settings in (TorchRasterSettings(tile=4, max_pairs=16), TorchRasterSettings(tile=1, max_pairs=1),
                     TorchRasterSettings(tile=64, max_pairs=5)):
        other = TorchRasterizer(settings).rasterize(clip, tris, (h, w))
        assert torch.equal(ref.triangle_id, other.triangle_id)
        assert torch.equal(ref.barycentric, other.barycentric)


# ---------------------------------------------------------------------------------------------- gradients


def test_interpolate_gradcheck_attributes(raster):
    h = w = 8
    clip = pixels_to_clip([[0.5, 0.7], [7.6, 1.2], [2.2, 7.7], [7.9, 7.3]], w, h, z_ndc=0.1,
                          w=torch.tensor([1.0, 2.0, 1.5, 1.2]))
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    frags = raster.rasterize(clip, tris, (h, w))
    attrs = torch.rand(4, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: raster.interpolate(a, frags, tris), (attrs,))
    bary = frags.barycentric.clone().requires_grad_(True)

    def with_bary(b: torch.Tensor) -> torch.Tensor:
        return raster.interpolate(attrs.detach(), Fragments(frags.triangle_id, b, frags.depth), tris)

    assert torch.autograd.gradcheck(with_bary, (bary,))


def test_texture_gradcheck_texels_and_uv(raster):
    gen = torch.Generator().manual_seed(1)
    tex = torch.rand(1, 2, 5, 4, dtype=F64, generator=gen, requires_grad=True)
    uv = (0.05 + 0.9 * torch.rand(1, 3, 3, 2, dtype=F64, generator=gen)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, u: raster.texture(t, u), (tex, uv))
    # v up: v = 1 samples the top row of the texture image, u = 0 the left column
    img = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    corner = raster.texture(img, torch.tensor([[[[0.01, 0.99]]]], dtype=F64))
    assert float(corner) == 0.0


def test_mipmap_filters_minified_texture(raster):
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).to(F64)[None, None]
    levels = mip_pyramid(checker)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16, 8, 4, 2, 1]
    # an 8x8 image covering the whole texture: 8 texels per pixel -> the average, 0.5
    t = (torch.arange(8, dtype=F64) + 0.3) / 8
    uv = torch.stack(torch.meshgrid(t, 1 - t, indexing="xy"), -1)[None]
    out = raster.texture(checker, uv, filter="mipmap")
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=1e-9)
    bil = raster.texture(checker, uv, filter="bilinear")
    assert float((bil - 0.5).abs().max()) > 0.2  # aliased without mip-mapping
    tex = torch.rand(1, 3, 16, 16, dtype=F64, requires_grad=True)
    raster.texture(tex, uv, filter="area").sum().backward()
    assert tex.grad is not None and float(tex.grad.abs().sum()) > 0


def test_barycentric_gradcheck_vertex_positions(raster):
    h = w = 10
    base = pixels_to_clip([[0.3, 0.6], [9.4, 1.3], [1.7, 9.2], [9.6, 8.8]], w, h,
                          z_ndc=torch.tensor([0.1, -0.2, 0.3, 0.0]), w=torch.tensor([1.0, 1.7, 1.3, 0.8]))
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    mask = raster.rasterize(base, tris, (h, w)).mask

    def render(clip):
        frags = raster.rasterize(clip, tris, (h, w))
        assert torch.equal(frags.mask, mask)  # visibility does not change under the perturbation
        return frags.barycentric[mask], frags.depth[mask]

    assert torch.autograd.gradcheck(render, (base.clone().requires_grad_(True),), atol=1e-6)


def test_antialias_gradient_at_silhouette_matches_finite_differences(raster):
    h = w = 16
    tris = torch.tensor([[0, 1, 2]])
    colors = torch.ones(3, 1, dtype=F64)

    def image_sum(x2: float | torch.Tensor, antialias: bool = True) -> torch.Tensor:
        x = torch.as_tensor(x2, dtype=F64)
        xy = torch.stack([torch.stack([torch.tensor(2.3, dtype=F64), torch.tensor(2.6, dtype=F64)]),
                          torch.stack([x, torch.tensor(7.4, dtype=F64)]),
                          torch.stack([torch.tensor(3.1, dtype=F64), torch.tensor(13.2, dtype=F64)])])
        clip = pixels_to_clip(xy, w, h, z_ndc=0.2, w=torch.tensor([1.0, 1.3, 0.9]))
        frags = raster.rasterize(clip, tris, (h, w))
        img = raster.interpolate(colors, frags, tris)
        if antialias:
            img = raster.antialias(img, frags, clip, tris)
        return img.sum()

    x0 = torch.tensor(12.37, dtype=F64, requires_grad=True)
    image_sum(x0).backward()
    step = 1e-4
    fd = (image_sum(12.37 + step) - image_sum(12.37 - step)) / (2 * step)
    assert float(fd) > 0.5  # moving the vertex right grows the covered area
    assert abs(float(x0.grad) - float(fd)) < 0.03 * abs(float(fd))
    # the covered area of the triangle grows by ~ half the height of its right edge per pixel
    assert abs(float(fd) - 0.5 * (13.2 - 2.6)) < 0.3 * 0.5 * (13.2 - 2.6)
    x1 = torch.tensor(12.37, dtype=F64, requires_grad=True)
    image_sum(x1, antialias=False).backward()
    assert x1.grad is None or abs(float(x1.grad)) < 1e-9


def test_edge_neighbours_of_a_quad():
    nb = edge_neighbours(torch.tensor([[0, 1, 2], [0, 2, 3]]))
    assert nb.tolist() == [[-1, -1, 1], [0, -1, -1]]


def test_antialias_leaves_interior_edges_alone(raster):
    # a flat grid facing the camera: adjacent triangles share non-silhouette edges -> no blending inside
    pts, tris = grid_mesh(6)
    h = w = 24
    clip = pixels_to_clip(pts * 19.4 + 2.3, w, h)
    frags = raster.rasterize(clip, tris, (h, w))
    colors = torch.rand(pts.shape[0], 3, dtype=F64)
    img = raster.interpolate(colors, frags, tris)
    out = raster.antialias(img, frags, clip, tris)
    interior = torch.zeros(h, w, dtype=torch.bool)
    interior[3:21, 3:21] = True  # the outline runs through pixels 2 and 21
    assert torch.equal(out[0][interior], img[0][interior])
    assert not torch.equal(out, img)  # the outline is blended


def test_plain_fragments_and_batches_give_the_same_images(raster):
    verts, tris = icosphere(1)
    h, w = 20, 24
    cams = [verts * 40 + torch.tensor(t, dtype=F64) for t in ([2.0, -1.0, -150.0], [-5.0, 3.0, -170.0])]
    clip = torch.cat([camera_clip(c, 60.0, (12.3, 9.8), (w, h)) for c in cams])
    colors = torch.rand(2, verts.shape[0], 3, dtype=F64)
    frags = raster.rasterize(clip, tris, (h, w))
    plain = Fragments(frags.triangle_id, frags.barycentric, frags.depth)
    img = raster.antialias(raster.interpolate(colors, frags, tris), frags, clip, tris)
    img_plain = raster.antialias(raster.interpolate(colors, plain, tris), plain, clip, tris)
    assert torch.equal(img, img_plain)
    for k in range(2):
        one = raster.rasterize(clip[k : k + 1], tris, (h, w))
        single = raster.antialias(raster.interpolate(colors[k], one, tris), one, clip[k : k + 1], tris)
        assert torch.allclose(img[k], single[0], atol=1e-12)
    # the public helper agrees with the rasterizer's barycentrics and depth
    mask = frags.mask[0]
    corners = clip[0][tris[frags.triangle_id[0][mask]]]
    qx, qy = pixel_centres_ndc(h, w)
    bary, depth = perspective_barycentrics(corners, torch.stack([qx[mask], qy[mask]], -1))
    assert torch.allclose(bary, frags.barycentric[0][mask], atol=1e-12)
    assert torch.allclose(depth, frags.depth[0][mask], atol=1e-12)


# ---------------------------------------------------------------------------------------------- optimisation


def test_recovers_translation_of_textured_square(raster):
    torch.manual_seed(0)
    h = w = 32
    square = torch.tensor([[8.0, 8.0], [24.0, 8.0], [24.0, 24.0], [8.0, 24.0]], dtype=F64)
    uvs = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=F64)
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16, dtype=F64), torch.linspace(-1, 1, 16, dtype=F64), indexing="ij")
    tex = torch.stack([0.5 + 0.5 * torch.sin(2 * xx), 0.5 + 0.5 * torch.cos(3 * yy), 0.3 + 0.2 * xx * yy])[None]

    def render(offset: torch.Tensor) -> torch.Tensor:
        clip = pixels_to_clip(square + offset, w, h, z_ndc=0.0, w=torch.tensor([1.0, 1.2, 0.9, 1.1]))
        frags = raster.rasterize(clip, tris, (h, w))
        uv = raster.interpolate(uvs, frags, tris)
        img = raster.texture(tex, uv) * frags.mask[..., None]
        return raster.antialias(img, frags, clip, tris)

    true = torch.tensor([1.37, -0.81], dtype=F64)
    target = render(true).detach()
    offset = torch.zeros(2, dtype=F64, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        loss = ((render(offset) - target) ** 2).mean()
        loss.backward()
        opt.step()
    assert float((offset.detach() - true).abs().max()) < 0.2


# ---------------------------------------------------------------------------------------------- input checks


def test_input_checks(raster):
    tris = torch.tensor([[0, 1, 2]])
    good = pixels_to_clip([[1, 1], [6, 1], [1, 6]], 8, 8)
    for bad_value in (float("nan"), float("inf")):
        bad = good.clone()
        bad[0, 1, 0] = bad_value
        with pytest.raises(ValueError, match="NaN/inf"):
            raster.rasterize(bad, tris, (8, 8))
    with pytest.raises(ValueError, match=r"\(B, V, 4\)"):
        raster.rasterize(good[0], tris, (8, 8))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        raster.rasterize(good, torch.tensor([0, 1, 2]), (8, 8))
    with pytest.raises(ValueError, match="out of range"):
        raster.rasterize(good, torch.tensor([[0, 1, 3]]), (8, 8))
    with pytest.raises(ValueError, match="resolution"):
        raster.rasterize(good, tris, (0, 8))
    frags = raster.rasterize(good, tris, (8, 8))
    with pytest.raises(ValueError, match=r"\(B, V, C\)"):
        raster.interpolate(torch.zeros(2, 3, 3, 1), frags, tris)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        raster.antialias(torch.zeros(1, 4, 4, 3), frags, good, tris)
    with pytest.raises(ValueError, match="uv"):
        raster.texture(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="filter"):
        raster.texture(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 2), filter="cubic")
    with pytest.raises(ValueError, match="power of two"):
        TorchRasterSettings(tile=12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(raster):
    verts, tris = icosphere(2)
    cam = verts * 50 + torch.tensor([3.0, -2.0, -300.0], dtype=F64)
    clip = camera_clip(cam, 100.0, (20.0, 16.0), (40, 32)).float()
    cpu = raster.rasterize(clip, tris, (32, 40))
    gpu = raster.rasterize(clip.cuda(), tris.cuda(), (32, 40))
    assert torch.equal(cpu.triangle_id, gpu.triangle_id.cpu())
    colors = torch.rand(verts.shape[0], 3)
    a = raster.antialias(raster.interpolate(colors, cpu, tris), cpu, clip, tris)
    b = raster.antialias(raster.interpolate(colors.cuda(), gpu, tris.cuda()), gpu, clip.cuda(), tris.cuda())
    assert torch.allclose(a, b.cpu(), atol=1e-4)


def test_texture_lod_ignores_background_neighbours():
    """A one-pixel-wide sliver of surface next to background keeps its own footprint."""
    from ganfit.render.torch_backend import _texture_lod

    uv = torch.zeros(1, 5, 5, 2)
    for i in range(5):
        uv[0, i, 2] = torch.tensor([0.5, 0.1 * i + 0.3])  # 0.1 in v per pixel = 51.2 texels of 512
    lod = _texture_lod(uv, 512, 512)[0]
    assert torch.allclose(lod[:, 2], torch.full((5,), math.log2(51.2)), atol=1e-4)
    assert (lod[:, [0, 1, 3, 4]] == 0).all()  # background
    dense = torch.stack(torch.meshgrid(torch.linspace(0.2, 0.6, 5), torch.linspace(0.2, 0.6, 5), indexing="xy"), -1)[None]
    assert torch.allclose(_texture_lod(dense, 512, 512), torch.full((1, 5, 5), math.log2(51.2)), atol=1e-4)
