"""Photo -> UV texture: unwrap a fitted mesh's photo colours into its UV layout, then complete the
parts the photo does not show (not differentiable).

`unwrap` works on the model's rasterised UV layout (`ganfit.render.uv_layout.UVLayout`: for every
texel its triangle and barycentric weights; built here when not given, kept per model by
`ganfit.fitting.photo_texture.PhotoTexture`). Through the weights each texel gets a camera-space
position and normal and its position in the photo (perspective-correct: the exact projection of the
texel's surface point for any pinhole camera, with no camera needed). The photo is sampled bilinearly
there (antialiased: when one texel covers several photo pixels the face's part of the photo is first
resized to about one pixel per texel). A texel is *visible* when it

1. projects inside the photo, in front of the camera,
2. faces the camera: ``cos(normal, texel -> camera) > min_cos``, and
3. is not occluded: its depth is at most the mesh's screen-space z-buffer depth at its pixel plus a
   slope-aware tolerance (as in `ganfit.fitting.colors.sample_vertex_colors`; the z-buffer,
   `ganfit.render.zbuffer.screen_zbuffer`, covers only the face's bounding box, at no more than 512
   pixels a side, and can be shared with the colour sampling).

`UVTexture.mask` is a soft weight: 0 where the texel is not visible (or outside the chart), rising
smoothly from 0 at ``cos = min_cos`` to 1 at ``cos = full_cos``, and fading towards the mesh's
contours in the photo.

`complete` (in `ganfit.render.uv_complete`, re-exported here) fills the chart texels the photo did not
see: by symmetry (`mirror_uv_map`) and a Poisson fill.

Coordinates: texel ``(row j, column i)`` has its centre at ``(x, y) = (i + 0.5, j + 0.5)`` in texture
pixels, which is ``(u, v) = (x / W_uv, 1 - y / H_uv)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..model.geometry import face_normals, parse_resolution, vertex_normals
from .uv_complete import INPAINTED, MIRRORED, OUTSIDE, SEEN, complete
from .uv_layout import DEFAULT_RESOLUTION, UVLayout, UVTexture, mirror_uv_map, uv_layout, uv_to_texel
from .zbuffer import ScreenZBuffer, screen_zbuffer

__all__ = [
    "UVTexture",
    "UVLayout",
    "uv_layout",
    "unwrap",
    "complete",
    "mirror_uv_map",
    "uv_to_texel",
    "SEEN",
    "MIRRORED",
    "INPAINTED",
    "OUTSIDE",
    "DEFAULT_RESOLUTION",
]


# ------------------------------------------------------------------------------------------ helpers
def _as_tensor(x, *, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _focal_estimate(proj: torch.Tensor, verts: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Pinhole focal length (px) fitted to x = cx + f X/(-Z), y = cy - f Y/(-Z); None if degenerate."""
    if int(mask.sum()) < 3:
        return None
    p = proj[mask].double()
    v = verts[mask].double()
    ax, ay = v[:, 0] / -v[:, 2], -v[:, 1] / -v[:, 2]
    a = torch.cat([ax - ax.mean(), ay - ay.mean()])
    b = torch.cat([p[:, 0] - p[:, 0].mean(), p[:, 1] - p[:, 1].mean()])
    denom = float((a * a).sum())
    if denom <= 1e-18:
        return None
    f = float((a * b).sum()) / denom
    return f if math.isfinite(f) and f > 0 else None


def _photo_array(photo) -> tuple[np.ndarray, float]:
    """(H, W, 3) numpy view of the photo (no copy) and the factor that maps its values to [0, 1]."""
    arr = photo.detach().cpu().numpy() if isinstance(photo, torch.Tensor) else np.asarray(photo)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"photo must be (H, W, 3), got {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr, 1.0 / 255.0
    if arr.dtype == np.uint16:
        return arr, 1.0 / 65535.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"photo must be float in [0, 1], uint8 or uint16, got {arr.dtype}")
    return arr, 1.0


