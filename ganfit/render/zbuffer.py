"""The screen-space z-buffer of a fitted mesh over the part of the photo it covers (not differentiable).

One buffer per photo serves every visibility question asked after a fit: which vertices the photo shows
(`ganfit.fitting.colors.sample_vertex_colors`), which UV texels it shows and how far each is from a
contour (`ganfit.render.unwrap.unwrap`). It covers only the bounding box of the mesh's projection
(clipped to the photo), at no more than `ZBUFFER_MAX_SIDE` pixels a side: a face filling an 8000 px
photo is tested at about 1/16 of its resolution, with tolerances scaled to match.

Coordinates: photo pixels ``(x, y)`` (pixel centres at +0.5) map to buffer pixels by
``(xy - offset) * scale``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.geometry import rasterize_screen

__all__ = ["ScreenZBuffer", "screen_zbuffer", "ZBUFFER_MAX_SIDE"]

#: longest side of the occlusion z-buffer (pixels); larger faces are tested at reduced resolution.
#: 512 pixels across a head are ~0.4 mm each, finer than the face models' vertex spacing (~1-2 mm),
#: and rasterising and measuring contour distances at 1024 took ~4x longer on large photos.
ZBUFFER_MAX_SIDE = 512


@dataclass(frozen=True)
class ScreenZBuffer:
    """A z-buffer over a window of the photo.

    offset: (2,) float32 photo pixel ``(x, y)`` of the buffer's top-left corner.
    scale: buffer pixels per photo pixel (<= 1).
    face: (zh, zw) int64 index of the nearest triangle, -1 where empty.
    depth: (zh, zw) float32 depth (mm, larger = farther) of the nearest triangle, +inf where empty.
    extent: (width, height) in photo pixels of the window the buffer covers (the mesh's bounding box).
    """

    offset: torch.Tensor
    scale: float
    face: torch.Tensor
    depth: torch.Tensor
    extent: tuple[float, float]

    @property
    def size(self) -> tuple[int, int]:
        """(zh, zw)."""
        return int(self.depth.shape[0]), int(self.depth.shape[1])

    @property
    def window(self) -> float:
        """Farthest a point lies from the centre of its buffer pixel, in photo pixels."""
        return math.sqrt(0.5) / self.scale

    def to_buffer(self, xy: torch.Tensor) -> torch.Tensor:
        """(N, 2) photo pixel coordinates -> (N, 2) buffer pixel coordinates (float)."""
        return (xy.to(self.offset.dtype) - self.offset) * self.scale

    def pixel(self, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffer (column, row) (N,) int64 of each photo point (N, 2), clamped into the buffer;
        non-finite points go to pixel (0, 0)."""
        zh, zw = self.size
        q = self.to_buffer(xy)
        q = torch.where(torch.isfinite(q), q, torch.zeros_like(q))
        return q[:, 0].clamp(0, zw - 1).floor().long(), q[:, 1].clamp(0, zh - 1).floor().long()

    def depth_at(self, xy: torch.Tensor) -> torch.Tensor:
        """(N,) buffer depth at the pixel of each photo point (N, 2) (nearest pixel, clamped)."""
        px, py = self.pixel(xy)
        return self.depth[py, px]


@torch.no_grad()
def screen_zbuffer(
    projected: torch.Tensor,
    depth: torch.Tensor,
    triangles: torch.Tensor,
    image_size: tuple[int, int],
    *,
    max_side: int = ZBUFFER_MAX_SIDE,
) -> ScreenZBuffer:
    """Rasterise a projected mesh (both faces of every triangle) into a z-buffer over its bounding box.

    Args:
        projected: (V, 2) photo pixel coordinates of the vertices (pixel centres at +0.5).
        depth: (V,) depth of each vertex (mm, larger = farther); vertices that are not finite or not in
            front of the camera (depth <= 0) are left out with their triangles.
        triangles: (F, 3) vertex indices.
        image_size: (W, H) of the photo; the buffer never extends past it.
        max_side: longest side of the buffer in pixels.
    Returns:
        `ScreenZBuffer` (float32, on the CPU).
    """
    proj = torch.as_tensor(projected).detach().to("cpu", torch.float32)
    z = torch.as_tensor(depth).detach().to("cpu", torch.float32)
    tris = torch.as_tensor(triangles).to("cpu").long()
    w_img, h_img = float(image_size[0]), float(image_size[1])
    usable = torch.isfinite(proj).all(1) & torch.isfinite(z) & (z > 0)
    size = torch.tensor([w_img, h_img])
    if bool(usable.any()):
        pts = proj[usable]
        lo = torch.minimum(pts.amin(0).floor().clamp_min(0), size)
        hi = torch.maximum(torch.minimum(pts.amax(0).ceil(), size), lo)
    else:
        lo, hi = torch.zeros(2), torch.zeros(2)
    scale = min(1.0, max_side / max(float((hi - lo).max()), 1.0))
    zw = int(math.ceil(float(hi[0] - lo[0]) * scale)) + 2
    zh = int(math.ceil(float(hi[1] - lo[1]) * scale)) + 2
    zproj = torch.where(usable[:, None], (proj - lo) * scale, torch.zeros_like(proj))
    zdepth = torch.where(usable, z, torch.full_like(z, float("nan")))
    face, _, zbuf = rasterize_screen(zproj, zdepth, tris, zh, zw, cull_backfaces=False)
    face, zbuf = _fill_cracks(face, zbuf)
    extent = (float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return ScreenZBuffer(offset=lo, scale=scale, face=face, depth=zbuf, extent=extent)


def _fill_cracks(face: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Close one-pixel cracks: an empty pixel whose left and right (or upper and lower) neighbours are
    both drawn gets the nearer of them. A pixel centre on an edge shared by two triangles can fall
    outside both by rounding; an occluder with such a crack would show what lies behind it.
    face: (zh, zw) int64, -1 empty; depth: (zh, zw), +inf empty -> both with the cracks filled."""
    empty = face < 0
    if not bool(empty.any()):
        return face, depth
    zp = torch.nn.functional.pad(depth[None, None], (1, 1, 1, 1), value=float("inf"))[0, 0]
    fp = torch.nn.functional.pad(face[None, None].float(), (1, 1, 1, 1), value=-1.0)[0, 0].long()
    h, w = depth.shape
    best_z, best_f = depth.clone(), face.clone()
    for a, b in (((1, 0), (1, 2)), ((0, 1), (2, 1))):  # (left, right), (up, down) as (row, col) offsets
        za, zb = zp[a[0]:a[0] + h, a[1]:a[1] + w], zp[b[0]:b[0] + h, b[1]:b[1] + w]
        fa, fb = fp[a[0]:a[0] + h, a[1]:a[1] + w], fp[b[0]:b[0] + h, b[1]:b[1] + w]
        crack = empty & torch.isfinite(za) & torch.isfinite(zb)
        z = torch.minimum(za, zb)
        f = torch.where(za <= zb, fa, fb)
        take = crack & (z < best_z)
        best_z = torch.where(take, z, best_z)
        best_f = torch.where(take, f, best_f)
    return best_f, best_z
