"""From fitted cameras and photos to what a fit shows of each face: per-vertex colours, the UV texture
(unwrap + completion) and a shaded, textured render for the overlay (not differentiable).

`PhotoTexture` is built once per face model (the `Fitter` keeps one) and holds everything that does not
change from photo to photo: the model's UV layout rasterised at the texture size with its mirror map,
padding map and elimination order (`ganfit.render.uv_layout.UVLayout`), the mirror vertices, the
mesh's vertex Laplacian, the rasterizer (with its edge topology) and the overlay lighting. Per photo it
rasterises the fitted mesh once (`ganfit.render.zbuffer.screen_zbuffer`) and shares that z-buffer
between the vertex colours (`ganfit.fitting.colors`) and the unwrap (`ganfit.render.unwrap`); the
results equal those of calling those functions on their own.
"""
from __future__ import annotations

import dataclasses

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch

from ..model.geometry import vertex_normals
from ..model.morphable import MorphableModel
from ..render.camera import project_points, transform_points
from ..render.unwrap import complete, unwrap
from ..render.uv_layout import UVLayout, uv_layout
from ..render.zbuffer import screen_zbuffer
from .colors import fill_unseen_colors, sample_vertex_colors, vertex_laplacian
from .params import FitParams
from .result import FaceMesh

__all__ = ["PhotoTexture", "RENDER_MAX_SIDE", "pixel_box"]

log = logging.getLogger(__name__)

#: longest side (px) of the overlay renders (the overlay panels' size)
RENDER_MAX_SIDE = 1024

#: render pixels kept around the face's projected bounding box (antialiasing needs a neighbour)
_RENDER_MARGIN = 2


def _add(timings: dict[str, float] | None, key: str, start: float) -> float:
    """Add the seconds since `start` to timings[key]; returns now."""
    now = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (now - start)
    return now