def _sample_photo(img: np.ndarray, scale: float, xy: torch.Tensor, texel_px: float) -> torch.Tensor:
    """Bilinear colours (N, 3) float32 at photo pixel coordinates `xy` (N, 2) (pixel centres at +0.5).

    Only the bounding box of `xy` is read; it is first resized to about one pixel per texel when the
    texels are larger than `texel_px` >= 1.5 photo pixels (area-weighted, so no aliasing)."""
    hh, ww = img.shape[:2]
    if xy.shape[0] == 0:
        return torch.zeros((0, 3), dtype=torch.float32)
    x0 = int(max(0, math.floor(float(xy[:, 0].min()) - 1)))
    y0 = int(max(0, math.floor(float(xy[:, 1].min()) - 1)))
    x1 = int(min(ww, math.ceil(float(xy[:, 0].max()) + 1)))
    y1 = int(min(hh, math.ceil(float(xy[:, 1].max()) + 1)))
    crop = np.ascontiguousarray(img[y0:y1, x0:x1], dtype=np.float32) * np.float32(scale)
    crop = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w)
    h, w = crop.shape[-2:]
    if texel_px > 1.5:
        size = (max(1, round(h / texel_px)), max(1, round(w / texel_px)))
        crop = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
    # align_corners=False: -1 and 1 are the outer edges of the crop whatever its resolution
    gx = (xy[:, 0].float() - x0) / w * 2.0 - 1.0
    gy = (xy[:, 1].float() - y0) / h * 2.0 - 1.0
    grid = torch.stack([gx, gy], 1).view(1, 1, -1, 2)
    out = F.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.nan_to_num(out[0, :, 0].T).clamp(0.0, 1.0)


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _layout_for(layout: UVLayout | None, uv, triangles, uv_triangles, resolution, n_v: int) -> UVLayout:
    """The given layout (checked against the mesh and resolution) or a new one."""
    if layout is None:
        return uv_layout(uv, triangles, DEFAULT_RESOLUTION if resolution is None else resolution,
                         uv_triangles=uv_triangles, num_vertices=n_v)
    if resolution is not None and parse_resolution(resolution) != layout.resolution:
        raise ValueError(f"resolution {resolution} differs from the layout's {layout.resolution}")
    tris = triangles.detach().cpu().numpy() if isinstance(triangles, torch.Tensor) else np.asarray(triangles)
    if layout.num_vertices != n_v or not (tris is layout.triangles or np.array_equal(tris, layout.triangles)):
        raise ValueError("layout was built for another mesh (vertex count or triangles differ)")
    return layout


