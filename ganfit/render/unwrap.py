"""Photo -> UV texture: unwrap a fitted mesh's photo colours into its UV layout, then complete the
parts the photo does not show (not differentiable).

`unwrap` rasterises the mesh in UV space (``uv * size`` as 2-D positions; row 0 is the top of the
texture image, so ``row = (1 - v) * H_uv``), which gives for every texel its triangle and barycentric
weights. Through them each texel gets a camera-space position and normal and its position in the
photo (perspective-correct: the exact projection of the texel's surface point for any pinhole
camera, with no camera needed). The photo is sampled bilinearly there (antialiased: when one texel
covers several photo pixels the face's part of the photo is first resized to about one pixel per
texel). A texel is *visible* when it

1. projects inside the photo, in front of the camera,
2. faces the camera: ``cos(normal, texel -> camera) > min_cos``, and
3. is not occluded: its depth is at most the mesh's screen-space z-buffer depth at its pixel plus a
   slope-aware tolerance (as in `ganfit.fitting.colors.sample_vertex_colors`; the z-buffer covers
   only the face's bounding box, at no more than 1024 pixels a side).

`UVTexture.mask` is a soft weight: 0 where the texel is not visible (or outside the chart), rising
smoothly from 0 at ``cos = min_cos`` to 1 at ``cos = full_cos``.

`complete` fills the chart texels the photo did not see (Poisson image editing, Perez et al.,
SIGGRAPH 2003): one sparse solve over the texels whose (feathered) mask is below one half, with the
seen colours as boundary values and, where the mirror texel was seen, the mirrored texture's
gradients as the guidance field (elsewhere zero: a Laplace fill). So a mirrored region takes its
detail from the other half of the face but its overall level from the seen colours around it (no
seam where the lighting differs between the two sides), and holes neither side shows are filled
smoothly. The result is blended with the photo by the feathered mask, ``out = m * seen + (1 - m) *
filled``. Outside the chart the colours are extended a few texels (edge padding) so bilinear and
mip-mapped sampling at the chart's border does not pick up the background.

`mirror_uv_map` gives, for every texel, the texel of its mirror point across the face's plane of
symmetry (from `ganfit.model.topology.mirror_vertices`), for any UV layout.

Coordinates: texel ``(row j, column i)`` has its centre at ``(x, y) = (i + 0.5, j + 0.5)`` in texture
pixels, which is ``(u, v) = (x / W_uv, 1 - y / H_uv)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.geometry import parse_resolution, rasterize_screen, rasterize_uv, vertex_normals

__all__ = [
    "UVTexture",
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

#: `complete`'s ``filled_from`` labels: where a texel's colour (mostly) came from.
SEEN, MIRRORED, INPAINTED, OUTSIDE = 0, 1, 2, 3

#: (H_uv, W_uv). The embedded model's UVs keep the unwrap's aspect ratio inside the unit square (the
#: chart is about 1.5:1, centred, u spanning [0.02, 0.98]), so a square texture has square texels:
#: 737 x 484 texels of chart, about 0.45 mm per texel.
DEFAULT_RESOLUTION = (768, 768)

#: longest side of the occlusion z-buffer (pixels), as in `ganfit.fitting.colors`.
_ZBUF_MAX_SIDE = 1024


@dataclass(frozen=True)
class UVTexture:
    """A photo unwrapped into a UV layout (numpy arrays).

    texture: (H_uv, W_uv, 3) float32 in [0, 1]; the photo's colour where ``mask > 0``, 0 elsewhere.
    mask: (H_uv, W_uv) float32 in [0, 1]; soft visibility weight (0: not seen, occluded, outside the
        photo or outside the chart; rising with the cosine between the normal and the view direction).
    coverage: (H_uv, W_uv) bool; texels whose centre lies in a triangle of the UV layout (the chart).
    """

    texture: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def visible(self) -> np.ndarray:
        """(H_uv, W_uv) bool: texels with any photo information."""
        return self.mask > 0


# ------------------------------------------------------------------------------------------ helpers
def _resolution(resolution) -> tuple[int, int]:
    return parse_resolution(resolution)


def _as_tensor(x, *, dtype=torch.float64, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
        device = device if device is not None else t.device
        return t.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def uv_to_texel(uv, resolution) -> np.ndarray:
    """(N, 2) UVs (v up) -> (N, 2) texture pixel coordinates ``(x, y) = (u * W_uv, (1 - v) * H_uv)``."""
    h, w = _resolution(resolution)
    q = np.asarray(uv.detach().cpu().numpy() if isinstance(uv, torch.Tensor) else uv, dtype=np.float64)
    return np.stack([q[..., 0] * w, (1.0 - q[..., 1]) * h], -1)


_UV_RASTER_CACHE: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
_UV_RASTER_CACHE_SIZE = 4


def _rasterize_uv(uv: torch.Tensor, uv_tris: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texel -> (triangle index or -1, barycentrics) of the UV layout; (H*W,) and (H*W, 3).

    The UV layout of a model does not change from photo to photo (or frame to frame), so the last few
    rasterisations are kept, keyed by a hash of the layout and the resolution. Do not modify the result.
    """
    import hashlib

    q = uv.detach().to("cpu", torch.float64).contiguous()
    t = uv_tris.detach().to("cpu", torch.int64).contiguous()
    key = hashlib.blake2b(q.numpy().tobytes() + t.numpy().tobytes() + f"{h}x{w}".encode(), digest_size=16).digest()
    hit = _UV_RASTER_CACHE.get(key)
    if hit is not None:
        return hit
    face, bary = rasterize_uv(q.numpy(), t.numpy(), h, w)
    result = (face.reshape(-1), bary.reshape(-1, 3))
    while len(_UV_RASTER_CACHE) >= _UV_RASTER_CACHE_SIZE:
        _UV_RASTER_CACHE.pop(next(iter(_UV_RASTER_CACHE)))
    _UV_RASTER_CACHE[key] = result
    return result


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


