"""The differentiable face renderer: face model + camera + lighting + texture -> image, masks, landmarks.

`Renderer` composes a `Rasterizer` backend (`make_rasterizer`: nvdiffrast on CUDA, pure PyTorch
elsewhere) with the shading models of `ganfit.render.shading`:

1. vertices from the model's shape/expression coefficients, moved to camera space by the pose;
2. vertex normals recomputed from the deformed mesh (area-weighted, `ganfit.model.geometry`);
3. rasterization in clip space (`clip_from_camera`), one interpolation of positions, normals, colours /
   UVs and region indicators;
4. per-pixel shading: the interpolated normal is renormalised and lit with SH (default) or Phong;
   albedo from a UV texture (sampled with the backend's `texture`) or per-vertex colours;
5. antialiasing of colour and coverage together, so that silhouettes pass gradients to the geometry.

Output conventions: images are (B, H, W, C), row 0 at the top; colour is premultiplied over a black
background (composite with ``image + (1 - alpha) * background``); lighting directions, normals and
positions are in camera space (x right, y up, z towards the viewer, the camera at the origin).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from ..errors import ConfigError, FitError, GanfitError
from ..model.geometry import vertex_normals
from .base import Fragments, Rasterizer
from .camera import clip_from_camera, project_points, transform_points
from .shading import PhongLight, default_sh, phong_shading, sh_shading

__all__ = ["RenderInputError", "RenderOutput", "Renderer", "make_rasterizer"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "nvdiffrast")


class RenderInputError(GanfitError, ValueError):
    """An input of the renderer has the wrong shape or type."""


# --------------------------------------------------------------------------- backends
def _torch_rasterizer(device: torch.device) -> Rasterizer:
    from .torch_backend import TorchRasterizer

    return TorchRasterizer()  # runs on the device of its inputs


def _smoke_test(rasterizer: Rasterizer, device: torch.device) -> None:
    """Render one triangle at 8x8 and check that it covers pixels and gives finite interpolations."""
    clip = torch.tensor([[[-0.9, -0.9, 0.0, 1.0], [0.9, -0.9, 0.0, 1.0], [0.0, 0.9, 0.0, 1.0]]], device=device)
    tris = torch.tensor([[0, 1, 2]], device=device, dtype=torch.int64)
    frags = rasterizer.rasterize(clip, tris, (8, 8))
    values = rasterizer.interpolate(torch.eye(3, device=device)[None], frags, tris)
    out = rasterizer.antialias(values, frags, clip, tris)
    if not (bool(frags.mask.any()) and bool(torch.isfinite(out).all())):
        raise RuntimeError("test render of one triangle came back empty or non-finite")


def make_rasterizer(backend: str = "auto", device: torch.device | str | None = None) -> Rasterizer:
    """A rasterizer backend by name.

    Args:
        backend: "torch" (pure PyTorch, any device), "nvdiffrast" (CUDA; raises
            `BackendUnavailableError` with install instructions when it cannot run), or "auto":
            nvdiffrast when the device is CUDA and nvdiffrast imports and passes a one-triangle test
            render, else torch. The choice is logged.
        device: where to render; default CUDA when available, else CPU.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown renderer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if backend == "nvdiffrast":
        from .nvdiffrast_backend import NvdiffrastRasterizer

        rasterizer = NvdiffrastRasterizer(device)
        log.info("renderer backend: nvdiffrast on %s", device)
        return rasterizer
    if backend == "auto" and device.type == "cuda":
        try:
            from .nvdiffrast_backend import NvdiffrastRasterizer

            rasterizer = NvdiffrastRasterizer(device)
            _smoke_test(rasterizer, rasterizer.device)
            log.info("renderer backend: nvdiffrast on %s (auto)", device)
            return rasterizer
        except Exception as exc:  # any failure of the optional backend falls back to torch
            log.warning("nvdiffrast backend unavailable (%s); using the torch backend on %s", exc, device)
    rasterizer = _torch_rasterizer(device)
    log.info("renderer backend: torch on %s%s", device, " (auto)" if backend == "auto" else "")
    return rasterizer