# ------------------------------------------------------------------------------------------ unwrap
@torch.no_grad()
def unwrap(
    photo,
    projected,
    vertices_camera,
    triangles,
    uv=None,
    *,
    uv_triangles=None,
    resolution=None,
    min_cos: float = 0.15,
    full_cos: float = 0.5,
    depth_tol: float = 2.0,
    contour_margin: float = 0.015,
    layout: UVLayout | None = None,
    zbuffer: ScreenZBuffer | None = None,
    normals=None,
) -> UVTexture:
    """Unwrap a photo into the UV layout of the mesh fitted to it.

    Args:
        photo: (H, W, 3) float in [0, 1] (or uint8), numpy or torch.
        projected: (V, 2) pixel coordinates of the vertices in the photo (x right, y down, pixel centres
            at +0.5), from a pinhole camera.
        vertices_camera: (V, 3) camera-space vertices, mm (camera at the origin looking down -z).
        triangles: (F, 3) vertex indices, counter-clockwise seen from outside.
        uv: (V, 2) texture coordinates in [0, 1], v up; or (T, 2) with `uv_triangles` (F, 3). Not
            needed with `layout`.
        resolution: (H_uv, W_uv) of the texture, or one int for a square one (default `DEFAULT_RESOLUTION`,
            or the layout's).
        min_cos: texels whose normal makes a cosine of at most this with the direction to the camera
            are not visible; the mask rises from 0 there to 1 at `full_cos`.
        depth_tol: occlusion tolerance in mm (plus a slope allowance).
        contour_margin: the mask also fades to 0 towards the mesh's contours in the photo (outline
            against the background, a nose in front of a cheek) over this fraction of the face's size
            in the photo, since the fitted outline is never exactly the face's; 0 turns that off.
        layout: the mesh's `uv_layout` at this resolution, if the caller keeps one (built here otherwise).
        zbuffer: the mesh's `screen_zbuffer` in this photo, if the caller has one (built here otherwise).
        normals: (V, 3) the vertex normals of `vertices_camera` (`ganfit.model.geometry.vertex_normals`),
            if the caller has them (computed here otherwise).
    Returns:
        `UVTexture` (texture, mask, coverage), numpy float32 / bool.
    """
    if not full_cos > min_cos:
        raise ValueError(f"full_cos ({full_cos}) must exceed min_cos ({min_cos})")
    img, img_scale = _photo_array(photo)
    ph, pw = int(img.shape[0]), int(img.shape[1])
    proj = _as_tensor(projected)
    verts = _as_tensor(vertices_camera)
    tris = _as_tensor(triangles, dtype=torch.long)
    n_v = proj.shape[0]
    if proj.ndim != 2 or proj.shape[1] != 2:
        raise ValueError(f"projected must be (V, 2), got {tuple(proj.shape)}")
    if verts.shape != (n_v, 3):
        raise ValueError(f"vertices_camera must be (V={n_v}, 3), got {tuple(verts.shape)}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    if tris.numel() and (int(tris.min()) < 0 or int(tris.max()) >= n_v):
        raise ValueError(f"triangle index out of range for {n_v} vertices")
    if layout is None and uv is None:
        raise ValueError("unwrap needs uv (or a layout)")
    layout = _layout_for(layout, uv, triangles, uv_triangles, resolution, n_v)

    h_uv, w_uv = layout.resolution
    texture = np.zeros((h_uv * w_uv, 3), np.float32)
    mask = np.zeros(h_uv * w_uv, np.float32)

    def result() -> UVTexture:
        return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), layout.coverage)

    if layout.texels.numel() == 0:
        return result()
    depth_v = -verts[:, 2]
    finite_v = torch.isfinite(proj).all(1) & torch.isfinite(verts).all(1)
    ok_v = finite_v & (depth_v > 0)
    ok = ok_v[layout.corners].all(1)  # texels whose triangle's corners are all usable
    # One product interpolates everything per texel (vertices that are not usable are zeroed; their
    # texels are not `ok`): camera-space point and normal, and the perspective-correct photo position
    # x = sum(b_i d_i x_i) / sum(b_i d_i) of a pinhole camera.
    verts0 = verts.where(finite_v[:, None], torch.zeros_like(verts))
    normals = vertex_normals(verts0, tris) if normals is None else _as_tensor(normals)
    d_v = depth_v.where(ok_v, torch.ones_like(depth_v))
    per_vertex = torch.cat([verts0, normals, d_v[:, None] * proj.where(ok_v[:, None], torch.zeros_like(proj)), d_v[:, None]], 1)
    per_texel = torch.from_numpy(np.asarray(layout.interpolation @ per_vertex.numpy(), dtype=np.float32))
    p_cam, n_tex_cam, xy = per_texel[:, :3], per_texel[:, 3:6], per_texel[:, 6:8] / per_texel[:, 8:].clamp_min(1e-12)
    n_tex_cam = n_tex_cam / n_tex_cam.norm(dim=1, keepdim=True).clamp_min(1e-12)
    to_cam = -p_cam / p_cam.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (n_tex_cam * to_cam).sum(1)
    d = -p_cam[:, 2]
    inside = ok & (d > 0) & torch.isfinite(xy).all(1) & (xy[:, 0] >= 0) & (xy[:, 0] < pw) & (xy[:, 1] >= 0) & (xy[:, 1] < ph)
    facing = inside & (cos > min_cos)
    if not bool(facing.any()):
        return result()

    # Occlusion: the mesh's z-buffer over the part of the photo it covers, compared with a tolerance
    # for the slope of the surface.
    if zbuffer is None:
        zbuffer = screen_zbuffer(proj, depth_v.where(ok_v, torch.full_like(depth_v, float("nan"))), tris, (pw, ph))
    sel = torch.nonzero(facing).squeeze(1)
    in_photo_v = ok_v & (proj[:, 0] >= 0) & (proj[:, 0] <= pw) & (proj[:, 1] >= 0) & (proj[:, 1] <= ph)
    focal = _focal_estimate(proj, verts, in_photo_v)
    cos_c = cos[sel].clamp(min=max(min_cos, 1e-3), max=1.0)
    tan = torch.sqrt((1.0 - cos_c * cos_c).clamp_min(0.0)) / cos_c
    mm_per_px = d[sel] / focal if focal is not None else torch.zeros_like(cos_c)
    tol = depth_tol + zbuffer.window * mm_per_px * tan
    visible = d[sel] <= zbuffer.depth_at(xy[sel]) + tol
    sel = sel[visible]
    if sel.numel() == 0:
        return result()

    weight = _smoothstep((cos[sel] - min_cos) / (full_cos - min_cos))
    if contour_margin > 0:
        # A fitted mesh's outline never matches the face's outline in the photo exactly: texels near a
        # contour (where the surface turns away, against the background or in front of the cheek)
        # fade out over `contour_margin` of the face's size.
        dist = _contour_distance(zbuffer, verts, tris, focal, float(d[sel].median()))
        margin = max(1.0, contour_margin * max(zbuffer.extent))
        # bilinear lookup (not the nearest pixel): no stair steps in the mask at a coarse z-buffer
        zh, zw = zbuffer.size
        zxy_sel = zbuffer.to_buffer(xy[sel])
        grid = torch.stack([zxy_sel[:, 0] / zw * 2 - 1, zxy_sel[:, 1] / zh * 2 - 1], 1).view(1, 1, -1, 2)
        dist_t = F.grid_sample(dist.clamp(max=1e6)[None, None].float(), grid.float(), mode="bilinear",
                               padding_mode="border", align_corners=False)[0, 0, 0]
        weight = weight * _smoothstep(dist_t.to(weight.dtype) / margin)
    keep = weight > 0
    sel, weight = sel[keep], weight[keep]
    if sel.numel() == 0:
        return result()

    # Photo pixels per texel (median over the visible texels), for antialiased sampling.
    texel_px = _photo_pixels_per_texel(xy, sel, layout)
    colors = _sample_photo(img, img_scale, xy[sel], texel_px)
    idx = layout.texels[sel].numpy()
    texture[idx] = colors.numpy()
    mask[idx] = weight.float().numpy()
    return result()