class PhotoTexture:
    """Colours, UV textures and overlay renders of faces fitted to photos, for one face model.

    Args:
        model: the face model.
        texture_size: side of the square UV texture (0: no texture, hence no render).
        device: where the geometry and renders are computed (colour sampling and unwrap run on the CPU).
        render_max_side: longest side of the renders.
    """

    def __init__(self, model: MorphableModel, *, texture_size: int = 768, device: torch.device | str = "cpu",
                 render_max_side: int = RENDER_MAX_SIDE) -> None:
        self.model = model
        self.texture_size = int(texture_size)
        self.device = torch.device(device)
        self.render_max_side = int(render_max_side)
        self._layout: UVLayout | None = None
        self._mirror: np.ndarray | None = None
        self._laplacian = None
        self._rasterizer = None
        self._light: torch.Tensor | None = None
        tris = np.asarray(model.triangles, dtype=np.int64)
        self._triangles = torch.as_tensor(tris)

    # ------------------------------------------------------------------ per-model data (built once)
    @property
    def has_mesh(self) -> bool:
        return bool(self._triangles.numel())

    @property
    def makes_texture(self) -> bool:
        return bool(self.texture_size) and self.model.uv is not None and self.has_mesh

    @property
    def mirror(self) -> np.ndarray:
        """(V,) each vertex's mirror partner or -1 (`ganfit.model.topology.mirror_vertices`)."""
        if self._mirror is None:
            from ..model.topology import mirror_vertices

            self._mirror = mirror_vertices(self.model.mean)
        return self._mirror

    @property
    def laplacian(self):
        """The mesh's (V, V) vertex Laplacian (scipy CSR), for filling unseen vertex colours."""
        if self._laplacian is None:
            self._laplacian = vertex_laplacian(self.model.triangles, self.model.num_vertices)
        return self._laplacian

    @property
    def layout(self) -> UVLayout:
        """The model's UV layout at the texture size, with its mirror map (per-vertex UVs only)."""
        if self._layout is None:
            m = self.model
            log.info("building the %d x %d UV layout of %s (once per model and texture size, ~1.5 s at 768)",
                     self.texture_size, self.texture_size, m.name)
            self._layout = uv_layout(m.uv, m.triangles, self.texture_size, uv_triangles=m.uv_triangles,
                                     mirror=self.mirror if m.uv_triangles is None else None,
                                     num_vertices=m.num_vertices)
        return self._layout

    # ------------------------------------------------------------------ per photo
    @torch.no_grad()
    def meshes(self, params: FitParams, vertex_ids: torch.Tensor, photos: Sequence[np.ndarray],
               timings: dict[str, float] | None = None, *, photo_scales: Sequence[tuple[float, float]] | None = None,
               progress: Callable[[int, str], None] | None = None) -> tuple[list[FaceMesh], torch.Tensor]:
        """The fitted meshes with their photo colours and UV textures.

        Args:
            params: B fitted faces; vertex_ids: (B, 68) the landmark vertices of each fit;
            photos: B (H, W, 3) float32 photos in [0, 1] (or uint8).
            timings: seconds are added under "geometry", "colors", "texture_unwrap", "texture_complete"
                and "texture" (their sum).
            photo_scales: per photo (x, y) pixels of `photos[i]` per pixel of the camera's image
                (`ganfit.io.images.Image.scale`: a large photo's downscaled working copy); default 1.
                The fit and the returned meshes stay in the camera's pixels.
            progress: called as progress(i, step) when photo i starts a step ("colours", "UV layout",
                "unwrap", "completion").
        Returns:
            (B `FaceMesh`, (B, 68, 2) float32 fitted landmark positions in pixels).
        """
        t = time.perf_counter()
        m, dev = self.model, self.device
        verts = m.vertices(params.shape.to(dev), params.expression.to(dev))
        cam = transform_points(verts, params.rotation_matrix().to(dev), params.translation.to(dev))
        proj = project_points(cam, params.focal.to(dev), params.principal.to(dev))
        tri = self._triangles.to(dev)
        normals = vertex_normals(cam, tri) if self.has_mesh else None
        fitted = proj.gather(1, vertex_ids.to(dev)[..., None].expand(-1, -1, 2))
        uv = None if m.uv is None else torch.as_tensor(m.uv)
        uv_tri = None if m.uv_triangles is None else torch.as_tensor(m.uv_triangles)
        verts_c, cam_c, proj_c = verts.detach().cpu(), cam.detach().cpu(), proj.detach().cpu()
        normals_c = None if normals is None else normals.detach().cpu()
        t = _add(timings, "geometry", t)

        meshes = []
        for i, photo in enumerate(photos):
            colors = visible = texture = texture_mask = None
            if normals_c is not None:
                t = time.perf_counter()
                _report(progress, i, "colours")
                h, w = photo.shape[:2]
                p32, c32 = proj_c[i].float(), cam_c[i].float()
                if photo_scales is not None and tuple(photo_scales[i]) != (1.0, 1.0):
                    p32 = p32 * torch.tensor(photo_scales[i], dtype=torch.float32)  # into the working copy
                depth = -c32[:, 2]
                usable = torch.isfinite(p32).all(1) & torch.isfinite(c32).all(1) & (depth > 0)
                zbuffer = screen_zbuffer(p32, depth.where(usable, torch.full_like(depth, float("nan"))),
                                         self._triangles, (w, h))
                c, vis = sample_vertex_colors(photo, p32.numpy(), normals_c[i].float().numpy(), c32.numpy(),
                                              triangles=m.triangles, zbuffer=zbuffer)
                c = fill_unseen_colors(c, vis, m.triangles, self.mirror, laplacian=self.laplacian)
                colors, visible = torch.as_tensor(c, dtype=torch.float32), torch.as_tensor(vis)
                t = _add(timings, "colors", t)
                if self.makes_texture:
                    texture, texture_mask = self._texture(photo, p32, c32, normals_c[i].float(), zbuffer, timings,
                                                          lambda step, i=i: _report(progress, i, step))
            meshes.append(FaceMesh(
                vertices=verts_c[i], vertices_camera=cam_c[i], projected=proj_c[i], triangles=tri.cpu(),
                uv=uv, uv_triangles=uv_tri, colors=colors, visible=visible, texture=texture,
                texture_mask=texture_mask, normals_camera=None if normals_c is None else normals_c[i],
            ))
        return meshes, fitted.float().cpu()

    def _texture(self, photo, projected: torch.Tensor, camera_vertices: torch.Tensor, normals: torch.Tensor,
                 zbuffer, timings: dict[str, float] | None, step: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray]:
        """UV texture of one photo: unwrap into the model's UV layout, complete unseen texels by symmetry
        and Poisson fill. Returns (texture (S, S, 3) float32, mask (S, S) float32)."""
        start = t = time.perf_counter()
        if self._layout is None:
            step("UV layout")
        layout = self.layout
        step("unwrap")
        raw = unwrap(photo, projected, camera_vertices, self.model.triangles, layout=layout, zbuffer=zbuffer,
                     normals=normals)
        t = _add(timings, "texture_unwrap", t)
        step("completion")
        texture, _ = complete(raw, layout.mirror, layout=layout)
        _add(timings, "texture_complete", t)
        _add(timings, "texture", start)
        return texture, raw.mask

    @torch.no_grad()
    def renders(self, params: FitParams, meshes: Sequence[FaceMesh], sizes: torch.Tensor,
                timings: dict[str, float] | None = None) -> list[np.ndarray | None]:
        """Shaded, textured renders of each fitted face at overlay resolution (longer side at most
        `render_max_side` px), as (h, w, 4) premultiplied RGBA float32; None where there is no texture.

        Only the face's bounding box is rendered (with the camera's principal point moved to match), so
        the cost follows the face's size, not the photo's. sizes: (B, 2) photo (W, H).
        timings: seconds are added under "render".
        """
        from ..render.renderer import Renderer, make_rasterizer
        from ..render.shading import default_sh, sh_directional

        t = time.perf_counter()
        out: list[np.ndarray | None] = [None] * len(meshes)
        if not self.has_mesh or not any(mesh.texture is not None for mesh in meshes):
            _add(timings, "render", t)
            return out
        dev = self.device
        if self._rasterizer is None:
            self._rasterizer = make_rasterizer("auto", dev)
            self._light = default_sh(1, ambient=0.6, device=dev) + sh_directional(
                torch.tensor([[-0.35, 0.45, 1.0]], device=dev), 0.55)
        for i, mesh in enumerate(meshes):
            if mesh.texture is None:
                continue
            w_img, h_img = (float(v) for v in sizes[i])
            scale = min(1.0, self.render_max_side / max(w_img, h_img))
            size = (max(1, round(w_img * scale)), max(1, round(h_img * scale)))
            rgba = np.zeros((size[1], size[0], 4), np.float32)
            # the render's camera: focal * scale, principal at the centre of the (scaled) image
            centre = torch.tensor([size[0] / 2.0, size[1] / 2.0], dtype=torch.float64)
            proj = (mesh.projected.double() - params.principal[i].detach().cpu().double()) * scale + centre
            box = pixel_box(proj, mesh.vertices_camera[:, 2] < 0, size, _RENDER_MARGIN)
            if box is None:
                out[i] = rgba
                continue
            x0, y0, x1, y1 = box
            one = params.select(i).to(dev)
            p = dataclasses.replace(one, focal=one.focal * scale, principal=torch.tensor(
                [[size[0] / 2.0 - x0, size[1] / 2.0 - y0]], device=dev, dtype=params.focal.dtype))
            tex = torch.as_tensor(mesh.texture, device=dev).permute(2, 0, 1)[None].to(params.focal.dtype)
            r = Renderer(self.model, self._rasterizer, image_size=(x1 - x0, y1 - y0)).render(
                p, texture=tex, lighting=self._light, regions=False)
            crop = torch.cat([r.image[0], r.alpha[0][..., None]], dim=-1).clamp(0, 1)
            rgba[y0:y1, x0:x1] = crop.cpu().numpy()
            out[i] = rgba
        _add(timings, "render", t)
        return out


def _report(progress: Callable[[int, str], None] | None, index: int, step: str) -> None:
    if progress is not None:
        progress(index, step)


def pixel_box(points: torch.Tensor, valid: torch.Tensor, size: tuple[int, int], margin: int) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) pixel box around the valid points (N, 2), grown by `margin`, clipped to
    the image `size` (W, H); None if it is empty."""
    pts = points[valid & torch.isfinite(points).all(1)]
    if pts.numel() == 0:
        return None
    lo = pts.amin(0).floor().long() - margin
    hi = pts.amax(0).ceil().long() + margin
    x0, y0 = max(0, int(lo[0])), max(0, int(lo[1]))
    x1, y1 = min(size[0], int(hi[0])), min(size[1], int(hi[1]))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