# --------------------------------------------------------------------------- output
@dataclass(frozen=True)
class RenderOutput:
    """What `Renderer.render` returns.

    image: (B, H, W, 3) shaded colour, antialiased, premultiplied over black.
    alpha: (B, H, W) antialiased coverage in [0, 1] (differentiable at silhouettes).
    depth: (B, H, W) distance along the view axis (-z_camera) in millimetres; +inf on background.
    normals: (B, H, W, 3) unit camera-space normals; zeros on background.
    landmarks: (B, 68, 2) projected landmark vertices in pixels (x right, y down), occluded or not.
    regions: name -> (B, H, W) float coverage of each model region (interpolated 0/1 vertex indicator).
    fragments: the rasterizer's `Fragments`.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    landmarks: torch.Tensor
    regions: dict[str, torch.Tensor] = field(default_factory=dict)
    fragments: Fragments | None = None

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: pixels whose centre a triangle covers."""
        return torch.isfinite(self.depth)


# --------------------------------------------------------------------------- renderer
def _normalize(x: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(norm > 1e-12, x / norm.clamp_min(1e-12), torch.zeros_like(x))


class Renderer:
    """Renders a `MorphableModel` under `FitParams` with a texture or vertex colours and a lighting model.

    Args:
        model: the face model (triangles, UVs, landmarks, regions).
        rasterizer: a `Rasterizer` backend; default ``make_rasterizer("auto", device)``.
        image_size: (W, H) in pixels.
        near, far: clipping planes in millimetres in front of the camera.
        texture_filter: "mipmap" (default; trilinear on backends that support it, else bilinear),
            "area", "bilinear" or "nearest".
        device: used only to build the default rasterizer.
    """

    def __init__(
        self,
        model,
        rasterizer: Rasterizer | None = None,
        *,
        image_size: tuple[int, int] = (224, 224),
        near: float = 10.0,
        far: float = 10000.0,
        texture_filter: str = "mipmap",
        device: torch.device | str | None = None,
    ) -> None:
        if len(tuple(image_size)) != 2 or min(int(s) for s in image_size) <= 0:
            raise ConfigError(f"image_size must be (W, H) with positive sizes, got {image_size!r}")
        if not 0 < near < far:
            raise ConfigError(f"need 0 < near < far, got near={near}, far={far}")
        if model.triangles.shape[0] == 0:
            raise RenderInputError(f"face model {model.name!r} has no triangles; cannot render it")
        self.model = model
        self.rasterizer = rasterizer if rasterizer is not None else make_rasterizer("auto", device)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.near = float(near)
        self.far = float(far)
        self.texture_filter = texture_filter
        self._cache: dict = {}

    def __repr__(self) -> str:
        name = getattr(self.rasterizer, "name", type(self.rasterizer).__name__)
        return f"Renderer(model={self.model.name!r}, backend={name!r}, image_size={self.image_size})"

    # ------------------------------------------------------------------ cached model tensors
    def _tensors(self, device: torch.device, dtype: torch.dtype) -> dict:
        key = (str(device), dtype)
        if key not in self._cache:
            m = self.model
            t = dict(m.tensors(device, dtype))
            if m.uv is not None:
                t["uv"] = torch.as_tensor(m.uv, device=device, dtype=dtype)
                if m.uv_triangles is not None:
                    t["uv_triangles"] = torch.as_tensor(m.uv_triangles, device=device)
            names = sorted(m.regions)
            t["region_names"] = names
            t["regions"] = (
                torch.as_tensor(np.stack([m.regions[n] for n in names], axis=-1), device=device, dtype=dtype)
                if names
                else None
            )
            self._cache[key] = t
        return self._cache[key]

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _batched(value: torch.Tensor, b: int, what: str, tail: str) -> torch.Tensor:
        if value.shape[0] == b:
            return value
        if value.shape[0] == 1:
            return value.expand(b, *value.shape[1:])
        raise RenderInputError(f"{what} must be {tail} with batch {b} (or 1), got {tuple(value.shape)}")

    def _check_texture(self, texture, b: int) -> torch.Tensor:
        expected = "(B, 3, Hu, Wu) UV texture in [0, 1] (channels first, v up)"
        if not isinstance(texture, torch.Tensor):
            raise RenderInputError(f"texture must be a torch.Tensor {expected}, got {type(texture).__name__}")
        if texture.ndim == 3 and texture.shape[0] == 3:
            texture = texture.unsqueeze(0)
        if texture.ndim != 4:
            raise RenderInputError(f"texture must be {expected}, got shape {tuple(texture.shape)}")
        if texture.shape[1] != 3:
            hint = " (channels last? use texture.permute(0, 3, 1, 2))" if texture.shape[-1] == 3 else ""
            raise RenderInputError(f"texture must be {expected}, got {texture.shape[1]} channels in shape {tuple(texture.shape)}{hint}")
        if self.model.uv is None:
            raise RenderInputError(f"face model {self.model.name!r} has no UV coordinates; pass vertex_colors instead of a texture")
        return self._batched(texture, b, "texture", "(B, 3, Hu, Wu)")

    def _check_lighting(self, lighting, b: int, device, dtype):
        if lighting is None:
            return default_sh(b, device=device, dtype=dtype)
        if isinstance(lighting, PhongLight):
            return lighting
        if isinstance(lighting, torch.Tensor):
            if lighting.ndim == 2:
                lighting = lighting.unsqueeze(0)
            if lighting.ndim != 3 or lighting.shape[1:] != (9, 3):
                raise RenderInputError(f"SH lighting must be (B, 9, 3) coefficients, got {tuple(lighting.shape)}")
            return self._batched(lighting, b, "SH lighting", "(B, 9, 3)")
        raise RenderInputError(f"lighting must be SH coefficients (B, 9, 3) or a PhongLight, got {type(lighting).__name__}")

    # ------------------------------------------------------------------ render
    def render(
        self,
        params,
        *,
        texture: torch.Tensor | None = None,
        vertex_colors: torch.Tensor | None = None,
        lighting: torch.Tensor | PhongLight | None = None,
        regions: bool | Iterable[str] = True,
        vertices: torch.Tensor | None = None,
    ) -> RenderOutput:
        """Render B faces.

        Args:
            params: `FitParams` (shape, expression, rotation, translation, focal, principal).
            texture: (B or 1, 3, Hu, Wu) UV texture in [0, 1] (row 0 = top of the texture image, uv v up).
            vertex_colors: (B or 1, V, 3) or (V, 3) per-vertex albedo, used when no texture is given.
                With neither, the model's mean texture when it has one, else white (pure shading).
            lighting: SH radiance coefficients (B or 1, 9, 3) (default `default_sh`: albedo unchanged)
                or a `PhongLight`; camera space.
            regions: True for all model regions, False for none, or an iterable of region names.
            vertices: (B, V, 3) model-space vertices to use instead of the model's
                ``vertices(params.shape, params.expression)``.
        Returns:
            `RenderOutput`.
        Raises:
            FitError: non-finite vertices or camera (parameters diverged).
            RenderInputError: inputs of the wrong shape.
        """
        b = params.batch_size
        dtype = params.shape.dtype if params.shape.is_floating_point() else torch.float32
        device = params.shape.device
        t = self._tensors(device, dtype)
        w_img, h_img = self.image_size

        # ---- check the inputs before any work
        albedo_kind = "texture" if texture is not None else "colors" if vertex_colors is not None else None
        if texture is not None:
            texture = self._check_texture(texture, b).to(device=device, dtype=dtype)
        elif vertex_colors is not None:
            if not isinstance(vertex_colors, torch.Tensor):
                raise RenderInputError(f"vertex_colors must be a (B, V, 3) tensor, got {type(vertex_colors).__name__}")
            if vertex_colors.ndim == 2:
                vertex_colors = vertex_colors.unsqueeze(0)
            if vertex_colors.ndim != 3 or vertex_colors.shape[1:] != (self.model.num_vertices, 3):
                raise RenderInputError(
                    f"vertex_colors must be (B, V={self.model.num_vertices}, 3), got {tuple(vertex_colors.shape)}"
                )
            vertex_colors = self._batched(vertex_colors, b, "vertex_colors", "(B, V, 3)").to(device=device, dtype=dtype)
        elif self.model.texture_mean is not None:
            albedo_kind = "colors"
            vertex_colors = torch.as_tensor(self.model.texture_mean, device=device, dtype=dtype)[None].expand(b, -1, -1)

        region_names: list[str] = []
        if regions is True:
            region_names = list(t["region_names"])
        elif regions:
            region_names = list(regions)
            unknown = [n for n in region_names if n not in self.model.regions]
            if unknown:
                raise RenderInputError(f"unknown regions {unknown}; model {self.model.name!r} has {sorted(self.model.regions)}")

        light = self._check_lighting(lighting, b, device, dtype)

        # ---- geometry
        if vertices is None:
            vertices = self.model.vertices(params.shape, params.expression)
        elif vertices.shape != (b, self.model.num_vertices, 3):
            raise RenderInputError(f"vertices must be (B={b}, V={self.model.num_vertices}, 3), got {tuple(vertices.shape)}")
        verts_cam = transform_points(vertices, params.rotation_matrix(), params.translation)
        if not bool(torch.isfinite(verts_cam).all()):
            raise FitError(
                "cannot render: the face vertices contain NaN or infinity (shape, expression or pose parameters "
                "diverged); lower the learning rate or check the inputs"
            )
        if not (bool(torch.isfinite(params.focal).all()) and bool(torch.isfinite(params.principal).all())):
            raise FitError("cannot render: the camera focal length or principal point is NaN or infinite")
        tris = t["triangles"]
        clip = clip_from_camera(verts_cam, params.focal, params.principal, (w_img, h_img), self.near, self.far)
        frags = self.rasterizer.rasterize(clip, tris, (h_img, w_img))
        mask = frags.mask
        maskf = mask.to(dtype)
        normals_v = vertex_normals(verts_cam, tris)

        # ---- the one interpolation of everything per-vertex
        use_derivatives = albedo_kind == "texture" and bool(getattr(self.rasterizer, "supports_derivatives", False)) and self.texture_filter in ("mipmap", "area")
        per_vertex_uv = albedo_kind == "texture" and "uv_triangles" not in t and not use_derivatives

        attrs = [verts_cam, normals_v]
        if albedo_kind == "colors":
            attrs.append(vertex_colors)
        if per_vertex_uv:
            attrs.append(t["uv"][None].expand(b, -1, -1))
        if region_names:
            cols = [t["region_names"].index(n) for n in region_names]
            attrs.append(t["regions"][:, cols][None].expand(b, -1, -1))
        sizes = [a.shape[-1] for a in attrs]
        interp = self.rasterizer.interpolate(torch.cat(attrs, dim=-1), frags, tris)
        pieces = list(torch.split(interp, sizes, dim=-1))
        pos_pix = pieces.pop(0)
        normals = _normalize(pieces.pop(0)) * maskf[..., None]

        if albedo_kind == "colors":
            albedo = pieces.pop(0)
        elif albedo_kind == "texture":
            albedo = self._sample_texture(texture, frags, t, pieces.pop(0) if per_vertex_uv else None, use_derivatives)
        else:
            albedo = torch.ones_like(normals)
        region_maps: dict[str, torch.Tensor] = {}
        if region_names:
            reg = pieces.pop(0)
            region_maps = {n: reg[..., i] for i, n in enumerate(region_names)}

        # ---- shading
        if isinstance(light, PhongLight):
            view = _normalize(-pos_pix)
            diffuse, specular = phong_shading(normals, view, light, points=pos_pix)
            color = albedo * diffuse + specular
        else:
            color = albedo * sh_shading(normals, light.to(device=device, dtype=dtype))
        color = color * maskf[..., None]

        # ---- antialias colour and coverage together
        rgba = self.rasterizer.antialias(torch.cat([color, maskf[..., None]], dim=-1), frags, clip, tris)
        image, alpha = rgba[..., :3], rgba[..., 3]

        inf = torch.full_like(pos_pix[..., 2], float("inf"))
        depth = torch.where(mask, -pos_pix[..., 2], inf)
        landmarks = project_points(verts_cam[:, t["landmarks"]], params.focal, params.principal)
        return RenderOutput(
            image=image, alpha=alpha, depth=depth, normals=normals, landmarks=landmarks, regions=region_maps, fragments=frags
        )

    def _sample_texture(self, texture, frags: Fragments, t: dict, uv_pix, use_derivatives: bool) -> torch.Tensor:
        """Albedo (B, H, W, 3) from the UV texture."""
        if use_derivatives:
            attr, uv_tris = (t["uv"], t["uv_triangles"]) if "uv_triangles" in t else (t["uv"], t["triangles"])
            uv_pix, uv_da = self.rasterizer.interpolate(attr[None], frags, uv_tris, with_derivatives=True)
            return self.rasterizer.texture(texture, uv_pix, filter=self.texture_filter, uv_da=uv_da)
        if uv_pix is None:
            # Per-corner UVs (a UV topology with seams): gather each pixel's triangle corners.
            corner_uv = t["uv"][t["uv_triangles"]]  # (F, 3, 2)
            tid = frags.triangle_id.clamp_min(0)
            uv_pix = (frags.barycentric[..., None] * corner_uv[tid]).sum(-2)
        return self.rasterizer.texture(texture, uv_pix, filter=self.texture_filter)