def _contour_distance(zbuffer: ScreenZBuffer, verts, tris, focal, depth_mm, contour_cos: float = 0.35,
                      jump_mm: float = 10.0) -> torch.Tensor:
    """(zh, zw) distance in photo pixels from each z-buffer pixel to the nearest contour pixel: a drawn
    pixel of a triangle seen at a grazing angle (|cos| < `contour_cos`) next to an empty pixel or to a
    depth jump of more than `jump_mm` (plus a few pixels' worth of slope). The border of the mesh where
    it faces the camera (a forehead's or neck's edge) is not a contour."""
    from scipy import ndimage

    zface, zbuf, zscale = zbuffer.face, zbuffer.depth, zbuffer.scale
    drawn = zface >= 0
    # cosine of the drawn triangles only (each once)
    drawn_tris, where = torch.unique(zface[drawn], return_inverse=True)
    corner_pts = verts[tris[drawn_tris]]  # (D, 3, 3)
    centroid = corner_pts.mean(1)
    normal = face_normals(corner_pts.reshape(-1, 3), torch.arange(corner_pts.shape[0] * 3).view(-1, 3))
    tri_cos = (normal * -centroid).sum(1) / centroid.norm(dim=1).clamp_min(1e-12)
    grazing = torch.zeros_like(drawn)
    grazing[drawn] = tri_cos.abs()[where] < contour_cos
    z = torch.where(drawn, zbuf, torch.full_like(zbuf, float("inf")))
    mm_per_zpx = depth_mm / focal / zscale if focal is not None else 0.0
    jump = jump_mm + 3.0 * mm_per_zpx
    edge = torch.zeros_like(drawn)
    zp = F.pad(z[None, None], (1, 1, 1, 1), value=float("inf"))[0, 0]
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = zp[dy:dy + z.shape[0], dx:dx + z.shape[1]]
        edge |= ~torch.isfinite(nb) | ((nb - z).abs() > jump)
    edge &= grazing
    if not bool(edge.any()):
        return torch.full(zbuf.shape, float("inf"), dtype=zbuf.dtype)
    dist = ndimage.distance_transform_edt(~edge.numpy())
    return torch.from_numpy(dist).to(zbuf.dtype) / zscale


def _photo_pixels_per_texel(xy: torch.Tensor, sel: torch.Tensor, layout: UVLayout, max_pairs: int = 50_000) -> float:
    """Median distance in photo pixels between horizontally or vertically adjacent visible texels.
    xy: (N, 2) photo position of every chart texel; sel: indices of the visible ones. The median is
    taken over an evenly spaced subset of at most about `max_pairs` neighbour pairs of each kind."""
    pos = xy.numpy()
    vis = np.zeros(pos.shape[0], bool)
    vis[sel.numpy()] = True
    right = layout.right_pairs[:, 0].numpy()  # right neighbours are consecutive in `texels`: (k, k + 1)
    right = right[:: max(1, right.size // max_pairs)]
    right = right[vis[right] & vis[right + 1]]
    down = layout.down_pairs.numpy()
    down = down[:: max(1, len(down) // max_pairs)]
    down = down[vis[down[:, 0]] & vis[down[:, 1]]]
    d_right, d_down = pos[right + 1] - pos[right], pos[down[:, 1]] - pos[down[:, 0]]
    steps = np.sqrt(np.concatenate([(d_right * d_right).sum(1), (d_down * d_down).sum(1)]))
    steps = steps[np.isfinite(steps)]
    return float(torch.from_numpy(steps).median()) if steps.size else 1.0