# ------------------------------------------------------------------------------------------ unwrap
@torch.no_grad()
def unwrap(
    photo,
    projected,
    vertices_camera,
    triangles,
    uv,
    *,
    uv_triangles=None,
    resolution=DEFAULT_RESOLUTION,
    min_cos: float = 0.15,
    full_cos: float = 0.5,
    depth_tol: float = 2.0,
    contour_margin: float = 0.015,
) -> UVTexture:
    """Unwrap a photo into the UV layout of the mesh fitted to it.

    Args:
        photo: (H, W, 3) float in [0, 1] (or uint8), numpy or torch.
        projected: (V, 2) pixel coordinates of the vertices in the photo (x right, y down, pixel centres
            at +0.5), from a pinhole camera.
        vertices_camera: (V, 3) camera-space vertices, mm (camera at the origin looking down -z).
        triangles: (F, 3) vertex indices, counter-clockwise seen from outside.
        uv: (V, 2) texture coordinates in [0, 1], v up; or (T, 2) with `uv_triangles` (F, 3).
        resolution: (H_uv, W_uv) of the texture, or one int for a square one.
        min_cos: texels whose normal makes a cosine of at most this with the direction to the camera
            are not visible; the mask rises from 0 there to 1 at `full_cos`.
        depth_tol: occlusion tolerance in mm (plus a slope allowance).
        contour_margin: the mask also fades to 0 towards the mesh's contours in the photo (outline
            against the background, a nose in front of a cheek) over this fraction of the face's size
            in the photo, since the fitted outline is never exactly the face's; 0 turns that off.
    Returns:
        `UVTexture` (texture, mask, coverage), numpy float32 / bool.
    """
    h_uv, w_uv = _resolution(resolution)
    if not full_cos > min_cos:
        raise ValueError(f"full_cos ({full_cos}) must exceed min_cos ({min_cos})")
    img, img_scale = _photo_array(photo)
    ph, pw = int(img.shape[0]), int(img.shape[1])
    proj = _as_tensor(projected, device="cpu")
    verts = _as_tensor(vertices_camera, device="cpu")
    tris = _as_tensor(triangles, dtype=torch.long, device="cpu")
    q = _as_tensor(uv, device="cpu")
    n_v = proj.shape[0]
    if proj.ndim != 2 or proj.shape[1] != 2:
        raise ValueError(f"projected must be (V, 2), got {tuple(proj.shape)}")
    if verts.shape != (n_v, 3):
        raise ValueError(f"vertices_camera must be (V={n_v}, 3), got {tuple(verts.shape)}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {tuple(tris.shape)}")
    if tris.numel() and (int(tris.min()) < 0 or int(tris.max()) >= n_v):
        raise ValueError(f"triangle index out of range for {n_v} vertices")
    if uv_triangles is None:
        uv_tris = tris
        if q.shape != (n_v, 2):
            raise ValueError(f"uv must be (V={n_v}, 2) without uv_triangles, got {tuple(q.shape)}")
    else:
        uv_tris = _as_tensor(uv_triangles, dtype=torch.long, device="cpu")
        if uv_tris.shape != tris.shape:
            raise ValueError(f"uv_triangles must be (F={len(tris)}, 3), got {tuple(uv_tris.shape)}")
        if q.ndim != 2 or q.shape[1] != 2 or (uv_tris.numel() and int(uv_tris.max()) >= len(q)):
            raise ValueError(f"uv must be (T, 2) covering uv_triangles, got {tuple(q.shape)}")

    n_tex = h_uv * w_uv
    texture = np.zeros((n_tex, 3), np.float32)
    mask = np.zeros(n_tex, np.float32)
    face, bary = _rasterize_uv(q, uv_tris, h_uv, w_uv)
    covered = face >= 0
    coverage = covered.numpy().reshape(h_uv, w_uv)
    tid = torch.nonzero(covered).squeeze(1)
    if tid.numel() == 0:
        return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), coverage)

    f = face[tid]
    b = bary[tid]  # (N, 3), weights of the corners of triangles[f]
    corners = tris[f]  # (N, 3)
    depth_v = -verts[:, 2]
    finite_v = torch.isfinite(proj).all(1) & torch.isfinite(verts).all(1)
    ok_v = finite_v & (depth_v > 0)
    ok = ok_v[corners].all(1)
    # Camera-space point and (interpolated) normal of each texel.
    p_cam = (b[:, :, None] * verts[corners]).sum(1)
    normals = vertex_normals(verts.where(finite_v[:, None], torch.zeros_like(verts)), tris)
    n_tex_cam = (b[:, :, None] * normals[corners]).sum(1)
    n_tex_cam = n_tex_cam / n_tex_cam.norm(dim=1, keepdim=True).clamp_min(1e-12)
    to_cam = -p_cam / p_cam.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (n_tex_cam * to_cam).sum(1)
    # Perspective-correct photo position: x = sum(b_i d_i x_i) / sum(b_i d_i) for a pinhole camera.
    wd = b * depth_v[corners].where(ok[:, None], torch.ones_like(b))
    xy = (wd[:, :, None] * proj[corners].where(ok[:, None, None], torch.zeros(1, dtype=proj.dtype))).sum(1)
    xy = xy / wd.sum(1, keepdim=True).clamp_min(1e-12)
    d = -p_cam[:, 2]
    inside = ok & (d > 0) & torch.isfinite(xy).all(1) & (xy[:, 0] >= 0) & (xy[:, 0] < pw) & (xy[:, 1] >= 0) & (xy[:, 1] < ph)
    facing = inside & (cos > min_cos)
    if not bool(facing.any()):
        return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), coverage)

    # Occlusion: z-buffer of the whole mesh over the part of the photo the face covers (at most
    # _ZBUF_MAX_SIDE pixels a side), compared with a tolerance for the slope of the surface.
    in_photo_v = ok_v & (proj[:, 0] >= 0) & (proj[:, 0] <= pw) & (proj[:, 1] >= 0) & (proj[:, 1] <= ph)
    pts = torch.cat([proj[in_photo_v], xy[facing]])
    lo = pts.amin(0).floor().clamp_min(0)
    hi = torch.minimum(pts.amax(0).ceil(), torch.tensor([float(pw), float(ph)], dtype=pts.dtype))
    zscale = min(1.0, _ZBUF_MAX_SIDE / max(float((hi - lo).max()), 1.0))
    zw = int(math.ceil(float(hi[0] - lo[0]) * zscale)) + 2
    zh = int(math.ceil(float(hi[1] - lo[1]) * zscale)) + 2
    zproj = (proj - lo) * zscale
    zface, _, zbuf = rasterize_screen(
        zproj.where(ok_v[:, None], torch.zeros_like(zproj)),
        depth_v.where(ok_v, torch.full_like(depth_v, float("nan"))),
        tris, zh, zw, cull_backfaces=False,
    )
    sel = torch.nonzero(facing).squeeze(1)
    zxy = (xy[sel] - lo) * zscale
    px = zxy[:, 0].floor().long().clamp(0, zw - 1)
    py = zxy[:, 1].floor().long().clamp(0, zh - 1)
    focal = _focal_estimate(proj, verts, in_photo_v)
    cos_c = cos[sel].clamp(min=max(min_cos, 1e-3), max=1.0)
    tan = torch.sqrt((1.0 - cos_c * cos_c).clamp_min(0.0)) / cos_c
    mm_per_px = d[sel] / focal if focal is not None else torch.zeros_like(cos_c)
    window = math.sqrt(0.5) / zscale  # farthest a texel lies from its z-buffer pixel centre, photo pixels
    tol = depth_tol + window * mm_per_px * tan
    visible = d[sel] <= zbuf[py, px] + tol
    sel, px, py = sel[visible], px[visible], py[visible]
    if sel.numel() == 0:
        return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), coverage)

    weight = _smoothstep((cos[sel] - min_cos) / (full_cos - min_cos))
    if contour_margin > 0:
        # A fitted mesh's outline never matches the face's outline in the photo exactly: texels near a
        # contour (where the surface turns away, against the background or in front of the cheek)
        # fade out over `contour_margin` of the face's size.
        dist = _contour_distance(zface, zbuf, verts, tris, focal, zscale, float(d[sel].median()))
        margin = max(1.0, contour_margin * float((hi - lo).max()))
        # bilinear lookup (not the nearest pixel): no stair steps in the mask at a coarse z-buffer
        zxy_sel = (xy[sel] - lo) * zscale
        grid = torch.stack([zxy_sel[:, 0] / zw * 2 - 1, zxy_sel[:, 1] / zh * 2 - 1], 1).view(1, 1, -1, 2)
        dist_t = F.grid_sample(dist.clamp(max=1e6)[None, None].float(), grid.float(), mode="bilinear",
                               padding_mode="border", align_corners=False)[0, 0, 0]
        weight = weight * _smoothstep(dist_t.to(weight.dtype) / margin)
    keep = weight > 0
    sel, weight = sel[keep], weight[keep]
    if sel.numel() == 0:
        return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), coverage)

    # Photo pixels per texel (median over the visible texels), for antialiased sampling.
    texel_px = _photo_pixels_per_texel(xy, tid, sel, h_uv, w_uv)
    colors = _sample_photo(img, img_scale, xy[sel], texel_px)
    idx = tid[sel].numpy()
    texture[idx] = colors.numpy()
    mask[idx] = weight.float().numpy()
    return UVTexture(texture.reshape(h_uv, w_uv, 3), mask.reshape(h_uv, w_uv), coverage)


