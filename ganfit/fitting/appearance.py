"""What a fit looks like: the fitted meshes with the photo's colours and a UV texture (the photo unwrap, the
joint stage's model texture, or their blend), and the shaded renders the overlay shows. The `Fitter` hands
the fitted parameters here once the stages are done; nothing here changes a parameter.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .result import FaceMesh

__all__ = ["FaceAppearance", "TEXTURES"]

#: What `FitConfig.texture` may ask for.
TEXTURES = ("photo", "model", "blend")


class FaceAppearance:
    """Meshes, textures and renders of fitted faces for one face model (the per-model UV layout, mirror maps
    and rasterizer are built once, on first use, and kept).

    Args:
        model: the `MorphableModel`.
        texture_size: side of the UV texture (0: none; meshes keep per-vertex colours).
        device: where the unwrap and the renders run.
        quiet: no progress bar.
    """

    def __init__(self, model, *, texture_size: int, device: torch.device, quiet: bool = False) -> None:
        self.model, self.texture_size, self.device, self.quiet = model, texture_size, device, quiet
        self._photo_texture = None

    @property
    def photo_texture(self):
        """The `photo_texture.PhotoTexture` of the model (built on first use)."""
        if self._photo_texture is None:
            from .photo_texture import PhotoTexture

            self._photo_texture = PhotoTexture(self.model, texture_size=self.texture_size, device=self.device)
        return self._photo_texture

    def meshes(self, params, vertex_ids: torch.Tensor, images: Sequence, timings: dict[str, float], *,
               joint=None, texture: str = "photo") -> tuple[list[FaceMesh], torch.Tensor]:
        """The fitted meshes (photo colours, UV texture) and (B, 68, 2) fitted landmarks in photo pixels.

        Args:
            params: fitted `FitParams` (B, photo pixels).
            vertex_ids: (B, 68) model vertex of each landmark.
            images: B decoded photos (`ganfit.io.images.Image`: working-copy pixels and their `scale`).
            timings: seconds per step are added here.
            joint: the joint stage's `joint_fit.JointFit`, needed by the "model" and "blend" textures.
            texture: "photo" (the photo unwrapped and completed by symmetry), "model" (the joint stage's model
                texture, albedo) or "blend" (`texture_blend.blend_face_textures`).
        """
        if texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")
        if texture != "photo" and joint is None:
            raise ValueError(f"texture {texture!r} needs the joint stage's result")
        bar = tqdm(total=len(images), desc="fit: texture", unit="face", disable=self.quiet, leave=False)

        def progress(i: int, step: str) -> None:
            bar.update(i - bar.n)
            bar.set_postfix_str(step)

        pixels, scales = [img.pixels for img in images], [img.scale for img in images]
        try:
            meshes, fitted = self.photo_texture.meshes(params, vertex_ids, pixels, timings, photo_scales=scales,
                                                       progress=progress)
            bar.update(len(images) - bar.n)
        finally:
            bar.close()
        if texture == "model":
            self._model_textures(meshes, joint)
        elif texture == "blend":
            from .texture_blend import blend_face_textures

            t0 = time.perf_counter()
            blend_face_textures(self.photo_texture, meshes, joint, pixels, scales)
            timings["texture_blend"] = time.perf_counter() - t0
        return meshes, fitted

    def renders(self, params, meshes: list[FaceMesh], sizes: torch.Tensor,
                timings: dict[str, float]) -> list[np.ndarray | None]:
        """Shaded, textured renders of each fitted face at overlay resolution (longer side <= 1024 px),
        as (h, w, 4) premultiplied RGBA float32; None where there is no texture to show."""
        return self.photo_texture.renders(params, meshes, sizes, timings)

    def _model_textures(self, meshes: list[FaceMesh], joint) -> None:
        """Replace each mesh's photo texture with the joint stage's model texture (albedo), resized to
        `texture_size` (row 0 = top, as the photo unwrap)."""
        size = self.texture_size
        for mesh, res in zip(meshes, joint.results):
            if mesh.texture is None:
                continue
            tex = res.texture[:1].float()
            if tex.shape[-1] != size:
                tex = torch.nn.functional.interpolate(tex, size=(size, size), mode="bilinear", align_corners=False)
            mesh.texture = tex[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            mesh.texture_mask = np.ones(mesh.texture.shape[:2], np.float32)
