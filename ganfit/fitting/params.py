"""Fitted parameters of a batch of images, in interpretable units."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..render.camera import euler_from_matrix, rotation_matrix


@dataclass
class FitParams:
    """Parameters of B fitted faces.

    shape: (B, Ks) identity coefficients in standard deviations.
    expression: (B, Ke) expression coefficients in standard deviations.
    rotation: (B, 3) axis-angle or (B, 6) 6D, model to camera.
    translation: (B, 3) millimetres, camera space (z < 0: in front of the camera).
    focal: (B,) focal length in pixels.
    principal: (B, 2) principal point in pixels (the image centre).
    """

    shape: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.shape.shape[0])

    def rotation_matrix(self) -> torch.Tensor:
        """(B, 3, 3)."""
        return rotation_matrix(self.rotation)

    def euler_deg(self) -> torch.Tensor:
        """(B, 3) yaw, pitch, roll in degrees."""
        return euler_from_matrix(self.rotation_matrix())

    def select(self, index: int) -> "FitParams":
        """Image `index`'s parameters as a batch of one."""
        return FitParams(*(t[index:index + 1] for t in self._tensors()))

    def detach(self) -> "FitParams":
        return FitParams(*(t.detach() for t in self._tensors()))

    def to(self, device=None, dtype=None) -> "FitParams":
        return FitParams(*(t.to(device=device, dtype=dtype) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.shape, self.expression, self.rotation, self.translation, self.focal, self.principal)

    def to_dict(self, index: int) -> dict:
        """JSON-friendly parameters of image `index`."""
        return {
            "shape": self.shape[index].tolist(),
            "expression": self.expression[index].tolist(),
            "rotation": self.rotation[index].tolist(),
            "rotation_representation": "axis_angle" if self.rotation.shape[-1] == 3 else "6d",
            "rotation_matrix": self.rotation_matrix()[index].tolist(),
            "yaw_pitch_roll_deg": self.euler_deg()[index].tolist(),
            "translation_mm": self.translation[index].tolist(),
            "focal_px": float(self.focal[index]),
            "principal_px": self.principal[index].tolist(),
        }