def _contour_distance(zface, zbuf, verts, tris, focal, zscale, depth_mm, contour_cos: float = 0.35,
                      jump_mm: float = 10.0) -> torch.Tensor:
    """(zh, zw) distance in photo pixels from each z-buffer pixel to the nearest contour pixel: a drawn
    pixel of a triangle seen at a grazing angle (|cos| < `contour_cos`) next to an empty pixel or to a
    depth jump of more than `jump_mm` (plus a few pixels' worth of slope). The border of the mesh where
    it faces the camera (a forehead's or neck's edge) is not a contour."""
    from scipy import ndimage

    from ..model.geometry import face_normals

    drawn = zface >= 0
    centroid = verts[tris].mean(1)
    tri_cos = (face_normals(verts, tris) * -centroid).sum(1) / centroid.norm(dim=1).clamp_min(1e-12)
    grazing = drawn & (tri_cos.abs()[zface.clamp_min(0)] < contour_cos)
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


def _photo_pixels_per_texel(xy: torch.Tensor, tid: torch.Tensor, sel: torch.Tensor, h: int, w: int) -> float:
    """Median distance in photo pixels between horizontally or vertically adjacent visible texels."""
    pos = torch.full((h * w, 2), float("nan"), dtype=xy.dtype)
    pos[tid[sel]] = xy[sel]
    pos = pos.view(h, w, 2)
    dx = (pos[:, 1:] - pos[:, :-1]).norm(dim=-1).reshape(-1)
    dy = (pos[1:] - pos[:-1]).norm(dim=-1).reshape(-1)
    steps = torch.cat([dx, dy])
    steps = steps[torch.isfinite(steps)]
    return float(steps.median()) if steps.numel() else 1.0


