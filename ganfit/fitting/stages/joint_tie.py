"""Several photos of one person in the joint stage: their shape and texture latent are one (issue 13).

The photos' variables keep one row each, but the rows of one subject are tied: they start equal, and after
every backward pass each gets the sum of its subject's gradients, so Adam (elementwise, from equal moments),
gradient clipping (one scale per tensor) and the latent bound (elementwise) keep them equal: the gradient of
one shared variable seen in F photos. Each photo keeps its own priors, so the balance of data and prior is
that of one photo, as in the landmark stage's shared fit (`landmark_shared`, where counting the prior once
was measured worse on real photos).
"""
from __future__ import annotations

import torch

from ..state import subject_first_frames

__all__ = ["TIED", "SubjectTie"]

#: the joint stage's variables shared by a subject's photos
TIED = ("shape", "latent")


class SubjectTie:
    """Ties the subject variables of B photos of S people.

    Args:
        frame_subject: (B,) long, each photo's subject 0..S-1.
    """

    def __init__(self, frame_subject: torch.Tensor) -> None:
        self.frame_subject = torch.as_tensor(frame_subject, dtype=torch.long)
        self.first = subject_first_frames(self.frame_subject)
        self.num_subjects = int(self.first.numel())

    def to(self, device: torch.device) -> "SubjectTie":
        self.frame_subject, self.first = self.frame_subject.to(device), self.first.to(device)
        return self

    def share(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...) each photo given its subject's first photo's row."""
        return x[self.first[self.frame_subject]]

    def tie_gradients(self, leaves: dict[str, torch.Tensor]) -> None:
        """Replace the gradients of the tied leaves by their subject's sum (in place)."""
        for name in TIED:
            p = leaves.get(name)
            if p is None or p.grad is None:
                continue
            total = torch.zeros(self.num_subjects, *p.grad.shape[1:], dtype=p.grad.dtype, device=p.grad.device)
            p.grad = total.index_add_(0, self.frame_subject, p.grad)[self.frame_subject]

    def all_of_subject(self, ok: torch.Tensor) -> torch.Tensor:
        """(B,) bool -> (B,) bool: True where every photo of the photo's subject is True."""
        bad = torch.zeros(self.num_subjects, dtype=torch.long, device=ok.device).index_add_(
            0, self.frame_subject, (~ok).long())
        return bad[self.frame_subject] == 0
