"""The identity-network protocol: face-recognition embeddings and feature maps of (rendered) images,
differentiable down to the input pixels (GANFit's identity and content losses need that)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

#: Pixel values an identity network takes, clamped to [0, 1]: lit renders overshoot [0, 1] a little
#: before clamping (highlights, negative spherical-harmonics shading); more than this is another scale.
ACCEPTED_RANGE = (-0.25, 2.0)


@runtime_checkable
class IdentityNet(Protocol):
    """A face-recognition network with its own differentiable alignment crop.

    name: e.g. "arcface-r50", "dlib-resnet".
    embedding_dim: D.
    """

    name: str
    embedding_dim: int

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) RGB in [0, 1] (a lit render's slight overshoot is clamped: `unit_range`);
        landmarks: (B, 68, 2) pixels (x right, y down). Returns (B, D) unit-norm embeddings."""
        ...

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps (each (B, C_k, H_k, W_k)) used by the content loss, shallow to deep."""
        ...


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """`images` with values in [0, 1]: unchanged when they already are, clamped (differentiably: the
    gradient passes where a value is inside the range) when they overshoot a little, as a lit render does.

    Raises:
        ValueError: values outside `ACCEPTED_RANGE` or NaN, saying what the data looks like (0-255 pixels:
            divide by 255; [-1, 1] normalised data).
    """
    if not images.numel():
        return images
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if 0.0 <= lo and hi <= 1.0:
        return images
    low, high = ACCEPTED_RANGE
    if not (lo >= low and hi <= high):  # also catches NaN
        if lo >= 255.0 * low and high < hi <= 255.0 * high:  # 0-255 pixels, maybe overshooting too
            hint = " (it looks like 0-255 data: divide by 255)"
        elif -1.0 - 1e-3 <= lo < low and hi <= 1.0 + 1e-3:
            hint = " (it looks like data normalised to [-1, 1]: use (x + 1) / 2)"
        else:
            hint = ""
        raise ValueError(f"images must hold values in [0, 1] (a render slightly outside, within [{low:g}, {high:g}], "
                         f"is clamped), found [{lo:g}, {hi:g}]{hint}")
    return images.clamp(0.0, 1.0)