# ------------------------------------------------------------------------------------------ mirror map
@torch.no_grad()
def mirror_uv_map(uv, triangles, mirror, resolution=DEFAULT_RESOLUTION) -> np.ndarray:
    """For every texel, the texture pixel coordinates of its mirror point across the face's symmetry plane.

    The mesh is rasterised in UV space and the UVs of the mirror partners of each triangle's corners are
    interpolated with the texel's barycentric weights, so any UV layout works.

    Args:
        uv: (V, 2) per-vertex texture coordinates in [0, 1], v up.
        triangles: (F, 3).
        mirror: (V,) index of each vertex's mirror partner, -1 for none (`topology.mirror_vertices`).
        resolution: (H_uv, W_uv) or an int.
    Returns:
        (H_uv, W_uv, 2) float32 ``(x, y)`` texture pixel coordinates (texel centres at +0.5, the
        convention of `uv_to_texel`), NaN outside the chart and where a corner has no partner.
    """
    h, w = _resolution(resolution)
    q = _as_tensor(uv, device="cpu")
    tris = _as_tensor(triangles, dtype=torch.long, device="cpu")
    mir = _as_tensor(mirror, dtype=torch.long, device="cpu")
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"uv must be (V, 2), got {tuple(q.shape)}")
    if mir.shape != (len(q),):
        raise ValueError(f"mirror must be (V={len(q)},), got {tuple(mir.shape)}")
    out = torch.full((h * w, 2), float("nan"), dtype=torch.float64)
    face, bary = _rasterize_uv(q, tris, h, w)
    tid = torch.nonzero(face >= 0).squeeze(1)
    if tid.numel():
        m = mir[tris[face[tid]]]  # (N, 3)
        good = (m >= 0).all(1)
        tid, m, b = tid[good], m[good], bary[tid[good]]
        mq = (b[:, :, None] * q[m]).sum(1)
        out[tid] = torch.stack([mq[:, 0] * w, (1.0 - mq[:, 1]) * h], 1)
    return out.view(h, w, 2).float().numpy()


