"""The rasterizer protocol every backend implements (torch everywhere, nvdiffrast on CUDA).

Image conventions for every backend: outputs are (B, H, W, C) with row 0 at the TOP of the image
(y_ndc = +1) and pixel (i, j) centred at x = j + 0.5, y = i + 0.5 in the pixel coordinates of
`ganfit.render.camera` (clip space from `clip_from_camera`). Backends that rasterize bottom-up
(OpenGL, nvdiffrast) flip before returning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Fragments:
    """Per-pixel rasterization result.

    triangle_id: (B, H, W) int64 index into the triangles, -1 where no triangle covers the pixel centre.
    barycentric: (B, H, W, 3) perspective-correct barycentric weights of the triangle's 3 vertices
        (zeros on background); differentiable with respect to the clip-space vertex positions.
    depth: (B, H, W) z_ndc = z_clip / w_clip of the visible surface in [-1, 1]; +inf on background.
    """

    triangle_id: torch.Tensor
    barycentric: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: pixels covered by a triangle."""
        return self.triangle_id >= 0


@runtime_checkable
class Rasterizer(Protocol):
    """A rasterizer backend."""

    name: str

    def rasterize(self, clip: torch.Tensor, triangles: torch.Tensor, resolution: tuple[int, int]) -> Fragments:
        """clip: (B, V, 4) clip-space vertices; triangles: (F, 3); resolution: (H, W)."""
        ...

    def interpolate(self, attributes: torch.Tensor, fragments: Fragments, triangles: torch.Tensor) -> torch.Tensor:
        """attributes: (B, V, C) or (V, C) per-vertex values -> (B, H, W, C), zeros on background."""
        ...

    def texture(self, texture: torch.Tensor, uv: torch.Tensor, *, filter: str = "bilinear") -> torch.Tensor:
        """texture: (B, C, Ht, Wt); uv: (B, H, W, 2) in [0, 1] with v up (OBJ convention) -> (B, H, W, C).

        filter: "bilinear", or "area"/"mipmap" where the backend supports it (else bilinear).
        """
        ...

    def antialias(self, color: torch.Tensor, fragments: Fragments, clip: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        """color: (B, H, W, C) -> (B, H, W, C) with silhouette edges blended so that vertex positions get
        gradients at occlusion boundaries (nvdiffrast's analytic antialiasing or an equivalent)."""
        ...
