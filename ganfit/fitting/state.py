"""The state a fit carries from stage to stage: subject parameters, shared by every photo of one person, and
frame parameters, one set per photo, with `frame_subject` saying whose each photo is (DESIGN.md, "Stages").

Today every photo is its own subject (S == B, `frame_subject` = arange(B)); several photos of one person
(issue 13) only need a `frame_subject` with repeats, not a new solver. A field is None until a stage fits it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .params import FitParams

__all__ = ["FitState", "FrameParams", "SubjectParams", "independent_subjects", "subject_first_frames"]


@dataclass
class SubjectParams:
    """Parameters of S people, shared by all of a person's photos.

    shape: (S, Ks) identity coefficients in standard deviations (None: not fitted yet).
    texture_latent: (S, D) the texture model's latent (None: no stage fitted it).
    """

    shape: torch.Tensor | None = None
    texture_latent: torch.Tensor | None = None


@dataclass
class FrameParams:
    """Parameters of B photos (None: not fitted yet).

    expression: (B, Ke) in standard deviations. rotation: (B, 3) axis-angle or (B, 6) 6D, model to camera.
    translation: (B, 3) mm, camera space. focal: (B,) pixels. principal: (B, 2) pixels (photo pixels).
    lighting: (B, 9, 3) SH coefficients. gain / offset: (B, 3) colour gain and offset.
    """

    expression: torch.Tensor | None = None
    rotation: torch.Tensor | None = None
    translation: torch.Tensor | None = None
    focal: torch.Tensor | None = None
    principal: torch.Tensor | None = None
    lighting: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    offset: torch.Tensor | None = None


def independent_subjects(num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(B,) long: every photo its own person (arange(B))."""
    return torch.arange(num_frames, dtype=torch.long, device=device)


def subject_first_frames(frame_subject: torch.Tensor) -> torch.Tensor:
    """(S,) long: for each subject 0..S-1 the index of its first frame.

    Args:
        frame_subject: (B,) long, each frame's subject; every subject 0..S-1 must have a frame.
    Raises:
        ConfigError: a subject index < 0, or a subject without frames.
    """
    fs = torch.as_tensor(frame_subject, dtype=torch.long)
    if fs.ndim != 1 or fs.numel() == 0 or int(fs.min()) < 0:
        raise ConfigError(f"frame_subject must be a non-empty (B,) index >= 0, got {tuple(fs.shape)}")
    num = int(fs.max()) + 1
    frames = torch.arange(fs.numel(), device=fs.device)
    first = torch.full((num,), fs.numel(), dtype=torch.long, device=fs.device).scatter_reduce(0, fs, frames, "amin")
    if bool((first == fs.numel()).any()):
        missing = int((first == fs.numel()).nonzero()[0])
        raise ConfigError(f"frame_subject names subjects 0..{num - 1} but subject {missing} has no frame")
    return first


@dataclass
class FitState:
    """What the stages fit: `subject` (S rows), `frame` (B rows), `frame_subject` (B,) long, and
    `landmark_vertices` (B, 68) long, the model vertex of each landmark (None until the landmark stage has
    resolved the jaw-line contour)."""

    subject: SubjectParams
    frame: FrameParams
    frame_subject: torch.Tensor
    landmark_vertices: torch.Tensor | None = None

    @classmethod
    def empty(cls, frame_subject: torch.Tensor) -> "FitState":
        """Nothing fitted yet, for the frames and subjects of `frame_subject` (B,)."""
        subject_first_frames(frame_subject)  # checks it
        return cls(SubjectParams(), FrameParams(), torch.as_tensor(frame_subject, dtype=torch.long))

    @classmethod
    def from_fit_params(cls, params: FitParams, frame_subject: torch.Tensor, *,
                        landmark_vertices: torch.Tensor | None = None, texture_latent: torch.Tensor | None = None,
                        lighting: torch.Tensor | None = None, gain: torch.Tensor | None = None,
                        offset: torch.Tensor | None = None) -> "FitState":
        """Scatter per-frame parameters into a state.

        Args:
            params: B frames' `FitParams`.
            frame_subject: (B,) long, each frame's subject.
            landmark_vertices: (B, 68) long or None.
            texture_latent: (B, D) per frame, or None; like the shape it is kept once per subject.
            lighting / gain / offset: (B, 9, 3) / (B, 3) / (B, 3) or None.
        Returns:
            The state; a subject's shape (and texture latent) is that of its first frame: the stages that fit
            a subject's frames together give them the same values.
        """
        fs = torch.as_tensor(frame_subject, dtype=torch.long)
        if fs.shape != (params.batch_size,):
            raise ConfigError(f"frame_subject must be ({params.batch_size},), got {tuple(fs.shape)}")
        first = subject_first_frames(fs).to(params.shape.device)
        latent = None if texture_latent is None else texture_latent[first.to(texture_latent.device)]
        return cls(SubjectParams(shape=params.shape[first], texture_latent=latent),
                   FrameParams(expression=params.expression, rotation=params.rotation, translation=params.translation,
                               focal=params.focal, principal=params.principal, lighting=lighting, gain=gain,
                               offset=offset),
                   fs, landmark_vertices)

    @property
    def num_frames(self) -> int:
        return int(self.frame_subject.shape[0])

    @property
    def num_subjects(self) -> int:
        return int(self.frame_subject.max()) + 1

    @property
    def fitted(self) -> bool:
        """Whether shape, expression, pose and camera are all set (`to_fit_params` works)."""
        f = self.frame
        return all(t is not None for t in (self.subject.shape, f.expression, f.rotation, f.translation, f.focal,
                                           f.principal))

    def to_fit_params(self) -> FitParams:
        """Gather per-frame `FitParams` (B): each frame gets its subject's shape (`shape[frame_subject]`).

        Raises:
            ConfigError: some of them are not fitted yet (no landmark stage ran before).
        """
        if not self.fitted:
            raise ConfigError("the fit state has no shape, expression, pose and camera yet: run the landmark stage first")
        f, shape = self.frame, self.subject.shape
        return FitParams(shape=shape[self.frame_subject.to(shape.device)], expression=f.expression, rotation=f.rotation,
                         translation=f.translation, focal=f.focal, principal=f.principal)

    def frame_texture_latent(self) -> torch.Tensor | None:
        """(B, D) each frame's subject's texture latent, or None."""
        z = self.subject.texture_latent
        return None if z is None else z[self.frame_subject.to(z.device)]

    def replace(self, **changes) -> "FitState":
        """A copy with `changes` (subject, frame, frame_subject, landmark_vertices) applied."""
        return dataclasses.replace(self, **changes)
