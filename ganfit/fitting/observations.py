"""`Observations`: what a fit is fitted to, the same for every stage (DESIGN.md, "Stages")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .losses import landmark_weights as jaw_weighted
from .state import independent_subjects, subject_first_frames

__all__ = ["Observations", "build_observations", "landmark_convention"]


@dataclass
class Observations:
    """B photos and their landmarks.

    images: B decoded photos (`ganfit.io.images.Image`: `pixels` (h, w, 3) of the working copy, `scale`, `path`).
    landmarks: (B, 68, 2) float64 target landmarks, photo pixels.
    sizes: (B, 2) float64 photo (width, height), photo pixels.
    detections: per photo its `Detection`, or None for landmarks the user gave.
    conventions: per photo "2d" or "3d" (`FitConfig.landmark_convention`).
    landmark_weights: (68,) per-landmark weights.
    frame_subject: (B,) long, each photo's subject (person) index; today arange(B): independent people.
    """

    images: list[Any]
    landmarks: torch.Tensor
    sizes: torch.Tensor
    detections: list[Any]
    conventions: list[str]
    landmark_weights: torch.Tensor
    frame_subject: torch.Tensor

    def __post_init__(self) -> None:
        b = len(self.images)
        if self.landmarks.shape != (b, 68, 2) or self.sizes.shape != (b, 2):
            raise ValueError(f"landmarks must be ({b}, 68, 2) and sizes ({b}, 2), got "
                             f"{tuple(self.landmarks.shape)} and {tuple(self.sizes.shape)}")
        if len(self.detections) != b or len(self.conventions) != b or self.frame_subject.shape != (b,):
            raise ValueError(f"detections, conventions and frame_subject must have {b} entries")
        subject_first_frames(self.frame_subject)

    @property
    def num_frames(self) -> int:
        return len(self.images)


def landmark_convention(setting: str, detection: Any) -> str:
    """One photo's landmark convention: `setting` ("2d" / "3d"), or under "auto" the detector's ("3d" for
    3D-FAN, else "2d"; "2d" for landmarks the user gave, `detection` None)."""
    if setting != "auto":
        return setting
    return "3d" if detection is not None and detection.backend == "fan3d" else "2d"


def build_observations(images: Sequence[Any], landmarks: Sequence[np.ndarray], detections: Sequence[Any], *,
                       convention: str = "auto", jaw_weight: float = 0.5,
                       landmark_weights: Sequence[float] | None = None,
                       frame_subject: torch.Tensor | None = None,
                       device: torch.device | str = "cpu") -> Observations:
    """Observations of B decoded photos.

    Args:
        images: B `Image`s. landmarks: B (68, 2) arrays, photo pixels. detections: B `Detection`s or None.
        convention: `FitConfig.landmark_convention` ("auto", "2d", "3d").
        jaw_weight / landmark_weights: `FitConfig.jaw_weight` / `.landmark_weights` (68 or None).
        frame_subject: (B,) long; None: every photo its own person.
        device: where the tensors live.
    """
    target = torch.as_tensor(np.stack(landmarks), dtype=torch.float64, device=device)
    sizes = torch.tensor([img.original_size for img in images], dtype=torch.float64, device=device)
    base = None if landmark_weights is None else torch.tensor(landmark_weights)
    fs = independent_subjects(len(images), device) if frame_subject is None else torch.as_tensor(frame_subject, dtype=torch.long)
    return Observations(images=list(images), landmarks=target, sizes=sizes, detections=list(detections),
                        conventions=[landmark_convention(convention, d) for d in detections],
                        landmark_weights=jaw_weighted(jaw_weight, base), frame_subject=fs)
