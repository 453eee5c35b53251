"""The nvdiffrast rasterizer backend (CUDA): `NvdiffrastRasterizer`.

Uses ``nvdiffrast.torch`` (Laine et al., "Modular Primitives for High-Performance Differentiable
Rendering", SIGGRAPH Asia 2020): `RasterizeCudaContext`, `rasterize`, `interpolate`, `texture` (with
mip-mapped filtering from analytic UV derivatives) and `antialias` (analytic silhouette gradients).

Installing
----------
``pip install ganfit[gpu]`` installs the PyPI package ``diffrp-nvdiffrast``, a source repackaging of
NVIDIA's nvdiffrast that installs the same import name, ``nvdiffrast`` (``nvdiffrast.torch``). It ships
the CUDA/C++ sources and compiles its plugin with ``torch.utils.cpp_extension`` the first time a
context is created, which needs

- an NVIDIA GPU and a CUDA build of PyTorch,
- the CUDA toolkit (``nvcc``) matching PyTorch's CUDA version, with ``CUDA_HOME`` pointing at it,
- ``ninja`` (``pip install ninja``) and a C++ compiler.

The first use takes a minute or two; the build is cached under ``~/.cache/torch_extensions``. NVIDIA's
own package (``pip install git+https://github.com/NVlabs/nvdiffrast``) works as well: both are imported
as ``nvdiffrast.torch``. Only the CUDA rasterizer is used (no OpenGL).

Conventions (see `ganfit.render.base`)
--------------------------------------
nvdiffrast's image row 0 is the BOTTOM of the image (OpenGL); every output is flipped to our top-first
layout, and images handed to `antialias` are flipped back. Its triangle ids are 1-based with 0 for the
background (ours: 0-based, -1 for background); its barycentrics (u, v) are the weights of corners 0 and 1
and corner 2 gets 1 - u - v (see ``common/rasterize.cu``: u = a0 / (a0 + a1 + a2) with a0 the edge
function opposite vertex 0, and ``common/interpolate.cu``: out = u A0 + v A1 + (1 - u - v) A2); its depth is
z/w, as ours. Its texture coordinate v = 0 is texture row 0;
ours is v up (OBJ), so v is flipped for sampling.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import GanfitError
from .base import Fragments

__all__ = ["BackendUnavailableError", "NvdiffrastFragments", "NvdiffrastRasterizer", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `pip install ganfit[gpu]` (the diffrp-nvdiffrast package, imported as `nvdiffrast`; "
    "it compiles its CUDA plugin on first use and needs the CUDA toolkit with CUDA_HOME set, and ninja), "
    "or use the CPU backend: backend='torch'"
)


class BackendUnavailableError(GanfitError):
    """A rasterizer backend cannot run here (package missing, no CUDA, plugin failed to build)."""


def _import_nvdiffrast():
    try:
        import nvdiffrast.torch as dr  # both NVIDIA's package and diffrp-nvdiffrast install this name
    except ImportError as exc:
        raise BackendUnavailableError(f"the nvdiffrast backend needs the `nvdiffrast` package ({exc}); {INSTALL_HINT}") from exc
    return dr


@dataclass(frozen=True)
class NvdiffrastFragments(Fragments):
    """`Fragments` plus nvdiffrast's raw outputs (bottom row first), reused by interpolate/antialias.

    rast: (B, H, W, 4) (u, v, z/w, triangle_id + 1) as returned by ``nvdiffrast.torch.rasterize``
        (u, v: weights of corners 0 and 1).
    rast_db: (B, H, W, 4) image-space derivatives of (u, v): (du/dX, du/dY, dv/dX, dv/dY).
    """

    rast: torch.Tensor | None = None
    rast_db: torch.Tensor | None = None


_FILTERS = {
    "nearest": "nearest",
    "bilinear": "linear",
    "linear": "linear",
    "mipmap": "linear-mipmap-linear",
    "area": "linear-mipmap-linear",
}


def _finite_difference_da(values: torch.Tensor) -> torch.Tensor:
    """Image-space derivatives of (B, H, W, C) values in nvdiffrast's layout (B, H, W, 2C):
    (dA0/dx, dA0/dy, dA1/dx, ...). At each pixel the smaller of the forward and backward differences is
    used, so one-sided jumps (silhouettes, UV seams) do not blow up the mip level."""
    v = values.detach()

    def one_axis(dim: int) -> torch.Tensor:
        diff = v.diff(dim=dim)
        zero_shape = list(v.shape)
        zero_shape[dim] = 1
        zero = v.new_zeros(zero_shape)
        forward = torch.cat([diff, zero], dim=dim)
        backward = torch.cat([zero, diff], dim=dim)
        f_size = forward.abs().sum(-1, keepdim=True)
        b_size = backward.abs().sum(-1, keepdim=True)
        use_forward = ((f_size <= b_size) & (f_size > 0)) | (b_size == 0)
        return torch.where(use_forward, forward, backward)

    dx = one_axis(2)
    dy = one_axis(1)
    return torch.stack([dx, dy], dim=-1).flatten(-2).contiguous()


class NvdiffrastRasterizer:
    """The `Rasterizer` protocol on nvdiffrast's CUDA rasterizer.

    Extensions used by `ganfit.render.Renderer` when present (``supports_derivatives = True``):
    ``interpolate(..., with_derivatives=True)`` returns the analytic image-space derivatives too, and
    ``texture(..., uv_da=...)`` takes them for mip-level selection.

    Args:
        device: a CUDA device ("cuda", "cuda:1", torch.device); default the current CUDA device.
    Raises:
        BackendUnavailableError: no CUDA, nvdiffrast not installed, or its plugin failed to build.
    """

    name = "nvdiffrast"
    supports_derivatives = True

    def __init__(self, device: torch.device | str | None = None) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "the nvdiffrast backend needs a CUDA GPU, but torch.cuda.is_available() is False "
                f"(CPU-only PyTorch build or no GPU); on a CUDA machine, {INSTALL_HINT}"
            )
        self.device = torch.device("cuda" if device is None else device)
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"the nvdiffrast backend runs on CUDA devices only, got device {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        dr = _import_nvdiffrast()
        try:
            self._ctx = dr.RasterizeCudaContext(device=self.device)
        except Exception as exc:  # the plugin build raises RuntimeError/OSError/CalledProcessError
            raise BackendUnavailableError(
                f"nvdiffrast is installed but its CUDA plugin could not be built or loaded ({type(exc).__name__}: {exc}); "
                f"{INSTALL_HINT}"
            ) from exc
        self._dr = dr
        self._tri_cache: dict = {}

    def __repr__(self) -> str:
        return f"NvdiffrastRasterizer(device={str(self.device)!r})"

    # ------------------------------------------------------------------ helpers
    def _tri(self, triangles: torch.Tensor) -> tuple[torch.Tensor, object | None]:
        """(int32 contiguous triangles on the device, lazily-built topology hash holder key)."""
        tris = torch.as_tensor(triangles)
        key = (tris.data_ptr(), tuple(tris.shape), tris.device, getattr(tris, "_version", 0))
        hit = self._tri_cache.get(key)
        if hit is not None:
            return hit[1], key
        tri32 = tris.to(device=self.device, dtype=torch.int32).contiguous()
        if len(self._tri_cache) >= 8:
            self._tri_cache.pop(next(iter(self._tri_cache)))
        # Keep `tris` alive so that its data pointer cannot be reused by another tensor.
        self._tri_cache[key] = [tris, tri32, None]
        return tri32, key

    def _topology_hash(self, tri32: torch.Tensor, key) -> object:
        entry = self._tri_cache.get(key)
        if entry is None:
            return self._dr.antialias_construct_topology_hash(tri32)
        if entry[2] is None:
            entry[2] = self._dr.antialias_construct_topology_hash(tri32)
        return entry[2]

    @staticmethod
    def _rast_of(fragments: Fragments) -> torch.Tensor:
        """nvdiffrast's (B, H, W, 4) raster tensor, bottom row first; rebuilt from plain `Fragments`."""
        rast = getattr(fragments, "rast", None)
        if rast is not None:
            return rast
        mask = fragments.triangle_id >= 0
        depth = torch.where(mask, fragments.depth, torch.zeros_like(fragments.depth))
        rast = torch.cat(
            [
                fragments.barycentric[..., 0:2].float(),
                depth[..., None].float(),
                (fragments.triangle_id + 1).float()[..., None],
            ],
            dim=-1,
        )
        return rast.flip(1).contiguous()

    # ------------------------------------------------------------------ protocol
    def rasterize(self, clip: torch.Tensor, triangles: torch.Tensor, resolution: tuple[int, int]) -> NvdiffrastFragments:
        """clip: (B, V, 4) clip-space vertices; triangles: (F, 3); resolution: (H, W)."""
        if clip.ndim != 3 or clip.shape[-1] != 4:
            raise ValueError(f"clip must be (B, V, 4), got {tuple(clip.shape)}")
        h, w = (int(r) for r in resolution)
        b = clip.shape[0]
        tri32, _ = self._tri(triangles)
        pos = clip.to(device=self.device, dtype=torch.float32).contiguous()
        if tri32.shape[0] == 0:
            return NvdiffrastFragments(
                triangle_id=torch.full((b, h, w), -1, dtype=torch.int64, device=self.device),
                barycentric=pos.new_zeros(b, h, w, 3),
                depth=pos.new_full((b, h, w), float("inf")),
            )
        rast, rast_db = self._dr.rasterize(self._ctx, pos, tri32, resolution=(h, w), grad_db=True)
        top = rast.flip(1)
        triangle_id = top[..., 3].round().long() - 1
        mask = triangle_id >= 0
        u, v = top[..., 0], top[..., 1]
        bary = torch.stack([u, v, 1.0 - u - v], dim=-1) * mask[..., None]
        depth = torch.where(mask, top[..., 2], torch.full_like(top[..., 2], float("inf")))
        return NvdiffrastFragments(triangle_id=triangle_id, barycentric=bary, depth=depth, rast=rast, rast_db=rast_db)

    def interpolate(
        self,
        attributes: torch.Tensor,
        fragments: Fragments,
        triangles: torch.Tensor,
        *,
        with_derivatives: bool = False,
    ):
        """attributes: (B, V, C) or (V, C) -> (B, H, W, C), zeros on background.

        With ``with_derivatives=True`` (nvdiffrast fragments only) returns ``(values, derivatives)``,
        derivatives (B, H, W, 2C) = (dA0/dx, dA0/dy, dA1/dx, ...) per pixel, x right and y DOWN.
        """
        if attributes.ndim == 2:
            attributes = attributes.unsqueeze(0)
        if attributes.ndim != 3:
            raise ValueError(f"attributes must be (B, V, C) or (V, C), got {tuple(attributes.shape)}")
        tri32, _ = self._tri(triangles)
        attr = attributes.to(device=self.device, dtype=torch.float32).contiguous()
        rast = self._rast_of(fragments)
        if tri32.shape[0] == 0:
            values = attr.new_zeros(rast.shape[0], rast.shape[1], rast.shape[2], attr.shape[-1])
            return (values, values.repeat_interleave(2, -1)) if with_derivatives else values
        if with_derivatives:
            rast_db = getattr(fragments, "rast_db", None)
            if rast_db is None:
                values, _ = self._dr.interpolate(attr, rast, tri32)
                values = values.flip(1)
                return values, _finite_difference_da(values)
            values, da = self._dr.interpolate(attr, rast, tri32, rast_db=rast_db, diff_attrs="all")
            # Flip rows; the y derivative changes sign with the row direction.
            sign = torch.tensor([1.0, -1.0], device=da.device).repeat(attr.shape[-1])
            return values.flip(1), da.flip(1) * sign
        values, _ = self._dr.interpolate(attr, rast, tri32)
        return values.flip(1)

    def texture(
        self,
        texture: torch.Tensor,
        uv: torch.Tensor,
        *,
        filter: str = "bilinear",
        uv_da: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """texture: (B, C, Ht, Wt) (row 0 = top of the texture image); uv: (B, H, W, 2) in [0, 1], v up
        -> (B, H, W, C). Boundary: clamp to the edge texels.

        filter: "bilinear", "nearest", or "mipmap"/"area" (trilinear mip-mapping; the mip level comes from
        `uv_da` (B, H, W, 4) = (du/dx, du/dy, dv/dx, dv/dy) when given, else from finite differences of `uv`).
        """
        if texture.ndim != 4:
            raise ValueError(f"texture must be (B, C, Ht, Wt), got {tuple(texture.shape)}")
        if uv.ndim != 4 or uv.shape[-1] != 2:
            raise ValueError(f"uv must be (B, H, W, 2), got {tuple(uv.shape)}")
        if filter not in _FILTERS:
            raise ValueError(f"unknown texture filter {filter!r}; use one of {sorted(_FILTERS)}")
        mode = _FILTERS[filter]
        tex = texture.to(device=self.device, dtype=torch.float32).permute(0, 2, 3, 1).contiguous()
        uv = uv.to(device=self.device, dtype=torch.float32)
        uv_nv = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1).contiguous()
        if mode == "linear-mipmap-linear":
            if uv_da is None:
                uv_da = _finite_difference_da(uv)
            # v -> 1 - v flips the sign of v's derivatives (channels 2 and 3).
            sign = torch.tensor([1.0, 1.0, -1.0, -1.0], device=self.device)
            da = (uv_da.to(device=self.device, dtype=torch.float32) * sign).contiguous()
            return self._dr.texture(tex, uv_nv, uv_da=da, filter_mode=mode, boundary_mode="clamp")
        return self._dr.texture(tex, uv_nv, filter_mode=mode, boundary_mode="clamp")

    def antialias(self, color: torch.Tensor, fragments: Fragments, clip: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
        """color: (B, H, W, C) -> (B, H, W, C): nvdiffrast's analytic antialiasing, which gives vertex
        positions gradients at silhouette edges."""
        tri32, key = self._tri(triangles)
        if tri32.shape[0] == 0:
            return color
        rast = self._rast_of(fragments)
        pos = clip.to(device=self.device, dtype=torch.float32).contiguous()
        col = color.to(dtype=torch.float32).flip(1).contiguous()
        out = self._dr.antialias(col, rast, pos, tri32, topology_hash=self._topology_hash(tri32, key))
        return out.flip(1).to(color.dtype)