# ------------------------------------------------------------------------------------------ complete
def _sample_texels(values: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear (N, C) samples of (H, W, C) at texture pixel coordinates (N, 2); zero outside."""
    h, w = values.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    g = torch.from_numpy(np.asarray(xy, dtype=np.float32))
    grid = torch.stack([g[:, 0] / w * 2 - 1, g[:, 1] / h * 2 - 1], 1).view(1, 1, -1, 2)
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0, :, 0].T.numpy()


def _feathered(mask: np.ndarray, coverage: np.ndarray, feather: float) -> np.ndarray:
    """`mask` times a ramp from 0 at the chart texels it does not see to 1 `feather` texels away."""
    from scipy import ndimage

    unseen = coverage & (mask <= 0)
    if feather <= 0 or not unseen.any():
        return mask.copy()
    dist = ndimage.distance_transform_edt(~unseen)
    return (mask * np.clip(dist / feather - 0.5 / feather, 0.0, 1.0)).astype(np.float32)


def _accumulate(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """target[index] += values with repeated indices summed (a faster np.add.at for (N, C) rows)."""
    for c in range(target.shape[1]):
        target[:, c] += np.bincount(index, weights=values[:, c], minlength=target.shape[0])


def _poisson_fill(
    values: np.ndarray,  # (H, W, C) boundary values where `known`
    known: np.ndarray,  # (H, W) bool
    domain: np.ndarray,  # (H, W) bool, the chart; unknowns are domain & ~known
    guide: np.ndarray | None = None,  # (H, W, C) guidance texture
    guide_weight: np.ndarray | None = None,  # (H, W) in [0, 1]: where the guidance holds
) -> np.ndarray:
    """Solve the 4-neighbour Poisson equation over ``domain & ~known`` with Dirichlet values at the known
    texels and Neumann conditions at the domain's border. The guidance gradient across an edge is
    ``min(weight_i, weight_j) * (guide_i - guide_j)`` (zero without a guide: a Laplace fill).
    Unknown components that touch no known texel get the mean known value (0.5 if none)."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    h, w, c = values.shape
    out = values.astype(np.float64, copy=True)
    unknown = domain & ~known
    n_u = int(unknown.sum())
    if n_u == 0:
        return out
    fallback = out[known].mean(0) if known.any() else np.full(c, 0.5)
    index = np.full((h, w), -1, np.int64)
    index[unknown] = np.arange(n_u)
    rows, cols = [], []
    rhs = np.zeros((n_u, c))
    degree = np.zeros(n_u)
    uy, ux = np.nonzero(unknown)
    ui = index[uy, ux]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = uy + dy, ux + dx
        inb = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i, yy, xx, sy, sx = ui[inb], ny[inb], nx[inb], uy[inb], ux[inb]
        nd = domain[yy, xx]
        i, yy, xx, sy, sx = i[nd], yy[nd], xx[nd], sy[nd], sx[nd]
        degree[i] += 1
        if guide is not None:
            gw = np.minimum(guide_weight[sy, sx], guide_weight[yy, xx])[:, None]
            _accumulate(rhs, i, gw * (guide[sy, sx] - guide[yy, xx]))
        j = index[yy, xx]
        nb_unknown = j >= 0
        rows.append(i[nb_unknown])
        cols.append(j[nb_unknown])
        kn = ~nb_unknown
        _accumulate(rhs, i[kn], out[yy[kn], xx[kn]])
    eps = 1e-7
    lap = sp.coo_matrix(
        (np.concatenate([-np.ones(sum(len(r) for r in rows)), degree + eps]),
         (np.concatenate(rows + [np.arange(n_u)]), np.concatenate(cols + [np.arange(n_u)]))),
        shape=(n_u, n_u),
    ).tocsc()
    rhs += eps * fallback
    sol = spla.splu(lap).solve(rhs)
    # components with no known texel are only pinned by eps: give them the fallback colour
    from scipy import ndimage

    labels, n_lab = ndimage.label(unknown)
    touches = np.zeros(n_lab + 1, bool)
    grown = ndimage.binary_dilation(known, structure=ndimage.generate_binary_structure(2, 1)) & unknown
    touches[np.unique(labels[grown])] = True
    floating = ~touches[labels[uy, ux]]
    sol[floating] = fallback
    out[uy, ux] = sol
    return out


def complete(
    uv: UVTexture,
    mirror_uv: np.ndarray | None = None,
    *,
    feather: float | None = None,
    method: str = "poisson",
    known_weight: float = 0.5,
    pad: int = 8,
    background=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the chart texels a photo did not see: by symmetry, then by smooth interpolation.

    1. The mask is feathered: multiplied by a ramp from 0 at the unseen chart texels to 1 `feather`
       texels away (default: 1% of the texture's longer side, at least 2), so nothing changes
       abruptly at an occlusion or photo border.
    2. Texels with feathered weight below `known_weight` are solved for; the others are boundary values.
       ``method="poisson"`` (default): a Poisson equation whose guidance field is the gradient of the
       mirrored texture where the mirror texel was seen (Laplace elsewhere), so mirrored detail joins
       the seen colours without a seam even when the two sides are lit differently.
       ``method="blend"``: the mirrored colour itself is blended in (``m * seen + (1 - m) *
       mirrored``), and only what neither side shows is filled by a Laplace equation.
    3. The result is ``m * seen + (1 - m) * filled``.
    4. Outside the chart the nearest chart colour is extended `pad` texels (edge padding); beyond,
       `background` (default: the mean chart colour).

    Args:
        uv: from `unwrap`.
        mirror_uv: (H_uv, W_uv, 2) texel -> mirror texel coordinates (`mirror_uv_map`), NaN for none;
            None: no symmetry.
    Returns:
        texture: (H_uv, W_uv, 3) float32 in [0, 1], no NaN.
        filled_from: (H_uv, W_uv) uint8, where each texel's colour mostly came from: `SEEN` (0, the
            photo), `MIRRORED` (1), `INPAINTED` (2), `OUTSIDE` (3, outside the chart: padding/background).
    """
    if method not in ("poisson", "blend"):
        raise ValueError(f"method must be 'poisson' or 'blend', got {method!r}")
    tex = np.nan_to_num(np.asarray(uv.texture, dtype=np.float32))
    mask = np.nan_to_num(np.clip(np.asarray(uv.mask, dtype=np.float32), 0.0, 1.0))
    coverage = np.asarray(uv.coverage, dtype=bool)
    h, w = mask.shape
    if tex.shape != (h, w, 3) or coverage.shape != (h, w):
        raise ValueError(f"texture {tex.shape}, mask {mask.shape} and coverage {coverage.shape} disagree")
    mask = np.where(coverage, mask, 0.0).astype(np.float32)
    if feather is None:
        feather = max(2.0, 0.01 * max(h, w))
    m = _feathered(mask, coverage, float(feather))

    # Mirror: weighted bilinear sampling of the seen texture at the mirror texels.
    m_mir = np.zeros((h, w), np.float32)
    t_mir = np.zeros((h, w, 3), np.float32)
    if mirror_uv is not None:
        mirror_uv = np.asarray(mirror_uv, dtype=np.float32)
        if mirror_uv.shape != (h, w, 2):
            raise ValueError(f"mirror_uv must be (H_uv={h}, W_uv={w}, 2), got {mirror_uv.shape}")
        valid = coverage & np.isfinite(mirror_uv).all(-1)
        if valid.any():
            stacked = np.concatenate([m[..., None] * tex, m[..., None]], -1)
            s = _sample_texels(stacked, mirror_uv[valid])
            m_mir[valid] = np.clip(s[:, 3], 0.0, 1.0)
            t_mir[valid] = s[:, :3] / np.maximum(s[:, 3:], 1e-6)
    has_mir = m_mir > 1e-3
    t_mir[~has_mir] = 0.0

    if method == "blend":
        w1 = m + (1.0 - m) * m_mir
        t1 = (m[..., None] * tex + ((1.0 - m) * m_mir)[..., None] * t_mir) / np.maximum(w1, 1e-6)[..., None]
        known = coverage & (w1 >= known_weight)
        filled = _poisson_fill(t1, known, coverage)
        out = w1[..., None] * t1 + (1.0 - w1)[..., None] * filled
        mirrored_share = (1.0 - m) * m_mir
        label = np.where(w1 < known_weight, INPAINTED, np.where(m >= mirrored_share, SEEN, MIRRORED))
    else:
        known = coverage & (m >= known_weight)
        filled = _poisson_fill(tex, known, coverage, guide=t_mir, guide_weight=m_mir)
        out = m[..., None] * tex + (1.0 - m)[..., None] * filled
        # mirrored where the fill had mirror guidance, inpainted where it had none
        label = np.where(known, SEEN, np.where(m_mir >= 0.5, MIRRORED, INPAINTED))
    out = np.clip(out, 0.0, 1.0)
    label = np.where(coverage, label, OUTSIDE).astype(np.uint8)
    out = _pad_outside(out, coverage, pad, background)
    return np.nan_to_num(out, nan=0.5).astype(np.float32), label


def _pad_outside(tex: np.ndarray, coverage: np.ndarray, pad: int, background) -> np.ndarray:
    """Copy the nearest chart texel's colour to texels outside the chart within `pad` texels; fill the
    rest with `background` (default: the mean chart colour; 0.5 grey without a chart)."""
    from scipy import ndimage

    out = tex.copy()
    if not coverage.any():
        out[:] = 0.5 if background is None else np.asarray(background, dtype=np.float64)
        return out
    bg = out[coverage].mean(0) if background is None else np.broadcast_to(np.asarray(background, np.float64), (3,))
    dist, (iy, ix) = ndimage.distance_transform_edt(~coverage, return_indices=True)
    near = ~coverage & (dist <= pad)
    out[near] = out[iy[near], ix[near]]
    out[~coverage & ~near] = bg
    return out
