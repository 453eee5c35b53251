"""The texture-model interface shared by the progressive GAN and the linear (PCA) model.

A texture model maps a latent vector to a UV texture in one face model's UV layout (GANFit, Gecer et
al. CVPR 2019: the fitter optimises the latent, regularised by `latent_prior`). A texture model made for
one layout must not be used with another: `check_layout` says so clearly.
"""
from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ...errors import ModelFormatError


def uv_layout_id(uv: np.ndarray, triangles: np.ndarray, uv_triangles: np.ndarray | None = None) -> str:
    """A short stable id of a UV layout: sha256 over the UV coordinates (rounded to 1e-6) and the
    triangles that use them. Two face models with the same UV layout get the same id."""
    h = hashlib.sha256()
    h.update(np.round(np.asarray(uv, dtype=np.float64), 6).astype(np.float32).tobytes())
    h.update(np.ascontiguousarray(triangles if uv_triangles is None else uv_triangles, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def model_uv_layout_id(model) -> str:
    """`uv_layout_id` of a `MorphableModel` (raises ModelFormatError when it has no UVs)."""
    if model.uv is None:
        raise ModelFormatError(f"face model {model.name!r} has no UV coordinates, so no texture model fits it")
    return uv_layout_id(model.uv, model.triangles, model.uv_triangles)


@runtime_checkable
class TextureModel(Protocol):
    """A generative model of UV textures.

    name: identifier; latent_dim: D; resolution: (H, W) of decoded textures;
    uv_layout: `uv_layout_id` of the face model's UV layout the textures belong to.
    """

    name: str
    latent_dim: int
    resolution: tuple[int, int]
    uv_layout: str

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, H, W) textures in [0, 1], row 0 = top of the texture image (v up)."""
        ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) latents drawn from the model's prior."""
        ...

    def latent_prior(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) the regulariser the fitter adds (negative log prior up to a constant)."""
        ...


def check_layout(texture_model: TextureModel, face_model) -> None:
    """Raise ModelFormatError if `texture_model` was made for another UV layout than `face_model`'s."""
    want = model_uv_layout_id(face_model)
    if texture_model.uv_layout != want:
        raise ModelFormatError(
            f"texture model {texture_model.name!r} belongs to UV layout {texture_model.uv_layout}, but face model "
            f"{face_model.name!r} has layout {want}; use a texture model trained for this face model "
            "(`ganfit texture build-dataset` + `ganfit texture train`, or `ganfit texture build-pca`)"
        )
