"""The identity-network protocol: face-recognition embeddings and feature maps of (rendered) images,
differentiable down to the input pixels (GANFit's identity and content losses need that)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class IdentityNet(Protocol):
    """A face-recognition network with its own differentiable alignment crop.

    name: e.g. "arcface-r50", "dlib-resnet".
    embedding_dim: D.
    """

    name: str
    embedding_dim: int

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) RGB in [0, 1]; landmarks: (B, 68, 2) pixels (x right, y down).
        Returns (B, D) unit-norm embeddings."""
        ...

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps (each (B, C_k, H_k, W_k)) used by the content loss, shallow to deep."""
        ...
